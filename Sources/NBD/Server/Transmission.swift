// The transmission phase of one connection: read a request, check it, do it, reply; repeat.
//
// Shape (nbdkit's protocol.c): `RequestCheck.check` only judges, `handle` only dispatches to the
// backend, and every reply leaves through `finish` (status replies) or the data/extent senders,
// which share the header encoders. A backend error becomes a wire errno in one place
// (`wireError`), after its cause has been logged.
//
// Requests run inline on the connection's thread, in order. Replies are corked while more requests
// are already buffered and flushed when the client pauses, so a pipelining client gets many replies
// per system call; large read payloads go out in a gather write straight from the read buffer.
import Glibc

public final class NBDTransmission {
    let stream: NBDStream
    let session: NBDSession
    let backend: any NBDBackend
    let log: (String) -> Void
    let trace: (@Sendable (String, String) -> Void)?
    private let mode: NBDMode
    private var data: UnsafeMutableRawPointer?
    private var dataCapacity = 0
    private var extents: [NBDExtent] = []
    private var encoded: [UInt8] = []
    /// Keep buffers up to this size between requests; larger ones are freed when the client idles.
    private static let retainedBuffer = 4 * 1024 * 1024

    public init(stream: NBDStream, session: NBDSession, log: @escaping (String) -> Void,
                trace: (@Sendable (String, String) -> Void)? = nil) {
        self.trace = trace
        self.stream = stream
        self.session = session
        self.backend = session.export.backend
        self.log = log
        self.mode = session.mode
    }

    deinit { free(data) }

    enum Outcome {
        /// The reply was sent already (read data, block status).
        case sent
        case success
        case failure(Int32, String)
    }

    /// Serves requests until the client disconnects. Throws on a hard disconnect (the message says why).
    public func run() throws {
        let headerSize = mode.requestHeaderSize
        var header = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while true {
            if !stream.hasBuffered(headerSize) {
                try stream.flush()
                trimBuffers()
                if try !stream.waitForData() { return }
            }
            let request: NBDRequest = try withUnsafeMutableBytes(of: &header) { raw in
                let h = UnsafeMutableRawBufferPointer(rebasing: raw[0..<headerSize])
                try stream.readExactly(into: h)
                switch NBDRequest.parse(UnsafeRawBufferPointer(h), mode: mode) {
                case .success(let r): return r
                case .failure(.badMagic(let m)):
                    // qemu-nbd still answers the garbage (EINVAL, under whatever cookie the bytes
                    // hold) before hanging up; so do we.
                    let msg = "invalid magic (got 0x\(String(m, radix: 16)))"
                    let bogus = NBDRequest(command: .read, cookie: loadBE64(UnsafeRawBufferPointer(h), 8),
                                           offset: mode == .extended ? loadBE64(UnsafeRawBufferPointer(h), 16) : 0, length: 0)
                    try? finish(bogus, .failure(22, msg))
                    try? stream.flush()
                    throw NBDError.violation(msg)
                case .failure(.short): throw NBDError.violation("short request")
                }
            }
            if try !serve(request) {
                try stream.flush()
                return
            }
        }
    }

    /// One request; false when the connection must end (after NBD_CMD_DISC, or an unreadable payload).
    private func serve(_ r: NBDRequest) throws -> Bool {
        trace?("nbd_co_receive_request_decode_type",
               "Decoding type: cookie = \(r.cookie), type = \(r.command.rawValue) (\(r.command))")
        let check = RequestCheck.check(r, mode: mode, exportSize: session.export.size, readOnly: session.export.isReadOnly)
        var request = r
        request.length = check.effectLength
        switch check.payload {
        case .none, .unreadable: break
        case .drop(let n): try stream.discard(n)
        case .read(let n):
            let buf = try dataBuffer(n)
            try stream.readExactly(into: UnsafeMutableRawBufferPointer(start: buf, count: n))
        }
        switch check.verdict {
        case .disconnect:
            return false
        case .refuse(let e, let msg):
            try finish(request, .failure(e, msg))
            if check.payload == .unreadable {
                try stream.flush()
                throw NBDError.violation("Request handling failed in intermediate state")
            }
        case .proceed:
            try finish(request, try handle(request))
        }
        return true
    }

    // MARK: dispatch

