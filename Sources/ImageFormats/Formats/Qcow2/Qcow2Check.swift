// qcow2 consistency check and repair, as QEMU's qcow2_check_refcounts does it: rebuild every
// cluster's reference count in memory by walking all metadata (header, L1/L2 tables of the active
// state and of each snapshot, compressed clusters, the snapshot table, refcount table and blocks,
// bitmaps), compare with the stored refcounts (more stored = leak, fewer = corruption), check the
// COPIED flags, and gather the fragmentation statistics. Repairs fix leaks and refcount errors
// through the normal refcount update path; a broken refcount structure is rebuilt from scratch.
import Glibc

struct Qcow2Check {
    let node: Qcow2Node

    /// Opening a dirty lazy-refcounts image for writing repairs it first (QEMU does the same).
    func repairDirtyOnOpen() throws {
        let r = try node.checkLocked(fix: [.leaks, .errors], log: { _ in })
        if r.checkErrors > 0 || r.corruptions > 0 {
            throw BlockError(.corrupt, "Could not repair dirty image", errno: EIO)
        }
    }
}

extension Qcow2Node: CheckableNode {
    public func check(fix: CheckFix, log: (String) -> Void) throws -> CheckResult {
        try rw.write { try checkLocked(fix: fix, log: log) }
    }

    func checkLocked(fix: CheckFix, log: (String) -> Void) throws -> CheckResult {
        try metaLock.withLock {
            if !isReadOnly { try meta.flushCaches() }
            var res = CheckResult()
            try checkSnapshotTable(&res, fix: fix, log: log)
            try checkRefcounts(&res, fix: fix, log: log)
            if !fix.isEmpty && res.checkErrors == 0 && res.corruptions == 0 && !isReadOnly {
                meta.header.incompatibleFeatures &= ~(Qcow2.incompatDirty | Qcow2.incompatCorrupt)
                meta.markedCorrupt = false
                try meta.flushCaches()
                try meta.writeHeader()
                try file.flush()
            }
            return res
        }
    }

    /// Snapshot entries whose L1 table cannot be right (QEMU's qcow2_check_fix_snapshot_table).
    private func checkSnapshotTable(_ res: inout CheckResult, fix: CheckFix, log: (String) -> Void) throws {
        for sn in snapshotTable {
            if sn.l1TableOffset % meta.clusterSize != 0 {
                log("ERROR snapshot \(sn.id) (\(sn.name)) l1_offset=\(hex(sn.l1TableOffset)): L1 table is not cluster aligned; snapshot table entry corrupted")
                res.corruptions += 1
            } else if UInt64(sn.l1Size) > Qcow2.maxL1Bytes / 8 {
                log("ERROR snapshot \(sn.id) (\(sn.name)) l1_size=\(hex(UInt64(sn.l1Size))): L1 table is too large; snapshot table entry corrupted")
                res.corruptions += 1
            }
        }
    }

    /// The in-memory refcount table being rebuilt: dense over the file, sparse past its end (a
    /// corrupted entry pointing far away must not make us allocate for it).
    private struct IMRT {
        var counts: [UInt32]
        var beyond: [UInt64: UInt32] = [:]
        let clusterSize: UInt64
        let max: UInt64

        func count(_ c: UInt64) -> UInt64 {
            c < UInt64(counts.count) ? UInt64(counts[Int(c)]) : UInt64(beyond[c] ?? 0)
        }

        mutating func add(_ offset: UInt64, _ size: UInt64, _ res: inout CheckResult, log: (String) -> Void) {
            guard size > 0 else { return }
            let (endExclusive, overflow) = offset.addingReportingOverflow(size)
            guard !overflow else { res.corruptions += 1; return }
            var c = offset / clusterSize
            let last = (endExclusive - 1) / clusterSize
            guard last - c < 1 << 24 else { res.corruptions += 1; return }   // no real range is this long
            while c <= last {
                if count(c) >= Swift.min(max, UInt64(UInt32.max)) {
                    log("ERROR: overflow cluster offset=\(hex(c * clusterSize))")
                    log("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing")
                    res.corruptions += 1
                } else if c < UInt64(counts.count) {
                    counts[Int(c)] += 1
                } else if beyond.count < 1 << 20 {
                    beyond[c, default: 0] += 1
                } else {
                    res.checkErrors += 1
                }
                c += 1
            }
        }
    }

