// Buffered, exact-length reads and corked writes over a transport; used by both peers.
//
// Reads: a small input buffer absorbs many pipelined request headers per receive call; a large
// payload goes straight from the socket into its destination once the buffered bytes are used up.
// `hasBuffered(_:)` tells the server whether another request is already waiting, so it can keep
// replies corked and send them in one write when the client pauses.
// Writes: small messages are appended to an output buffer (`cork`), big payloads are sent with a
// gather write after whatever is corked (`sendDirect`), and `flush` sends what is pending.
// Memory: both buffers are allocated on first use and stay small, so an idle connection costs
// little (see the memory test).
import Glibc

public final class NBDStream: @unchecked Sendable {
    public private(set) var transport: NBDTransport
    public static let inputCapacity = 16 * 1024
    public static let outputCapacity = 64 * 1024

    private var input: UnsafeMutableRawPointer?
    private var inStart = 0
    private var inEnd = 0
    private var output: UnsafeMutableRawPointer?
    private var outCount = 0
    /// Bytes read in total (for the tests and -v).
    public private(set) var bytesReceived: UInt64 = 0

    public init(transport: NBDTransport) {
        self.transport = transport
    }

    deinit {
        input?.deallocate()
        output?.deallocate()
    }

    /// Replaces the transport's deadline (nil: wait forever).
    public var deadline: Deadline? {
        get { transport.deadline }
        set { transport.deadline = newValue }
    }

    // MARK: reading

    public var bufferedCount: Int { inEnd - inStart }

    /// Whether at least `n` bytes are already buffered (no system call).
    public func hasBuffered(_ n: Int) -> Bool { inEnd - inStart >= n }

    private func inputBuffer() -> UnsafeMutableRawPointer {
        if let p = input { return p }
        let p = UnsafeMutableRawPointer.allocate(byteCount: NBDStream.inputCapacity, alignment: 16)
        input = p
        return p
    }

    /// Receives more bytes into the input buffer; false at end of stream.
    private func fill() throws -> Bool {
        let buf = inputBuffer()
        if inStart == inEnd {
            inStart = 0
            inEnd = 0
        } else if inStart > 0 {
            memmove(buf, buf + inStart, inEnd - inStart)
            inEnd -= inStart
            inStart = 0
        }
        let n = try transport.receive(into: UnsafeMutableRawBufferPointer(start: buf + inEnd, count: NBDStream.inputCapacity - inEnd))
        if n == 0 { return false }
        inEnd += n
        bytesReceived &+= UInt64(n)
        return true
    }

    /// Reads exactly `buffer.count` bytes. Throws `.eof` if the stream ends first (`atStart` tells
    /// whether nothing at all was read, for "clean" disconnects between requests).
    public func readExactly(into buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        let want = buffer.count
        while done < want {
            let avail = inEnd - inStart
            if avail > 0 {
                let n = min(avail, want - done)
                memcpy(buffer.baseAddress! + done, input! + inStart, n)
                inStart += n
                done += n
                continue
            }
            if want - done >= NBDStream.inputCapacity {
                // Large remainder: straight into the destination.
                let n = try transport.receive(into: UnsafeMutableRawBufferPointer(start: buffer.baseAddress! + done, count: want - done))
                if n == 0 { throw eofError(partial: done > 0) }
                bytesReceived &+= UInt64(n)
                done += n
                continue
            }
            if try !fill() { throw eofError(partial: done > 0) }
        }
    }

    private func eofError(partial: Bool) -> NBDError {
        partial ? NBDError(.eof, "Unexpected end-of-file before all data were read", errno: EIO)
                : NBDError(.eof, "Unexpected end-of-file before all bytes were read", errno: EIO)
    }

    /// Reads `n` bytes into a new array. Only for small, already bounded sizes.
    public func readBytes(_ n: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        if n > 0 { try out.withUnsafeMutableBytes { try readExactly(into: $0) } }
        return out
    }

    public func readU16() throws -> UInt16 {
        var v: UInt16 = 0
        try withUnsafeMutableBytes(of: &v) { try readExactly(into: $0) }
        return UInt16(bigEndian: v)
    }

    public func readU32() throws -> UInt32 {
        var v: UInt32 = 0
        try withUnsafeMutableBytes(of: &v) { try readExactly(into: $0) }
        return UInt32(bigEndian: v)
    }

