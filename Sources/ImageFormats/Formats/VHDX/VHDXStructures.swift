// VHDX on-disk structures (MS-VHDX 1.0), all little-endian: the file identifier ("vhdxfile"), two
// 4 KiB headers at 64 and 128 KiB (the valid one with the higher sequence number is current), the
// region table at 192 KiB (BAT and metadata regions), the metadata table (file parameters,
// virtual size, page 83 id, sector sizes) and the BAT (state in bits 0-2, file offset in MiB in
// bits 20-63; a sector-bitmap entry after every `chunk ratio` payload entries). Checksums are
// CRC-32C over the whole structure with the checksum field zeroed.

enum VHDX {
    static let fileSignature = Array("vhdxfile".utf8)
    static let headerSignature: UInt32 = 0x6461_6568   // "head"
    static let regionSignature: UInt32 = 0x6967_6572   // "regi"
    static let metadataSignature = Array("metadata".utf8)
    static let header1Offset: UInt64 = 64 << 10
    static let header2Offset: UInt64 = 128 << 10
    static let regionTableOffset: UInt64 = 192 << 10
    static let regionTable2Offset: UInt64 = 256 << 10
    static let headerSize = 4096
    static let headerBlockSize = 64 << 10
    static let headerSectionEnd: UInt64 = 1 << 20
    static let mib: UInt64 = 1 << 20
    static let minBlockSize: UInt64 = 1 << 20
    static let maxBlockSize: UInt64 = 256 << 20
    static let maxImageSize: UInt64 = 64 << 40
    static let maxSectorsPerBlock: UInt64 = 1 << 23
    static let defaultLogSize: UInt64 = 1 << 20

    // BAT states.
    static let stateMask: UInt64 = 7
    static let offsetMask: UInt64 = 0xFFFF_FFFF_FFF0_0000
    static let notPresent: UInt64 = 0
    static let undefined: UInt64 = 1
    static let zero: UInt64 = 2
    static let unmapped: UInt64 = 3
    static let unmappedV095: UInt64 = 5
    static let fullyPresent: UInt64 = 6
    static let partiallyPresent: UInt64 = 7

    // GUIDs as stored (MS byte order).
    static let batGUID = msGUID(0x2dc2_7766, 0xf623, 0x4200, [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08])
    static let metadataGUID = msGUID(0x8b7c_a206, 0x4790, 0x4b9a, [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e])
    static let fileParamGUID = msGUID(0xcaa1_6737, 0xfa36, 0x4d43, [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b])
    static let virtualSizeGUID = msGUID(0x2fa5_4224, 0xcd1b, 0x4876, [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8])
    static let page83GUID = msGUID(0xbeca_12ab, 0xb2e6, 0x4523, [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46])
    static let physSectorGUID = msGUID(0xcda3_48c7, 0x445d, 0x4471, [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56])
    static let parentLocatorGUID = msGUID(0xa8d3_5f2d, 0xb30b, 0x454d, [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c])
    static let logicalSectorGUID = msGUID(0x8141_bf1d, 0xa96f, 0x4709, [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f])

    static func msGUID(_ d1: UInt32, _ d2: UInt16, _ d3: UInt16, _ d4: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 16)
        b.setLE32(0, d1); b.setLE16(4, d2); b.setLE16(6, d3)
        for i in 0..<8 { b[8 + i] = d4[i] }
        return b
    }

    /// A random GUID (QEMU copies a version-4 UUID's bytes as they are).
    static func randomGUID() -> [UInt8] { randomUUIDBytes() }

    // MARK: CRC-32C (Castagnoli), as QEMU's crc32c(0xffffffff, ...) ^ 0xffffffff.

    static let crcTable: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    static func crc32c(_ b: [UInt8], zeroingAt crcOffset: Int? = nil) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        let t = crcTable
        b.withUnsafeBufferPointer { p in
            for i in 0..<p.count {
                let byte = crcOffset.map { i >= $0 && i < $0 + 4 } == true ? 0 : p[i]
                crc = t[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8)
            }
        }
        return crc ^ 0xffff_ffff
    }

    static func checksumValid(_ b: [UInt8], at offset: Int) -> Bool {
        crc32c(b, zeroingAt: offset) == b.le32(offset)
    }

    static func setChecksum(_ b: inout [UInt8], at offset: Int) {
        b.setLE32(offset, 0)
        b.setLE32(offset, crc32c(b))
    }
}

/// One VHDX header (the fields QEMU uses; the rest of the 4 KiB is kept as read).
struct VHDXHeader: Equatable {
    var raw: [UInt8]
    var signature: UInt32 { raw.le32(0) }
    var sequence: UInt64 { get { raw.le64(8) } set { raw.setLE64(8, newValue) } }
    var fileWriteGUID: [UInt8] { get { Array(raw[16..<32]) } set { raw.replaceSubrange(16..<32, with: newValue) } }
    var dataWriteGUID: [UInt8] { get { Array(raw[32..<48]) } set { raw.replaceSubrange(32..<48, with: newValue) } }
    var logGUID: [UInt8] { get { Array(raw[48..<64]) } set { raw.replaceSubrange(48..<64, with: newValue) } }
    var logVersion: UInt16 { raw.le16(64) }
    var version: UInt16 { raw.le16(66) }
    var logLength: UInt32 { raw.le32(68) }
    var logOffset: UInt64 { raw.le64(72) }
    var hasLog: Bool { logGUID.contains { $0 != 0 } }

    static func make(sequence: UInt64, logLength: UInt32) -> VHDXHeader {
        var b = [UInt8](repeating: 0, count: VHDX.headerSize)
        b.setLE32(0, VHDX.headerSignature)
        b.setLE64(8, sequence)
        b.replaceSubrange(16..<32, with: VHDX.randomGUID())
        b.replaceSubrange(32..<48, with: VHDX.randomGUID())
        b.setLE16(66, 1)
        b.setLE32(68, logLength)
        b.setLE64(72, VHDX.headerSectionEnd)
        return VHDXHeader(raw: b)
    }

    /// The bytes to write, with a fresh checksum.
    var sealed: [UInt8] {
        var b = raw
        VHDX.setChecksum(&b, at: 4)
        return b
    }
}

struct VHDXRegion {
    var guid: [UInt8]
    var fileOffset: UInt64
    var length: UInt32
    var required: Bool
}

/// The metadata items QEMU needs, parsed and validated (vhdx_parse_metadata).
struct VHDXMetadata {
    var blockSize: UInt32
    var paramsFlags: UInt32
    var virtualSize: UInt64
    var logicalSectorSize: UInt32
    var physicalSectorSize: UInt32

    var sectorsPerBlock: UInt64 { UInt64(blockSize) / UInt64(logicalSectorSize) }
    var chunkRatio: UInt64 { VHDX.maxSectorsPerBlock * UInt64(logicalSectorSize) / UInt64(blockSize) }
    var isFixed: Bool { paramsFlags & 1 != 0 }

    /// QEMU's vhdx_calc_bat_entries (no parent).
    var batEntries: UInt64 {
        let data = (virtualSize + UInt64(blockSize) - 1) / UInt64(blockSize)
        if data == 0 { return 0 }
        return data + (data - 1) / chunkRatio
    }

    /// BAT index of payload block `block` (sector bitmaps interleaved).
    func batIndex(block: UInt64) -> Int { Int(block + block / chunkRatio) }
}
