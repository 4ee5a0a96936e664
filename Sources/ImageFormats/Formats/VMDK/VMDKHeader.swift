// VMDK sparse extent headers: the VMDK4 ("KDMV") header of monolithicSparse, streamOptimized and
// twoGbMaxExtentSparse extents, and the older VMDK3 ("COWD") header of vmfsSparse extents.
//
// VMDK4, little-endian after the big-endian magic: version 4, flags 8, capacity 12 (sectors),
// granularity 20 (sectors per grain), descriptor offset 28 / size 36 (sectors), grain-table
// entries 44, redundant directory 48, directory 56, first grain 64 (sectors), check bytes 73,
// compression 77. A directory at "end" (all ones) means streamOptimized with the real header in
// a footer 1536 bytes before the end of the file. Validation follows QEMU's vmdk_open_vmdk4.
import Glibc

enum VMDK {
    static let magic4: UInt32 = 0x4b44_4d56     // "KDMV" read big-endian
    static let magic3: UInt32 = 0x434f_5744     // "COWD"
    static let flagNLDetect: UInt32 = 1 << 0
    static let flagRGD: UInt32 = 1 << 1
    static let flagZeroGrain: UInt32 = 1 << 2
    static let flagCompress: UInt32 = 1 << 16
    static let flagMarker: UInt32 = 1 << 17
    static let compressionDeflate: UInt16 = 1
    static let gdAtEnd: UInt64 = .max
    static let gteZeroed: UInt32 = 1
    static let sectorSize: UInt64 = 512
    static let descSize = 20 * 512
    static let extentMaxSectors: UInt64 = 1 << 32
    static let headerStructSize = 79  // magic + packed VMDK4Header
}

struct VMDK4Header {
    var version: UInt32 = 1
    var flags: UInt32 = 0
    var capacity: UInt64 = 0
    var granularity: UInt64 = 128
    var descOffset: UInt64 = 0
    var descSize: UInt64 = 0
    var numGTEsPerGT: UInt32 = 512
    var rgdOffset: UInt64 = 0
    var gdOffset: UInt64 = 0
    var grainOffset: UInt64 = 0
    var compressAlgorithm: UInt16 = 0

    /// Parses the header fields from the bytes that follow the magic (offset 4 of the sector).
    init(afterMagic b: [UInt8]) {
        version = b.le32(0); flags = b.le32(4); capacity = b.le64(8); granularity = b.le64(16)
        descOffset = b.le64(24); descSize = b.le64(32); numGTEsPerGT = b.le32(40)
        rgdOffset = b.le64(44); gdOffset = b.le64(52); grainOffset = b.le64(60)
        compressAlgorithm = b.le16(73)
    }

    init() {}

    /// The magic and header as QEMU's vmdk_init_extent writes them (with the check bytes).
    var bytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: VMDK.headerStructSize)
        b.setBE32(0, VMDK.magic4)
        b.setLE32(4, version); b.setLE32(8, flags); b.setLE64(12, capacity); b.setLE64(20, granularity)
        b.setLE64(28, descOffset); b.setLE64(36, descSize); b.setLE32(44, numGTEsPerGT)
        b.setLE64(48, rgdOffset); b.setLE64(56, gdOffset); b.setLE64(64, grainOffset)
        b[73] = 0x0a; b[74] = 0x20; b[75] = 0x0d; b[76] = 0x0a
        b.setLE16(77, compressAlgorithm)
        return b
    }

    var compressed: Bool { compressAlgorithm == VMDK.compressionDeflate }
}

/// Where a sparse extent's tables are, after validation (QEMU's vmdk_add_extent arguments).
struct VMDKSparseLayout {
    var sectors: UInt64
    var l1Offset: UInt64
    var l1BackupOffset: UInt64
    var l1Size: UInt64
    var l2Size: UInt64
    var clusterSectors: UInt64
    var compressed = false
    var hasMarker = false
    var hasZeroGrain = false
    var version: UInt32 = 1

    /// QEMU's vmdk_add_extent checks.
    func validate() throws {
        if clusterSectors > 0x20_0000 {
            throw BlockError(.invalidImage, "Invalid granularity, image may be corrupt", errno: EFBIG)
        }
        if l1Size > 32 * 1024 * 1024 {
            throw BlockError(.invalidImage, "L1 size too big", errno: EFBIG)
        }
    }

    /// VMDK4: QEMU's vmdk_open_vmdk4 checks, in order. `readFooter` gives the 1536 bytes before
    /// the end of the file (streamOptimized footer, end-of-stream marker).
    static func vmdk4(_ header: VMDK4Header, fileSize: UInt64, writable: Bool,
                      readFooter: () throws -> [UInt8]) throws -> VMDKSparseLayout {
        var h = header
        if h.gdOffset == VMDK.gdAtEnd {
            let f = try readFooter()
            guard f.count >= 1536, f.be32(512) == VMDK.magic4, f.le32(8) == 0, f.le32(12) == 3,
                  f.le64(1024) == 0, f.le32(1032) == 0, f.le32(1036) == 0 else {
                throw BlockError.invalid("Invalid footer")
            }
            h = VMDK4Header(afterMagic: Array(f[516..<1024]))
        }
        if h.version > 3 {
            throw BlockError.unsupported("Unsupported VMDK version \(h.version)")
        } else if h.version == 3 && writable && !h.compressed {
            throw BlockError.invalid("VMDK version 3 must be read only")
        }
        if h.numGTEsPerGT > 512 { throw BlockError.invalid("L2 table size too big") }
        let l1EntrySectors = UInt64(h.numGTEsPerGT).multipliedReportingOverflow(by: h.granularity)
        if l1EntrySectors.overflow || l1EntrySectors.partialValue == 0 || l1EntrySectors.partialValue > UInt64(UInt32.max) {
            throw BlockError.invalid("L1 entry size is invalid")
        }
        let l1Size = h.capacity / l1EntrySectors.partialValue + (h.capacity % l1EntrySectors.partialValue == 0 ? 0 : 1)
        if fileSize / 512 < h.grainOffset {
            let bytes = h.grainOffset.multipliedReportingOverflow(by: 512).partialValue
            throw BlockError.invalid("File truncated, expecting at least \(Int64(bitPattern: bytes)) bytes")
        }
        var l = VMDKSparseLayout(sectors: h.capacity, l1Offset: h.gdOffset &<< 9,
                                 l1BackupOffset: h.flags & VMDK.flagRGD != 0 ? h.rgdOffset &<< 9 : 0,
                                 l1Size: l1Size, l2Size: UInt64(h.numGTEsPerGT), clusterSectors: h.granularity)
        try l.validate()
        l.compressed = h.compressed
        l.hasMarker = h.flags & VMDK.flagMarker != 0
        l.hasZeroGrain = h.flags & VMDK.flagZeroGrain != 0
        l.version = h.version
        return l
    }

    /// VMDK3 (COWD, vmfsSparse): header after the magic: version, flags, disk sectors,
    /// granularity, directory offset (sectors), directory size; grain tables of 4096 entries.
    static func vmdk3(_ b: [UInt8]) throws -> VMDKSparseLayout {
        let l = VMDKSparseLayout(sectors: UInt64(b.le32(8)), l1Offset: UInt64(b.le32(16)) << 9, l1BackupOffset: 0,
                                 l1Size: UInt64(b.le32(20)), l2Size: 4096, clusterSectors: UInt64(b.le32(12)))
        try l.validate()
        if l.clusterSectors == 0 { throw BlockError.invalid("Invalid granularity, image may be corrupt") }
        return l
    }
}
