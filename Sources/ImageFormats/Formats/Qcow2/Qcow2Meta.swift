// The mutable metadata state of an open qcow2 image: header, active L1 table, refcount table and
// the two table caches. Not thread-safe: Qcow2Node serializes access with its metadata lock.
//
// The mapping of guest offsets (Qcow2Mapping.swift), allocation (Qcow2Refcounts.swift) and the
// write-side L2 updates (Qcow2Allocation.swift) are extensions of this type, one concept per file.
import Glibc

final class Qcow2Meta {
    var header: Qcow2Header
    /// The image file (metadata, and data unless there is an external data file).
    let file: any BlockNode
    /// Where guest data lives: the image file, or the external data file.
    var dataHost: any BlockNode
    let clusterSize: UInt64
    let clusterBits: UInt64
    let l2Entries: UInt64
    var l1Table: [UInt64]
    var refcountTable: [UInt64]
    let l2Cache: Qcow2TableCache
    let refcountCache: Qcow2TableCache
    var freeClusterIndex: UInt64 = 0
    var freeByteOffset: UInt64 = 0
    var passDiscardRequests = false
    let readOnly: Bool
    /// The highest host cluster index an L2 entry can point to (56-bit offsets).
    let maxHostClusters: UInt64
    /// A snapshot's L1 table is in use (read-only view, `-l`).
    var viewingSnapshot = false
    /// Set once the image was marked corrupt in this session (further events are not re-reported).
    var markedCorrupt = false
    var warn: ((String) -> Void)?

    init(header: Qcow2Header, file: any BlockNode, dataHost: any BlockNode, l1Table: [UInt64], refcountTable: [UInt64],
         readOnly: Bool, l2CacheBytes: UInt64) {
        self.header = header
        self.file = file
        self.dataHost = dataHost
        self.clusterSize = header.clusterSize
        self.clusterBits = UInt64(header.clusterBits)
        self.l2Entries = header.l2Entries
        self.l1Table = l1Table
        self.refcountTable = refcountTable
        self.readOnly = readOnly
        let cs = Int(header.clusterSize)
        self.l2Cache = Qcow2TableCache(file: file, tableSize: cs, capacity: Int(max(l2CacheBytes / header.clusterSize, 8)), name: "L2")
        self.refcountCache = Qcow2TableCache(file: file, tableSize: cs, capacity: max(4, Int((l2CacheBytes / 4) / header.clusterSize)), name: "refcount")
        self.maxHostClusters = (UInt64(1) << 56) / header.clusterSize
        let rc = refcountCache
        self.l2Cache.beforeWriteback = { try rc.flush() }
    }

    var hasDataFile: Bool { header.hasDataFile }
    var isExtendedL2: Bool { header.extendedL2 }
    var subclusterSize: UInt64 { header.subclusterSize }
    var l2EntrySize: UInt64 { header.l2EntrySize }
    /// Bytes of guest space one L2 table maps.
    var l2Coverage: UInt64 { clusterSize * l2Entries }

    /// Writes the header cluster (as QEMU's qcow2_update_header).
    func writeHeader() throws {
        let bytes = try header.serialize()
        try bytes.withUnsafeBytes { try file.write(at: 0, from: $0, flags: []) }
    }

    /// Writes all dirty metadata (refcounts before L2 tables).
    func flushCaches() throws {
        try refcountCache.flush()
        try l2Cache.flush()
        try refcountCache.flush()
    }

    /// QEMU's qcow2_signal_corruption: on a writable image, set the corrupt bit so that nobody writes
    /// to it again until `check -r`; returns the error the failing operation reports.
    func signalCorruption(_ message: String) throws -> BlockError {
        if !markedCorrupt {
            markedCorrupt = true
            if !readOnly && !viewingSnapshot {
                warn?("qcow2: Marking image as corrupt: \(message); further corruption events will be suppressed")
                header.incompatibleFeatures |= Qcow2.incompatCorrupt
                try? writeHeader()
                try? file.flush()
            } else {
                warn?("qcow2: Image is corrupt: \(message); further non-fatal corruption events will be suppressed")
            }
        }
        return BlockError(.corrupt, "qcow2: \(message)", errno: EIO)
    }

    /// Writes one L1 entry to disk (the active table only).
    func writeL1Entry(_ index: Int) throws {
        var b = [UInt8](repeating: 0, count: 8)
        b.setBE64(0, l1Table[index])
        try b.withUnsafeBytes { try file.write(at: header.l1TableOffset + UInt64(index) * 8, from: $0, flags: []) }
        try file.flush()
    }

    /// QEMU's qcow2_grow_l1_table: a bigger L1 table in newly allocated clusters, switched in with one
    /// header write; the old table is freed.
    func growL1Table(minSize: UInt64, exact: Bool) throws {
        guard minSize > UInt64(l1Table.count) else { return }
        guard minSize <= Qcow2.maxL1Bytes / 8 else {
            throw BlockError(.invalidArgument, "Active L1 table too large", errno: EFBIG)
        }
        var newSize = minSize
        if !exact {
            newSize = UInt64(max(l1Table.count, 1))
            while newSize < minSize { newSize = (newSize * 3 + 1) / 2 }
            newSize = min(newSize, Qcow2.maxL1Bytes / 8)
        }
        let bytes = newSize * 8
        var table = [UInt8](repeating: 0, count: Int(bytes))
        for (i, e) in l1Table.enumerated() { table.setBE64(i * 8, e) }
        let offset = try allocateClusters(bytes: bytes)
        try refcountCache.flush()
        try table.withUnsafeBytes { try file.write(at: offset, from: $0, flags: []) }
        try file.flush()
        var h = [UInt8](repeating: 0, count: 12)
        h.setBE32(0, UInt32(newSize))
        h.setBE64(4, offset)
        try h.withUnsafeBytes { try file.write(at: 36, from: $0, flags: []) }
        try file.flush()
        let oldOffset = header.l1TableOffset
        let oldBytes = UInt64(l1Table.count) * 8
        header.l1TableOffset = offset
        header.l1Size = UInt32(newSize)
        l1Table += [UInt64](repeating: 0, count: Int(newSize) - l1Table.count)
        if oldBytes > 0 { try freeClusters(offset: oldOffset, length: oldBytes) }
    }
}
