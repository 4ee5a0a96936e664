// A VHD (vpc) image as a block node. Fixed disks are the raw bytes followed by a footer; dynamic
// disks map 2 MiB blocks through the BAT (big-endian u32 sector numbers), each block preceded by
// a sector bitmap that, like QEMU, we ignore on reads (an allocated block is data throughout) and
// fill with ones when we allocate or first write a block.
//
// Locking as in VDINode: `rw` shared for reads and in-place writes, exclusive for allocation;
// `metaLock` for the BAT lookups. Allocation is QEMU's alloc_block: bitmap at the old footer
// position, the footer moved past the new block, then the BAT entry.
import Glibc

public final class VPCNode: BlockNode, @unchecked Sendable {
    public let driverName = "vpc"
    public let file: any BlockNode
    public let isReadOnly: Bool
    let footer: VPCFooter
    let isFixed: Bool
    public let size: UInt64
    // Dynamic disks only.
    let blockSize: UInt64
    let bitmapSize: UInt64
    let batOffset: UInt64
    var bat: [UInt32]
    var freeDataBlockOffset: UInt64
    var lastBitmapOffset: UInt64 = .max
    let rw = RWLock()
    let metaLock = NSLockLite()
    private var closed = false

    public var filename: String { file.filename }
    public var children: [BlockChild] { [BlockChild(name: "file", node: file)] }
    public var hasZeroInit: Bool { isFixed ? file.hasZeroInit : true }

