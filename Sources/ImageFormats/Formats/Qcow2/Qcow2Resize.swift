// Growing a qcow2 image (create gives an empty image its size this way, as QEMU does), with the
// preallocation modes: metadata (L2 tables and host clusters reserved, data left as holes),
// falloc and full (the data area also allocated on the host, zero-filled for full).
import Glibc

extension Qcow2Node {
    public func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws {
        try checkWritable()
        guard newSize % 512 == 0 else {
            throw BlockError(.invalidArgument, "The new size must be a multiple of 512", errno: EINVAL)
        }
        try rw.write {
            let old = size
            if snapshotTable.count > 0 && meta.header.version < 3 {
                throw BlockError(.unsupported, "Can't resize a v2 image which has snapshots", errno: ENOTSUP)
            }
            if newSize < old {
                if preallocation != .off {
                    throw BlockError(.invalidArgument, "Preallocation can't be used for shrinking an image", errno: EINVAL)
                }
                try shrink(from: old, to: newSize)
                var b = [UInt8](repeating: 0, count: 8)
                b.setBE64(0, newSize)
                try b.withUnsafeBytes { try file.write(at: 24, from: $0, flags: []) }
                try file.flush()
                metaLock.withLock {
                    meta.header.size = newSize
                    resizeBitmaps(newSize)
                }
                setSize(newSize)
                return
            }
            let needed = Qcow2Header.l1EntriesNeeded(size: newSize, clusterBits: meta.header.clusterBits, l2EntrySize: meta.l2EntrySize)
            try metaLock.withLock { try meta.growL1Table(minSize: needed, exact: true) }
            var mode = preallocation
            if meta.header.dataFileRaw && mode == .off { mode = .metadata }
            switch mode {
            case .off:
                if let d = dataFile { try d.truncate(to: newSize, preallocation: .off, exact: exact) }
            case .metadata:
                try preallocateMetadata(from: old, to: newSize, fileMode: .off)
            case .falloc, .full:
                if dataFile != nil {
                    try preallocateMetadata(from: old, to: newSize, fileMode: mode)
                } else {
                    try preallocateData(from: old, to: newSize, mode: mode)
                }
            }
            if mode != .off { try metaLock.withLock { try meta.flushCaches() } }
            var b = [UInt8](repeating: 0, count: 8)
            b.setBE64(0, newSize)
            try b.withUnsafeBytes { try file.write(at: 24, from: $0, flags: []) }
            try file.flush()
            metaLock.withLock {
                meta.header.size = newSize
                resizeBitmaps(newSize)
            }
            setSize(newSize)
        }
    }

    /// Bitmaps follow the disk size (new granules start clean), as QEMU's do.
    func resizeBitmaps(_ newSize: UInt64) {
        guard let set = bitmapSet else { return }
        for i in set.bitmaps.indices where !set.bitmaps[i].inconsistent {
            let words = Qcow2Bitmap.wordCount(diskSize: newSize, granularityBits: set.bitmaps[i].granularityBits)
            var bits = set.bitmaps[i].bits
            if bits.count > words { bits.removeLast(bits.count - words) } else { bits += [UInt64](repeating: 0, count: words - bits.count) }
            set.bitmaps[i].bits = bits
            set.changed = true
        }
    }

    /// QEMU's shrink: drop every cluster past the new end, the L2 tables past it, refcount blocks
    /// that became empty, and the file's tail after the last cluster in use.
    private func shrink(from old: UInt64, to newSize: UInt64) throws {
        let cs = meta.clusterSize
        var pos = roundUp(newSize, cs)
        while pos < old {
            try metaLock.withLock {
                let (l1Index, index) = meta.l2Location(pos)
                guard l1Index < meta.l1Table.count, meta.l1Table[l1Index] & Qcow2.l1OffsetMask != 0 else { return }
                let l2 = try meta.l2TableForWrite(l1Index)
                let (entry, bitmap) = try meta.l2Entry(table: l2, index: index)
                if entry != 0 || bitmap != 0 {
                    try meta.setL2Entry(table: l2, index: index, entry: 0, bitmap: 0)
                    try meta.freeAnyCluster(entry, discard: .always)
                }
            }
            pos += cs
        }
        try metaLock.withLock {
            try meta.flushCaches()
            // Shrink the L1 table's contents (its size field stays, as in QEMU).
            let newL1 = Int(Qcow2Header.l1EntriesNeeded(size: newSize, clusterBits: meta.header.clusterBits, l2EntrySize: meta.l2EntrySize))
            if newL1 < meta.l1Table.count {
                let zeros = [UInt8](repeating: 0, count: (meta.l1Table.count - newL1) * 8)
                try zeros.withUnsafeBytes { try file.write(at: meta.header.l1TableOffset + UInt64(newL1) * 8, from: $0, flags: []) }
                try file.flush()
                for i in stride(from: meta.l1Table.count - 1, through: newL1, by: -1) {
                    let l2 = meta.l1Table[i] & Qcow2.l1OffsetMask
                    if l2 != 0 {
                        try meta.freeClusters(offset: l2, length: cs, discard: .always)
                        meta.l2Cache.discard(l2)
                    }
                    meta.l1Table[i] = 0
                }
            }
            try meta.shrinkRefcountTable()
            try meta.flushCaches()
            // Cut the file after the last cluster in use.
            let fileSize = file.size
            var last = Int64((fileSize + cs - 1) / cs) - 1
            while last >= 0, try meta.refcount(ofCluster: UInt64(last)) == 0 { last -= 1 }
            if last >= 0 && UInt64(last + 1) * cs < fileSize {
                try? file.truncate(to: UInt64(last + 1) * cs, preallocation: .off, exact: false)
            }
        }
    }

