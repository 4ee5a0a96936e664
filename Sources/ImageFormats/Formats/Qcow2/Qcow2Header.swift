// The qcow2 header: parsing with every field validated before use, and writing it back the way QEMU
// does (qcow2_update_header), keeping unknown header fields and unknown extensions.
//
// Limits are QEMU's: cluster size 512 B..2 MiB, L1 table up to 32 MiB, refcount table up to 8 MiB,
// 65536 snapshots, backing file names up to 1023 bytes. A number that would size an allocation or a
// loop is checked against these and against the file size before anything is read with it.
import Glibc

enum Qcow2 {
    static let magic: UInt32 = 0x5146_49FB   // "QFI\xfb"
    static let minClusterBits: UInt32 = 9
    static let maxClusterBits: UInt32 = 21
    static let maxL1Bytes: UInt64 = 32 << 20
    static let maxRefcountTableBytes: UInt64 = 8 << 20
    static let maxSnapshots: UInt32 = 65536
    static let headerStructSize = 112          // sizeof(QCowHeader): 104 + compression_type + padding
    static let v2HeaderSize = 72
    static let maxBackingFileName = 1023

    // Incompatible feature bits.
    static let incompatDirty: UInt64 = 1 << 0
    static let incompatCorrupt: UInt64 = 1 << 1
    static let incompatDataFile: UInt64 = 1 << 2
    static let incompatCompression: UInt64 = 1 << 3
    static let incompatExtendedL2: UInt64 = 1 << 4
    static let incompatKnown: UInt64 = 0x1F
    // Compatible and autoclear bits.
    static let compatLazyRefcounts: UInt64 = 1 << 0
    static let autoclearBitmaps: UInt64 = 1 << 0
    static let autoclearDataFileRaw: UInt64 = 1 << 1
    static let autoclearKnown: UInt64 = 0x3

    // Header extension magics.
    static let extEnd: UInt32 = 0
    static let extBackingFormat: UInt32 = 0xE279_2ACA
    static let extFeatureTable: UInt32 = 0x6803_F857
    static let extBitmaps: UInt32 = 0x2385_2875
    static let extCryptoHeader: UInt32 = 0x0537_BE77
    static let extDataFile: UInt32 = 0x4441_5441

    // L1/L2/refcount table entry masks.
    static let l1OffsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    static let l2OffsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    static let refTableOffsetMask: UInt64 = 0xFFFF_FFFF_FFFF_FE00
    static let oflagCopied: UInt64 = 1 << 63
    static let oflagCompressed: UInt64 = 1 << 62
    static let oflagZero: UInt64 = 1 << 0
}

struct Qcow2Feature: Equatable {
    var type: UInt8    // 0 incompatible, 1 compatible, 2 autoclear
    var bit: UInt8
    var name: String
}

struct Qcow2Header {
    var version: UInt32 = 3
    var backingFileOffset: UInt64 = 0
    var backingFileSize: UInt32 = 0
    var clusterBits: UInt32 = 16
    var size: UInt64 = 0
    var cryptMethod: UInt32 = 0
    var l1Size: UInt32 = 0
    var l1TableOffset: UInt64 = 0
    var refcountTableOffset: UInt64 = 0
    var refcountTableClusters: UInt32 = 0
    var nbSnapshots: UInt32 = 0
    var snapshotsOffset: UInt64 = 0
    var incompatibleFeatures: UInt64 = 0
    var compatibleFeatures: UInt64 = 0
    var autoclearFeatures: UInt64 = 0
    var refcountOrder: UInt32 = 4
    var headerLength: UInt32 = UInt32(Qcow2.headerStructSize)
    var compressionType: UInt8 = 0
    /// Bytes of header fields newer than we know (between our struct and header_length), kept as is.
    var unknownHeaderFields: [UInt8] = []

    // Header extensions.
    var backingFormat: String?
    var dataFile: String?
    var featureTable: [Qcow2Feature] = []
    var bitmaps: (count: UInt32, directorySize: UInt64, directoryOffset: UInt64)?
    var cryptoHeader: (offset: UInt64, length: UInt64)?
    var unknownExtensions: [(magic: UInt32, data: [UInt8])] = []
    var backingFile: String?

