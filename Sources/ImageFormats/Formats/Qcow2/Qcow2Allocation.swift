// Changing the cluster mapping: making an L2 table writable, allocating data clusters, setting
// L2 entries and dropping the references of replaced clusters. Called with the metadata lock held
// (and the node's rw lock held exclusively).
import Glibc

/// QEMU's QCow2ClusterType: the type of a whole cluster from its L2 entry alone.
enum Qcow2WholeClusterType { case unallocated, zeroPlain, zeroAlloc, normal, compressed }

extension Qcow2Meta {
    func clusterType(_ entry: UInt64) -> Qcow2WholeClusterType {
        if entry & Qcow2.oflagCompressed != 0 { return .compressed }
        let offset = entry & Qcow2.l2OffsetMask
        if entry & Qcow2.oflagZero != 0 && !isExtendedL2 && header.version >= 3 {
            return offset != 0 ? .zeroAlloc : .zeroPlain
        }
        if offset == 0 {
            return hasDataFile && entry & Qcow2.oflagCopied != 0 ? .normal : .unallocated
        }
        return .normal
    }

    /// QEMU's get_cluster_table with allocation: the L2 table covering `l1Index`, copied first if it
    /// is shared with a snapshot, created if missing. Returns its offset.
    func l2TableForWrite(_ l1Index: Int) throws -> UInt64 {
        if l1Index >= l1Table.count {
            try growL1Table(minSize: UInt64(l1Index) + 1, exact: false)
        }
        let e = l1Table[l1Index]
        let old = e & Qcow2.l1OffsetMask
        if old != 0 && old % clusterSize != 0 {
            throw try signalCorruption("L2 table offset \(hex(old)) unaligned (L1 index: \(hex(UInt64(l1Index))))")
        }
        if e & Qcow2.oflagCopied != 0 && old != 0 { return old }
        let new = try allocateClusters(bytes: clusterSize)
        try refcountCache.flush()
        if old != 0 {
            let contents = try l2Cache.read(old) { $0 }
            try l2Cache.installEmpty(new, contents: contents)
        } else {
            try l2Cache.installEmpty(new)
        }
        try l2Cache.writeBack(new)
        l1Table[l1Index] = new | Qcow2.oflagCopied
        try writeL1Entry(l1Index)
        if old != 0 { try freeClusters(offset: old, length: clusterSize, discard: .other) }
        return new
    }

    /// Where guest cluster `guestCluster` (a cluster-aligned guest offset) is described.
    func l2Location(_ guestCluster: UInt64) -> (l1Index: Int, index: UInt64) {
        (Int(guestCluster / l2Coverage), (guestCluster % l2Coverage) / clusterSize)
    }

    /// Sets an L2 entry (and bitmap) in the cached table.
    func setL2Entry(table l2Offset: UInt64, index: UInt64, entry: UInt64, bitmap: UInt64) throws {
        let ext = isExtendedL2
        try l2Cache.update(l2Offset) { t in
            let o = Int(index * (ext ? 16 : 8))
            t.setBE64(o, entry)
            if ext { t.setBE64(o + 8, bitmap) }
        }
    }

    /// A host cluster for new guest data: the next free cluster, or the fixed guest offset in an
    /// external data file.
    func allocateDataCluster(guestCluster: UInt64) throws -> UInt64 {
        if hasDataFile { return guestCluster }
        return try allocateClusters(bytes: clusterSize)
    }

    /// QEMU's qcow2_free_any_cluster: drops this entry's reference to its host cluster(s).
    func freeAnyCluster(_ entry: UInt64, discard: DiscardType) throws {
        let type = clusterType(entry)
        let offset = entry & Qcow2.l2OffsetMask
        if hasDataFile {
            if shouldDiscardDataFile(discard) && (type == .normal || type == .zeroAlloc) {
                try? dataHost.discard(at: offset, length: clusterSize)
            }
            return
        }
        switch type {
        case .compressed:
            let (coffset, csize) = compressedLocation(entry)
            try freeClusters(offset: coffset, length: csize, discard: discard)
        case .normal, .zeroAlloc:
            if offset % clusterSize != 0 {
                throw try signalCorruption("Cannot free unaligned cluster \(hex(offset))")
            }
            try freeClusters(offset: offset, length: clusterSize, discard: discard)
        case .zeroPlain, .unallocated:
            break
        }
    }

    private func shouldDiscardDataFile(_ t: DiscardType) -> Bool {
        t == .always || (t == .request && passDiscardRequests)
    }
}