    private func checkRefcounts(_ res: inout CheckResult, fix: CheckFix, log: (String) -> Void) throws {
        let cs = meta.clusterSize
        let fileSize = file.size
        let nbClusters = (fileSize + cs - 1) / cs
        guard nbClusters <= UInt64(Int32.max) else {
            res.checkErrors += 1
            throw BlockError(.io, "Image too large to check", errno: EFBIG)
        }
        res.totalClusters = (size + cs - 1) / cs
        var rebuild = false
        var imrt = try calculateRefcounts(&res, nbClusters: nbClusters, fix: fix, rebuild: &rebuild, log: log)
        let preCompare = res
        var highest: UInt64 = 0
        try compareRefcounts(&res, imrt: imrt, fix: [], rebuild: &rebuild, highest: &highest, log: log)
        if rebuild && fix.contains(.errors) {
            let old = res
            log("Rebuilding refcount structure")
            try rebuildRefcountStructure(&res, imrt: &imrt, log: log)
            res.corruptions = 0
            res.leaks = 0
            rebuild = false
            var fresh = CheckResult()
            fresh.totalClusters = res.totalClusters
            imrt = try calculateRefcounts(&fresh, nbClusters: (file.size + cs - 1) / cs, fix: [], rebuild: &rebuild, log: log)
            res.corruptions = fresh.corruptions
            res.leaks = fresh.leaks
            var freshLeaks: Int64 = 0
            if fix.contains(.leaks) {
                var r2 = CheckResult()
                try compareRefcounts(&r2, imrt: imrt, fix: .leaks, rebuild: &rebuild, highest: &highest, log: log)
                if rebuild { log("ERROR rebuilt refcount structure is still broken") }
                freshLeaks = r2.leaks
            }
            if res.corruptions < old.corruptions { res.corruptionsFixed += old.corruptions - res.corruptions }
            if res.leaks < old.leaks { res.leaksFixed += old.leaks - res.leaks }
            res.leaks += freshLeaks
            res.allocatedClusters = fresh.allocatedClusters
            res.fragmentedClusters = fresh.fragmentedClusters
            res.compressedClusters = fresh.compressedClusters
        } else if !fix.isEmpty {
            if rebuild {
                log("ERROR need to rebuild refcount structures")
                res.checkErrors += 1
                throw BlockError(.io, "need to rebuild refcount structures", errno: EIO)
            }
            if res.leaks > 0 || res.corruptions > 0 {
                res = preCompare
                try compareRefcounts(&res, imrt: imrt, fix: fix, rebuild: &rebuild, highest: &highest, log: log)
            }
        }
        try checkCopiedFlags(&res, fix: fix, log: log)
        res.imageEndOffset = (highest + 1) * cs
    }

    private func calculateRefcounts(_ res: inout CheckResult, nbClusters: UInt64, fix: CheckFix, rebuild: inout Bool,
                                    log: (String) -> Void) throws -> IMRT {
        let cs = meta.clusterSize
        var imrt = IMRT(counts: [UInt32](repeating: 0, count: Int(nbClusters)), clusterSize: cs, max: meta.refcountMax)
        imrt.add(0, cs, &res, log: log)
        let h = meta.header
        try checkL1(&res, &imrt, offset: h.l1TableOffset, size: UInt64(h.l1Size), countStats: true, log: log)
        for sn in snapshotTable where sn.l1TableOffset % cs == 0 && UInt64(sn.l1Size) <= Qcow2.maxL1Bytes / 8 {
            try checkL1(&res, &imrt, offset: sn.l1TableOffset, size: UInt64(sn.l1Size), countStats: false, log: log)
        }
        imrt.add(h.snapshotsOffset, snapshotTableSize, &res, log: log)
        imrt.add(h.refcountTableOffset, UInt64(meta.refcountTable.count) * 8, &res, log: log)
        if let c = h.cryptoHeader { imrt.add(c.offset, c.length, &res, log: log) }
        if let bm = h.bitmaps, h.autoclearFeatures & Qcow2.autoclearBitmaps != 0 {
            imrt.add(bm.directoryOffset, bm.directorySize, &res, log: log)
            let read: (UInt64, Int) throws -> [UInt8] = { [file] o, n in try file.read(at: o, count: n) }
            if let entries = try? Qcow2Bitmaps.parseDirectory(read: read, offset: bm.directoryOffset, size: bm.directorySize,
                                                            count: bm.count, clusterSize: cs, fileSize: file.size) {
                for e in entries {
                    imrt.add(e.tableOffset, UInt64(e.tableSize) * 8, &res, log: log)
                    for c in (try? Qcow2Bitmaps.tableClusters(read: read, entry: e)) ?? [] { imrt.add(c, cs, &res, log: log) }
                }
            } else {
                res.corruptions += 1
                log("ERROR bitmap directory is corrupted")
            }
        }
        // Refcount blocks.
        for (i, e) in meta.refcountTable.enumerated() {
            let off = e & Qcow2.refTableOffsetMask
            if off % cs != 0 {
                log("ERROR refcount block \(i) is not cluster aligned; refcount table entry corrupted")
                res.corruptions += 1
                rebuild = true
                continue
            }
            if off / cs >= nbClusters && off != 0 {
                log("\(fix.contains(.errors) ? "Repairing" : "ERROR") refcount block \(i) is outside image")
                res.corruptions += 1
                rebuild = true
                continue
            }
            if off != 0 {
                imrt.add(off, cs, &res, log: log)
                if imrt.count(off / cs) != 1 {
                    log("ERROR refcount block \(i) refcount=\(imrt.count(off / cs))")
                    res.corruptions += 1
                    rebuild = true
                }
            }
        }
        return imrt
    }

