// qemu-img check for QED (QEMU's qed-check.c): every L2 table and data cluster the tables point
// to must be aligned, past the header and inside the file, and used once; clusters nothing points
// to are leaks (counted, never freed: QED has no free list). Repair drops entries that point
// outside the file and, when nothing is left wrong, clears the need-check flag.

extension QEDNode {
    public func check(fix: CheckFix, log: (String) -> Void) throws -> CheckResult {
        try rw.write { try metaLock.withLock { try checkLocked(fix: !fix.isEmpty) } }
    }

    private func checkLocked(fix: Bool) throws -> CheckResult {
        let h = meta.header
        let cs = h.clusterBytes
        var r = CheckResult()
        r.totalClusters = (h.imageSize + cs - 1) / cs
        let nclusters = Int(meta.fileSize / cs)
        var used = [Bool](repeating: false, count: nclusters)
        func markUsed(_ offset: UInt64, _ n: Int) -> Bool {
            var corruptions: Int64 = 0
            let first = Int(offset / cs)
            for c in first..<first + n where c < nclusters {
                if used[c] { corruptions += 1 }
                used[c] = true
            }
            r.corruptions += corruptions
            return corruptions == 0
        }
        _ = markUsed(h.l1TableOffset, Int(h.tableSize))
        var invalidL1 = 0
        var checkError: Error?
        for i in 0..<meta.l1.count {
            let l2Offset = meta.l1[i]
            if l2Offset == 0 { continue }
            guard h.tableOffsetValid(l2Offset, fileSize: meta.fileSize) else {
                if fix {
                    meta.l1[i] = 0
                    r.corruptionsFixed += 1
                } else {
                    r.corruptions += 1
                }
                invalidL1 += 1
                continue
            }
            if !markUsed(l2Offset, Int(h.tableSize)) { continue }
            var table: [UInt64]
            do { table = try meta.l2Table(l2Offset) } catch {
                r.checkErrors += 1
                checkError = error
                continue
            }
            var invalidL2 = 0
            var last: UInt64 = 0
            for j in 0..<table.count {
                let e = table[j]
                if e == 0 || e == QED.zeroCluster { continue }
                r.allocatedClusters += 1
                if last != 0 && last &+ cs != e { r.fragmentedClusters += 1 }
                last = e
                guard h.clusterOffsetValid(e, fileSize: meta.fileSize) else {
                    if fix {
                        table[j] = 0
                        r.corruptionsFixed += 1
                    } else {
                        r.corruptions += 1
                    }
                    invalidL2 += 1
                    continue
                }
                _ = markUsed(e, 1)
            }
            if invalidL2 > 0 && fix {
                meta.store(l2Offset, table)
                do { try meta.writeTableEntries(table, at: l2Offset, index: 0, count: table.count) } catch {
                    r.checkErrors += 1
                    checkError = error
                }
            }
        }
        if invalidL1 > 0 && fix {
            do { try meta.writeTableEntries(meta.l1, at: h.l1TableOffset, index: 0, count: meta.l1.count) } catch {
                r.checkErrors += 1
                checkError = error
            }
        }
        if checkError == nil {
            for c in Int(h.headerSize)..<max(Int(h.headerSize), nclusters) where !used[c] { r.leaks += 1 }
            if fix && r.corruptions == 0 && r.checkErrors == 0 && meta.header.features & QED.featureNeedCheck != 0 {
                try file.flush()
                meta.header.features &= ~QED.featureNeedCheck
                try meta.writeHeader()
            }
        }
        return r
    }
}