    var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    var refcountBits: UInt64 { 1 << UInt64(refcountOrder) }
    var extendedL2: Bool { incompatibleFeatures & Qcow2.incompatExtendedL2 != 0 }
    var hasDataFile: Bool { incompatibleFeatures & Qcow2.incompatDataFile != 0 }
    var dataFileRaw: Bool { autoclearFeatures & Qcow2.autoclearDataFileRaw != 0 }
    var lazyRefcounts: Bool { compatibleFeatures & Qcow2.compatLazyRefcounts != 0 }
    var isDirty: Bool { incompatibleFeatures & Qcow2.incompatDirty != 0 }
    var isCorrupt: Bool { incompatibleFeatures & Qcow2.incompatCorrupt != 0 }
    /// Bytes per L2 entry (16 with extended L2: entry + subcluster bitmap).
    var l2EntrySize: UInt64 { extendedL2 ? 16 : 8 }
    var l2Entries: UInt64 { clusterSize / l2EntrySize }
    var subclustersPerCluster: UInt64 { extendedL2 ? 32 : 1 }
    var subclusterSize: UInt64 { clusterSize / subclustersPerCluster }

    /// L1 entries needed for a virtual size (QEMU's size_to_l1).
    static func l1EntriesNeeded(size: UInt64, clusterBits: UInt32, l2EntrySize: UInt64) -> UInt64 {
        let shift = UInt64(clusterBits) + UInt64(clusterBits) - UInt64(l2EntrySize == 16 ? 4 : 3)
        guard shift < 64 else { return size == 0 ? 0 : 1 }
        let per = UInt64(1) << shift
        return size / per + (size % per == 0 ? 0 : 1)
    }

    // MARK: parsing

