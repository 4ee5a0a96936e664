// Creating, applying and deleting qcow2 internal snapshots, with QEMU's exact refcount
// bookkeeping (qcow2-snapshot.c): a snapshot is a copy of the L1 table plus one more reference on
// every L2 table and data cluster it reaches; COPIED flags in the active tables follow refcounts.
import Glibc

extension Qcow2Meta {
    /// QEMU's qcow2_update_snapshot_refcount: adds `addend` (-1, 0, +1) references to everything
    /// the L1 table at `l1Offset` reaches, and recomputes the COPIED flags along the way.
    func updateSnapshotRefcount(l1Offset: UInt64, l1Size: Int, addend: Int) throws {
        let cs = clusterSize
        let active = l1Offset == header.l1TableOffset && !viewingSnapshot
        var l1: [UInt64]
        if active {
            l1 = l1Table
        } else {
            let raw = try file.read(at: l1Offset, count: l1Size * 8)
            l1 = (0..<l1Size).map { raw.be64($0 * 8) }
        }
        var l1Changed = false
        let entrySize = Int(l2EntrySize)
        for i in 0..<min(l1Size, l1.count) {
            let l2 = l1[i] & Qcow2.l1OffsetMask
            guard l2 != 0 else { continue }
            if l2 % cs != 0 { throw try signalCorruption("L2 table offset \(hex(l2)) unaligned (L1 index: \(hex(UInt64(i))))") }
            var table = try l2Cache.read(l2) { $0 }
            var changed = false
            for j in 0..<Int(l2Entries) {
                let o = j * entrySize
                let e = table.be64(o)
                var newEntry = e
                switch clusterType(e) {
                case .compressed:
                    if addend != 0 {
                        let (coff, csize) = compressedLocation(e)
                        try updateRefcount(offset: coff, length: csize, addend: 1, decrease: addend < 0, discard: .snapshot)
                    }
                    newEntry = e & ~Qcow2.oflagCopied
                case .normal, .zeroAlloc:
                    let off = e & Qcow2.l2OffsetMask
                    var rc: UInt64 = 1
                    if !hasDataFile {
                        if off % cs != 0 { throw try signalCorruption("Cluster allocation offset \(hex(off)) unaligned (L2 offset: \(hex(l2)), L2 index: \(hex(UInt64(j))))") }
                        if addend != 0 {
                            try updateRefcount(offset: off, length: cs, addend: 1, decrease: addend < 0, discard: .snapshot)
                        }
                        rc = try refcount(ofCluster: off / cs)
                    }
                    newEntry = rc == 1 ? e | Qcow2.oflagCopied : e & ~Qcow2.oflagCopied
                case .zeroPlain, .unallocated:
                    break
                }
                if newEntry != e {
                    table.setBE64(o, newEntry)
                    changed = true
                }
            }
            if changed {
                try l2Cache.installEmpty(l2, contents: table)
            }
            if addend != 0 {
                try updateRefcount(offset: l2, length: cs, addend: 1, decrease: addend < 0, discard: .snapshot)
            }
            let rc = try refcount(ofCluster: l2 / cs)
            let newL1 = rc == 1 ? l1[i] | Qcow2.oflagCopied : l1[i] & ~Qcow2.oflagCopied
            if newL1 != l1[i] {
                l1[i] = newL1
                l1Changed = true
            }
        }
        // QEMU writes the table back (active or not) unless it is being deleted.
        if addend >= 0 && l1Changed {
            if active {
                l1Table = l1
                try writeL1Table()
            } else {
                var b = [UInt8](repeating: 0, count: l1Size * 8)
                for i in 0..<l1Size { b.setBE64(i * 8, l1[i]) }
                try b.withUnsafeBytes { try file.write(at: l1Offset, from: $0, flags: []) }
                try file.flush()
            }
        }
    }

    /// Writes the whole active L1 table.
    func writeL1Table() throws {
        var b = [UInt8](repeating: 0, count: l1Table.count * 8)
        for (i, e) in l1Table.enumerated() { b.setBE64(i * 8, e) }
        try b.withUnsafeBytes { try file.write(at: header.l1TableOffset, from: $0, flags: []) }
        try file.flush()
    }
}

