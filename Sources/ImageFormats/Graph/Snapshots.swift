// Internal snapshots as a node capability (qemu-img snapshot, convert -l, info).

/// A node whose format keeps internal snapshots (qcow2).
public protocol SnapshotCapableNode: BlockNode {
    /// Creates a snapshot of the current state, named `name` (names need not be unique).
    func createSnapshot(name: String, dateSec: UInt32, dateNsec: UInt32) throws
    /// Reverts the disk to a snapshot found by ID or, failing that, by name.
    func applySnapshot(_ idOrName: String) throws
    /// Deletes the snapshot with this ID and name.
    func deleteSnapshot(id: String, name: String) throws
}
