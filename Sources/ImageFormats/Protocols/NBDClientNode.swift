// The `nbd` protocol node: a BlockNode whose bytes live on an NBD server.
//
// Thread-safe (the NBD client multiplexes concurrent callers over one connection). Requests larger
// than the server's maximum are split; write-zeroes and discard use the server's commands when it
// offers them (write-zeroes falls back to writing zero buffers unless the caller forbids it); block
// status comes from base:allocation (one extent per call, as QEMU's client asks), so a convert from
// an NBD source stays sparse. Errors carry the server's errno and, when it sent one, its message.
import Glibc
import NBD

public final class NBDClientNode: BlockNode, @unchecked Sendable {
    public let driverName = "nbd"
    public let filename: String
    public let size: UInt64
    public let isReadOnly: Bool
    public var children: [BlockChild] { [] }
    public let requestAlignment: UInt64
    public let client: NBDClient
    private let maxRequest: UInt64
    private let statusContextID: UInt32?

    init(client: NBDClient, address: SocketAddress, exportName: String?, writable: Bool, statusContext: String) throws {
        let d = client.details
        if writable && d.flags.contains(.readOnly) {
            client.disconnect()
            throw BlockError(.readOnly, "NBD export is read-only", errno: EACCES)
        }
        self.client = client
        self.size = d.size
        self.isReadOnly = !writable
        self.requestAlignment = UInt64(max(1, d.minimumBlock))
        let maxBlock = d.maximumBlock > 0 ? UInt64(d.maximumBlock) : UInt64(NBDLimits.maxBuffer)
        self.maxRequest = min(maxBlock, UInt64(NBDLimits.maxBuffer)) / requestAlignment * requestAlignment
        self.statusContextID = d.contextID(statusContext)
        self.filename = NBDClientNode.qemuFilename(address, exportName)
    }

    /// QEMU's nbd_refresh_filename.
    static func qemuFilename(_ a: SocketAddress, _ export: String?) -> String {
        switch (a, export) {
        case (.unix(let p), let e?): return "nbd+unix:///\(e)?socket=\(p)"
        case (.unix(let p), nil): return "nbd+unix://?socket=\(p)"
        case (.inet(let h, let port), let e?): return "nbd://\(h):\(port)/\(e)"
        case (.inet(let h, let port), nil): return "nbd://\(h):\(port)"
        }
    }

    private func blockError(_ error: Error) -> BlockError {
        if let e = error as? NBDError { return BlockError(.io, e.message, errno: e.errno) }
        if let e = error as? BlockError { return e }
        return BlockError(.io, "\(error)", errno: EIO)
    }

    private func run(_ body: () throws -> Void) throws {
        do { try body() } catch { throw blockError(error) }
    }

    private var flags: NBDTransmissionFlags { client.details.flags }

    // MARK: I/O

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRequest(offset, UInt64(buffer.count))
        try run {
            var done = 0
            while done < buffer.count {
                let n = Int(min(UInt64(buffer.count - done), maxRequest))
                try client.read(at: offset + UInt64(done), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n]))
                done += n
            }
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags wf: WriteFlags) throws {
        try checkWritable()
        try checkRequest(offset, UInt64(buffer.count))
        let fua = wf.contains(.fua) && flags.contains(.sendFUA)
        try run {
            var done = 0
            while done < buffer.count {
                let n = Int(min(UInt64(buffer.count - done), maxRequest))
                try client.write(at: offset + UInt64(done), from: UnsafeRawBufferPointer(rebasing: buffer[done..<done + n]), fua: fua)
                done += n
            }
            if wf.contains(.fua) && !flags.contains(.sendFUA) && flags.contains(.sendFlush) { try client.flush() }
        }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, flags wf: WriteFlags) throws {
        try checkWritable()
        try checkRequest(offset, length)
        guard flags.contains(.sendWriteZeroes) else {
            if wf.contains(.noFallback) { throw BlockError(.unsupported, "write zeroes not supported by the NBD server", errno: ENOTSUP) }
            try writeZeroBuffers(at: offset, length: length, flags: wf)
            return
        }
        if wf.contains(.noFallback) && !flags.contains(.sendFastZero) {
            throw BlockError(.unsupported, "fast zeroing not supported by the NBD server", errno: ENOTSUP)
        }
        let fua = wf.contains(.fua) && flags.contains(.sendFUA)
        let step: UInt64 = client.mode == .extended ? UInt64.max / 2 : UInt64(UInt32.max) / 4096 * 4096
        try run {
            var done: UInt64 = 0
            while done < length {
                let n = min(length - done, step)
                try client.writeZeroes(at: offset + done, length: n, fua: fua, noHole: !wf.contains(.mayUnmap),
                                       fast: wf.contains(.noFallback))
                done += n
            }
        }
    }

    private func writeZeroBuffers(at offset: UInt64, length: UInt64, flags wf: WriteFlags) throws {
        let chunk = Int(min(maxRequest, 1 << 20))
        let zero = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { zero.deallocate() }
        zero.initializeMemory(as: UInt8.self, repeating: 0)
        var done: UInt64 = 0
        while done < length {
            let n = Int(min(length - done, UInt64(chunk)))
            try write(at: offset + done, from: UnsafeRawBufferPointer(rebasing: zero[0..<n]), flags: wf.intersection(.fua))
            done += UInt64(n)
        }
    }

    public func discard(at offset: UInt64, length: UInt64) throws {
        try checkWritable()
        try checkRequest(offset, length)
        guard flags.contains(.sendTrim) else { return }
        let step: UInt64 = client.mode == .extended ? UInt64.max / 2 : UInt64(UInt32.max) / 4096 * 4096
        try run {
            var done: UInt64 = 0
            while done < length {
                let n = min(length - done, step)
                try client.trim(at: offset + done, length: n)
                done += n
            }
        }
    }

    public func flush() throws {
        guard flags.contains(.sendFlush) else { return }
        try run { try client.flush() }
    }

    public func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws {
        if newSize > size { throw BlockError(.unsupported, "Cannot grow NBD nodes", errno: EINVAL) }
        if exact && newSize != size { throw BlockError(.unsupported, "Cannot resize NBD nodes", errno: ENOTSUP) }
    }

    private func checkWritable() throws {
        if isReadOnly { throw BlockError(.readOnly, "Block node is read-only", errno: EPERM) }
    }

    // MARK: status

    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        guard let id = statusContextID else {
            return BlockExtent(flags: [.data, .offsetValid], length: length, hostOffset: offset, file: self)
        }
        let cap: UInt64 = client.mode == .extended ? length : min(length, UInt64(UInt32.max) / 4096 * 4096)
        let request = max(1, min(cap, length))
        var extents: [UInt32: [NBDExtent]] = [:]
        do {
            extents = try client.blockStatus(at: offset, length: request, reqOne: true)
        } catch {
            throw blockError(error)
        }
        guard let e = extents[id]?.first, e.length > 0 else {
            throw BlockError(.io, "Protocol error: server did not reply with any status extents", errno: EIO)
        }
        var f: BlockStatusFlags = [.offsetValid]
        if e.flags & UInt64(NBDState.hole) == 0 { f.insert(.data) }
        if e.flags & UInt64(NBDState.zero) != 0 { f.insert(.zero) }
        return BlockExtent(flags: f, length: min(e.length, length), hostOffset: offset, file: self)
    }

    public func close() throws {
        client.disconnect()
    }
}
