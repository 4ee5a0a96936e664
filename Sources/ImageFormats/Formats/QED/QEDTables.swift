// QED's two-level table: guest offset -> L1 entry (an L2 table's offset) -> L2 entry (a data
// cluster's offset, 0 = unallocated, 1 = zero cluster). Tables are `table_size` clusters of
// little-endian u64 entries.
//
// QEDMeta is the mutable metadata (L1 table, a small L2 cache, the allocation end of the file);
// every method runs with the node's metaLock held. `lookup` returns a plan (QEMU's
// qed_find_cluster): the kind of the run at an offset, its length (never crossing an L2 table)
// and, for data, the host offset; the caller does the data I/O outside the lock.
import Glibc

enum QEDClusterKind: Equatable {
    case found          // data at hostOffset
    case zero           // zero cluster
    case unallocatedL2  // L2 table present, entry 0
    case unallocatedL1  // no L2 table
}

struct QEDMapping {
    var kind: QEDClusterKind
    var length: UInt64
    var hostOffset: UInt64
}

final class QEDMeta {
    var header: QEDHeader
    let file: any BlockNode
    /// End of the allocated area (QEMU's s->file_size): new clusters and tables go here.
    var fileSize: UInt64
    var l1: [UInt64]
    let entries: Int
    let l2Shift: UInt64
    let l1Shift: UInt64
    private var cache: [UInt64: [UInt64]] = [:]
    private var cacheOrder: [UInt64] = []
    private let cacheLimit = 32

    init(header: QEDHeader, fileSize: UInt64, file: any BlockNode) throws {
        self.header = header
        self.file = file
        self.fileSize = fileSize
        entries = Int(header.tableBytes / 8)
        l2Shift = UInt64(header.clusterSize.trailingZeroBitCount)
        l1Shift = l2Shift + UInt64(entries.trailingZeroBitCount)
        l1 = try QEDMeta.readTable(file, header.l1TableOffset, entries)
    }

    static func readTable(_ file: any BlockNode, _ offset: UInt64, _ n: Int) throws -> [UInt64] {
        let raw = try file.read(at: offset, count: n * 8)
        var t = [UInt64](repeating: 0, count: n)
        for i in 0..<n { t[i] = raw.le64(i * 8) }
        return t
    }

    @inline(__always) func l1Index(_ pos: UInt64) -> Int { Int(pos >> l1Shift) }
    @inline(__always) func l2Index(_ pos: UInt64) -> Int { Int((pos >> l2Shift) & UInt64(entries - 1)) }

    /// The L2 table at `offset` (validated by the caller), through the cache.
    func l2Table(_ offset: UInt64) throws -> [UInt64] {
        if let t = cache[offset] { return t }
        let t = try QEDMeta.readTable(file, offset, entries)
        store(offset, t)
        return t
    }

    func store(_ offset: UInt64, _ t: [UInt64]) {
        if cache[offset] == nil {
            cacheOrder.append(offset)
            if cacheOrder.count > cacheLimit { cache[cacheOrder.removeFirst()] = nil }
        }
        cache[offset] = t
    }

    func dropCache() {
        cache = [:]
        cacheOrder = []
    }

    static func invalid(_ what: String) -> BlockError {
        BlockError(.corrupt, "QED: invalid \(what)", errno: EINVAL)
    }

    /// QEMU's qed_find_cluster.
    func lookup(_ pos: UInt64, maxLength: UInt64) throws -> QEDMapping {
        let cs = header.clusterBytes
        let tableEnd = ((pos >> l1Shift) + 1) << l1Shift
        let len = min(maxLength, tableEnd - pos)
        let l2Offset = l1[l1Index(pos)]
        if l2Offset == 0 { return QEDMapping(kind: .unallocatedL1, length: len, hostOffset: 0) }
        guard header.tableOffsetValid(l2Offset, fileSize: fileSize) else { throw QEDMeta.invalid("L2 table offset \(l2Offset)") }
        let table = try l2Table(l2Offset)
        let index = l2Index(pos)
        let inCluster = pos & (cs - 1)
        let want = Int((inCluster + len + cs - 1) / cs)
        let first = table[index]
        var n = 1
        while n < want && index + n < entries {
            let e = table[index + n]
            if first == 0 || first == QED.zeroCluster {
                if e != first { break }
            } else if e != first + UInt64(n) * cs {
                break
            }
            n += 1
        }
        let length = min(len, UInt64(n) * cs - inCluster)
        if first == 0 { return QEDMapping(kind: .unallocatedL2, length: length, hostOffset: 0) }
        if first == QED.zeroCluster { return QEDMapping(kind: .zero, length: length, hostOffset: 0) }
        guard header.clusterOffsetValid(first, fileSize: fileSize) else { throw QEDMeta.invalid("cluster offset \(first)") }
        return QEDMapping(kind: .found, length: length, hostOffset: first + inCluster)
    }

    /// Writes entries [index, index+n) of a table, whole sectors as QEMU's qed_write_table.
    func writeTableEntries(_ table: [UInt64], at tableOffset: UInt64, index: Int, count n: Int) throws {
        let perSector = 512 / 8
        let start = index / perSector * perSector
        let end = min(table.count, (index + n + perSector - 1) / perSector * perSector)
        var raw = [UInt8](repeating: 0, count: (end - start) * 8)
        for i in start..<end { raw.setLE64((i - start) * 8, table[i]) }
        try file.write(at: tableOffset + UInt64(start) * 8, bytes: raw)
    }

    func writeHeader() throws {
        try file.write(at: 0, bytes: header.bytes)
    }

    /// Points `count` L2 entries from guest `pos` at `values(i)`, allocating the L2 table if needed
    /// (QEMU's qed_aio_write_l2_update: a new table is written whole, then its L1 entry).
    func updateL2(_ pos: UInt64, count: Int, _ value: (Int) -> UInt64) throws {
        let li = l1Index(pos)
        let index = l2Index(pos)
        if l1[li] == 0 {
            let tableOffset = fileSize
            fileSize += header.tableBytes
            var table = [UInt64](repeating: 0, count: entries)
            for i in 0..<count { table[index + i] = value(i) }
            try writeTableEntries(table, at: tableOffset, index: 0, count: entries)
            store(tableOffset, table)
            l1[li] = tableOffset
            try writeTableEntries(l1, at: header.l1TableOffset, index: li, count: 1)
        } else {
            let tableOffset = l1[li]
            guard header.tableOffsetValid(tableOffset, fileSize: fileSize) else { throw QEDMeta.invalid("L2 table offset \(tableOffset)") }
            var table = try l2Table(tableOffset)
            for i in 0..<count { table[index + i] = value(i) }
            store(tableOffset, table)
            try writeTableEntries(table, at: tableOffset, index: index, count: count)
        }
    }
}