    /// Parses and validates a header. `read` fetches bytes of the image file (zero past its end);
    /// `fileSize` bounds every table. `writable` enables the checks QEMU makes only for writers.
    static func parse(read: (UInt64, Int) throws -> [UInt8], fileSize: UInt64, writable: Bool,
                      repairing: Bool) throws -> Qcow2Header
    {
        let b = try read(0, Qcow2.headerStructSize)
        var h = Qcow2Header()
        guard b.be32(0) == Qcow2.magic else { throw BlockError.invalid("Image is not in qcow2 format") }
        h.version = b.be32(4)
        guard h.version == 2 || h.version == 3 else {
            throw BlockError.unsupported("Unsupported qcow2 version \(h.version)")
        }
        h.backingFileOffset = b.be64(8)
        h.backingFileSize = b.be32(16)
        h.clusterBits = b.be32(20)
        guard h.clusterBits >= Qcow2.minClusterBits && h.clusterBits <= Qcow2.maxClusterBits else {
            throw BlockError.invalid("Unsupported cluster size: 2^\(h.clusterBits)")
        }
        h.size = b.be64(24)
        h.cryptMethod = b.be32(32)
        h.l1Size = b.be32(36)
        h.l1TableOffset = b.be64(40)
        h.refcountTableOffset = b.be64(48)
        h.refcountTableClusters = b.be32(56)
        h.nbSnapshots = b.be32(60)
        h.snapshotsOffset = b.be64(64)
        if h.version == 2 {
            h.incompatibleFeatures = 0
            h.compatibleFeatures = 0
            h.autoclearFeatures = 0
            h.refcountOrder = 4
            h.headerLength = UInt32(Qcow2.v2HeaderSize)
        } else {
            h.incompatibleFeatures = b.be64(72)
            h.compatibleFeatures = b.be64(80)
            h.autoclearFeatures = b.be64(88)
            h.refcountOrder = b.be32(96)
            h.headerLength = b.be32(100)
            if h.headerLength < 104 { throw BlockError.invalid("qcow2 header too short") }
            if UInt64(h.headerLength) > h.clusterSize { throw BlockError.invalid("qcow2 header exceeds cluster size") }
            if h.headerLength > 104 { h.compressionType = b[104] }
            if Int(h.headerLength) > Qcow2.headerStructSize {
                h.unknownHeaderFields = try read(UInt64(Qcow2.headerStructSize), Int(h.headerLength) - Qcow2.headerStructSize)
            }
        }
        if h.backingFileOffset > h.clusterSize { throw BlockError.invalid("Invalid backing file offset") }
        let extEnd = h.backingFileOffset != 0 ? h.backingFileOffset : h.clusterSize

        // Compression type (validate_compression_type).
        switch h.compressionType {
        case 0:
            if h.incompatibleFeatures & Qcow2.incompatCompression != 0 {
                throw BlockError.invalid("qcow2: Compression type incompatible feature bit must not be set")
            }
        case 1:
            if h.incompatibleFeatures & Qcow2.incompatCompression == 0 {
                throw BlockError.invalid("qcow2: Compression type incompatible feature bit must be set")
            }
        default:
            throw BlockError.unsupported("qcow2: unknown compression type: \(h.compressionType)")
        }
        if h.refcountOrder > 6 {
            throw BlockError.invalid("Reference count entry width too large; may not exceed 64 bits")
        }

        try h.parseExtensions(read: read, start: UInt64(h.headerLength), end: extEnd)

        let unknown = h.incompatibleFeatures & ~Qcow2.incompatKnown
        if unknown != 0 { throw BlockError.unsupported("Unsupported qcow2 feature(s): \(h.describeUnknown(unknown))") }
        if h.isCorrupt && writable && !repairing {
            throw BlockError(.corrupt, "qcow2: Image is corrupt; cannot be opened read/write", errno: EACCES)
        }
        if h.extendedL2 && h.clusterBits < 14 {
            throw BlockError.invalid("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
        }

        // Tables: sizes against QEMU's limits, offsets aligned, and inside the file.
        let cs = h.clusterSize
        if h.refcountTableClusters == 0 && !repairing {
            throw BlockError.invalid("Image does not contain a reference count table")
        }
        try validateTable(offset: h.refcountTableOffset, entries: UInt64(h.refcountTableClusters) * (cs / 8), entrySize: 8,
                          maxBytes: Qcow2.maxRefcountTableBytes, name: "Reference count table", clusterSize: cs, fileSize: fileSize)
        if h.nbSnapshots > Qcow2.maxSnapshots { throw BlockError.invalid("Snapshot table too large") }
        try validateTable(offset: h.snapshotsOffset, entries: UInt64(h.nbSnapshots), entrySize: 40,
                          maxBytes: 40 * UInt64(Qcow2.maxSnapshots), name: "Snapshot table", clusterSize: cs, fileSize: fileSize)
        if UInt64(h.l1Size) > Qcow2.maxL1Bytes / 8 { throw BlockError.invalid("Active L1 table too large") }
        let needed = l1EntriesNeeded(size: h.size, clusterBits: h.clusterBits, l2EntrySize: h.l2EntrySize)
        if needed > UInt64(Int32.max) { throw BlockError.invalid("Image is too big") }
        if UInt64(h.l1Size) < needed { throw BlockError.invalid("L1 table is too small") }
        try validateTable(offset: h.l1TableOffset, entries: UInt64(h.l1Size), entrySize: 8,
                          maxBytes: Qcow2.maxL1Bytes, name: "Active L1 table", clusterSize: cs, fileSize: fileSize)

        switch h.cryptMethod {
        case 0: break
        case 1, 2:
            throw BlockError.unsupported("Encrypted qcow2 images (\(h.cryptMethod == 1 ? "AES" : "LUKS")) are not supported")
        default:
            throw BlockError.invalid("Unsupported encryption method: \(h.cryptMethod)")
        }

        if h.backingFileOffset != 0 {
            let len = UInt64(h.backingFileSize)
            if len > min(UInt64(Qcow2.maxBackingFileName), cs - h.backingFileOffset) || len >= 1024 {
                throw BlockError.invalid("Backing file name too long")
            }
            let name = try read(h.backingFileOffset, Int(len))
            h.backingFile = String(decoding: name, as: UTF8.self)
        }
        if h.dataFileRaw && !h.hasDataFile && writable {
            // QEMU drops the meaningless bit when it rewrites the header.
            h.autoclearFeatures &= ~Qcow2.autoclearDataFileRaw
        }
        return h
    }

    /// QEMU's qcow2_validate_table, plus: the table must lie inside the image file.
    static func validateTable(offset: UInt64, entries: UInt64, entrySize: UInt64, maxBytes: UInt64, name: String,
                              clusterSize: UInt64, fileSize: UInt64) throws {
        if entries > maxBytes / entrySize { throw BlockError.invalid("\(name) too large") }
        let bytes = entries * entrySize
        if UInt64(Int64.max) - bytes < offset || offset % clusterSize != 0 {
            throw BlockError.invalid("\(name) offset invalid")
        }
        if entries > 0 && offset + bytes > fileSize {
            throw BlockError.invalid("\(name) at offset \(offset) (\(bytes) bytes) exceeds the end of the image file (\(fileSize) bytes)")
        }
    }

    mutating func parseExtensions(read: (UInt64, Int) throws -> [UInt8], start: UInt64, end: UInt64) throws {
        var offset = start
        while offset < end {
            guard end - offset >= 8 else { throw BlockError.invalid("Header extension too large") }
            let e = try read(offset, 8)
            let magic = e.be32(0)
            let len = UInt64(e.be32(4))
            offset += 8
            if offset > end || len > end - offset { throw BlockError.invalid("Header extension too large") }
            switch magic {
            case Qcow2.extEnd:
                return
            case Qcow2.extBackingFormat:
                if len >= 16 {
                    throw BlockError.invalid("ERROR: ext_backing_format: len=\(len) too large (>=16)")
                }
                backingFormat = String(decoding: try read(offset, Int(len)), as: UTF8.self)
            case Qcow2.extFeatureTable:
                let data = try read(offset, Int(len))
                var i = 0
                while i + 48 <= data.count {
                    featureTable.append(Qcow2Feature(type: data[i], bit: data[i + 1], name: data.cString(i + 2, 46)))
                    i += 48
                }
            case Qcow2.extCryptoHeader:
                if len != 16 { throw BlockError.invalid("CRYPTO header extension size \(len), but expected size 16") }
                let d = try read(offset, 16)
                cryptoHeader = (d.be64(0), d.be64(8))
            case Qcow2.extBitmaps:
                if len != 24 { throw BlockError.invalid("bitmaps_ext: Invalid extension length") }
                if autoclearFeatures & Qcow2.autoclearBitmaps != 0 {
                    let d = try read(offset, 24)
                    if d.be32(4) != 0 { throw BlockError.invalid("bitmaps_ext: Reserved field is not zero") }
                    let n = d.be32(0)
                    if n > 65535 {
                        throw BlockError.invalid("bitmaps_ext: File has \(n) bitmaps, exceeding the QEMU supported maximum of 65535")
                    }
                    if n == 0 { throw BlockError.invalid("found bitmaps extension with zero bitmaps") }
                    if d.be64(16) % clusterSize != 0 { throw BlockError.invalid("bitmaps_ext: invalid bitmap directory offset") }
                    if d.be64(8) > 64 << 20 {
                        throw BlockError.invalid("bitmaps_ext: bitmap directory size (\(d.be64(8))) exceeds the maximum supported size (\(64 << 20))")
                    }
                    bitmaps = (n, d.be64(8), d.be64(16))
                }
                // Without the autoclear bit the bitmaps were left stale by a program that did not
                // know them: QEMU drops the extension (their clusters leak until check -r).
            case Qcow2.extDataFile:
                dataFile = String(decoding: try read(offset, Int(len)), as: UTF8.self)
            default:
                unknownExtensions.append((magic, try read(offset, Int(len))))
            }
            offset += (len + 7) & ~7
        }
    }

    /// "name, name, Unknown incompatible feature: 20" as QEMU's report_unsupported_feature says it.
    func describeUnknown(_ bits: UInt64) -> String {
        var mask = bits
        var parts: [String] = []
        for f in featureTable where f.type == 0 && f.bit < 64 && mask & (1 << UInt64(f.bit)) != 0 {
            parts.append(f.name)
            mask &= ~(1 << UInt64(f.bit))
        }
        if mask != 0 { parts.append("Unknown incompatible feature: \(String(mask, radix: 16))") }
        return parts.joined(separator: ", ")
    }

    // MARK: writing

    /// QEMU's feature name table (written for v3 images with clusters over 4 KiB).
    static let standardFeatures: [Qcow2Feature] = [
        Qcow2Feature(type: 0, bit: 0, name: "dirty bit"),
        Qcow2Feature(type: 0, bit: 1, name: "corrupt bit"),
        Qcow2Feature(type: 0, bit: 2, name: "external data file"),
        Qcow2Feature(type: 0, bit: 3, name: "compression type"),
        Qcow2Feature(type: 0, bit: 4, name: "extended L2 entries"),
        Qcow2Feature(type: 1, bit: 0, name: "lazy refcounts"),
        Qcow2Feature(type: 2, bit: 0, name: "bitmaps"),
        Qcow2Feature(type: 2, bit: 1, name: "raw external data"),
    ]

    /// The first cluster as QEMU's qcow2_update_header writes it. Throws ENOSPC-style if it does not fit.
    func serialize() throws -> [UInt8] {
        let cs = Int(clusterSize)
        var buf = [UInt8](repeating: 0, count: cs)
        let headerLen = version == 2 ? Qcow2.v2HeaderSize : Qcow2.headerStructSize + unknownHeaderFields.count
        buf.setBE32(0, Qcow2.magic)
        buf.setBE32(4, version)
        buf.setBE32(20, clusterBits)
        buf.setBE64(24, size)
        buf.setBE32(32, cryptMethod)
        buf.setBE32(36, l1Size)
        buf.setBE64(40, l1TableOffset)
        buf.setBE64(48, refcountTableOffset)
        buf.setBE32(56, refcountTableClusters)
        buf.setBE32(60, nbSnapshots)
        buf.setBE64(64, snapshotsOffset)
        var pos: Int
        if version >= 3 {
            buf.setBE64(72, incompatibleFeatures)
            buf.setBE64(80, compatibleFeatures)
            buf.setBE64(88, autoclearFeatures)
            buf.setBE32(96, refcountOrder)
            buf.setBE32(100, UInt32(headerLen))
            buf[104] = compressionType
            pos = Qcow2.headerStructSize
            guard pos + unknownHeaderFields.count <= cs else { throw Qcow2Header.noSpace }
            for (i, x) in unknownHeaderFields.enumerated() { buf[pos + i] = x }
            pos += unknownHeaderFields.count
        } else {
            pos = Qcow2.v2HeaderSize
        }
        func addExt(_ magic: UInt32, _ data: [UInt8]) throws {
            let total = 8 + ((data.count + 7) & ~7)
            guard pos + total <= cs else { throw Qcow2Header.noSpace }
            buf.setBE32(pos, magic)
            buf.setBE32(pos + 4, UInt32(data.count))
            for (i, x) in data.enumerated() { buf[pos + 8 + i] = x }
            pos += total
        }
        if let f = backingFormat { try addExt(Qcow2.extBackingFormat, Array(f.utf8)) }
        if hasDataFile, let d = dataFile { try addExt(Qcow2.extDataFile, Array(d.utf8)) }
        if let c = cryptoHeader {
            var d = [UInt8](repeating: 0, count: 16)
            d.setBE64(0, c.offset)
            d.setBE64(8, c.length)
            try addExt(Qcow2.extCryptoHeader, d)
        }
        if version >= 3 && clusterSize > 4096 {
            var d = [UInt8]()
            for f in Qcow2Header.standardFeatures {
                var e = [UInt8](repeating: 0, count: 48)
                e[0] = f.type
                e[1] = f.bit
                for (i, x) in f.name.utf8.enumerated() where i < 46 { e[2 + i] = x }
                d += e
            }
            try addExt(Qcow2.extFeatureTable, d)
        }
        if let bm = bitmaps {
            var d = [UInt8](repeating: 0, count: 24)
            d.setBE32(0, bm.count)
            d.setBE64(8, bm.directorySize)
            d.setBE64(16, bm.directoryOffset)
            try addExt(Qcow2.extBitmaps, d)
        }
        for u in unknownExtensions { try addExt(u.magic, u.data) }
        try addExt(Qcow2.extEnd, [])
        if let name = backingFile {
            let bytes = Array(name.utf8)
            guard pos + bytes.count <= cs else { throw Qcow2Header.noSpace }
            for (i, x) in bytes.enumerated() { buf[pos + i] = x }
            buf.setBE64(8, UInt64(pos))
            buf.setBE32(16, UInt32(bytes.count))
        }
        return buf
    }

    static let noSpace = BlockError(.invalidArgument, "Could not update qcow2 header: No space left on device", errno: ENOSPC)
}