    /// Dispatches a checked request. Backend errors become outcomes; only socket errors throw.
    private func handle(_ r: NBDRequest) throws -> Outcome {
        let fua = r.flags.contains(.fua)
        switch r.command {
        case .read:
            return try read(r)
        case .write:
            return attempt("writing to file failed") {
                try backend.write(at: r.offset, from: UnsafeRawBufferPointer(start: data, count: Int(r.length)), fua: fua)
            }
        case .writeZeroes:
            return attempt("writing to file failed") {
                try backend.writeZeroes(at: r.offset, length: r.length, fua: fua, mayTrim: !r.flags.contains(.noHole),
                                        fast: r.flags.contains(.fastZero))
            }
        case .flush:
            return attempt("flush failed") { try backend.flush() }
        case .trim:
            return attempt("discard failed") { try backend.trim(at: r.offset, length: r.length, fua: fua) }
        case .cache:
            return attempt("caching data failed") { try backend.cache(at: r.offset, length: r.length) }
        case .blockStatus:
            return try blockStatus(r)
        default:
            return .failure(22, "invalid request type (\(r.command.rawValue)) received")
        }
    }

    /// Runs a backend call; its error becomes a failure with QEMU's message for the command.
    private func attempt(_ what: String, _ body: () throws -> Void) -> Outcome {
        do {
            try body()
            return .success
        } catch {
            return .failure(wireError(error), what)
        }
    }

    /// The one place a backend error becomes an errno for the wire (logged first).
    private func wireError(_ error: Error) -> Int32 {
        if let e = error as? NBDBackendError {
            log("backend error: \(e.message)")
            return e.errno
        }
        log("backend error: \(error)")
        return 5
    }

    // MARK: replies

    /// The status reply of a request: simple, or a NONE/ERROR chunk (QEMU's nbd_send_generic_reply).
    private func finish(_ r: NBDRequest, _ outcome: Outcome) throws {
        if let t = trace, case .failure(let e, let msg) = outcome {
            t("nbd_co_send_chunk_error", "Send error reply: cookie = \(r.cookie), error = \(NBDErrno.from(errno: e)), msg = '\(msg)'")
        }
        switch outcome {
        case .sent:
            return
        case .success:
            if mode == .extended {
                try chunk(r, flags: NBDReplyFlag.done, type: .none, payload: [])
            } else {
                try simple(r, error: 0)
            }
        case .failure(let e, let msg):
            let wire = NBDErrno.from(errno: e)
            if mode >= .structured {
                try errorChunk(r, wire: wire, message: msg)
            } else {
                try simple(r, error: wire)
            }
        }
    }

    private func simple(_ r: NBDRequest, error: UInt32) throws {
        var h = (UInt64(0), UInt64(0))
        try withUnsafeMutableBytes(of: &h) { raw in
            let n = NBDReplyEncoder.simple(into: raw.baseAddress!, error: error, cookie: r.cookie)
            try stream.cork(UnsafeRawBufferPointer(rebasing: raw[0..<n]))
        }
    }

    private func errorChunk(_ r: NBDRequest, wire: UInt32, message: String) throws {
        let msg = Array(message.utf8.prefix(NBDLimits.maxString))
        var w = WireWriter(capacity: 6 + msg.count)
        w.u32(wire)
        w.u16(UInt16(msg.count))
        w.raw(msg)
        try chunk(r, flags: NBDReplyFlag.done, type: .error, payload: w.bytes)
    }

    /// A chunk with a small payload, corked.
    private func chunk(_ r: NBDRequest, flags: UInt16, type: NBDReplyType, payload: [UInt8]) throws {
        var h = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        try withUnsafeMutableBytes(of: &h) { raw in
            let n = NBDReplyEncoder.chunk(into: raw.baseAddress!, mode: mode, flags: flags, type: type, cookie: r.cookie,
                                          offset: r.offset, payloadLength: UInt64(payload.count))
            try stream.cork(UnsafeRawBufferPointer(rebasing: raw[0..<n]))
        }
        try stream.cork(payload)
    }

