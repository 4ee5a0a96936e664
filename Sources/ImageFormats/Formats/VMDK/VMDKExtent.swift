// One VMDK extent: a flat window of a file, or a sparse file with a grain directory (L1, u32
// sector numbers of grain tables) and grain tables (L2, u32 sector numbers of grains; 0 is
// unallocated, 1 a zeroed grain when the extent has that feature). streamOptimized extents hold
// deflate-compressed grains, each behind a 12-byte marker (guest sector, compressed size).
//
// `lookup` is QEMU's get_cluster_offset without allocation, returning a plan for a run of grains
// of one kind (host-contiguous for data); the node does the data I/O. Mutable state (tables,
// allocation end) is guarded by the node's metaLock.
import Glibc

enum VMDKGrainKind: Equatable {
    case data        // bytes at hostOffset (compressed grains: the grain starts at hostOffset)
    case zeroed      // zeroed-grain entry
    case unallocated
}

struct VMDKMapping {
    var kind: VMDKGrainKind
    var length: UInt64
    var hostOffset: UInt64
    /// Offset of the queried byte inside its grain (compressed reads need it).
    var inGrain: UInt64
}

final class VMDKExtent {
    let file: any BlockNode
    let ownsFile: Bool
    let flat: Bool
    /// The descriptor's extent type ("FLAT", "SPARSE", ...); nil for a monolithic sparse file.
    let type: String?
    let sectors: UInt64
    /// First guest sector of this extent.
    let startSector: UInt64
    let flatStartOffset: UInt64
    // Sparse extents:
    let layout: VMDKSparseLayout?
    var l1: [UInt32] = []
    var l1Backup: [UInt32]? = nil
    var nextClusterSector: UInt64 = 0
    private var l2Cache: [UInt32: [UInt32]] = [:]
    private var l2Order: [UInt32] = []

    var compressed: Bool { layout?.compressed ?? false }
    var hasZeroGrain: Bool { layout?.hasZeroGrain ?? false }
    var clusterBytes: UInt64 { flat ? sectors * 512 : layout!.clusterSectors * 512 }
    var endSector: UInt64 { startSector + sectors }

    init(flatFile file: any BlockNode, owns: Bool, type: String, sectors: UInt64, start: UInt64, offset: UInt64) {
        self.file = file
        ownsFile = owns
        flat = true
        self.type = type
        self.sectors = sectors
        startSector = start
        flatStartOffset = offset
        layout = nil
    }

    init(sparseFile file: any BlockNode, owns: Bool, type: String?, layout: VMDKSparseLayout, start: UInt64) throws {
        self.file = file
        ownsFile = owns
        flat = false
        self.type = type
        sectors = layout.sectors
        startSector = start
        flatStartOffset = 0
        self.layout = layout
        let fileSize = file.size
        let l1Bytes = layout.l1Size * 4
        // The directories must lie inside the file before they size a read.
        var tables = [layout.l1Offset]
        if layout.l1BackupOffset != 0 { tables.append(layout.l1BackupOffset) }
        for off in tables {
            let (end, o) = off.addingReportingOverflow(l1Bytes)
            if o || end > fileSize {
                throw BlockError.invalid("Could not read l1 table from extent '\(file.filename)': grain directory at offset \(off) exceeds the end of the file")
            }
        }
        l1 = try VMDKExtent.readTable(file, layout.l1Offset, Int(layout.l1Size))
        if layout.l1BackupOffset != 0 {
            l1Backup = try VMDKExtent.readTable(file, layout.l1BackupOffset, Int(layout.l1Size))
        }
        let cs = layout.clusterSectors
        nextClusterSector = cs == 0 ? 0 : (fileSize / 512 + cs - 1) / cs * cs
    }

    static func readTable(_ file: any BlockNode, _ offset: UInt64, _ n: Int) throws -> [UInt32] {
        guard n > 0 else { return [] }
        let raw = try file.read(at: offset, count: n * 4)
        return (0..<n).map { raw.le32($0 * 4) }
    }

    func l2Table(_ sector: UInt32) throws -> [UInt32] {
        if let t = l2Cache[sector] { return t }
        let t = try VMDKExtent.readTable(file, UInt64(sector) * 512, Int(layout!.l2Size))
        l2Cache[sector] = t
        l2Order.append(sector)
        if l2Order.count > 64 { l2Cache[l2Order.removeFirst()] = nil }
        return t
    }

    func setL2Entry(table sector: UInt32, index: Int, value: UInt32) {
        l2Cache[sector]?[index] = value
    }

    static func error(_ what: String) -> BlockError { BlockError(.io, what, errno: EINVAL) }

    /// The grain at guest byte `pos` (inside this extent) and how far its kind runs, up to
    /// `maxLength` and never past a grain table.
    func lookup(_ pos: UInt64, maxLength: UInt64) throws -> (VMDKMapping, table: UInt32, index: Int) {
        let rel = pos - startSector * 512
        if flat {
            let n = min(maxLength, sectors * 512 - rel)
            return (VMDKMapping(kind: .data, length: n, hostOffset: flatStartOffset + rel, inGrain: rel), 0, 0)
        }
        let l = layout!
        let cs = l.clusterSectors * 512
        let l1EntryBytes = l.l2Size * cs
        let l1Index = rel / l1EntryBytes
        guard l1Index < UInt64(l1.count) else { throw VMDKExtent.error("Invalid argument") }
        let inGrain = rel % cs
        let tableEnd = min((l1Index + 1) * l1EntryBytes, sectors * 512)
        let limit = min(maxLength, tableEnd - rel)
        let l2Sector = l1[Int(l1Index)]
        if l2Sector == 0 {
            return (VMDKMapping(kind: .unallocated, length: limit, hostOffset: 0, inGrain: inGrain), 0, 0)
        }
        let table = try l2Table(l2Sector)
        let index = Int((rel / cs) % l.l2Size)
        func kind(_ e: UInt32) -> VMDKGrainKind {
            if e == 0 { return .unallocated }
            if l.hasZeroGrain && e == VMDK.gteZeroed { return .zeroed }
            return .data
        }
        let first = table[index]
        let k = kind(first)
        var length = cs - inGrain
        if !(k == .data && l.compressed) {
            var i = index + 1
            while length < limit && i < table.count {
                let e = table[i]
                if kind(e) != k { break }
                if k == .data && UInt64(e) != UInt64(first) + UInt64(i - index) * l.clusterSectors { break }
                length += cs
                i += 1
            }
        }
        let host = k == .data ? UInt64(first) * 512 + (l.compressed ? 0 : inGrain) : 0
        return (VMDKMapping(kind: k, length: min(length, limit), hostOffset: host, inGrain: inGrain), l2Sector, index)
    }

    /// QEMU's vmdk_L2update: the entry in the grain table and in its redundant copy.
    func updateL2(table sector: UInt32, l1Index: Int, index: Int, value: UInt32) throws {
        var b = [UInt8](repeating: 0, count: 4)
        b.setLE32(0, value)
        try file.write(at: UInt64(sector) * 512 + UInt64(index) * 4, bytes: b)
        if let backup = l1Backup, l1Index < backup.count, backup[l1Index] != 0 {
            try file.write(at: UInt64(backup[l1Index]) * 512 + UInt64(index) * 4, bytes: b)
        }
        setL2Entry(table: sector, index: index, value: value)
    }

    func l1Index(of pos: UInt64) -> Int {
        let l = layout!
        return Int((pos - startSector * 512) / (l.l2Size * l.clusterSectors * 512))
    }
}
