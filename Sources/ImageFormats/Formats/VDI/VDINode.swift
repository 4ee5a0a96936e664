// A VDI image as a block node: a block map (one little-endian u32 per 1 MiB block) maps guest
// blocks to data blocks; unallocated (0xffffffff) and discarded (0xfffffffe) blocks read as zeroes.
//
// Locking (the qcow2 model, simplified): `rw` is held shared by reads and in-place writes and
// exclusively by allocation, so a new block is never read half-written; `metaLock` guards the
// block map and header for the short lookups. Data I/O happens outside `metaLock`.
// Allocation is QEMU's: the next data block (blocks_allocated) is written whole, zero-padded,
// then the header and the changed block-map sector.
import Glibc

public final class VDINode: BlockNode, CheckableNode, @unchecked Sendable {
    public let driverName = "vdi"
    public let file: any BlockNode
    public let isReadOnly: Bool
    var header: VDIHeader
    var bmap: [UInt32]
    let blockSize: UInt64
    let dataOffset: UInt64
    let bmapOffset: UInt64
    public let size: UInt64
    let rw = RWLock()
    let metaLock = NSLockLite()
    private var closed = false

    public var filename: String { file.filename }
    public var children: [BlockChild] { [BlockChild(name: "file", node: file)] }
    var isStatic: Bool { header.imageType == VDI.typeStatic }
    public var hasZeroInit: Bool { isStatic ? file.hasZeroInit : true }

    init(file: any BlockNode, context: OpenContext) throws {
        self.file = file
        isReadOnly = !context.writable
        header = try VDIHeader.parse(try file.read(at: 0, count: VDI.headerSize))
        blockSize = UInt64(header.blockSize)
        dataOffset = UInt64(header.offsetData)
        bmapOffset = UInt64(header.offsetBmap)
        size = roundUp(header.diskSize, VDI.sectorSize)
        let entries = Int(header.blocksInImage)
        let bmapBytes = roundUp(UInt64(entries) * 4, VDI.sectorSize)
        // The map must lie inside the file: a corrupt count never sizes a giant allocation.
        guard bmapOffset + bmapBytes <= file.size else {
            throw BlockError.invalid("VDI block map (\(entries) entries at offset \(bmapOffset)) exceeds the end of the image file")
        }
        let raw = try file.read(at: bmapOffset, count: entries * 4)
        bmap = [UInt32](repeating: 0, count: entries)
        for i in 0..<entries { bmap[i] = raw.le32(i * 4) }
    }

    @inline(__always) func hostOffset(_ entry: UInt32) -> UInt64 { dataOffset + UInt64(entry) * blockSize }

