// qcow2 host cluster management: reading and changing refcounts, allocating clusters.
//
// The algorithms follow QEMU's qcow2-refcount.c so that images we write have the layout QEMU would
// give them: allocation scans for free clusters from a moving hint (free_cluster_index); a missing
// refcount block is placed at the first free cluster and describes itself when it can; a full
// refcount table is replaced by a new, self-describing area (refcount blocks + table) at the end
// of the file, switched in with one header write. A refcount change that had to create metadata
// asks its caller to search for free space again (QEMU's -EAGAIN), since the new metadata may sit
// where the caller meant to put data.
import Glibc

/// Thrown inside allocation when new refcount metadata was created; the caller retries.
struct Qcow2RetryAllocation: Error {}

extension Qcow2Meta {
    var refcountBlockEntries: UInt64 { clusterSize * 8 / header.refcountBits }
    var refcountMax: UInt64 { header.refcountOrder == 6 ? UInt64.max : (1 << header.refcountBits) - 1 }

    // MARK: entry access (any width from 1 to 64 bits)

    static func getRefcount(_ block: [UInt8], _ index: UInt64, order: UInt32) -> UInt64 {
        switch order {
        case 0...2:
            let bits = UInt64(1) << UInt64(order)
            let bit = index * bits
            return (UInt64(block[Int(bit / 8)]) >> (bit % 8)) & ((1 << bits) - 1)
        case 3: return UInt64(block[Int(index)])
        case 4: return UInt64(block.be16(Int(index * 2)))
        case 5: return UInt64(block.be32(Int(index * 4)))
        default: return block.be64(Int(index * 8))
        }
    }

    static func setRefcount(_ block: inout [UInt8], _ index: UInt64, _ value: UInt64, order: UInt32) {
        switch order {
        case 0...2:
            let bits = UInt64(1) << UInt64(order)
            let bit = index * bits
            let mask = UInt8(((1 << bits) - 1) << (bit % 8))
            let i = Int(bit / 8)
            block[i] = (block[i] & ~mask) | (UInt8(truncatingIfNeeded: value << (bit % 8)) & mask)
        case 3: block[Int(index)] = UInt8(truncatingIfNeeded: value)
        case 4: block.setBE16(Int(index * 2), UInt16(truncatingIfNeeded: value))
        case 5: block.setBE32(Int(index * 4), UInt32(truncatingIfNeeded: value))
        default: block.setBE64(Int(index * 8), value)
        }
    }

    /// The refcount of host cluster `index` (0 where no refcount block covers it).
    func refcount(ofCluster index: UInt64) throws -> UInt64 {
        let tableIndex = index / refcountBlockEntries
        guard tableIndex < UInt64(refcountTable.count) else { return 0 }
        let blockOffset = refcountTable[Int(tableIndex)] & Qcow2.refTableOffsetMask
        if blockOffset == 0 { return 0 }
        if blockOffset % clusterSize != 0 {
            throw try signalCorruption("Refblock offset \(hex(blockOffset)) unaligned (reftable index: \(hex(tableIndex)))")
        }
        let order = header.refcountOrder
        return try refcountCache.read(blockOffset) { Qcow2Meta.getRefcount($0, index % refcountBlockEntries, order: order) }
    }

    // MARK: allocation

    /// QEMU's alloc_clusters_noref: the first run of `count` free clusters at or after the hint.
    func findFreeClusters(_ count: UInt64) throws -> UInt64 {
        var run: UInt64 = 0
        while run < count {
            let idx = freeClusterIndex
            freeClusterIndex += 1
            if try refcount(ofCluster: idx) != 0 {
                run = 0
            } else {
                run += 1
            }
            if freeClusterIndex > maxHostClusters {
                throw BlockError(.io, "qcow2: the image has no room for more clusters", errno: EFBIG)
            }
        }
        return (freeClusterIndex - count) * clusterSize
    }

    /// Allocates `bytes` (rounded up to clusters) of contiguous host clusters with refcount 1.
    func allocateClusters(bytes: UInt64) throws -> UInt64 {
        let count = (bytes + clusterSize - 1) / clusterSize
        while true {
            let offset = try findFreeClusters(count)
            do {
                try updateRefcount(offset: offset, length: count * clusterSize, addend: 1, decrease: false)
                return offset
            } catch is Qcow2RetryAllocation {
                continue
            }
        }
    }