    /// Sends `count` bytes of the data buffer from `from` as read data: the simple reply's payload,
    /// or an OFFSET_DATA chunk for `offset`.
    private func sendData(_ r: NBDRequest, offset: UInt64, from: Int, count: Int, last: Bool) throws {
        var h = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        try withUnsafeMutableBytes(of: &h) { raw in
            let p = raw.baseAddress!
            var n: Int
            if mode < .structured {
                n = NBDReplyEncoder.simple(into: p, error: 0, cookie: r.cookie)
            } else {
                n = NBDReplyEncoder.chunk(into: p, mode: mode, flags: last ? NBDReplyFlag.done : 0, type: .offsetData,
                                          cookie: r.cookie, offset: r.offset, payloadLength: UInt64(count) + 8)
                storeBE64(p, n, offset)
                n += 8
            }
            let header = UnsafeRawBufferPointer(rebasing: raw[0..<n])
            let payload = UnsafeRawBufferPointer(start: data! + from, count: count)
            if count <= 16 * 1024 && stream.corkSpace >= n + count {
                try stream.cork(header)
                try stream.cork(payload)
            } else {
                try stream.sendDirect(header, payload)
            }
        }
    }

    // MARK: read

    private func read(_ r: NBDRequest) throws -> Outcome {
        if r.flags.contains(.fua) {
            do { try backend.flush() } catch { return .failure(wireError(error), "flush failed") }
        }
        let count = Int(r.length)
        let buf = try dataBuffer(count)
        if mode >= .structured && !r.flags.contains(.dontFragment) && count > 0 {
            return try sparseRead(r, buf)
        }
        do {
            try backend.read(at: r.offset, into: UnsafeMutableRawBufferPointer(start: buf, count: count))
        } catch {
            return .failure(wireError(error), "reading from file failed")
        }
        if mode >= .structured && count == 0 {
            try chunk(r, flags: NBDReplyFlag.done, type: .none, payload: [])
        } else {
            try sendData(r, offset: r.offset, from: 0, count: count, last: true)
        }
        return .sent
    }

    /// Holes become OFFSET_HOLE chunks; runs of data become one OFFSET_DATA chunk each, sent
    /// straight from the host file with sendfile when the backend says where the bytes are, else
    /// read into the buffer first.
    private func sparseRead(_ r: NBDRequest, _ buf: UnsafeMutableRawPointer) throws -> Outcome {
        let total = r.length
        let zeroCopy = stream.canSendFile
        var done: UInt64 = 0
        var next: NBDReadStatus? = nil
        while done < total {
            let status: NBDReadStatus
            do {
                status = try next ?? backend.readStatus(at: r.offset + done, length: total - done)
            } catch {
                let e = wireError(error)
                return .failure(e, "unable to check for holes: \(String(cString: strerror(e)))")
            }
            next = nil
            let n = max(1, min(status.length, total - done))
            if status.zero {
                var w = WireWriter(capacity: 12)
                w.u64(r.offset + done)
                w.u32(UInt32(n))
                try chunk(r, flags: done + n == total ? NBDReplyFlag.done : 0, type: .offsetHole, payload: w.bytes)
                done += n
                continue
            }
            // Extend the data run over following data extents (contiguous in the file for sendfile).
            var run = n
            var source = zeroCopy ? status.source : nil
            while done + run < total {
                guard let s = try? backend.readStatus(at: r.offset + done + run, length: total - done - run) else { break }
                if s.zero {
                    next = s
                    break
                }
                if let src = source, s.source?.fd != src.fd || s.source?.offset != src.offset + run {
                    next = s
                    break
                }
                run += max(1, min(s.length, total - done - run))
            }
            let last = done + run == total
            if let src = source {
                let sent = try sendFileData(r, offset: r.offset + done, source: src, count: Int(run), last: last)
                if sent == Int(run) {
                    done += run
                    continue
                }
                // The header is out: the rest of this chunk's payload comes from a plain read.
                do {
                    let rest = UnsafeMutableRawBufferPointer(start: buf, count: Int(run) - sent)
                    try backend.read(at: r.offset + done + UInt64(sent), into: rest)
                } catch {
                    throw NBDError.violation("read failed in the middle of a reply: \(error)")
                }
                try stream.sendDirect(.empty, UnsafeRawBufferPointer(start: buf, count: Int(run) - sent))
                done += run
                continue
            }
            do {
                try backend.read(at: r.offset + done, into: UnsafeMutableRawBufferPointer(start: buf + Int(done), count: Int(run)))
            } catch {
                return .failure(wireError(error), "reading from file failed")
            }
            try sendData(r, offset: r.offset + done, from: Int(done), count: Int(run), last: last)
            done += run
        }
        return .sent
    }