    // MARK: reads

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRequest(offset, UInt64(buffer.count))
        try rw.read {
            var done = 0
            while done < buffer.count {
                let pos = offset + UInt64(done)
                let (entry, run) = mapping(pos, maxLength: UInt64(buffer.count - done))
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + Int(run)])
                if VDI.isAllocated(entry) {
                    try file.read(at: hostOffset(entry) + pos % blockSize, into: part)
                } else {
                    part.initializeMemory(as: UInt8.self, repeating: 0)
                }
                done += Int(run)
            }
        }
    }

    /// The entry at `pos` and how many bytes from `pos` share its kind and are host-contiguous.
    func mapping(_ pos: UInt64, maxLength: UInt64) -> (entry: UInt32, length: UInt64) {
        metaLock.withLock {
            var block = Int(pos / blockSize)
            let entry = bmap[block]
            var length = blockSize - pos % blockSize
            let allocated = VDI.isAllocated(entry)
            var expect = entry
            while length < maxLength && block + 1 < bmap.count {
                block += 1
                let e = bmap[block]
                if allocated {
                    expect &+= 1
                    if e != expect { break }
                } else if VDI.isAllocated(e) { break }
                length += blockSize
            }
            return (entry, min(length, maxLength))
        }
    }

    // MARK: writes

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        try checkRequest(offset, UInt64(buffer.count))
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let inBlock = pos % blockSize
            let n = Int(min(blockSize - inBlock, UInt64(buffer.count - done)))
            let part = UnsafeRawBufferPointer(rebasing: buffer[done..<done + n])
            let block = Int(pos / blockSize)
            let entry = metaLock.withLock { bmap[block] }
            if VDI.isAllocated(entry) {
                try rw.read { try file.write(at: hostOffset(entry) + inBlock, from: part, flags: flags) }
            } else {
                try rw.write { try allocatingWrite(block: block, inBlock: inBlock, part, flags: flags) }
            }
            done += n
        }
    }

    /// Under the exclusive lock: allocate `block` (unless a concurrent writer did) and write.
    private func allocatingWrite(block: Int, inBlock: UInt64, _ part: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        let current = metaLock.withLock { bmap[block] }
        if VDI.isAllocated(current) {
            try file.write(at: hostOffset(current) + inBlock, from: part, flags: flags)
            return
        }
        let newEntry = header.blocksAllocated
        guard newEntry < VDI.maxBlocks else { throw BlockError(.io, "VDI image is full", errno: ENOSPC) }
        let host = hostOffset(newEntry)
        if part.count == Int(blockSize) {
            try file.write(at: host, from: part, flags: [])
        } else {
            var whole = [UInt8](repeating: 0, count: Int(blockSize))
            whole.withUnsafeMutableBytes { dst in
                UnsafeMutableRawBufferPointer(rebasing: dst[Int(inBlock)..<Int(inBlock) + part.count]).copyMemory(from: part)
            }
            try file.write(at: host, bytes: whole)
        }
        let sectorBytes = try metaLock.withLock { () -> (UInt64, [UInt8], [UInt8]) in
            bmap[block] = newEntry
            header.blocksAllocated = newEntry + 1
            // The block-map sector holding this entry.
            let perSector = Int(VDI.sectorSize / 4)
            let first = block / perSector * perSector
            var sector = [UInt8](repeating: 0, count: Int(VDI.sectorSize))
            for i in 0..<perSector where first + i < bmap.count { sector.setLE32(i * 4, bmap[first + i]) }
            return (bmapOffset + UInt64(first) * 4, header.bytes, sector)
        }
        try file.write(at: 0, bytes: sectorBytes.1)
        try file.write(at: sectorBytes.0, bytes: sectorBytes.2)
        if flags.contains(.fua) { try file.flush() }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        try checkRequest(offset, length)
        var done: UInt64 = 0
        while done < length {
            let pos = offset + done
            let (entry, run) = mapping(pos, maxLength: length - done)
            // Unallocated blocks already read as zeroes.
            if VDI.isAllocated(entry) {
                var f = flags
                f.remove(.noFallback)
                try rw.read { try file.writeZeroes(at: hostOffset(entry) + pos % blockSize, length: run, flags: f) }
            }
            done += run
        }
    }

    public func discard(at offset: UInt64, length: UInt64) throws {}

    public func flush() throws {
        if !isReadOnly { try file.flush() }
    }

    public func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws {
        throw BlockError(.unsupported, "Image format driver does not support resize", errno: ENOTSUP)
    }

    // MARK: status, info, check

    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        let (entry, run) = mapping(offset, maxLength: length)
        guard VDI.isAllocated(entry) else { return BlockExtent(flags: .zero, length: run) }
        var flags: BlockStatusFlags = [.data, .offsetValid]
        if isStatic { flags.insert(.recurse) }
        return BlockExtent(flags: flags, length: run, hostOffset: hostOffset(entry) + offset % blockSize, file: file)
    }

    public func allocatedHostBytes() -> UInt64? { file.allocatedHostBytes() }
    public func driverInfo() -> DriverInfo? { DriverInfo(clusterSize: blockSize, isDirty: false) }

    /// QEMU's vdi_co_check: every allocated entry in range and used once; the allocated count right.
    public func check(fix: CheckFix, log: (String) -> Void) throws -> CheckResult {
        if !fix.isEmpty { throw BlockError(.unsupported, "This image format does not support checks", errno: ENOTSUP) }
        var r = CheckResult()
        let (map, allocatedInHeader) = metaLock.withLock { (bmap, header.blocksAllocated) }
        let n = map.count
        var used = [UInt32](repeating: VDI.unallocated, count: n)
        var allocated: UInt32 = 0
        for block in 0..<n {
            let e = map[block]
            guard VDI.isAllocated(e) else { continue }
            if Int(e) < n {
                allocated += 1
                if !VDI.isAllocated(used[Int(e)]) {
                    used[Int(e)] = e
                } else {
                    log("ERROR: block index \(used[Int(e)]) also used by \(e)")
                    r.corruptions += 1
                }
            } else {
                log("ERROR: block index \(block) too large, is \(e)")
                r.corruptions += 1
            }
        }
        if allocated != allocatedInHeader {
            log("ERROR: allocated blocks mismatch, is \(allocated), should be \(allocatedInHeader)")
            r.corruptions += 1
        }
        return r
    }

    public func close() throws {
        let first = metaLock.withLock { () -> Bool in
            if closed { return false }
            closed = true
            return true
        }
        guard first else { return }
        if !isReadOnly { try? file.flush() }
        try file.close()
    }
}
