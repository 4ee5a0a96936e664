// qcow2 data clusters as host extents (Graph/HostMapping.swift): normal clusters are stored
// verbatim, so a run of them can be copied by the kernel; a write of whole fresh clusters gets its
// host run allocated, filled by the caller, then linked into L2 (the allocating write's order).
import Glibc

extension Qcow2Node: HostMappedNode {
    public var canWriteDirect: Bool {
        !isReadOnly && !meta.isExtendedL2 && !meta.hasDataFile
            && ((meta.dataHost as? any HostMappedNode)?.canWriteDirect ?? false)
    }

    public func hostExtent(at offset: UInt64, length: UInt64) throws -> HostExtent? {
        guard let host = meta.dataHost as? any HostMappedNode, length > 0 else { return nil }
        try checkRequest(offset, length)
        let m = try rw.read { try metaLock.withLock { try meta.lookup(offset, maxLength: length) } }
        guard m.type == .normal else { return nil }
        return try host.hostExtent(at: m.hostOffset, length: m.length)
    }

    public func writeDirect(at offset: UInt64, length: UInt64, fill: (HostExtent) throws -> Void) throws -> UInt64 {
        guard canWriteDirect, let host = meta.dataHost as? any HostMappedNode else { return 0 }
        try checkWritable()
        try checkRequest(offset, length)
        let n = try rw.write {
            try writeNewClusterRun(offset, available: length, minClusters: 1) { hostOffset, bytes in
                let w = try host.writeDirect(at: hostOffset, length: bytes, fill: fill)
                if w != bytes {
                    throw BlockError(.io, "qcow2: the data file took \(w) of \(bytes) bytes", errno: EIO)
                }
            }
        }
        if n > 0 { markBitmaps(offset, n) }
        return n
    }
}