extension Qcow2Node: SnapshotCapableNode {
    /// QEMU's qcow2_write_snapshots: the whole table in new clusters, switched in by one header
    /// write, the old table freed.
    func writeSnapshotTable(_ list: [Qcow2Snapshot]) throws {
        var bytes: [UInt8] = []
        for sn in list {
            while bytes.count % 8 != 0 { bytes.append(0) }
            var h = [UInt8](repeating: 0, count: 40)
            h.setBE64(0, sn.l1TableOffset)
            h.setBE32(8, sn.l1Size)
            h.setBE16(12, UInt16(sn.id.utf8.count))
            h.setBE16(14, UInt16(sn.name.utf8.count))
            h.setBE32(16, sn.dateSec)
            h.setBE32(20, sn.dateNsec)
            h.setBE64(24, sn.vmClockNsec)
            h.setBE32(32, UInt32(truncatingIfNeeded: min(sn.vmStateSize, UInt64(UInt32.max))))
            var extra = [UInt8](repeating: 0, count: 24)
            extra.setBE64(0, sn.vmStateSize)
            extra.setBE64(8, sn.diskSize)
            extra.setBE64(16, sn.icount ?? UInt64.max)
            extra += sn.unknownExtra
            h.setBE32(36, UInt32(extra.count))
            bytes += h + extra + Array(sn.id.utf8) + Array(sn.name.utf8)
        }
        guard UInt64(bytes.count) <= Qcow2Snapshots.maxTableSize else {
            throw BlockError(.invalidArgument, "Snapshot table too large", errno: EFBIG)
        }
        let offset = bytes.isEmpty ? try meta.findFreeClusters(0) : try meta.allocateClusters(bytes: UInt64(bytes.count))
        try meta.flushCaches()
        if !bytes.isEmpty {
            try bytes.withUnsafeBytes { try file.write(at: offset, from: $0, flags: []) }
        }
        try file.flush()
        var hd = [UInt8](repeating: 0, count: 12)
        hd.setBE32(0, UInt32(list.count))
        hd.setBE64(4, offset)
        try hd.withUnsafeBytes { try file.write(at: 60, from: $0, flags: []) }
        try file.flush()
        let oldOffset = meta.header.snapshotsOffset, oldSize = snapshotTableSize
        meta.header.nbSnapshots = UInt32(list.count)
        meta.header.snapshotsOffset = offset
        snapshotTable = list
        snapshotTableSize = UInt64(bytes.count)
        if oldSize > 0 { try meta.freeClusters(offset: oldOffset, length: oldSize, discard: .snapshot) }
    }

    private func checkSnapshotsAllowed() throws {
        try checkWritable()
        if meta.hasDataFile {
            throw BlockError(.unsupported, "Internal snapshots are not supported with external data files", errno: ENOTSUP)
        }
    }

    public func createSnapshot(name: String, dateSec: UInt32, dateNsec: UInt32) throws {
        try checkSnapshotsAllowed()
        guard snapshotTable.count < Int(Qcow2.maxSnapshots) else {
            throw BlockError(.invalidArgument, "Too many snapshots", errno: EFBIG)
        }
        try rw.write {
            try metaLock.withLock {
                let nextID = (snapshotTable.compactMap { UInt64($0.id) }.max() ?? 0) + 1
                let l1Bytes = UInt64(meta.l1Table.count) * 8
                let l1Offset = l1Bytes > 0 ? try meta.allocateClusters(bytes: l1Bytes) : 0
                if l1Bytes > 0 {
                    var b = [UInt8](repeating: 0, count: Int(l1Bytes))
                    for (i, e) in meta.l1Table.enumerated() { b.setBE64(i * 8, e) }
                    try b.withUnsafeBytes { try file.write(at: l1Offset, from: $0, flags: []) }
                }
                try meta.updateSnapshotRefcount(l1Offset: meta.header.l1TableOffset, l1Size: meta.l1Table.count, addend: 1)
                let sn = Qcow2Snapshot(l1TableOffset: l1Offset, l1Size: UInt32(meta.l1Table.count), id: String(nextID),
                                       name: name, dateSec: dateSec, dateNsec: dateNsec, vmClockNsec: 0, vmStateSize: 0,
                                       diskSize: size, icount: 0, extraDataSize: 24, unknownExtra: [])
                try writeSnapshotTable(snapshotTable + [sn])
                try meta.flushCaches()
            }
        }
    }