    /// QEMU's falloc/full growth: new refcount structures at the end of the used space sized for
    /// everything that follows, then all new data clusters in one contiguous run, the file extended
    /// over them with the requested preallocation, and finally the L2 entries.
    private func preallocateData(from old: UInt64, to end: UInt64, mode: Preallocation) throws {
        let cs = meta.clusterSize
        let (start, count) = try metaLock.withLock { () -> (UInt64, UInt64) in
            var fileEnd = roundUp(file.size, cs)
            var last = Int64(fileEnd / cs) - 1
            while last >= 0, try meta.refcount(ofCluster: UInt64(last)) == 0 { last -= 1 }
            if last >= 0 { fileEnd = UInt64(last + 1) * cs }
            let firstGuest = old - old % cs
            let dataClusters = (roundUp(end, cs) - firstGuest) / cs
            let l2Tables = (dataClusters + meta.l2Entries - 1) / meta.l2Entries + 1
            let start = try meta.createRefcountArea(start: fileEnd, additionalClusters: dataClusters + l2Tables,
                                                    exactSize: true, newBlockIndex: 0, newBlockOffset: 0)
            let got = try meta.allocateClusters(at: start, count: dataClusters)
            guard got == dataClusters else {
                throw BlockError(.io, "Failed to allocate data clusters", errno: EIO)
            }
            return (start, dataClusters)
        }
        let newFileSize = start + count * cs
        try file.truncate(to: newFileSize, preallocation: mode, exact: false)
        try metaLock.withLock {
            var guest = old - old % cs
            var host = start
            for _ in 0..<count {
                let (l1Index, index) = meta.l2Location(guest)
                let l2 = try meta.l2TableForWrite(l1Index)
                let (_, bitmap) = try meta.l2Entry(table: l2, index: index)
                try meta.setL2Entry(table: l2, index: index, entry: host | Qcow2.oflagCopied, bitmap: bitmap)
                guest += cs
                host += cs
            }
        }
    }

    /// Reserves host clusters for every unallocated guest cluster in [from, to) and maps them
    /// (QEMU's preallocate_co); then makes the host file long enough, preallocating it with `fileMode`.
    private func preallocateMetadata(from start: UInt64, to end: UInt64, fileMode: Preallocation) throws {
        let cs = meta.clusterSize
        var pos = start - start % cs
        var hostEnd: UInt64 = 0
        var runs: [(start: UInt64, length: UInt64)] = []
        try metaLock.withLock {
            while pos < end {
                let (l1Index, index) = meta.l2Location(pos)
                let l2 = try meta.l2TableForWrite(l1Index)
                let (entry, bitmap) = try meta.l2Entry(table: l2, index: index)
                let type = meta.clusterType(entry)
                if type == .unallocated || type == .zeroPlain {
                    let host = try meta.allocateDataCluster(guestCluster: pos)
                    try meta.setL2Entry(table: l2, index: index, entry: host | Qcow2.oflagCopied, bitmap: bitmap)
                    hostEnd = max(hostEnd, host + cs)
                    if let last = runs.last, last.start + last.length == host {
                        runs[runs.count - 1].length += cs
                    } else {
                        runs.append((host, cs))
                    }
                } else if type == .normal || type == .zeroAlloc {
                    hostEnd = max(hostEnd, (entry & Qcow2.l2OffsetMask) + cs)
                }
                pos += cs
            }
        }
        let host = meta.dataHost
        if meta.hasDataFile {
            try host.truncate(to: end, preallocation: fileMode == .metadata ? .off : fileMode, exact: false)
            return
        }
        if hostEnd > host.size {
            try host.truncate(to: hostEnd, preallocation: .off, exact: false)
        }
        if fileMode == .falloc || fileMode == .full, let f = host as? FileNode {
            for r in runs { try f.preallocate(offset: r.start, length: r.length, writeZeroes: fileMode == .full) }
        }
    }
}
