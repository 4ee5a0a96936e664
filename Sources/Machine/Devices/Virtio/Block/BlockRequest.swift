// Parsing one virtio-blk request from a descriptor chain (virtio 1.x section 5.2.6), in the style of
// Firecracker's `Request::parse`: the chain is checked before any I/O and the result is a typed
// request or a typed error, never a trap.
//
// Layout: a 16-byte header (type, reserved, sector) in device-readable buffers, then data (readable
// for writes, writable for reads), then a 1-byte status in the last writable buffer. Buffers may
// split these anywhere; the streams below gather and scatter across them.

public enum BlockRequestType: UInt32, Sendable {
    case read = 0, write = 1, flush = 4, getID = 8, discard = 11, writeZeroes = 13
}

public enum BlockRequestError: Error, Equatable {
    case shortHeader
    case noStatus
    case unsupported(UInt32)
    case misaligned
    case outOfRange
    case badSegments
}

/// A logical byte stream over some buffers of a chain.
public struct BufferStream {
    public var buffers: [VirtqBuffer]
    public var count: Int { buffers.reduce(0) { $0 + $1.length } }

    /// Copies `out.count` bytes starting at logical `offset`; false when the stream is too short.
    public func read(at offset: Int, into out: UnsafeMutableRawBufferPointer) -> Bool {
        var skip = offset, done = 0
        for b in buffers where done < out.count {
            if skip >= b.length { skip -= b.length; continue }
            let n = min(b.length - skip, out.count - done)
            (out.baseAddress! + done).copyMemory(from: b.host + skip, byteCount: n)
            done += n
            skip = 0
        }
        return done == out.count
    }

    public func bytes(at offset: Int, count: Int) -> [UInt8]? {
        var a = [UInt8](repeating: 0, count: count)
        return a.withUnsafeMutableBytes { read(at: offset, into: $0) } ? a : nil
    }

    /// Host segments covering [offset, offset+length) (for zero-copy I/O).
    public func segments(from offset: Int, length: Int) -> [UnsafeMutableRawBufferPointer] {
        var out: [UnsafeMutableRawBufferPointer] = []
        var skip = offset, left = length
        for b in buffers where left > 0 {
            if skip >= b.length { skip -= b.length; continue }
            let n = min(b.length - skip, left)
            out.append(UnsafeMutableRawBufferPointer(start: b.host + skip, count: n))
            left -= n
            skip = 0
        }
        return out
    }
}

public struct BlockRequest {
    public var type: BlockRequestType
    public var sector: UInt64
    /// Data bytes (reads: writable minus the status byte; writes: readable minus the header).
    public var dataLength: Int
    public var readable: BufferStream
    public var writable: BufferStream
    /// Where the status byte goes.
    public var status: UnsafeMutableRawPointer

    public static let headerSize = 16
    public static let sectorSize: UInt64 = 512

    /// Parses the chain; `capacity` is the disk size in bytes. A chain with no writable byte cannot
    /// even carry a status and is reported as `.noStatus` (the device returns it with length 0).
    public static func parse(_ chain: VirtqChain, capacity: UInt64) throws -> BlockRequest {
        let readable = BufferStream(buffers: chain.readable)
        let writable = BufferStream(buffers: chain.writableBuffers)
        guard let last = writable.buffers.last else { throw BlockRequestError.noStatus }
        let status = last.host + (last.length - 1)
        guard let h = readable.bytes(at: 0, count: headerSize) else { throw BlockRequestError.shortHeader }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(h[o + $1]) << (8 * UInt32($1)) } }
        let rawType = u32(0)
        let sector = UInt64(u32(8)) | UInt64(u32(12)) << 32
        guard let type = BlockRequestType(rawValue: rawType) else { throw BlockRequestError.unsupported(rawType) }
        var req = BlockRequest(type: type, sector: sector, dataLength: 0, readable: readable, writable: writable, status: status)
        switch type {
        case .read, .write:
            req.dataLength = type == .read ? writable.count - 1 : readable.count - headerSize
            guard UInt64(req.dataLength) % sectorSize == 0 else { throw BlockRequestError.misaligned }
            let (start, o1) = sector.multipliedReportingOverflow(by: sectorSize)
            let (end, o2) = start.addingReportingOverflow(UInt64(req.dataLength))
            guard !o1, !o2, end <= capacity else { throw BlockRequestError.outOfRange }
        case .getID:
            req.dataLength = writable.count - 1
        case .discard, .writeZeroes:
            req.dataLength = readable.count - headerSize
            guard req.dataLength > 0, req.dataLength % 16 == 0 else { throw BlockRequestError.badSegments }
        case .flush:
            break
        }
        return req
    }

    /// Discard / write-zeroes segments: (byte offset, byte length, unmap), each checked.
    public func segments(capacity: UInt64, maxSectors: UInt32) throws -> [(UInt64, UInt64, Bool)] {
        var out: [(UInt64, UInt64, Bool)] = []
        for i in 0..<(dataLength / 16) {
            guard let b = readable.bytes(at: BlockRequest.headerSize + 16 * i, count: 16) else { throw BlockRequestError.badSegments }
            let sector = (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[$1]) << (8 * UInt64($1)) }
            let n = (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[8 + $1]) << (8 * UInt32($1)) }
            let flags = (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[12 + $1]) << (8 * UInt32($1)) }
            guard flags & ~1 == 0, n <= maxSectors else { throw BlockRequestError.unsupported(flags) }
            let (start, o1) = sector.multipliedReportingOverflow(by: BlockRequest.sectorSize)
            let len = UInt64(n) * BlockRequest.sectorSize
            let (end, o2) = start.addingReportingOverflow(len)
            guard !o1, !o2, end <= capacity else { throw BlockRequestError.outOfRange }
            out.append((start, len, flags & 1 != 0))
        }
        return out
    }
}