    public func applySnapshot(_ idOrName: String) throws {
        try checkSnapshotsAllowed()
        guard let index = Qcow2Snapshots.find(idOrName, in: snapshotTable) else {
            throw BlockError(.notFound, "Failed to load snapshot: No such file or directory", errno: ENOENT)
        }
        let sn = snapshotTable[index]
        try Qcow2Header.validateTable(offset: sn.l1TableOffset, entries: UInt64(sn.l1Size), entrySize: 8,
                                      maxBytes: Qcow2.maxL1Bytes, name: "Snapshot L1 table", clusterSize: meta.clusterSize,
                                      fileSize: file.size)
        if sn.diskSize != size {
            try truncate(to: sn.diskSize, preallocation: .off, exact: true)
        }
        try rw.write {
            try metaLock.withLock {
                try meta.growL1Table(minSize: UInt64(sn.l1Size), exact: true)
                let curCount = meta.l1Table.count
                let raw = sn.l1Size > 0 ? try file.read(at: sn.l1TableOffset, count: Int(sn.l1Size) * 8) : []
                var snL1 = [UInt64](repeating: 0, count: curCount)
                for i in 0..<Int(sn.l1Size) { snL1[i] = raw.be64(i * 8) }
                try meta.updateSnapshotRefcount(l1Offset: sn.l1TableOffset, l1Size: Int(sn.l1Size), addend: 1)
                var b = [UInt8](repeating: 0, count: curCount * 8)
                for (i, e) in snL1.enumerated() { b.setBE64(i * 8, e) }
                try meta.flushCaches()
                try b.withUnsafeBytes { try file.write(at: meta.header.l1TableOffset, from: $0, flags: []) }
                try file.flush()
                // The in-memory table is still the old one: drop its references.
                try meta.updateSnapshotRefcount(l1Offset: meta.header.l1TableOffset, l1Size: curCount, addend: -1)
                meta.l1Table = snL1
                meta.l2Cache.clear()
                try meta.updateSnapshotRefcount(l1Offset: meta.header.l1TableOffset, l1Size: curCount, addend: 0)
                try meta.flushCaches()
            }
        }
    }

    public func deleteSnapshot(id: String, name: String) throws {
        try checkSnapshotsAllowed()
        guard let index = snapshotTable.firstIndex(where: { $0.id == id && $0.name == name }) else {
            throw BlockError(.notFound, "Can't find the snapshot", errno: ENOENT)
        }
        try rw.write {
            try metaLock.withLock {
                let sn = snapshotTable[index]
                var list = snapshotTable
                list.remove(at: index)
                try writeSnapshotTable(list)
                try meta.updateSnapshotRefcount(l1Offset: sn.l1TableOffset, l1Size: Int(sn.l1Size), addend: -1)
                if sn.l1Size > 0 { try meta.freeClusters(offset: sn.l1TableOffset, length: UInt64(sn.l1Size) * 8, discard: .snapshot) }
                try meta.updateSnapshotRefcount(l1Offset: meta.header.l1TableOffset, l1Size: meta.l1Table.count, addend: 0)
                try meta.flushCaches()
            }
        }
    }

    /// Snapshot lookup as qemu-img's delete does it (bdrv_snapshot_find: by name... or ID).
    public func findSnapshot(_ key: String) -> SnapshotInfo? {
        snapshots.first { $0.id == key } ?? snapshots.first { $0.name == key }
    }
}
