// The qcow2 internal snapshot table: parsing (with QEMU's limits) and lookup by ID or name.
// Creating, applying and deleting snapshots build on this (imgtool snapshot).

struct Qcow2Snapshot: Equatable {
    var l1TableOffset: UInt64
    var l1Size: UInt32
    var id: String
    var name: String
    var dateSec: UInt32
    var dateNsec: UInt32
    var vmClockNsec: UInt64
    var vmStateSize: UInt64
    var diskSize: UInt64
    /// Instruction count at snapshot time; nil when the entry does not record it.
    var icount: UInt64?
    var extraDataSize: UInt32
    /// Extra data bytes past the fields we know, kept when the table is rewritten.
    var unknownExtra: [UInt8]
}

enum Qcow2Snapshots {
    static let maxExtraData: UInt32 = 1024
    static let maxTableSize: UInt64 = 1024 * UInt64(Qcow2.maxSnapshots)

    /// Parses `count` entries at `offset`. `imageSize` is the disk size of entries without one.
    static func parse(read: (UInt64, Int) throws -> [UInt8], offset start: UInt64, count: UInt32,
                      imageSize: UInt64) throws -> (snapshots: [Qcow2Snapshot], tableSize: UInt64) {
        var snapshots: [Qcow2Snapshot] = []
        var offset = start
        for i in 0..<Int(count) {
            if offset - start > maxTableSize { throw BlockError.invalid("Snapshot table exceeds the maximum size") }
            offset = roundUp(offset, 8)
            let h = try read(offset, 40)
            offset += 40
            let extraSize = h.be32(36)
            let idSize = Int(h.be16(12))
            let nameSize = Int(h.be16(14))
            if extraSize > maxExtraData {
                throw BlockError(.invalidImage, "Too much extra metadata in snapshot table entry \(i)", errno: 27,
                                 hint: "You can force-remove this extra metadata with qemu-img check -r all")
            }
            let knownSize = min(24, Int(extraSize))
            let extra = try read(offset, knownSize) + [UInt8](repeating: 0, count: 24 - knownSize)
            offset += UInt64(knownSize)
            var unknown: [UInt8] = []
            if extraSize > 24 {
                unknown = try read(offset, Int(extraSize) - 24)
                offset += UInt64(extraSize) - 24
            }
            let idBytes = try read(offset, idSize)
            offset += UInt64(idSize)
            let nameBytes = try read(offset, nameSize)
            offset += UInt64(nameSize)
            snapshots.append(Qcow2Snapshot(
                l1TableOffset: h.be64(0), l1Size: h.be32(8),
                id: String(decoding: idBytes, as: UTF8.self), name: String(decoding: nameBytes, as: UTF8.self),
                dateSec: h.be32(16), dateNsec: h.be32(20), vmClockNsec: h.be64(24),
                vmStateSize: extraSize >= 8 ? extra.be64(0) : UInt64(h.be32(32)),
                diskSize: extraSize >= 16 ? extra.be64(8) : imageSize,
                icount: extraSize >= 24 ? extra.be64(16) : nil,
                extraDataSize: extraSize, unknownExtra: unknown))
        }
        return (snapshots, offset - start)
    }

    /// QEMU's find_snapshot_by_id_or_name: an exact ID match first, then a name match.
    static func find(_ key: String, in snapshots: [Qcow2Snapshot]) -> Int? {
        if let i = snapshots.firstIndex(where: { $0.id == key }) { return i }
        return snapshots.firstIndex { $0.name == key }
    }
}