    private func checkL1(_ res: inout CheckResult, _ imrt: inout IMRT, offset: UInt64, size: UInt64, countStats: Bool,
                         log: (String) -> Void) throws {
        let cs = meta.clusterSize
        imrt.add(offset, size * 8, &res, log: log)
        guard size > 0 else { return }
        let raw = try file.read(at: offset, count: Int(size) * 8)
        for i in 0..<Int(size) {
            var nextContiguous: UInt64 = 0   // QEMU counts fragmentation within each L2 table
            let l2 = raw.be64(i * 8) & Qcow2.l1OffsetMask
            guard l2 != 0 else { continue }
            imrt.add(l2, cs, &res, log: log)
            if l2 % cs != 0 {
                log("ERROR l2_offset=\(String(l2, radix: 16)): Table is not cluster aligned; L1 entry corrupted")
                res.corruptions += 1
                continue
            }
            try checkL2(&res, &imrt, l2Offset: l2, countStats: countStats, nextContiguous: &nextContiguous, log: log)
        }
    }

    private func checkL2(_ res: inout CheckResult, _ imrt: inout IMRT, l2Offset: UInt64, countStats: Bool,
                         nextContiguous: inout UInt64, log: (String) -> Void) throws {
        let cs = meta.clusterSize
        let ext = meta.isExtendedL2
        let table = try file.read(at: l2Offset, count: Int(cs))
        for i in 0..<Int(meta.l2Entries) {
            var entry = table.be64(i * Int(meta.l2EntrySize))
            let bitmap = ext ? table.be64(i * 16 + 8) : 0
            switch meta.clusterType(entry) {
            case .compressed:
                if entry & Qcow2.oflagCopied != 0 {
                    log("ERROR: coffset=\(hex(entry & ~Qcow2.oflagCompressed & ~Qcow2.oflagCopied)): copied flag must never be set for compressed clusters")
                    entry &= ~Qcow2.oflagCopied
                    res.corruptions += 1
                }
                if meta.hasDataFile {
                    log("ERROR compressed cluster \(i) with data file, entry=\(hex(entry))")
                    res.corruptions += 1
                    continue
                }
                if ext && bitmap != 0 {
                    log("ERROR compressed cluster \(i) with non-zero subcluster allocation bitmap, entry=\(hex(entry))")
                    res.corruptions += 1
                }
                let (coff, csize) = meta.compressedLocation(entry)
                imrt.add(coff & ~511, csize + (coff & 511), &res, log: log)
                if countStats {
                    res.allocatedClusters += 1
                    res.compressedClusters += 1
                    res.fragmentedClusters += 1
                }
            case .zeroAlloc, .normal:
                let off = entry & Qcow2.l2OffsetMask
                if ext && bitmap & (bitmap >> 32) & 0xFFFF_FFFF != 0 {
                    log("ERROR invalid subcluster allocation bitmap, entry=\(hex(entry)) bitmap=\(hex(bitmap))")
                    res.corruptions += 1
                }
                if countStats {
                    res.allocatedClusters += 1
                    if nextContiguous != 0 && off != nextContiguous { res.fragmentedClusters += 1 }
                    nextContiguous = off + cs
                }
                if !meta.hasDataFile { imrt.add(off, cs, &res, log: log) }
                if off % cs != 0 {
                    log("ERROR offset=\(String(off, radix: 16)): Cluster is not properly aligned; L2 entry corrupted.")
                    res.corruptions += 1
                }
            case .zeroPlain, .unallocated:
                if ext && bitmap & 0xFFFF_FFFF != 0 {
                    log("ERROR unallocated cluster with allocated subclusters, entry=\(hex(entry)) bitmap=\(hex(bitmap))")
                    res.corruptions += 1
                }
            }
        }
    }