    init(file: any BlockNode, options: BlockOptions, context: OpenContext) throws {
        self.file = file
        isReadOnly = !context.writable
        let fileSize = file.size
        var f = VPCFooter(bytes: try file.read(at: 0, count: VPC.footerSize))
        var fixed = false
        if !f.isConectix {
            guard fileSize >= UInt64(VPC.footerSize) else {
                throw BlockError.invalid("File too small for a VHD header")
            }
            f = VPCFooter(bytes: try file.read(at: fileSize - UInt64(VPC.footerSize), count: VPC.footerSize))
            guard f.isConectix, f.diskType == VPC.fixed else { throw BlockError.invalid("invalid VPC image") }
            fixed = true
        }
        guard f.checksumIsValid else { throw BlockError.invalid("Incorrect header checksum") }
        let calc = options.string("force_size_calc")
        if let c = calc, c != "chs", c != "current_size" {
            throw BlockError(.invalidArgument, "Invalid size calculation mode: \(c)", errno: EINVAL)
        }
        let sectors = f.totalSectors(forceCalc: calc)
        guard sectors <= VPC.maxSectors else { throw BlockError(.invalidImage, "File too large", errno: EFBIG) }
        footer = f
        isFixed = fixed
        size = sectors * 512

        if fixed {
            blockSize = 0; bitmapSize = 0; batOffset = 0; bat = []; freeDataBlockOffset = 0
            return
        }
        let dyn = VPCDynHeader(bytes: try file.read(at: f.dataOffset, count: VPC.dynHeaderSize))
        guard dyn.isCxsparse else { throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL) }
        let bs = UInt64(dyn.blockSize)
        guard bs >= 512, bs & (bs - 1) == 0 else { throw BlockError.invalid("Invalid block size \(dyn.blockSize)") }
        blockSize = bs
        bitmapSize = roundUp(bs / (8 * 512), 512)
        let entries = UInt64(dyn.maxTableEntries)
        guard size / bs <= 0xffff_ffff else { throw BlockError.invalid("Too many blocks") }
        guard entries * bs >= size else { throw BlockError.invalid("Page table too small") }
        guard entries <= UInt64(Int32.max / 4) else {
            throw BlockError.invalid("Max Table Entries too large (\(entries))")
        }
        batOffset = dyn.tableOffset
        let tableBytes = entries * 4
        var free = roundUp(batOffset &+ tableBytes, 512)
        // The table must lie inside the file before it sizes a read (QEMU errors the same way after).
        guard batOffset <= fileSize, free <= fileSize else {
            throw BlockError.invalid("block-vpc: free_data_block_offset points after the end of file. The image has been truncated.")
        }
        let raw = try file.read(at: batOffset, count: Int(tableBytes))
        bat = [UInt32](repeating: 0, count: Int(entries))
        for i in 0..<Int(entries) {
            let e = raw.be32(i * 4)
            bat[i] = e
            if e != VPC.unallocated {
                let next = 512 * UInt64(e) + bitmapSize + bs
                if next > free { free = next }
            }
        }
        guard free <= fileSize else {
            throw BlockError.invalid("block-vpc: free_data_block_offset points after the end of file. The image has been truncated.")
        }
        freeDataBlockOffset = free
    }

    /// The BAT entry covering `pos` and the run length of the same kind (allocated runs stop at
    /// the block end: a bitmap sits between blocks).
    func mapping(_ pos: UInt64, maxLength: UInt64) -> (entry: UInt32, length: UInt64) {
        metaLock.withLock {
            var index = Int(pos / blockSize)
            let entry = index < bat.count ? bat[index] : VPC.unallocated
            var length = blockSize - pos % blockSize
            if entry == VPC.unallocated {
                while length < maxLength {
                    index += 1
                    if index < bat.count && bat[index] != VPC.unallocated { break }
                    length += blockSize
                }
            }
            return (entry, min(length, maxLength))
        }
    }

    @inline(__always) func hostOffset(_ entry: UInt32, _ pos: UInt64) -> UInt64 {
        512 * UInt64(entry) + bitmapSize + pos % blockSize
    }

    // MARK: I/O

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRequest(offset, UInt64(buffer.count))
        if isFixed { return try file.read(at: offset, into: buffer) }
        try rw.read {
            var done = 0
            while done < buffer.count {
                let pos = offset + UInt64(done)
                let (entry, run) = mapping(pos, maxLength: UInt64(buffer.count - done))
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + Int(run)])
                if entry == VPC.unallocated {
                    part.initializeMemory(as: UInt8.self, repeating: 0)
                } else {
                    try file.read(at: hostOffset(entry, pos), into: part)
                }
                done += Int(run)
            }
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        try checkRequest(offset, UInt64(buffer.count))
        if isFixed { return try file.write(at: offset, from: buffer, flags: flags) }
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let n = Int(min(blockSize - pos % blockSize, UInt64(buffer.count - done)))
            let part = UnsafeRawBufferPointer(rebasing: buffer[done..<done + n])
            let (entry, _) = mapping(pos, maxLength: 1)
            if entry != VPC.unallocated && metaLock.withLock({ lastBitmapOffset == 512 * UInt64(entry) }) {
                try rw.read { try file.write(at: hostOffset(entry, pos), from: part, flags: flags) }
            } else {
                try rw.write { try slowWrite(pos, part, flags: flags) }
            }
            done += n
        }
    }

    /// Under the exclusive lock: allocate the block if needed, mark its bitmap fully used once.
    private func slowWrite(_ pos: UInt64, _ part: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        let index = Int(pos / blockSize)
        var entry = metaLock.withLock { bat[index] }
        let ones = [UInt8](repeating: 0xff, count: Int(bitmapSize))
        if entry == VPC.unallocated {
            let blockStart = freeDataBlockOffset
            entry = UInt32(blockStart / 512)
            try file.write(at: blockStart, bytes: ones)
            freeDataBlockOffset = blockStart + blockSize + bitmapSize
            try file.write(at: freeDataBlockOffset, bytes: footer.bytes)
            var be = [UInt8](repeating: 0, count: 4)
            be.setBE32(0, entry)
            try file.write(at: batOffset + UInt64(index) * 4, bytes: be)
            metaLock.withLock {
                bat[index] = entry
                lastBitmapOffset = blockStart
            }
        } else if metaLock.withLock({ lastBitmapOffset != 512 * UInt64(entry) }) {
            try file.write(at: 512 * UInt64(entry), bytes: ones)
            metaLock.withLock { lastBitmapOffset = 512 * UInt64(entry) }
        }
        try file.write(at: hostOffset(entry, pos), from: part, flags: flags)
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        try checkRequest(offset, length)
        if isFixed { return try file.writeZeroes(at: offset, length: length, flags: flags) }
        var done: UInt64 = 0
        while done < length {
            let pos = offset + done
            let (entry, run) = mapping(pos, maxLength: length - done)
            if entry != VPC.unallocated {
                var f = flags
                f.remove(.noFallback)
                try rw.read { try file.writeZeroes(at: hostOffset(entry, pos), length: run, flags: f) }
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

    // MARK: status, info

    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        // QEMU 7.2 answers data for a fixed disk and lets the file tell where its holes are.
        if isFixed { return BlockExtent(flags: [.data, .offsetValid, .recurse], length: length, hostOffset: offset, file: file) }
        let (entry, run) = mapping(offset, maxLength: length)
        if entry == VPC.unallocated { return BlockExtent(flags: .zero, length: run) }
        return BlockExtent(flags: [.data, .offsetValid], length: run, hostOffset: hostOffset(entry, offset), file: file)
    }

    public func allocatedHostBytes() -> UInt64? { file.allocatedHostBytes() }
    public func driverInfo() -> DriverInfo? { DriverInfo(clusterSize: isFixed ? nil : blockSize, isDirty: false) }

    public func close() throws {
        let first = metaLock.withLock { () -> Bool in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        if !isReadOnly { try? file.flush() }
        try file.close()
    }
}
