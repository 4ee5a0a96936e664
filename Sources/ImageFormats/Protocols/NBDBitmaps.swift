// qemu-nbd -B NAME: a persistent qcow2 dirty bitmap exported as the qemu:dirty-bitmap:NAME context.
//
// The export reads the live bitmap the qcow2 node keeps in memory (Qcow2BitmapStore.swift), so an
// enabled bitmap on a writable export shows the guest's writes as they happen, as QEMU's does.
// Lookup walks the backing chain from the top, as QEMU's nbd_export_create does.
import Glibc

public final class PersistentBitmap: @unchecked Sendable {
    public let name: String
    public let granularity: UInt64
    public let enabled: Bool
    private let node: Qcow2Node

    init(name: String, granularity: UInt64, enabled: Bool, node: Qcow2Node) {
        self.name = name
        self.granularity = granularity
        self.enabled = enabled
        self.node = node
    }

    /// The run starting at `offset` with one dirty state: (dirty, length), at most `maxLength`.
    public func run(at offset: UInt64, maxLength: UInt64) -> (dirty: Bool, length: UInt64) {
        node.bitmapRun(name, at: offset, maxLength: maxLength)
    }

    /// Finds bitmap `name` in `node` or its backing chain (qcow2 layers only).
    public static func find(_ name: String, in node: any BlockNode) throws -> PersistentBitmap {
        var n: (any BlockNode)? = node
        while let cur = n {
            for candidate in [cur, cur.fileChild].compactMap({ $0 }) {
                if let q = candidate as? Qcow2Node, q.persistentBitmaps.contains(where: { $0.name == name }) {
                    let c = try q.bitmapContents(name)
                    return PersistentBitmap(name: name, granularity: c.granularity, enabled: c.enabled, node: q)
                }
            }
            n = cur.backing ?? cur.fileChild?.backing
        }
        throw BlockError(.notFound, "Bitmap '\(name)' is not found", errno: ENOENT)
    }
}