    /// An OFFSET_DATA chunk whose payload goes from the file to the socket; returns payload bytes sent.
    private func sendFileData(_ r: NBDRequest, offset: UInt64, source: (fd: Int32, offset: UInt64), count: Int, last: Bool) throws -> Int {
        var h = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return try withUnsafeMutableBytes(of: &h) { raw in
            let p = raw.baseAddress!
            var n = NBDReplyEncoder.chunk(into: p, mode: mode, flags: last ? NBDReplyFlag.done : 0, type: .offsetData,
                                          cookie: r.cookie, offset: r.offset, payloadLength: UInt64(count) + 8)
            storeBE64(p, n, offset)
            n += 8
            return try stream.sendFile(header: UnsafeRawBufferPointer(rebasing: raw[0..<n]), source: source.fd,
                                       offset: source.offset, length: count)
        }
    }

    // MARK: block status

    private func blockStatus(_ r: NBDRequest) throws -> Outcome {
        if r.length == 0 {
            return .failure(22, "need non-zero length")
        }
        if session.contexts.isEmpty {
            return .failure(22, "CMD_BLOCK_STATUS not negotiated")
        }
        let limit = r.flags.contains(.reqOne) ? 1 : NBDLimits.maxExtents
        for (i, c) in session.contexts.enumerated() {
            extents.removeAll(keepingCapacity: true)
            do {
                try collectExtents(c.context, r, limit: limit)
            } catch {
                return .failure(wireError(error), "can't get block status")
            }
            try sendExtents(r, contextID: c.id, last: i == session.contexts.count - 1)
        }
        return .sent
    }

    /// Fills `extents` for one context: merged, clipped to the request, within the limits.
    private func collectExtents(_ context: NBDMetaContext, _ r: NBDRequest, limit: Int) throws {
        var offset = r.offset
        let end = r.offset + r.length
        let maxLength: UInt64 = mode == .extended ? UInt64.max : UInt64(UInt32.max)
        var batch: [NBDExtent] = []
        while offset < end && extents.count <= limit {
            batch.removeAll(keepingCapacity: true)
            try backend.extents(context, at: offset, length: end - offset, limit: limit - extents.count + 1, into: &batch)
            if batch.isEmpty { break }
            for e in batch where e.length > 0 {
                let len = min(e.length, end - offset)
                if let last = extents.last, last.flags == e.flags, last.length + len <= maxLength {
                    extents[extents.count - 1].length += len
                } else {
                    if extents.count == limit { return }
                    extents.append(NBDExtent(length: len, flags: e.flags))
                }
                offset += len
                if offset >= end { break }
            }
        }
    }

    private func sendExtents(_ r: NBDRequest, contextID: UInt32, last: Bool) throws {
        encoded.removeAll(keepingCapacity: true)
        let wide = mode == .extended
        var w = WireWriter(capacity: 8 + extents.count * (wide ? 16 : 8))
        w.u32(contextID)
        if wide { w.u32(UInt32(extents.count)) }
        for e in extents {
            if wide {
                w.u64(e.length)
                w.u64(e.flags)
            } else {
                w.u32(UInt32(truncatingIfNeeded: e.length))
                w.u32(UInt32(truncatingIfNeeded: e.flags))
            }
        }
        try chunk(r, flags: last ? NBDReplyFlag.done : 0, type: wide ? .blockStatusExt : .blockStatus, payload: w.bytes)
    }

    // MARK: buffers

    private func dataBuffer(_ n: Int) throws -> UnsafeMutableRawPointer {
        if n <= dataCapacity, let d = data { return d }
        free(data)
        data = nil
        dataCapacity = 0
        let cap = max(n, 64 * 1024)
        // Page-aligned, so that backends opened with O_DIRECT can use it as is.
        var raw: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&raw, 4096, cap) == 0, let p = raw else {
            throw NBDError(.io, "No memory", errno: ENOMEM)
        }
        data = p
        dataCapacity = cap
        return p
    }

    /// Called when the client pauses: give back a big buffer, keep the stream's small ones.
    private func trimBuffers() {
        if dataCapacity > NBDTransmission.retainedBuffer, let d = data {
            free(d)
            data = nil
            dataCapacity = 0
        }
        if extents.capacity > 4096 { extents = [] }
    }
}
