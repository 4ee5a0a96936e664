// The vhdx driver's entry points: probe ("vhdxfile"), open, -o options and creation, QEMU's
// vhdx_co_create layout: file identifier, two headers, two region tables, the log at 1 MiB, the
// BAT after the log, the metadata after the BAT, data from BAT end + 5 MiB. Blocks start in the
// ZERO state by default (block_state_zero); fixed images are preallocated.
import Glibc

public enum VHDXFormat: FormatDriver {
    public static let name = "vhdx"
    /// The creator field of the file identifier (UTF-16, diagnostic only).
    static let creator = "imgtool (vmtoolkit)"

    public static func probe(_ head: [UInt8], filename: String) -> Int {
        head.count >= 8 && Array(head[0..<8]) == VHDX.fileSignature ? 100 : 0
    }

    public static func open(file: any BlockNode, options: BlockOptions, context: OpenContext, probed: Bool) throws -> any BlockNode {
        try VHDXNode(file: file, context: context)
    }

    public static let createOptions: [CreateOptionSpec] = [
        CreateOptionSpec("size", .size, "Virtual disk size; max of 64TB."),
        CreateOptionSpec("log_size", .size, "Log size; min 1MB.", default: "1048576"),
        CreateOptionSpec("block_size", .size, "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.", default: "0"),
        CreateOptionSpec("subformat", .string, "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'."),
        CreateOptionSpec("block_state_zero", .bool, "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using 'qemu-img convert' with subformat=dynamic."),
    ]

    public static func create(filename: String, size requested: UInt64, options: BlockOptions) throws {
        func fail(_ m: String) -> BlockError { BlockError(.invalidArgument, m, errno: EINVAL) }
        let size = roundUp(requested, 512)
        var logSize = roundUp(try options.size("log_size") ?? VHDX.defaultLogSize, VHDX.mib)
        var blockSize = roundUp(try options.size("block_size") ?? 0, VHDX.mib)
        if blockSize > VHDX.maxBlockSize { blockSize = VHDX.maxBlockSize }
        let sub = options.string("subformat") ?? "dynamic"
        guard sub == "dynamic" || sub == "fixed" else { throw fail("Parameter 'subformat' does not accept value '\(sub)'") }
        let fixed = sub == "fixed"
        let zeroBlocks = try options.bool("block_state_zero") ?? true
        if size > VHDX.maxImageSize { throw fail("Image size too large; max of 64TB") }
        if logSize > UInt64(UInt32.max) { throw fail("Log size must be smaller than 4 GB") }
        if logSize < VHDX.mib { logSize = VHDX.mib }
        if blockSize == 0 {
            if size > 32 << 40 { blockSize = 64 << 20 }
            else if size > 100 << 30 { blockSize = 32 << 20 }
            else if size > 1 << 30 { blockSize = 16 << 20 }
            else { blockSize = 8 << 20 }
        }
        if blockSize & (blockSize - 1) != 0 { throw fail("Block size must be a power of two") }

        try FileProtocol.create(filename: filename, size: 0, preallocation: .off)
        let f = try PosixFile.open(filename, flags: O_RDWR)
        defer { f.close() }
        func put(_ b: [UInt8], _ at: UInt64) throws { try b.withUnsafeBytes { try f.write(at: at, from: $0) } }

        // (A) file identifier.
        var ident = VHDX.fileSignature
        for u in creator.utf16 { ident += [UInt8(truncatingIfNeeded: u), UInt8(u >> 8)] }
        try put(ident, 0)
        // (B), (C) headers, sequence numbers n and n+1.
        var h = VHDXHeader.make(sequence: UInt64(UInt32.random(in: 0...UInt32.max)), logLength: UInt32(logSize))
        try put(h.sealed, VHDX.header1Offset)
        h.sequence += 1
        try put(h.sealed, VHDX.header2Offset)

        // (D), (E) region tables; (G) BAT.
        let meta = VHDXMetadata(blockSize: UInt32(blockSize), paramsFlags: fixed ? 1 : 0, virtualSize: size,
                                logicalSectorSize: 512, physicalSectorSize: 512)
        let batLength = roundUp(meta.batEntries * 8, VHDX.mib)
        let batOffset = roundUp(VHDX.headerSectionEnd + logSize, VHDX.mib)
        let mdOffset = roundUp(batOffset + batLength, VHDX.mib)
        var rt = [UInt8](repeating: 0, count: VHDX.headerBlockSize)
        rt.setLE32(0, VHDX.regionSignature)
        rt.setLE32(8, 2)
        rt.replaceSubrange(16..<32, with: VHDX.batGUID)
        rt.setLE64(32, batOffset); rt.setLE32(40, UInt32(batLength))
        rt.replaceSubrange(48..<64, with: VHDX.metadataGUID)
        rt.setLE64(64, mdOffset); rt.setLE32(72, UInt32(VHDX.mib))   // QEMU leaves "required" clear
        VHDX.setChecksum(&rt, at: 4)

        let dataStart = batOffset + batLength + 5 * VHDX.mib
        try f.truncate(fixed ? dataStart + size : dataStart)
        let state = zeroBlocks ? VHDX.zero : (fixed ? VHDX.fullyPresent : VHDX.notPresent)
        if fixed || zeroBlocks {
            var bat = [UInt8](repeating: 0, count: Int(batLength))
            var block: UInt64 = 0
            while block * blockSize < size {
                let off = roundUp(dataStart + block * blockSize, VHDX.mib)
                let entry = state == VHDX.fullyPresent ? off | state : state
                bat.setLE64(meta.batIndex(block: block) * 8, entry)
                block += 1
            }
            try put(bat, batOffset)
        }
        try put(rt, VHDX.regionTableOffset)
        try put(rt, VHDX.regionTable2Offset)

        // (H) metadata table and items.
        var md = [UInt8](repeating: 0, count: VHDX.headerBlockSize)
        md.replaceSubrange(0..<8, with: VHDX.metadataSignature)
        md.setLE16(10, 5)
        let items: [([UInt8], UInt32, UInt32)] = [
            (VHDX.fileParamGUID, 8, 4), (VHDX.virtualSizeGUID, 8, 6), (VHDX.page83GUID, 16, 6),
            (VHDX.logicalSectorGUID, 4, 6), (VHDX.physSectorGUID, 4, 6),
        ]
        var itemOffset: UInt32 = 64 << 10
        for (i, (guid, len, flags)) in items.enumerated() {
            let o = 32 + i * 32
            md.replaceSubrange(o..<o + 16, with: guid)
            md.setLE32(o + 16, itemOffset); md.setLE32(o + 20, len); md.setLE32(o + 24, flags)
            itemOffset += len
        }
        try put(md, mdOffset)
        var values = [UInt8](repeating: 0, count: 40)
        values.setLE32(0, UInt32(blockSize))
        values.setLE32(4, fixed ? 1 : 0)
        values.setLE64(8, size)
        values.replaceSubrange(16..<32, with: VHDX.randomGUID())
        values.setLE32(32, 512)
        values.setLE32(36, 512)
        try put(values, mdOffset + (64 << 10))
    }
}
