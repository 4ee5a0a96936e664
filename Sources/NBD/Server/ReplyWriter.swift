// Replies leave a connection here, from whichever thread finished the request.
//
// Every simple reply and every structured-reply chunk is written whole under the send lock, so
// chunks of different requests never mix and a TLS session has one writer at a time (the reader
// thread only receives). Small replies are corked; the thread leaving the lock after the last
// chunk of a reply flushes unless another one is already waiting for it (which then flushes, or
// passes that on), so replies that finish together share a system call and none stays in the
// buffer while the client waits for it. Chunks before a reply's last stay corked: the client
// cannot use them before the last one anyway (a sparse read's hole chunks go out with its data).
// Large read payloads go out in a gather write, or with sendfile straight from the host file.
import Glibc
import Synchronization

final class ReplyWriter: @unchecked Sendable {
    let stream: NBDStream
    let mode: NBDMode
    private let lock = Monitor()
    /// Threads that want the send lock: while there are any, the holder leaves the flush to them.
    private let waiting = Atomic<Int>(0)

    init(stream: NBDStream, mode: NBDMode) {
        self.stream = stream
        self.mode = mode
    }

    /// Runs `body` (one whole reply or chunk) under the send lock; after a reply's last chunk
    /// (`ends`), flushes if nobody is next.
    func locked<T>(ends: Bool = true, _ body: () throws -> T) throws -> T {
        waiting.add(1, ordering: .relaxed)
        lock.lock()
        defer { lock.unlock() }
        waiting.subtract(1, ordering: .relaxed)
        let result = try body()
        if ends && waiting.load(ordering: .relaxed) == 0 { try stream.flush() }
        return result
    }

    /// Gives back the stream's output buffer while the connection idles (nothing corked).
    func releaseIdleBuffer() {
        lock.withLock { stream.releaseOutputBuffer() }
    }

    func simple(_ r: NBDRequest, error: UInt32) throws {
        var h = (UInt64(0), UInt64(0))
        try withUnsafeMutableBytes(of: &h) { raw in
            let n = NBDReplyEncoder.simple(into: raw.baseAddress!, error: error, cookie: r.cookie)
            try locked { try stream.cork(UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
        }
    }

    func errorChunk(_ r: NBDRequest, wire: UInt32, message: String) throws {
        let msg = Array(message.utf8.prefix(NBDLimits.maxString))
        var w = WireWriter(capacity: 6 + msg.count)
        w.u32(wire)
        w.u16(UInt16(msg.count))
        w.raw(msg)
        try chunk(r, flags: NBDReplyFlag.done, type: .error, payload: w.bytes)
    }

    /// A chunk with a small payload, corked.
    func chunk(_ r: NBDRequest, flags: UInt16, type: NBDReplyType, payload: [UInt8]) throws {
        var h = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        try withUnsafeMutableBytes(of: &h) { raw in
            let n = NBDReplyEncoder.chunk(into: raw.baseAddress!, mode: mode, flags: flags, type: type, cookie: r.cookie,
                                          offset: r.offset, payloadLength: UInt64(payload.count))
            try locked(ends: flags & NBDReplyFlag.done != 0) {
                try stream.cork(UnsafeRawBufferPointer(rebasing: raw[0..<n]))
                try stream.cork(payload)
            }
        }
    }

    /// Read data: the simple reply's payload, or an OFFSET_DATA chunk for `offset`.
    func data(_ r: NBDRequest, offset: UInt64, bytes: UnsafeRawBufferPointer, last: Bool) throws {
        var h = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        try withUnsafeMutableBytes(of: &h) { raw in
            let p = raw.baseAddress!
            var n: Int
            if mode < .structured {
                n = NBDReplyEncoder.simple(into: p, error: 0, cookie: r.cookie)
            } else {
                n = NBDReplyEncoder.chunk(into: p, mode: mode, flags: last ? NBDReplyFlag.done : 0, type: .offsetData,
                                          cookie: r.cookie, offset: r.offset, payloadLength: UInt64(bytes.count) + 8)
                storeBE64(p, n, offset)
                n += 8
            }
            let header = UnsafeRawBufferPointer(rebasing: raw[0..<n])
            try locked(ends: last) {
                if bytes.count <= 16 * 1024 && stream.corkSpace >= n + bytes.count {
                    try stream.cork(header)
                    try stream.cork(bytes)
                } else {
                    try stream.sendDirect(header, bytes)
                }
            }
        }
    }

    /// An OFFSET_DATA chunk whose payload goes from the file to the socket with sendfile. When
    /// sendfile stops short, the header is already out, so the rest of the payload must follow
    /// before anyone else writes: `rest(sent)` reads it (a backend read under the send lock,
    /// which only this rare fallback does).
    func fileData(_ r: NBDRequest, offset: UInt64, source: (fd: Int32, offset: UInt64), count: Int, last: Bool,
                  rest: (Int) throws -> UnsafeRawBufferPointer) throws {
        var h = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        try withUnsafeMutableBytes(of: &h) { raw in
            let p = raw.baseAddress!
            var n = NBDReplyEncoder.chunk(into: p, mode: mode, flags: last ? NBDReplyFlag.done : 0, type: .offsetData,
                                          cookie: r.cookie, offset: r.offset, payloadLength: UInt64(count) + 8)
            storeBE64(p, n, offset)
            n += 8
            try locked(ends: last) {
                let sent = try stream.sendFile(header: UnsafeRawBufferPointer(rebasing: raw[0..<n]), source: source.fd,
                                               offset: source.offset, length: count)
                if sent < count {
                    try stream.sendDirect(.empty, try rest(sent))
                }
            }
        }
    }

    /// Sends whatever is corked (protocol errors, before hanging up).
    func flush() throws {
        try locked { try stream.flush() }
    }
}