    private func compareRefcounts(_ res: inout CheckResult, imrt: IMRT, fix: CheckFix, rebuild: inout Bool,
                                  highest: inout UInt64, log: (String) -> Void) throws {
        highest = 0
        let n = UInt64(imrt.counts.count)
        var i: UInt64 = 0
        // Dense clusters in order, then referenced clusters past the end of the file.
        let extra = imrt.beyond.keys.sorted()
        var extraIndex = 0
        func nextIndex() -> UInt64? {
            if i < n { return i }
            if extraIndex < extra.count { i = extra[extraIndex]; extraIndex += 1; return i }
            return nil
        }
        while let _ = nextIndex() {
            let stored: UInt64
            do { stored = try meta.refcount(ofCluster: i) } catch {
                log("Can't get refcount for cluster \(i): \(BlockError.strerror((error as? BlockError)?.errno ?? EIO))")
                res.checkErrors += 1
                i += 1
                continue
            }
            let computed = imrt.count(i)
            if stored > 0 || computed > 0 { highest = i }
            if stored != computed {
                var fixing = false
                var isLeakFix = false
                if stored == 0 {
                    rebuild = true
                } else if stored > computed && fix.contains(.leaks) {
                    fixing = true
                    isLeakFix = true
                } else if stored < computed && fix.contains(.errors) {
                    fixing = true
                }
                log("\(fixing ? "Repairing" : stored < computed ? "ERROR" : "Leaked") cluster \(i) refcount=\(stored) reference=\(computed)")
                if fixing {
                    let diff = stored > computed ? stored - computed : computed - stored
                    do {
                        try meta.updateRefcount(offset: i * meta.clusterSize, length: 1, addend: diff, decrease: stored > computed, discard: .always)
                        if isLeakFix { res.leaksFixed += 1 } else { res.corruptionsFixed += 1 }
                        i += 1
                        continue
                    } catch {}
                }
                if stored < computed { res.corruptions += 1 } else { res.leaks += 1 }
            }
            i += 1
        }
        if meta.refcountCache.hasDirty { try meta.flushCaches() }
    }

    private func checkCopiedFlags(_ res: inout CheckResult, fix: CheckFix, log: (String) -> Void) throws {
        let cs = meta.clusterSize
        for i in 0..<meta.l1Table.count {
            let l1e = meta.l1Table[i]
            let l2 = l1e & Qcow2.l1OffsetMask
            guard l2 != 0, l2 % cs == 0 else { continue }
            if let rc = try? meta.refcount(ofCluster: l2 / cs), (rc == 1) != (l1e & Qcow2.oflagCopied != 0) {
                log("\(fix.contains(.errors) ? "Repairing" : "ERROR") OFLAG_COPIED L2 cluster: l1_index=\(i) l1_entry=\(String(l1e, radix: 16)) refcount=\(rc)")
                if fix.contains(.errors) {
                    meta.l1Table[i] = rc == 1 ? l1e | Qcow2.oflagCopied : l1e & ~Qcow2.oflagCopied
                    try meta.writeL1Entry(i)
                    res.corruptionsFixed += 1
                } else {
                    res.corruptions += 1
                }
            }
            var table = try file.read(at: l2, count: Int(cs))
            var dirty = false
            for j in 0..<Int(meta.l2Entries) {
                let o = j * Int(meta.l2EntrySize)
                let e = table.be64(o)
                let t = meta.clusterType(e)
                guard t == .normal || t == .zeroAlloc else { continue }
                let data = e & Qcow2.l2OffsetMask
                let rc: UInt64
                if meta.hasDataFile { rc = 1 } else {
                    guard data % cs == 0, let r = try? meta.refcount(ofCluster: data / cs) else { continue }
                    rc = r
                }
                if (rc == 1) != (e & Qcow2.oflagCopied != 0) {
                    log("\(fix.contains(.errors) ? "Repairing" : "ERROR") OFLAG_COPIED data cluster: l2_entry=\(String(e, radix: 16)) refcount=\(rc)")
                    if fix.contains(.errors) {
                        table.setBE64(o, rc == 1 ? e | Qcow2.oflagCopied : e & ~Qcow2.oflagCopied)
                        dirty = true
                        res.corruptionsFixed += 1
                    } else {
                        res.corruptions += 1
                    }
                }
            }
            if dirty {
                meta.l2Cache.discard(l2)
                try table.withUnsafeBytes { try file.write(at: l2, from: $0, flags: []) }
            }
        }
    }

