// Emptying a qcow2 image (after commit) and changing its recorded backing file (rebase).
//
// Emptying follows QEMU's qcow2_make_empty: a v3 image without snapshots or bitmaps is rebuilt in
// place as a brand-new empty image (header kept, fresh refcount table, refcount block and L1 table
// in clusters 1-3, the file cut after them); anything else has all its clusters discarded.
import Glibc

extension Qcow2Node: EmptiableNode, BackingChangeableNode {
    public func makeEmpty() throws {
        try checkWritable()
        try rw.write {
            try metaLock.withLock {
                let cs = meta.clusterSize
                let l1Clusters = (UInt64(meta.l1Table.count) * 8 + cs - 1) / cs
                let simple = meta.header.version >= 3 && snapshotTable.isEmpty && meta.header.bitmaps == nil &&
                    3 + l1Clusters <= meta.refcountBlockEntries && !meta.hasDataFile
                if simple {
                    try makeCompletelyEmpty(l1Clusters: l1Clusters)
                    return
                }
                // Discard everything, cluster by cluster, falling through to the backing file.
                var pos: UInt64 = 0
                while pos < size {
                    let (l1Index, index) = meta.l2Location(pos)
                    if l1Index < meta.l1Table.count, meta.l1Table[l1Index] & Qcow2.l1OffsetMask != 0 {
                        let l2 = try meta.l2TableForWrite(l1Index)
                        let (e, b) = try meta.l2Entry(table: l2, index: index)
                        if e != 0 || b != 0 {
                            try meta.setL2Entry(table: l2, index: index, entry: 0, bitmap: 0)
                            try meta.freeAnyCluster(e, discard: .snapshot)
                        }
                        pos += cs
                    } else {
                        pos = (UInt64(l1Index) + 1) * meta.l2Coverage
                    }
                }
                try meta.flushCaches()
            }
        }
    }

    /// QEMU's make_completely_empty.
    private func makeCompletelyEmpty(l1Clusters: UInt64) throws {
        let cs = meta.clusterSize
        meta.l2Cache.clear()
        meta.refcountCache.clear()
        // Dirty while the refcounts cannot be trusted.
        meta.header.incompatibleFeatures |= Qcow2.incompatDirty
        try meta.writeHeader()
        try file.flush()
        let zeros = [UInt8](repeating: 0, count: Int((2 + l1Clusters) * cs))
        try zeros.withUnsafeBytes { try file.write(at: cs, from: $0, flags: []) }
        if meta.header.l1TableOffset != 3 * cs {
            let l1zeros = [UInt8](repeating: 0, count: Int(l1Clusters * cs))
            try l1zeros.withUnsafeBytes { try file.write(at: meta.header.l1TableOffset, from: $0, flags: []) }
        }
        var h = [UInt8](repeating: 0, count: 20)
        h.setBE64(0, 3 * cs)          // l1_table_offset
        h.setBE64(8, cs)              // refcount_table_offset
        h.setBE32(16, 1)              // refcount_table_clusters
        try h.withUnsafeBytes { try file.write(at: 40, from: $0, flags: []) }
        try file.flush()
        meta.header.l1TableOffset = 3 * cs
        meta.header.refcountTableOffset = cs
        meta.header.refcountTableClusters = 1
        for i in 0..<meta.l1Table.count { meta.l1Table[i] = 0 }
        meta.refcountTable = [UInt64](repeating: 0, count: Int(cs / 8))
        var rt = [UInt8](repeating: 0, count: 8)
        rt.setBE64(0, 2 * cs)
        try rt.withUnsafeBytes { try file.write(at: cs, from: $0, flags: []) }
        try file.flush()
        meta.refcountTable[0] = 2 * cs
        meta.freeClusterIndex = 0
        let first = try meta.allocateClusters(bytes: 3 * cs + UInt64(meta.l1Table.count) * 8)
        guard first == 0 else { throw BlockError(.io, "First cluster in emptied image is in use", errno: EIO) }
        try meta.flushCaches()
        meta.header.incompatibleFeatures &= ~Qcow2.incompatDirty
        try meta.writeHeader()
        try file.flush()
        try file.truncate(to: (3 + l1Clusters) * cs, preallocation: .off, exact: false)
    }

    /// Records a new backing file (nil removes it), as QEMU's qcow2_change_backing_file.
    public func changeBackingFile(_ name: String?, format: String?) throws {
        try checkWritable()
        if name != nil && meta.header.dataFileRaw {
            throw BlockError(.invalidArgument, "Invalid argument", errno: EINVAL)
        }
        if let n = name, n.utf8.count > 1023 { throw BlockError(.invalidArgument, "Invalid argument", errno: EINVAL) }
        try metaLock.withLock {
            let saved = meta.header
            meta.header.backingFile = name
            meta.header.backingFormat = name == nil ? nil : format
            do {
                try meta.writeHeader()
            } catch {
                meta.header = saved
                throw error
            }
        }
    }
}
