// Parsing one virtio-blk request from a descriptor chain (virtio 1.x section 5.2.6), in the style of
// Firecracker's `Request::parse`: the chain is checked before any I/O and the result is a typed
// request or a typed error, never a trap.
//
// Layout: a 16-byte header (type, reserved, sector) in device-readable buffers, then data (readable
// for writes, writable for reads), then a 1-byte status in the last writable buffer. Buffers may
// split these anywhere; `ChainBytes` walks byte ranges across them. Nothing here allocates: the
// request refers to the chain's buffers by position.

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

/// Byte ranges of a run of chain buffers, as host memory.
public enum ChainBytes {
    /// Calls `body` with the host pieces of bytes [offset, offset+length) of `buffers`, merging
    /// pieces that are adjacent in host memory; returns false when the buffers are too short.
    @inline(__always)
    public static func forEach(_ buffers: ArraySlice<VirtqBuffer>, from offset: Int, length: Int,
                               _ body: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows -> Bool {
        var skip = offset, left = length
        var runStart: UnsafeMutableRawPointer? = nil
        var runLength = 0
        for b in buffers where left > 0 {
            if skip >= b.length { skip -= b.length; continue }
            let n = min(b.length - skip, left)
            let p = b.host + skip
            if let r = runStart, r + runLength == p {
                runLength += n
            } else {
                if let r = runStart { try body(UnsafeMutableRawBufferPointer(start: r, count: runLength)) }
                runStart = p
                runLength = n
            }
            left -= n
            skip = 0
        }
        if let r = runStart, runLength > 0 { try body(UnsafeMutableRawBufferPointer(start: r, count: runLength)) }
        return left == 0
    }

    /// Copies bytes [offset, offset+out.count) of `buffers` into `out`; false when too short.
    public static func copy(_ buffers: ArraySlice<VirtqBuffer>, from offset: Int, into out: UnsafeMutableRawBufferPointer) -> Bool {
        var done = 0
        return forEach(buffers, from: offset, length: out.count) { piece in
            (out.baseAddress! + done).copyMemory(from: piece.baseAddress!, byteCount: piece.count)
            done += piece.count
        }
    }

    public static func count(_ buffers: ArraySlice<VirtqBuffer>) -> Int {
        var n = 0
        for b in buffers { n += b.length }
        return n
    }
}

public struct BlockRequest {
    public var type: BlockRequestType
    public var sector: UInt64
    /// Data bytes (reads: writable minus the status byte; writes: readable minus the header).
    public var dataLength: Int
    /// Where the status byte goes.
    public var status: UnsafeMutableRawPointer

    public static let headerSize = 16
    public static let sectorSize: UInt64 = 512

    /// Parses the chain; `capacity` is the disk size in bytes. A chain with no writable byte cannot
    /// even carry a status and is reported as `.noStatus` (the device returns it with length 0).
    public static func parse(_ chain: VirtqChain, capacity: UInt64) throws -> BlockRequest {
        let readable = chain.readable, writable = chain.writableBuffers
        guard let last = writable.last else { throw BlockRequestError.noStatus }
        let status = last.host + (last.length - 1)
        var header: (UInt64, UInt64) = (0, 0)
        let ok = withUnsafeMutableBytes(of: &header) { ChainBytes.copy(readable, from: 0, into: $0) }
        guard ok else { throw BlockRequestError.shortHeader }
        let rawType = UInt32(truncatingIfNeeded: UInt64(littleEndian: header.0))
        let sector = UInt64(littleEndian: header.1)
        guard let type = BlockRequestType(rawValue: rawType) else { throw BlockRequestError.unsupported(rawType) }
        var req = BlockRequest(type: type, sector: sector, dataLength: 0, status: status)
        switch type {
        case .read, .write:
            req.dataLength = type == .read ? ChainBytes.count(writable) - 1 : ChainBytes.count(readable) - headerSize
            guard UInt64(req.dataLength) % sectorSize == 0 else { throw BlockRequestError.misaligned }
            let (start, o1) = sector.multipliedReportingOverflow(by: sectorSize)
            let (end, o2) = start.addingReportingOverflow(UInt64(req.dataLength))
            guard !o1, !o2, end <= capacity else { throw BlockRequestError.outOfRange }
        case .getID:
            req.dataLength = ChainBytes.count(writable) - 1
        case .discard, .writeZeroes:
            req.dataLength = ChainBytes.count(readable) - headerSize
            guard req.dataLength > 0, req.dataLength % 16 == 0 else { throw BlockRequestError.badSegments }
        case .flush:
            break
        }
        return req
    }

    /// Discard / write-zeroes segments: (byte offset, byte length, unmap), each checked.
    public func segments(in chain: VirtqChain, capacity: UInt64, maxSectors: UInt32) throws -> [(UInt64, UInt64, Bool)] {
        var out: [(UInt64, UInt64, Bool)] = []
        for i in 0..<(dataLength / 16) {
            var seg: (UInt64, UInt32, UInt32) = (0, 0, 0)
            let ok = withUnsafeMutableBytes(of: &seg) {
                ChainBytes.copy(chain.readable, from: BlockRequest.headerSize + 16 * i, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<16]))
            }
            guard ok else { throw BlockRequestError.badSegments }
            let sector = UInt64(littleEndian: seg.0), n = UInt32(littleEndian: seg.1), flags = UInt32(littleEndian: seg.2)
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
