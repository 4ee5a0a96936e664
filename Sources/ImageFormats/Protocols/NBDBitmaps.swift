// qemu-nbd -B NAME: a persistent qcow2 dirty bitmap exported as the qemu:dirty-bitmap:NAME context.
//
// The bitmap is read once at export time (directory entry, bitmap table, data clusters; bit i of
// the bitmap is bit i%8 of byte i/8 and covers `granularity` bytes) into memory, within the limits
// the qcow2 parser enforces. The library does not track writes in bitmaps yet, so an enabled
// bitmap on a writable export (which QEMU would keep updating) is refused rather than served
// stale; read-only exports and disabled bitmaps are exact. Lookup walks the backing chain from
// the top, as QEMU's nbd_export_create does.
import Glibc

public final class PersistentBitmap: @unchecked Sendable {
    public let name: String
    public let granularity: UInt64
    public let size: UInt64
    public let enabled: Bool
    private let bits: [UInt8]

    init(name: String, granularity: UInt64, size: UInt64, enabled: Bool, bits: [UInt8]) {
        self.name = name
        self.granularity = granularity
        self.size = size
        self.enabled = enabled
        self.bits = bits
    }

    @inline(__always) func isDirty(bit i: UInt64) -> Bool {
        let byte = Int(i / 8)
        return byte < bits.count && bits[byte] & (1 << UInt8(i % 8)) != 0
    }

    /// The run starting at `offset` with one dirty state: (dirty, length), at most `maxLength`.
    public func run(at offset: UInt64, maxLength: UInt64) -> (dirty: Bool, length: UInt64) {
        let end = min(size, offset + maxLength)
        guard offset < end else { return (false, maxLength) }
        var bit = offset / granularity
        let state = isDirty(bit: bit)
        var pos = (bit + 1) * granularity
        while pos < end {
            bit += 1
            if isDirty(bit: bit) != state { break }
            pos += granularity
        }
        return (state, min(pos, end) - offset)
    }

    /// Finds bitmap `name` in `node` or its backing chain (qcow2 layers only).
    public static func find(_ name: String, in node: any BlockNode) throws -> PersistentBitmap {
        var n: (any BlockNode)? = node
        while let cur = n {
            if let q = cur as? Qcow2Node, let b = try q.loadPersistentBitmap(name) { return b }
            if let q = cur.fileChild as? Qcow2Node, let b = try q.loadPersistentBitmap(name) { return b }
            n = cur.backing ?? cur.fileChild?.backing
        }
        throw BlockError(.notFound, "Bitmap '\(name)' is not found", errno: ENOENT)
    }
}

extension Qcow2Node {
    /// Reads persistent bitmap `name`, or nil when this image has none of that name.
    func loadPersistentBitmap(_ name: String) throws -> PersistentBitmap? {
        guard let bm = meta.header.bitmaps, meta.header.autoclearFeatures & Qcow2.autoclearBitmaps != 0 else { return nil }
        let read: (UInt64, Int) throws -> [UInt8] = { [file] o, n in try file.read(at: o, count: n) }
        let cs = meta.clusterSize
        let entries = try Qcow2Bitmaps.parseDirectory(read: read, offset: bm.directoryOffset, size: bm.directorySize,
                                                      count: bm.count, clusterSize: cs, fileSize: file.size)
        guard let e = entries.first(where: { $0.name == name }) else { return nil }
        if e.flags & Qcow2BitmapEntry.flagInUse != 0 {
            throw BlockError(.invalidImage, "Bitmap '\(name)' is inconsistent and cannot be used", errno: EINVAL,
                             hint: "Try block-dirty-bitmap-remove to delete this bitmap from disk")
        }
        guard e.granularityBits >= 9, e.granularityBits <= 31 else {
            throw BlockError.invalid("Bitmap '\(name)' has an invalid granularity")
        }
        let granularity = UInt64(1) << UInt64(e.granularityBits)
        let bitCount = (size + granularity - 1) / granularity
        let byteCount = Int((bitCount + 7) / 8)
        let bitsPerCluster = cs * 8
        let needed = (bitCount + bitsPerCluster - 1) / bitsPerCluster
        guard UInt64(e.tableSize) >= needed else { throw BlockError.invalid("Bitmap table of '\(name)' is too small") }
        var bits = [UInt8](repeating: 0, count: byteCount)
        let table = try read(e.tableOffset, Int(needed) * 8)
        for i in 0..<Int(needed) {
            let entry = table.be64(i * 8)
            let offset = entry & 0x00FF_FFFF_FFFF_FE00
            let start = i * Int(cs)
            let n = min(Int(cs), byteCount - start)
            guard n > 0 else { break }
            if offset == 0 {
                if entry & 1 != 0 { for j in start..<(start + n) { bits[j] = 0xff } }
                continue
            }
            guard offset % cs == 0, offset + cs <= file.size else {
                throw BlockError.invalid("Bitmap '\(name)' points outside the image file")
            }
            let data = try read(offset, n)
            bits.replaceSubrange(start..<(start + n), with: data)
        }
        return PersistentBitmap(name: name, granularity: granularity, size: size,
                                enabled: e.flags & Qcow2BitmapEntry.flagAuto != 0, bits: bits)
    }
}