    /// QEMU's rebuild_refcount_structure: new refcount blocks and table written from the in-memory
    /// counts, then switched in through the header. The old structures become leaks.
    private func rebuildRefcountStructure(_ res: inout CheckResult, imrt: inout IMRT, log: (String) -> Void) throws {
        let cs = meta.clusterSize
        let perBlock = meta.refcountBlockEntries
        let order = meta.header.refcountOrder
        meta.refcountCache.clear()
        func allocate(_ count: UInt64, from first: inout UInt64) -> UInt64 {
            var c = first
            var run: UInt64 = 0
            var firstGap = true
            while run < count {
                if c >= UInt64(imrt.counts.count) { imrt.counts.append(0) }
                if imrt.counts[Int(c)] == 0 {
                    if firstGap { first = c; firstGap = false }
                    run += 1
                } else {
                    run = 0
                }
                c += 1
            }
            let start = c - count
            for k in start..<c { imrt.counts[Int(k)] = 1 }
            return start * cs
        }
        var firstFree: UInt64 = 0
        var table: [UInt64] = []
        var tableOffset: UInt64? = nil
        var cluster: UInt64 = 0
        while true {
            while cluster < UInt64(imrt.counts.count) {
                if imrt.counts[Int(cluster)] == 0 { cluster += 1; continue }
                let blockIndex = cluster / perBlock
                let blockStart = blockIndex * perBlock
                if firstFree < blockStart { firstFree = blockStart }
                let blockOffset = allocate(1, from: &firstFree)
                if UInt64(table.count) <= blockIndex {
                    let newSize = Int(roundUp((blockIndex + 1) * 8, cs) / 8)
                    table += [UInt64](repeating: 0, count: newSize - table.count)
                    tableOffset = nil
                }
                table[Int(blockIndex)] = blockOffset
                if blockIndex == (UInt64(imrt.counts.count) - 1) / perBlock && tableOffset == nil {
                    tableOffset = allocate((UInt64(table.count) * 8 + cs - 1) / cs, from: &firstFree)
                }
                var block = [UInt8](repeating: 0, count: Int(cs))
                for k in 0..<perBlock {
                    let idx = blockStart + k
                    if idx < UInt64(imrt.counts.count) {
                        Qcow2Meta.setRefcount(&block, k, UInt64(imrt.counts[Int(idx)]), order: order)
                    }
                }
                try block.withUnsafeBytes { try file.write(at: blockOffset, from: $0, flags: []) }
                cluster = blockStart + perBlock
            }
            if tableOffset != nil { break }
            let post = roundUp(UInt64(imrt.counts.count), perBlock)
            if firstFree < post { firstFree = post }
            tableOffset = allocate((UInt64(table.count) * 8 + cs - 1) / cs, from: &firstFree)
            // Continue after the blocks written so far: the table may need a block of its own.
        }
        // Blocks covering clusters allocated after they were written are rewritten above on the
        // second pass; write the table and switch the header.
        var bytes = [UInt8](repeating: 0, count: table.count * 8)
        for (i, e) in table.enumerated() { bytes.setBE64(i * 8, e) }
        try bytes.withUnsafeBytes { try file.write(at: tableOffset!, from: $0, flags: []) }
        var h = [UInt8](repeating: 0, count: 12)
        h.setBE64(0, tableOffset!)
        h.setBE32(8, UInt32((UInt64(bytes.count) + cs - 1) / cs))
        try h.withUnsafeBytes { try file.write(at: 48, from: $0, flags: []) }
        try file.flush()
        meta.header.refcountTableOffset = tableOffset!
        meta.header.refcountTableClusters = UInt32((UInt64(bytes.count) + cs - 1) / cs)
        meta.refcountTable = table
        meta.freeClusterIndex = 0
    }
}
