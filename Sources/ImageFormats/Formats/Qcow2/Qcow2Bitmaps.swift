// Persistent dirty bitmaps stored in qcow2 (the bitmaps extension): the directory and the
// bitmap tables, parsed with QEMU's limits. `check` needs them to account for their clusters and
// `info` lists them; changing bitmaps builds on this.

struct Qcow2BitmapEntry {
    var tableOffset: UInt64
    var tableSize: UInt32        // entries
    var flags: UInt32
    var type: UInt8
    var granularityBits: UInt8
    var name: String
    var extraData: [UInt8]

    static let flagInUse: UInt32 = 1 << 0
    static let flagAuto: UInt32 = 1 << 1
    static let flagExtraDataCompatible: UInt32 = 1 << 2
}

enum Qcow2Bitmaps {
    static let maxBitmaps: UInt32 = 65535
    static let maxTableBytes: UInt64 = 64 << 20
    static let maxNameSize = 1023

    /// Parses the bitmap directory. Each entry: table offset (8), table size (4), flags (4),
    /// type (1), granularity bits (1), name size (2), extra data size (4), extra data, name, padding.
    static func parseDirectory(read: (UInt64, Int) throws -> [UInt8], offset: UInt64, size: UInt64, count: UInt32,
                               clusterSize: UInt64, fileSize: UInt64) throws -> [Qcow2BitmapEntry] {
        guard count <= maxBitmaps, size <= 64 << 20 else { throw BlockError.invalid("Bitmap directory is too large") }
        guard offset % clusterSize == 0, offset + size <= fileSize else {
            throw BlockError.invalid("Bitmap directory exceeds the end of the image file")
        }
        let dir = try read(offset, Int(size))
        var entries: [Qcow2BitmapEntry] = []
        var p = 0
        for _ in 0..<count {
            guard p + 24 <= dir.count else { throw BlockError.invalid("Bitmap directory entry is truncated") }
            let nameSize = Int(dir.be16(p + 18))
            let extraSize = Int(dir.be32(p + 20))
            guard nameSize <= maxNameSize, extraSize <= 1 << 20, p + 24 + extraSize + nameSize <= dir.count else {
                throw BlockError.invalid("Bitmap directory entry is invalid")
            }
            let e = Qcow2BitmapEntry(tableOffset: dir.be64(p), tableSize: dir.be32(p + 8), flags: dir.be32(p + 12),
                                     type: dir[p + 16], granularityBits: dir[p + 17],
                                     name: String(decoding: dir[(p + 24 + extraSize)..<(p + 24 + extraSize + nameSize)], as: UTF8.self),
                                     extraData: Array(dir[(p + 24)..<(p + 24 + extraSize)]))
            guard UInt64(e.tableSize) * 8 <= maxTableBytes, e.tableOffset % clusterSize == 0 else {
                throw BlockError.invalid("Bitmap table of '\(e.name)' is invalid")
            }
            entries.append(e)
            p = (p + 24 + extraSize + nameSize + 7) & ~7
        }
        return entries
    }

    /// The data cluster offsets of a bitmap table (0 = all zeroes, 1 = all ones, not stored).
    static func tableClusters(read: (UInt64, Int) throws -> [UInt8], entry: Qcow2BitmapEntry) throws -> [UInt64] {
        guard entry.tableSize > 0 else { return [] }
        let t = try read(entry.tableOffset, Int(entry.tableSize) * 8)
        return (0..<Int(entry.tableSize)).map { t.be64($0 * 8) & 0x00FF_FFFF_FFFF_FE00 }.filter { $0 != 0 }
    }
}
