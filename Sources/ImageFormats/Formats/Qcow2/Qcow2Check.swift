// qcow2 consistency check and repair (qemu-img check): placeholder filled in next.
struct Qcow2Check {
    let node: Qcow2Node
    func repairDirtyOnOpen() throws {
        throw BlockError.unsupported("Repairing a dirty qcow2 image is not implemented yet")
    }
}
