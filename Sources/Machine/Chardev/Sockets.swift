// Listening and connected sockets for chardevs and QMP: unix and TCP, with the few POSIX calls
// Swift needs spelled out. Errors carry QEMU's wording ("Failed to bind socket to PATH: ...").
import Glibc

public struct SocketError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

public enum Sockets {
    /// A listening unix socket at `path` (an existing socket file is replaced, as QEMU does).
    public static func listenUnix(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(message: "Failed to create socket: \(errText())") }
        unlink(path)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw SocketError(message: "UNIX socket path '\(path)' is too long")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
            p[bytes.count] = 0
        }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0, listen(fd, 4) == 0 else {
            let m = errText()
            close(fd)
            throw SocketError(message: "Failed to bind socket to \(path): \(m)")
        }
        return fd
    }

    /// A listening TCP socket on host:port (IPv4; "localhost" and "" mean loopback/any).
    public static func listenTCP(host: String, port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(message: "Failed to create socket: \(errText())") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        let h = host == "localhost" ? "127.0.0.1" : (host.isEmpty ? "0.0.0.0" : host)
        guard inet_pton(AF_INET, h, &addr.sin_addr) == 1 else {
            close(fd)
            throw SocketError(message: "address resolution failed for \(host):\(port): Name or service not known")
        }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0, listen(fd, 4) == 0 else {
            let m = errText()
            close(fd)
            throw SocketError(message: "Failed to bind socket: \(m)")
        }
        return fd
    }

    /// Connects to a unix socket.
    public static func connectUnix(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(message: "Failed to create socket: \(errText())") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { close(fd); throw SocketError(message: "path too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
            p[bytes.count] = 0
        }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else {
            let m = errText()
            close(fd)
            throw SocketError(message: "Failed to connect to '\(path)': \(m)")
        }
        return fd
    }

    public static func accept(_ fd: Int32) -> Int32? {
        while true {
            let c = Glibc.accept(fd, nil, nil)
            if c >= 0 { return c }
            if errno == EINTR { continue }
            return nil
        }
    }

    /// Writes all of `bytes`; false on error (peer gone).
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ENOTSOCK {
                    let w = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
                    if w < 0 { if errno == EINTR { continue }; return false }
                    off += w
                    continue
                }
                return false
            }
            off += n
        }
        return true
    }

    static func errText() -> String { String(cString: strerror(errno)) }
}
