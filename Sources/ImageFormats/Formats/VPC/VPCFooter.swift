// The VHD (vpc) footer and dynamic-disk header, big-endian, and the CHS geometry QEMU computes.
//
// Footer (512 bytes, at offset 0 of a dynamic image and at the end of every image): "conectix",
// features 8, version 12, data offset 16 (u64; the dynamic header, or all ones for a fixed disk),
// timestamp 24, creator app 28, major/minor 32/34, creator OS 36, original size 40, current size 48,
// cylinders 56 (u16), heads 58, sectors 59, disk type 60, checksum 64, UUID 68, saved state 84.
// Dynamic header (1024 bytes): "cxsparse", data offset 8, BAT offset 16, version 24, max table
// entries 28, block size 32, checksum 36, parent fields.
//
// The visible size follows QEMU: the CHS product, except for creators that use the footer's size
// (Hyper-V "win ", "qem2", "d2v ", "CTXS", "tap\0") or a geometry at its maximum.
import Glibc

enum VPC {
    static let footerSize = 512
    static let dynHeaderSize = 1024
    static let fixed: UInt32 = 2
    static let dynamic: UInt32 = 3
    static let differencing: UInt32 = 4
    static let timestampBase = 946_684_800
    static let maxGeometry: UInt64 = 65535 * 16 * 255
    static let maxSectors: UInt64 = 0xff00_0000   // 2040 GiB
    static let unallocated: UInt32 = 0xffff_ffff
    static let defaultBlockSize: UInt64 = 0x20_0000

    /// One's complement of the byte sum (the checksum field must be zero in `b`).
    static func checksum(_ b: [UInt8]) -> UInt32 {
        var s: UInt32 = 0
        for x in b { s &+= UInt32(x) }
        return ~s
    }

    /// QEMU's calculate_geometry (the VHD specification's algorithm).
    static func geometry(totalSectors: UInt64) -> (cyls: UInt64, heads: UInt64, secs: UInt64) {
        let total = min(totalSectors, maxGeometry)
        var secs: UInt64, heads: UInt64, cth: UInt64
        if total >= 65535 * 16 * 63 {
            secs = 255; heads = 16; cth = total / secs
        } else {
            secs = 17
            cth = total / secs
            heads = max(4, (cth + 1023) / 1024)
            if cth >= heads * 1024 || heads > 16 {
                secs = 31; heads = 16; cth = total / secs
            }
            if cth >= heads * 1024 {
                secs = 63; heads = 16; cth = total / secs
            }
        }
        return (cth / heads, heads, secs)
    }
}

struct VPCFooter {
    var bytes: [UInt8]

    var isConectix: Bool { bytes.count >= 8 && Array(bytes[0..<8]) == Array("conectix".utf8) }
    var dataOffset: UInt64 { bytes.be64(16) }
    var creatorApp: [UInt8] { Array(bytes[28..<32]) }
    var currentSize: UInt64 { bytes.be64(48) }
    var cyls: UInt64 { UInt64(bytes.be16(56)) }
    var heads: UInt64 { UInt64(bytes[58]) }
    var secs: UInt64 { UInt64(bytes[59]) }
    var diskType: UInt32 { bytes.be32(60) }
    var storedChecksum: UInt32 { bytes.be32(64) }

    var checksumIsValid: Bool {
        var b = bytes
        b.setBE32(64, 0)
        return VPC.checksum(b) == storedChecksum
    }

    /// The virtual size in sectors (QEMU's vpc_open rules; `forceCalc` is the force_size_calc option).
    func totalSectors(forceCalc: String?) -> UInt64 {
        let chs = cyls * heads * secs
        let sizeApps = ["win ", "qem2", "d2v ", "CTXS"].map { Array($0.utf8) } + [[0x74, 0x61, 0x70, 0]]
        var useCHS = !sizeApps.contains(creatorApp)
        if forceCalc == "chs" { useCHS = true }
        if !useCHS || chs == VPC.maxGeometry || forceCalc == "current_size" {
            return currentSize / 512
        }
        return chs
    }

    /// A footer as QEMU's vpc_co_create fills it.
    static func make(totalSize: UInt64, cyls: UInt64, heads: UInt64, secs: UInt64, type: UInt32, forceSize: Bool) -> VPCFooter {
        var b = [UInt8](repeating: 0, count: VPC.footerSize)
        for (i, c) in "conectix".utf8.enumerated() { b[i] = c }
        let app: String = forceSize ? "qem2" : "qemu"
        for (i, c) in app.utf8.enumerated() { b[28 + i] = c }
        for (i, c) in "Wi2k".utf8.enumerated() { b[36 + i] = c }
        b.setBE32(8, 2)
        b.setBE32(12, 0x0001_0000)
        b.setBE64(16, type == VPC.dynamic ? UInt64(VPC.footerSize) : UInt64.max)
        b.setBE32(24, UInt32(truncatingIfNeeded: time(nil) - VPC.timestampBase))
        b.setBE16(32, 5)
        b.setBE16(34, 3)
        b.setBE64(40, totalSize)
        b.setBE64(48, totalSize)
        b.setBE16(56, UInt16(cyls))
        b[58] = UInt8(heads)
        b[59] = UInt8(secs)
        b.setBE32(60, type)
        let u = randomUUIDBytes()
        for i in 0..<16 { b[68 + i] = u[i] }
        b.setBE32(64, VPC.checksum(b))
        return VPCFooter(bytes: b)
    }
}

/// The dynamic-disk header fields the driver uses.
struct VPCDynHeader {
    var bytes: [UInt8]
    var isCxsparse: Bool { Array(bytes[0..<8]) == Array("cxsparse".utf8) }
    var tableOffset: UInt64 { bytes.be64(16) }
    var maxTableEntries: UInt32 { bytes.be32(28) }
    var blockSize: UInt32 { bytes.be32(32) }

    static func make(entries: UInt32, blockSize: UInt32) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: VPC.dynHeaderSize)
        for (i, c) in "cxsparse".utf8.enumerated() { b[i] = c }
        b.setBE64(8, UInt64.max)
        b.setBE64(16, 3 * 512)
        b.setBE32(24, 0x0001_0000)
        b.setBE32(28, entries)
        b.setBE32(32, blockSize)
        b.setBE32(36, VPC.checksum(b))
        return b
    }
}
