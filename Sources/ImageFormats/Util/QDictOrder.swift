// QEMU prints QAPI objects from QDicts, whose iteration order is the order of their hash buckets:
// tdb_hash(key) % 512, and within a bucket the key inserted last comes first. To print the same
// bytes as qemu-img and QMP, objects are built in QAPI schema order and then put in that order.

extension JSONValue {
    /// An object in QEMU's QDict order, from members given in schema (insertion) order.
    public static func qdict(_ members: [(String, JSONValue)]) -> JSONValue {
        .object(qdictOrder(members))
    }

    static func qdictOrder(_ members: [(String, JSONValue)]) -> [(String, JSONValue)] {
        var buckets: [Int: [(String, JSONValue)]] = [:]
        for m in members {
            buckets[Int(tdbHash(m.0) % 512), default: []].insert(m, at: 0)
        }
        return buckets.keys.sorted().flatMap { buckets[$0]! }
    }

    /// QEMU's tdb_hash (qobject/qdict.c).
    static func tdbHash(_ key: String) -> UInt32 {
        let bytes = Array(key.utf8)
        var value: UInt32 = 0x238F13AF &* UInt32(truncatingIfNeeded: bytes.count)
        for (i, c) in bytes.enumerated() {
            value = value &+ (UInt32(c) << UInt32((i * 5) % 24))
        }
        return 1103515243 &* value &+ 12345
    }
}