    /// QEMU's qcow2_alloc_clusters_at: allocates up to `count` clusters starting exactly at `offset`,
    /// stopping at the first one in use; returns how many it got.
    func allocateClusters(at offset: UInt64, count: UInt64) throws -> UInt64 {
        guard count > 0 else { return 0 }
        while true {
            var n: UInt64 = 0
            let first = offset / clusterSize
            while n < count, try refcount(ofCluster: first + n) == 0 { n += 1 }
            if n == 0 { return 0 }
            do {
                try updateRefcount(offset: offset, length: n * clusterSize, addend: 1, decrease: false)
                return n
            } catch is Qcow2RetryAllocation {
                continue
            }
        }
    }

    /// QEMU's qcow2_alloc_bytes: space for a compressed cluster, packed after the previous one.
    func allocateBytes(_ size: UInt64) throws -> UInt64 {
        precondition(size > 0 && size <= clusterSize)
        var offset = freeByteOffset
        if offset != 0, try refcount(ofCluster: offset / clusterSize) == refcountMax { offset = 0 }
        var freeInCluster = clusterSize - (offset % clusterSize)
        while true {
            if offset == 0 || freeInCluster < size {
                let newCluster = try findFreeClusters(1)
                if offset == 0 || roundUp(offset, clusterSize) != newCluster {
                    offset = newCluster
                    freeInCluster = clusterSize
                } else {
                    freeInCluster += clusterSize
                }
            }
            do {
                try updateRefcount(offset: offset, length: size, addend: 1, decrease: false)
                break
            } catch is Qcow2RetryAllocation {
                offset = 0
                continue
            }
        }
        freeByteOffset = offset + size
        if freeByteOffset % clusterSize == 0 { freeByteOffset = 0 }
        return offset
    }

    /// Drops one reference from each cluster in the range; clusters reaching zero become free.
    func freeClusters(offset: UInt64, length: UInt64, discard: DiscardType = .other) throws {
        try updateRefcount(offset: offset, length: length, addend: 1, decrease: true, discard: discard)
    }

    enum DiscardType { case never, always, request, snapshot, other }

    /// QEMU's update_refcount: adds or removes `addend` references to every cluster overlapping
    /// [offset, offset+length). Undoes its partial work before throwing.
    func updateRefcount(offset: UInt64, length: UInt64, addend: UInt64, decrease: Bool,
                        discard: DiscardType = .never) throws {
        guard length > 0 else { return }
        let start = offset - offset % clusterSize
        let last = (offset + length - 1) - (offset + length - 1) % clusterSize
        var cluster = start
        do {
            while cluster <= last {
                let index = cluster / clusterSize
                let blockOffset = try refcountBlock(forCluster: index, startOfRequest: start)
                let order = header.refcountOrder
                let bi = index % refcountBlockEntries
                let newValue: UInt64 = try refcountCache.update(blockOffset) { block in
                    let old = Qcow2Meta.getRefcount(block, bi, order: order)
                    let new: UInt64
                    if decrease {
                        guard old >= addend else {
                            throw BlockError(.corrupt, "qcow2: refcount of cluster \(index) would drop below zero", errno: EINVAL)
                        }
                        new = old - addend
                    } else {
                        let (sum, o) = old.addingReportingOverflow(addend)
                        guard !o && sum <= refcountMax else {
                            throw BlockError(.io, "qcow2: refcount of cluster \(index) would overflow", errno: EINVAL)
                        }
                        new = sum
                    }
                    Qcow2Meta.setRefcount(&block, bi, new, order: order)
                    return new
                }
                if newValue == 0 {
                    if index < freeClusterIndex { freeClusterIndex = index }
                    refcountCache.discard(cluster)
                    l2Cache.discard(cluster)
                    if shouldPassDiscard(discard) { try? dataHost.discard(at: cluster, length: clusterSize) }
                }
                cluster += clusterSize
            }
        } catch {
            if cluster > start {
                try? updateRefcount(offset: start, length: cluster - start, addend: addend, decrease: !decrease)
            }
            throw error
        }
    }

    private func shouldPassDiscard(_ t: DiscardType) -> Bool {
        switch t {
        case .always: return true
        case .request: return passDiscardRequests
        case .snapshot: return true
        case .never, .other: return false
        }
    }

    // MARK: refcount blocks and table

