// An NBD client connection: thread-safe, blocking calls, many requests in flight.
//
// Callers on any thread send their request (under the send lock) and then wait for its reply. There
// is no reader thread: whichever waiter finds the socket free becomes the reader, reads replies and
// files each one under its cookie (read data straight into that caller's buffer), until its own
// reply is complete; then it hands the socket to the next waiter (leader/follower). Every chunk is
// checked against the request it answers (offsets inside the requested range, lengths consistent)
// before a byte is copied, so a broken or hostile server cannot write outside a caller's buffer.
// Once the connection breaks, every pending and future call fails with that error.
import Glibc

public final class NBDClient: @unchecked Sendable {
    public let details: NBDExportDetails
    public var mode: NBDMode { details.mode }
    private let stream: NBDStream
    private let sendLock = Monitor()
    private let state = Monitor()
    private var pending: [UInt64: Pending] = [:]
    private var nextCookie: UInt64 = 1
    private var readerBusy = false
    private var broken: NBDError?

    /// One request waiting for its reply.
    final class Pending {
        let request: NBDRequest
        let buffer: UnsafeMutableRawBufferPointer?
        var done = false
        var error: NBDError?
        var extents: [(context: UInt32, extents: [NBDExtent])] = []
        /// Bytes of a read answered so far (data + holes), to detect a short structured read.
        var covered: UInt64 = 0
        init(_ r: NBDRequest, buffer: UnsafeMutableRawBufferPointer?) {
            request = r
            self.buffer = buffer
        }
    }

    /// Connects and negotiates. `address` is where the server listens.
    public static func connect(_ address: SocketAddress, config: NBDClientConfig) throws -> NBDClient {
        let fd = try Sockets.connect(address)
        let stream = NBDStream(transport: SocketTransport(fd: fd))
        do {
            let details = try ClientHandshake(stream: stream, config: config).connect()
            return NBDClient(stream: stream, details: details)
        } catch {
            stream.transport.close()
            throw error
        }
    }

    init(stream: NBDStream, details: NBDExportDetails) {
        self.stream = stream
        self.details = details
    }

    deinit { stream.transport.close() }

