// Listening and connecting sockets: TCP (any address getaddrinfo knows) and Unix, with QEMU's
// error wording ("Failed to find an available port: ...", "Failed to bind socket to PATH: ...").
// Descriptors are close-on-exec; TCP sockets get TCP_NODELAY (the protocol asks for it).
import Glibc

public enum SocketAddress: Sendable, Equatable, CustomStringConvertible {
    case inet(host: String, port: String)
    case unix(path: String)

    public var description: String {
        switch self {
        case .inet(let h, let p): return h.contains(":") ? "[\(h)]:\(p)" : "\(h):\(p)"
        case .unix(let p): return p
        }
    }
}

public enum Sockets {
    private static func setCloexec(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFD)
        if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
    }

    static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// A larger send buffer for a Unix socket (1 MiB asked, which Linux doubles, within
    /// net.core.wmem_max): with the default ~208 KiB, a 256 KiB read reply does not fit, so the
    /// server blocks in the middle of every reply and the client is woken per part; nbdcopy with
    /// one connection was ~25% faster with it. Only a limit: idle connections use no more memory.
    /// (TCP sockets keep the kernel's send buffer autotuning, which a fixed size would turn off.)
    static func setSendBuffer(_ fd: Int32) {
        var size: Int32 = 1 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Resolves host:port (passive for listening); the error is QEMU's.
    static func resolve(host: String, port: String, passive: Bool) throws -> [(family: Int32, type: Int32, proto: Int32, addr: [UInt8])] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        if passive { hints.ai_flags = AI_PASSIVE }
        var res: UnsafeMutablePointer<addrinfo>? = nil
        let h: String? = host.isEmpty ? nil : host
        let rc = getaddrinfo(h, port, &hints, &res)
        if rc != 0 {
            throw NBDError(.io, "address resolution failed for \(host):\(port): \(String(cString: gai_strerror(rc)))", errno: EINVAL)
        }
        defer { freeaddrinfo(res) }
        var out: [(Int32, Int32, Int32, [UInt8])] = []
        var p = res
        while let ai = p {
            let a = ai.pointee
            let bytes = Array(UnsafeRawBufferPointer(start: a.ai_addr, count: Int(a.ai_addrlen)))
            out.append((a.ai_family, a.ai_socktype, a.ai_protocol, bytes))
            p = a.ai_next
        }
        return out
    }

    /// Opens listening sockets for `address` (one per resolved TCP address, as QEMU does).
    public static func listen(_ address: SocketAddress, backlog: Int32) throws -> [Int32] {
        switch address {
        case .unix(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            if fd < 0 { throw NBDError.system("Failed to create socket", errno) }
            setCloexec(fd)
            unlink(path)
            do {
                try withUnixAddress(path) { sa, len in
                    if bind(fd, sa, len) < 0 {
                        throw NBDError.system("Failed to bind socket to \(path)", errno)
                    }
                }
            } catch {
                Glibc.close(fd)
                throw error
            }
            if Glibc.listen(fd, backlog) < 0 {
                let e = errno
                Glibc.close(fd)
                throw NBDError.system("Failed to listen on socket", e)
            }
            return [fd]
        case .inet(let host, let port):
            let addrs = try resolve(host: host, port: port, passive: true)
            var fds: [Int32] = []
            var lastErr: Int32 = EADDRINUSE
            for a in addrs {
                let fd = socket(a.family, a.type, a.proto)
                if fd < 0 { lastErr = errno; continue }
                setCloexec(fd)
                var one: Int32 = 1
                _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                if a.family == AF_INET6 {
                    _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
                }
                let ok = a.addr.withUnsafeBytes { raw in
                    bind(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count)) == 0
                }
                if !ok || Glibc.listen(fd, backlog) != 0 {
                    lastErr = errno
                    Glibc.close(fd)
                    continue
                }
                fds.append(fd)
            }
            if fds.isEmpty {
                throw NBDError.system("Failed to find an available port", lastErr)
            }
            return fds
        }
    }

    /// The port a listening TCP socket got (for -p 0 in tests).
    public static func localPort(_ fd: Int32) -> UInt16? {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard r == 0 else { return nil }
        switch Int32(ss.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) } }
        case AF_INET6:
            return withUnsafePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) } }
        default:
            return nil
        }
    }

    /// Accepts one connection (retrying EINTR); nil when the listener was shut down.
    public static func accept(_ listener: Int32) throws -> Int32? {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd >= 0 {
                setCloexec(fd)
                var ss = sockaddr_storage()
                var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let r = withUnsafeMutablePointer(to: &ss) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
                }
                if r == 0 && (Int32(ss.ss_family) == AF_INET || Int32(ss.ss_family) == AF_INET6) { setNoDelay(fd) }
                if r == 0 && Int32(ss.ss_family) == AF_UNIX { setSendBuffer(fd) }
                return fd
            }
            let e = errno
            switch e {
            case EINTR, ECONNABORTED, EPROTO: continue
            case EINVAL, EBADF: return nil
            case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                // Out of descriptors: back off instead of spinning; existing clients keep going.
                usleep(10_000)
                continue
            default:
                throw NBDError.system("Unable to accept connection", e)
            }
        }
    }

    /// Connects to `address`; the error is QEMU's ("Failed to connect to 'PATH': ...").
    public static func connect(_ address: SocketAddress) throws -> Int32 {
        switch address {
        case .unix(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            if fd < 0 { throw NBDError.system("Failed to create socket", errno) }
            setCloexec(fd)
            do {
                try withUnixAddress(path) { sa, len in
                    var r: Int32
                    repeat { r = Glibc.connect(fd, sa, len) } while r < 0 && errno == EINTR
                    if r < 0 { throw NBDError.system("Failed to connect to '\(path)'", errno) }
                }
            } catch {
                Glibc.close(fd)
                throw error
            }
            return fd
        case .inet(let host, let port):
            let addrs = try resolve(host: host, port: port, passive: false)
            var lastErr: Int32 = ECONNREFUSED
            for a in addrs {
                let fd = socket(a.family, a.type, a.proto)
                if fd < 0 { lastErr = errno; continue }
                setCloexec(fd)
                let ok = a.addr.withUnsafeBytes { raw -> Bool in
                    var r: Int32
                    repeat { r = Glibc.connect(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count)) }
                        while r < 0 && errno == EINTR
                    return r == 0
                }
                if ok {
                    setNoDelay(fd)
                    return fd
                }
                lastErr = errno
                Glibc.close(fd)
            }
            throw NBDError.system("Failed to connect to '\(host):\(port)'", lastErr)
        }
    }

    static func withUnixAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> T) throws -> T {
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let cap = MemoryLayout.size(ofValue: sa.sun_path)
        guard bytes.count < cap else {
            throw NBDError(.invalidArgument, "UNIX socket path '\(path)' is too long", errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        return try withUnsafePointer(to: &sa) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, len) }
        }
    }

    /// Descriptors passed by systemd socket activation (LISTEN_PID/LISTEN_FDS), starting at 3.
    /// Returns 0 when the variables are absent or meant for another process.
    public static func socketActivationCount() -> Int {
        guard let pidStr = getenv("LISTEN_PID").map({ String(cString: $0) }),
              let fdsStr = getenv("LISTEN_FDS").map({ String(cString: $0) }),
              let pid = Int32(pidStr), pid == getpid(),
              let n = Int(fdsStr), n > 0 else { return 0 }
        return n
    }
}
