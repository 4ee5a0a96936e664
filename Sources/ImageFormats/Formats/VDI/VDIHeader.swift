// The VDI (VirtualBox) header: 512 little-endian bytes at offset 0, then the block map.
//
// Layout (offsets in the header): text[64], signature 0x40, version 0x44, header size 0x48,
// image type 0x4c (1 dynamic, 2 static), flags 0x50, description[256] 0x54, block map offset
// 0x154, data offset 0x158, geometry 0x15c..0x16c, disk size 0x170, block size 0x178, block extra
// 0x17c, blocks in image 0x180, blocks allocated 0x184, four UUIDs from 0x188. Validation follows
// QEMU's vdi_open, in its order and with its messages, before any field sizes a read or a loop.
import Glibc

enum VDI {
    static let signature: UInt32 = 0xbeda107f
    static let version11: UInt32 = 0x0001_0001
    static let typeDynamic: UInt32 = 1
    static let typeStatic: UInt32 = 2
    static let unallocated: UInt32 = 0xffff_ffff
    static let discarded: UInt32 = 0xffff_fffe
    static let sectorSize: UInt64 = 512
    static let defaultBlockSize: UInt64 = 1 << 20
    static let maxBlocks: UInt32 = 0x3fff_ffff
    static let maxDiskSize: UInt64 = UInt64(maxBlocks) * defaultBlockSize
    static let headerSize = 512
    static let text = "<<< QEMU VM Virtual Disk Image >>>\n"

    @inline(__always) static func isAllocated(_ e: UInt32) -> Bool { e < discarded }
}

struct VDIHeader {
    var bytes: [UInt8]

    var signature: UInt32 { bytes.le32(0x40) }
    var version: UInt32 { bytes.le32(0x44) }
    var imageType: UInt32 { bytes.le32(0x4c) }
    var offsetBmap: UInt32 { bytes.le32(0x154) }
    var offsetData: UInt32 { bytes.le32(0x158) }
    var sectorSize: UInt32 { bytes.le32(0x168) }
    var diskSize: UInt64 { bytes.le64(0x170) }
    var blockSize: UInt32 { bytes.le32(0x178) }
    var blocksInImage: UInt32 { bytes.le32(0x180) }
    var blocksAllocated: UInt32 {
        get { bytes.le32(0x184) }
        set { bytes.setLE32(0x184, newValue) }
    }
    func uuidIsNull(_ o: Int) -> Bool { bytes[o..<o + 16].allSatisfy { $0 == 0 } }

    /// Parses and validates the header (QEMU's vdi_open checks and messages).
    static func parse(_ raw: [UInt8]) throws -> VDIHeader {
        guard raw.count >= VDI.headerSize else { throw BlockError.invalid("Image not in VDI format (header too short)") }
        let h = VDIHeader(bytes: Array(raw[0..<VDI.headerSize]))
        func unsupported(_ m: String) -> BlockError { BlockError.unsupported(m) }
        if h.diskSize > VDI.maxDiskSize {
            throw unsupported("Unsupported VDI image size (size is 0x\(String(h.diskSize, radix: 16)), max supported is 0x\(String(VDI.maxDiskSize, radix: 16)))")
        }
        let disk = roundUp(h.diskSize, VDI.sectorSize)
        if h.signature != VDI.signature {
            throw BlockError.invalid("Image not in VDI format (bad signature \(cFormat("%08x", h.signature)))")
        } else if h.version != VDI.version11 {
            throw unsupported("unsupported VDI image (version \(h.version >> 16).\(h.version & 0xffff))")
        } else if UInt64(h.offsetBmap) % VDI.sectorSize != 0 {
            throw unsupported("unsupported VDI image (unaligned block map offset 0x\(String(h.offsetBmap, radix: 16)))")
        } else if UInt64(h.offsetData) % VDI.sectorSize != 0 {
            throw unsupported("unsupported VDI image (unaligned data offset 0x\(String(h.offsetData, radix: 16)))")
        } else if h.sectorSize != 512 {
            throw unsupported("unsupported VDI image (sector size \(h.sectorSize) is not 512)")
        } else if UInt64(h.blockSize) != VDI.defaultBlockSize {
            throw unsupported("unsupported VDI image (block size \(h.blockSize) is not \(VDI.defaultBlockSize))")
        } else if disk > UInt64(h.blocksInImage) * UInt64(h.blockSize) {
            throw unsupported("unsupported VDI image (disk size \(disk), image bitmap has room for \(UInt64(h.blocksInImage) * UInt64(h.blockSize)))")
        } else if !h.uuidIsNull(0x1a8) {
            throw unsupported("unsupported VDI image (non-NULL link UUID)")
        } else if !h.uuidIsNull(0x1b8) {
            throw unsupported("unsupported VDI image (non-NULL parent UUID)")
        } else if h.blocksInImage > VDI.maxBlocks {
            throw unsupported("unsupported VDI image (too many blocks \(h.blocksInImage), max is \(VDI.maxBlocks))")
        }
        return h
    }

    /// A fresh header as QEMU's vdi_co_do_create writes it.
    static func make(size: UInt64, isStatic: Bool, blocks: UInt32, bmapBytes: UInt64) -> VDIHeader {
        var b = [UInt8](repeating: 0, count: VDI.headerSize)
        for (i, c) in VDI.text.utf8.enumerated() { b[i] = c }
        b.setLE32(0x40, VDI.signature)
        b.setLE32(0x44, VDI.version11)
        b.setLE32(0x48, 0x180)
        b.setLE32(0x4c, isStatic ? VDI.typeStatic : VDI.typeDynamic)
        b.setLE32(0x154, 0x200)
        b.setLE32(0x158, UInt32(0x200 + bmapBytes))
        b.setLE32(0x168, 512)
        b.setLE64(0x170, size)
        b.setLE32(0x178, UInt32(VDI.defaultBlockSize))
        b.setLE32(0x180, blocks)
        if isStatic { b.setLE32(0x184, blocks) }
        // Image and last-snapshot UUIDs: random (version 4), stored in VirtualBox's byte order.
        for o in [0x188, 0x198] {
            var u = randomUUIDBytes()
            swapUUIDFields(&u)
            for i in 0..<16 { b[o + i] = u[i] }
        }
        return VDIHeader(bytes: b)
    }
}

/// 16 random bytes with the version-4 and variant bits of an RFC 4122 UUID (qemu_uuid_generate).
func randomUUIDBytes() -> [UInt8] {
    var rng = SystemRandomNumberGenerator()
    var u = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
    u[6] = (u[6] & 0x0f) | 0x40
    u[8] = (u[8] & 0x3f) | 0x80
    return u
}

/// Big-endian RFC 4122 field order <-> the little-endian order VirtualBox and Microsoft store.
func swapUUIDFields(_ u: inout [UInt8]) {
    u.swapAt(0, 3); u.swapAt(1, 2); u.swapAt(4, 5); u.swapAt(6, 7)
}