    // MARK: commands

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try execute(NBDRequest(command: .read, cookie: 0, offset: offset, length: UInt64(buffer.count)), buffer: buffer)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool = false) throws {
        var flags: NBDCommandFlags = fua ? [.fua] : []
        if mode == .extended { flags.insert(.payloadLength) }
        try execute(NBDRequest(flags: flags, command: .write, cookie: 0, offset: offset, length: UInt64(buffer.count)),
                    payload: buffer)
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, fua: Bool = false, noHole: Bool = false, fast: Bool = false) throws {
        var flags: NBDCommandFlags = []
        if fua { flags.insert(.fua) }
        if noHole { flags.insert(.noHole) }
        if fast { flags.insert(.fastZero) }
        try execute(NBDRequest(flags: flags, command: .writeZeroes, cookie: 0, offset: offset, length: length))
    }

    public func trim(at offset: UInt64, length: UInt64, fua: Bool = false) throws {
        try execute(NBDRequest(flags: fua ? [.fua] : [], command: .trim, cookie: 0, offset: offset, length: length))
    }

    public func flush() throws {
        try execute(NBDRequest(command: .flush, cookie: 0, offset: 0, length: 0))
    }

    public func cache(at offset: UInt64, length: UInt64) throws {
        try execute(NBDRequest(command: .cache, cookie: 0, offset: offset, length: length))
    }

    /// Block status for every negotiated context: context id -> extents from `offset`.
    public func blockStatus(at offset: UInt64, length: UInt64, reqOne: Bool = false) throws -> [UInt32: [NBDExtent]] {
        let p = try execute(NBDRequest(flags: reqOne ? [.reqOne] : [], command: .blockStatus, cookie: 0, offset: offset, length: length))
        var out: [UInt32: [NBDExtent]] = [:]
        for (c, e) in p.extents { out[c, default: []].append(contentsOf: e) }
        return out
    }

    /// Sends NBD_CMD_DISC and closes the connection.
    public func disconnect() {
        let canSend = state.withLock { broken == nil }
        if canSend {
            sendLock.withLock {
                var h = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
                withUnsafeMutableBytes(of: &h) { raw in
                    let n = NBDRequest(command: .disconnect, cookie: 0, offset: 0, length: 0).encode(into: raw.baseAddress!, mode: mode)
                    try? stream.transport.send(UnsafeRawBufferPointer(rebasing: raw[0..<n]), .empty, .empty)
                }
            }
        }
        fail(NBDError(.eof, "Connection closed", errno: ESHUTDOWN))
        stream.transport.shutdown()
    }

    // MARK: the request/reply engine

    @discardableResult
    private func execute(_ r: NBDRequest, buffer: UnsafeMutableRawBufferPointer? = nil,
                         payload: UnsafeRawBufferPointer = .empty) throws -> Pending {
        var request = r
        let p: Pending = try state.withLock {
            if let b = broken { throw b }
            request.cookie = nextCookie
            nextCookie &+= 1
            let p = Pending(request, buffer: buffer)
            pending[request.cookie] = p
            return p
        }
        do {
            try sendLock.withLock {
                var h = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
                try withUnsafeMutableBytes(of: &h) { raw in
                    let n = request.encode(into: raw.baseAddress!, mode: mode)
                    try stream.transport.send(UnsafeRawBufferPointer(rebasing: raw[0..<n]), payload, .empty)
                }
            }
        } catch let e as NBDError {
            fail(e)
        }
        try waitFor(p)
        if let e = p.error { throw e }
        return p
    }

    private func waitFor(_ p: Pending) throws {
        state.lock()
        while !p.done {
            if let b = broken {
                state.unlock()
                throw b
            }
            if readerBusy {
                state.wait()
                continue
            }
            readerBusy = true
            state.unlock()
            do {
                try readReplies(until: p)
            } catch let e as NBDError {
                fail(e)
            } catch {
                fail(NBDError(.io, "\(error)"))
            }
            state.lock()
            readerBusy = false
            state.broadcast()
        }
        state.unlock()
    }

    /// Fails the connection: every pending call gets `error`.
    private func fail(_ error: NBDError) {
        state.withLock {
            if broken == nil { broken = error }
            for (_, p) in pending where !p.done {
                p.error = p.error ?? error
                p.done = true
            }
            pending.removeAll()
            state.broadcast()
        }
    }

    /// Reads replies (as the current reader) until `mine` is complete.
    private func readReplies(until mine: Pending) throws {
        while !state.withLock({ mine.done }) {
            try readOneReply()
        }
    }

    private func readOneReply() throws {
        var h = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let header: NBDReplyHeader = try withUnsafeMutableBytes(of: &h) { raw in
            try stream.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<4]))
            let magic = loadBE32(UnsafeRawBufferPointer(raw), 0)
            guard let size = NBDReplyHeader.size(forMagic: magic, mode: mode) else {
                throw NBDError.violation("invalid reply magic 0x\(String(magic, radix: 16))")
            }
            try stream.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: raw[4..<size]))
            return NBDReplyHeader.parse(UnsafeRawBufferPointer(rebasing: raw[0..<size]))!
        }
        guard let p = state.withLock({ pending[header.cookie] }) else {
            throw NBDError.violation("reply for unexpected cookie \(header.cookie)")
        }
        if header.isSimple {
            try simpleReply(header, p)
        } else {
            try chunk(header, p)
        }
        if header.isDone {
            if p.request.command == .read && !header.isSimple && p.error == nil && p.covered != p.request.length {
                p.error = NBDError.violation("server sent fewer read chunks than requested")
            }
            state.withLock {
                pending[header.cookie] = nil
                p.done = true
                state.broadcast()
            }
        }
    }

    private func simpleReply(_ h: NBDReplyHeader, _ p: Pending) throws {
        if h.error != 0 {
            p.error = commandError(p.request, NBDErrno.toErrno(h.error), nil)
            return
        }
        if p.request.command == .read, let b = p.buffer, b.count > 0 {
            if mode >= .structured {
                throw NBDError.violation("simple reply to a read with structured replies")
            }
            try stream.readExactly(into: b)
        }
    }

    private func commandError(_ r: NBDRequest, _ e: Int32, _ message: String?) -> NBDError {
        var msg = "\(r.command) failed: \(String(cString: strerror(e)))"
        if let m = message, !m.isEmpty { msg += " (server: \(m))" }
        return NBDError(.commandFailed, msg, errno: e)
    }

    private func chunk(_ h: NBDReplyHeader, _ p: Pending) throws {
        let r = p.request
        let length = h.length
        switch h.type {
        case .none:
            if length != 0 || !h.isDone { throw NBDError.violation("malformed NBD_REPLY_TYPE_NONE") }
        case .offsetData:
            guard r.command == .read, length >= 8, let b = p.buffer else { throw NBDError.violation("unexpected OFFSET_DATA chunk") }
            let offset = try stream.readU64()
            let n = length - 8
            guard offset >= r.offset, n <= r.length, offset - r.offset <= r.length - n else {
                throw NBDError.violation("OFFSET_DATA chunk outside the requested range")
            }
            if n > 0 {
                try stream.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: b[Int(offset - r.offset)..<Int(offset - r.offset + n)]))
            }
            p.covered += n
        case .offsetHole:
            guard r.command == .read, length == 12, let b = p.buffer else { throw NBDError.violation("unexpected OFFSET_HOLE chunk") }
            let offset = try stream.readU64()
            let n = UInt64(try stream.readU32())
            guard offset >= r.offset, n <= r.length, offset - r.offset <= r.length - n else {
                throw NBDError.violation("OFFSET_HOLE chunk outside the requested range")
            }
            if n > 0 {
                memset(b.baseAddress! + Int(offset - r.offset), 0, Int(n))
            }
            p.covered += n
        case .blockStatus, .blockStatusExt:
            guard r.command == .blockStatus else { throw NBDError.violation("unexpected BLOCK_STATUS chunk") }
            try blockStatusChunk(h, p)
        case .error, .errorOffset:
            guard length >= 6, length <= UInt64(6 + NBDLimits.maxString + 8) else { throw NBDError.violation("malformed error chunk") }
            let e = try stream.readU32()
            let msgLen = UInt64(try stream.readU16())
            guard msgLen + 6 <= length else { throw NBDError.violation("malformed error chunk") }
            let msg = String(decoding: try stream.readBytes(Int(msgLen)), as: UTF8.self)
            try stream.discard(length - 6 - msgLen)
            p.error = commandError(r, NBDErrno.toErrno(e == 0 ? NBDErrno.einval : e), msg)
        default:
            if h.type.isError {
                // An unknown error chunk: the first 4 bytes are still the error.
                guard length >= 4, length <= UInt64(NBDLimits.maxBuffer) else { throw NBDError.violation("malformed error chunk") }
                let e = try stream.readU32()
                try stream.discard(length - 4)
                p.error = commandError(r, NBDErrno.toErrno(e), nil)
            } else {
                throw NBDError.violation("unknown reply chunk type \(h.type.rawValue)")
            }
        }
    }

    private func blockStatusChunk(_ h: NBDReplyHeader, _ p: Pending) throws {
        let wide = h.type == .blockStatusExt
        if wide != (mode == .extended) { throw NBDError.violation("block status chunk of the wrong width") }
        let each: UInt64 = wide ? 16 : 8
        let prefix: UInt64 = wide ? 8 : 4
        guard h.length >= prefix + each, (h.length - prefix) % each == 0,
              h.length <= UInt64(NBDLimits.maxBuffer) + prefix else {
            throw NBDError.violation("malformed block status chunk")
        }
        let id = try stream.readU32()
        var count = (h.length - prefix) / each
        if wide {
            let n = UInt64(try stream.readU32())
            guard n == count else { throw NBDError.violation("malformed block status chunk") }
            count = n
        }
        let bytes = try stream.readBytes(Int(h.length - prefix))
        var extents: [NBDExtent] = []
        extents.reserveCapacity(Int(count))
        bytes.withUnsafeBytes { raw in
            for i in 0..<Int(count) {
                if wide {
                    extents.append(NBDExtent(length: loadBE64(raw, i * 16), flags: loadBE64(raw, i * 16 + 8)))
                } else {
                    extents.append(NBDExtent(length: UInt64(loadBE32(raw, i * 8)), flags: UInt64(loadBE32(raw, i * 8 + 4))))
                }
            }
        }
        guard !extents.contains(where: { $0.length == 0 }) || extents.count == 1 else {
            throw NBDError.violation("block status extent of length 0")
        }
        p.extents.append((id, extents))
    }
}