    public func readU64() throws -> UInt64 {
        var v: UInt64 = 0
        try withUnsafeMutableBytes(of: &v) { try readExactly(into: $0) }
        return UInt64(bigEndian: v)
    }

    /// Reads and throws away `n` bytes without allocating `n` bytes.
    public func discard(_ n: UInt64) throws {
        var left = n
        while left > 0 {
            let avail = UInt64(inEnd - inStart)
            if avail > 0 {
                let k = min(avail, left)
                inStart += Int(k)
                left -= k
                continue
            }
            if try !fill() { throw eofError(partial: true) }
        }
    }

    /// Waits for the first byte of the next message. Returns false on a clean end of stream.
    public func waitForData() throws -> Bool {
        if inEnd > inStart { return true }
        return try fill()
    }

    /// Whether input is buffered that nobody consumed yet (after STARTTLS there must be none: a
    /// client may not pipeline past it).
    public var hasUnconsumedInput: Bool { inEnd > inStart }

    /// Switches to a new transport (the TLS session after STARTTLS). Pending output is flushed first.
    public func replaceTransport(_ t: NBDTransport) throws {
        try flush()
        let d = transport.deadline
        transport = t
        transport.deadline = d
    }

    // MARK: writing

    private func outputBuffer() -> UnsafeMutableRawPointer {
        if let p = output { return p }
        let p = UnsafeMutableRawPointer.allocate(byteCount: NBDStream.outputCapacity, alignment: 16)
        output = p
        return p
    }

    /// Appends bytes to the corked output, flushing first when they would not fit.
    public func cork(_ bytes: UnsafeRawBufferPointer) throws {
        if bytes.count == 0 { return }
        if bytes.count > NBDStream.outputCapacity {
            try flush()
            try transport.send(bytes, .empty, .empty)
            return
        }
        if outCount + bytes.count > NBDStream.outputCapacity { try flush() }
        memcpy(outputBuffer() + outCount, bytes.baseAddress!, bytes.count)
        outCount += bytes.count
    }

    public func cork(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try cork($0) }
    }

    /// Room left in the cork buffer.
    public var corkSpace: Int { NBDStream.outputCapacity - outCount }

    /// Sends what is corked, then `header` and `payload`, in one gather write.
    public func sendDirect(_ header: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer) throws {
        if outCount > 0 {
            let pending = UnsafeRawBufferPointer(start: output!, count: outCount)
            outCount = 0
            try transport.send(pending, header, payload)
        } else {
            try transport.send(header, payload, .empty)
        }
    }

    /// Whether payloads can go straight from a file to the socket (plain sockets, not TLS).
    public var canSendFile: Bool { transport is SocketTransport }

    /// Sends what is corked and `header`, then file bytes with sendfile; returns the file bytes sent.
    public func sendFile(header: UnsafeRawBufferPointer, source: Int32, offset: UInt64, length: Int) throws -> Int {
        guard let sock = transport as? SocketTransport else { return 0 }
        var prefix = [UInt8]()
        if outCount > 0 {
            prefix.reserveCapacity(outCount + header.count)
            prefix.append(contentsOf: UnsafeRawBufferPointer(start: output!, count: outCount))
            outCount = 0
        }
        prefix.append(contentsOf: header)
        return try prefix.withUnsafeBytes { try sock.sendFile(prefix: $0, source: source, offset: offset, length: length) }
    }

    public func flush() throws {
        guard outCount > 0 else { return }
        let pending = UnsafeRawBufferPointer(start: output!, count: outCount)
        outCount = 0
        try transport.send(pending, .empty, .empty)
    }

    /// Writes now (cork + flush), for the handshake.
    public func write(_ bytes: [UInt8]) throws {
        try cork(bytes)
        try flush()
    }

    /// Frees the output buffer when nothing is corked (it comes back on next use). The caller
    /// serializes this with the writers.
    public func releaseOutputBuffer() {
        if outCount == 0, let p = output {
            p.deallocate()
            output = nil
        }
    }

    /// Frees the buffers of an idle stream (they come back on next use).
    public func releaseBuffers() {
        if inEnd == inStart, let p = input {
            p.deallocate()
            input = nil
            inStart = 0
            inEnd = 0
        }
        if outCount == 0, let p = output {
            p.deallocate()
            output = nil
        }
    }
}