    /// The offset of the refcount block covering host cluster `index`, creating it (and growing the
    /// refcount table) when missing. Throws Qcow2RetryAllocation when it created metadata.
    func refcountBlock(forCluster index: UInt64, startOfRequest: UInt64) throws -> UInt64 {
        let tableIndex = index / refcountBlockEntries
        if tableIndex < UInt64(refcountTable.count) {
            let off = refcountTable[Int(tableIndex)] & Qcow2.refTableOffsetMask
            if off != 0 {
                if off % clusterSize != 0 {
                    throw try signalCorruption("Refblock offset \(hex(off)) unaligned (reftable index: \(hex(tableIndex)))")
                }
                return off
            }
        }
        // Something must be allocated: let the caller search again afterwards.
        defer {
            if freeClusterIndex > startOfRequest / clusterSize { freeClusterIndex = startOfRequest / clusterSize }
        }
        try l2Cache.flush()
        let newBlock = try findFreeClusters(1)
        let newBlockIndex = newBlock / clusterSize
        if newBlockIndex / refcountBlockEntries == tableIndex {
            // Self-describing block.
            var data = [UInt8](repeating: 0, count: Int(clusterSize))
            Qcow2Meta.setRefcount(&data, newBlockIndex % refcountBlockEntries, 1, order: header.refcountOrder)
            try refcountCache.installEmpty(newBlock, contents: data)
        } else {
            try updateRefcount(offset: newBlock, length: clusterSize, addend: 1, decrease: false)
            try refcountCache.flush()
            try refcountCache.installEmpty(newBlock)
        }
        try refcountCache.writeBack(newBlock)
        if tableIndex < UInt64(refcountTable.count) {
            var entry = [UInt8](repeating: 0, count: 8)
            entry.setBE64(0, newBlock)
            try entry.withUnsafeBytes { try file.write(at: header.refcountTableOffset + tableIndex * 8, from: $0, flags: []) }
            try file.flush()
            refcountTable[Int(tableIndex)] = newBlock
            throw Qcow2RetryAllocation()
        }
        // The table is full: build a new self-describing area past everything in use.
        let blocksUsed = (max(index + 1, newBlockIndex + 1) + refcountBlockEntries - 1) / refcountBlockEntries
        let metaOffset = blocksUsed * refcountBlockEntries * clusterSize
        _ = try createRefcountArea(start: metaOffset, additionalClusters: 0, exactSize: false,
                                   newBlockIndex: Int(tableIndex), newBlockOffset: newBlock)
        throw Qcow2RetryAllocation()
    }

    /// QEMU's qcow2_shrink_reftable: refcount blocks counting nothing but (maybe) themselves are
    /// dropped from the table and freed.
    func shrinkRefcountTable() throws {
        let order = header.refcountOrder
        var newTable = refcountTable
        for (i, e) in refcountTable.enumerated() {
            let off = e & Qcow2.refTableOffsetMask
            guard off != 0 else { continue }
            let selfIndex = (off / clusterSize) / refcountBlockEntries == UInt64(i) ? (off / clusterSize) % refcountBlockEntries : nil
            let unused: Bool = try refcountCache.read(off) { block in
                var b = block
                if let si = selfIndex { Qcow2Meta.setRefcount(&b, si, 0, order: order) }
                return b.isAllZero
            }
            if unused { newTable[i] = 0 }
        }
        guard newTable != refcountTable else { return }
        var bytes = [UInt8](repeating: 0, count: newTable.count * 8)
        for (i, e) in newTable.enumerated() { bytes.setBE64(i * 8, e) }
        try bytes.withUnsafeBytes { try file.write(at: header.refcountTableOffset, from: $0, flags: []) }
        try file.flush()
        let old = refcountTable
        refcountTable = newTable
        for (i, e) in old.enumerated() where e != 0 && newTable[i] == 0 {
            let off = e & Qcow2.refTableOffsetMask
            refcountCache.discard(off)
            // Its own refcount lives in another block (or was in itself, now gone).
            if (off / clusterSize) / refcountBlockEntries != UInt64(i) {
                try freeClusters(offset: off, length: clusterSize, discard: .always)
            }
        }
    }

    /// QEMU's qcow2_refcount_metadata_size: refcount blocks and table clusters needed to cover
    /// `clusters` clusters plus themselves.
    static func refcountMetadataSize(clusters: UInt64, clusterSize: UInt64, refcountOrder: UInt32,
                                     generousIncrease: Bool) -> (bytes: UInt64, blocks: UInt64) {
        let blocksPerTableCluster = clusterSize / 8
        let refcountsPerBlock = clusterSize * 8 / (1 << UInt64(refcountOrder))
        var clusters = clusters
        var generous = generousIncrease
        var table: UInt64 = 0, blocks: UInt64 = 0, n: UInt64 = 0, last: UInt64
        repeat {
            last = n
            blocks = (clusters + table + blocks + refcountsPerBlock - 1) / refcountsPerBlock
            table = (blocks + blocksPerTableCluster - 1) / blocksPerTableCluster
            n = clusters + blocks + table
            if n == last && generous {
                clusters += (table + 1) / 2
                n = 0
                generous = false
            }
        } while n != last
        return ((blocks + table) * clusterSize, blocks)
    }

    /// QEMU's qcow2_refcount_area: a new refcount table and blocks at `start` (the end of the used
    /// space) covering themselves and `additionalClusters` more; returns the first offset after them.
    @discardableResult
    func createRefcountArea(start: UInt64, additionalClusters: UInt64, exactSize: Bool,
                            newBlockIndex: Int, newBlockOffset: UInt64) throws -> UInt64 {
        precondition(start % clusterSize == 0)
        let (_, totalBlocks64) = Qcow2Meta.refcountMetadataSize(
            clusters: start / clusterSize + additionalClusters, clusterSize: clusterSize,
            refcountOrder: header.refcountOrder, generousIncrease: !exactSize)
        guard totalBlocks64 <= Qcow2.maxRefcountTableBytes / 8 else {
            throw BlockError(.io, "qcow2: the refcount table would exceed its maximum size", errno: EFBIG)
        }
        let totalBlocks = Int(totalBlocks64)
        let areaIndex = Int(start / clusterSize / refcountBlockEntries)
        var tableSize = exactSize ? totalBlocks : totalBlocks + (totalBlocks + 1) / 2
        let perCluster = Int(clusterSize / 8)
        tableSize = (tableSize + perCluster - 1) / perCluster * perCluster
        let tableClusters = UInt64(tableSize * 8) / clusterSize
        guard UInt64(tableSize) <= Qcow2.maxRefcountTableBytes / 8 else {
            throw BlockError(.io, "qcow2: the refcount table would exceed its maximum size", errno: EFBIG)
        }
        var newTable = [UInt64](repeating: 0, count: tableSize)
        for i in 0..<min(tableSize, refcountTable.count) { newTable[i] = refcountTable[i] }
        if newBlockOffset != 0 { newTable[newBlockIndex] = newBlockOffset }
        var additionalBlocks: UInt64 = 0
        for i in areaIndex..<totalBlocks where newTable[i] == 0 { additionalBlocks += 1 }
        let tableOffset = start + additionalBlocks * clusterSize
        let endOffset = tableOffset + tableClusters * clusterSize

        var blockOffset = start
        let order = header.refcountOrder
        for i in areaIndex..<totalBlocks {
            if newTable[i] == 0 {
                try refcountCache.installEmpty(blockOffset)
                newTable[i] = blockOffset
                blockOffset += clusterSize
            }
            let firstCovered = UInt64(i) * refcountBlockEntries * clusterSize
            if firstCovered < endOffset {
                var j = firstCovered < start ? (start - firstCovered) / clusterSize : 0
                let endIndex = min((endOffset - firstCovered) / clusterSize, refcountBlockEntries)
                try refcountCache.update(newTable[i] & Qcow2.refTableOffsetMask) { block in
                    while j < endIndex {
                        Qcow2Meta.setRefcount(&block, j, 1, order: order)
                        j += 1
                    }
                }
            }
        }
        try refcountCache.flush()
        var bytes = [UInt8](repeating: 0, count: tableSize * 8)
        for i in 0..<tableSize { bytes.setBE64(i * 8, newTable[i]) }
        try bytes.withUnsafeBytes { try file.write(at: tableOffset, from: $0, flags: []) }
        try file.flush()

        // Switch the header to the new table in one write.
        var hdr = [UInt8](repeating: 0, count: 12)
        hdr.setBE64(0, tableOffset)
        hdr.setBE32(8, UInt32(tableClusters))
        try hdr.withUnsafeBytes { try file.write(at: 48, from: $0, flags: []) }
        try file.flush()

        let oldOffset = header.refcountTableOffset
        let oldClusters = UInt64(header.refcountTableClusters)
        header.refcountTableOffset = tableOffset
        header.refcountTableClusters = UInt32(tableClusters)
        refcountTable = newTable
        try freeClusters(offset: oldOffset, length: oldClusters * clusterSize, discard: .other)
        return endOffset
    }
}

@inline(__always) func roundUp(_ v: UInt64, _ a: UInt64) -> UInt64 { (v + a - 1) / a * a }
@inline(__always) func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
