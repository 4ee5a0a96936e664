// Persistent dirty bitmaps of an open qcow2 image: loaded at open, tracking writes while enabled,
// stored back at close (QEMU's qcow2-bitmap.c semantics).
//
// On a writable open every loaded bitmap gets the in-use flag on disk, so that a crash leaves it
// marked inconsistent instead of silently stale; a clean close writes the bits back (new tables and
// data clusters, a new directory, one header switch, then the old clusters freed) without the flag.
// A bitmap found in use at open is inconsistent: kept as it is, never tracked or stored.
import Glibc

struct Qcow2Bitmap {
    var name: String
    var granularityBits: UInt8
    var flags: UInt32
    var type: UInt8 = 1
    var extraData: [UInt8] = []
    /// One bit per granule, little-endian words (bit i of the disk is word i/64, bit i%64).
    var bits: [UInt64]
    /// Found in use at open: its on-disk data cannot be trusted and is kept untouched.
    var inconsistent = false
    /// Its table as found on disk (kept for inconsistent bitmaps, freed for the others on store).
    var oldTable: (offset: UInt64, size: UInt32)?

    var enabled: Bool { flags & Qcow2BitmapEntry.flagAuto != 0 }
    var granularity: UInt64 { UInt64(1) << UInt64(granularityBits) }

    static func wordCount(diskSize: UInt64, granularityBits: UInt8) -> Int {
        let g = UInt64(1) << UInt64(granularityBits)
        let nbits = (diskSize + g - 1) / g
        return Int((nbits + 63) / 64)
    }

    mutating func mark(_ offset: UInt64, _ length: UInt64) {
        guard length > 0 else { return }
        let first = offset >> UInt64(granularityBits)
        let last = (offset + length - 1) >> UInt64(granularityBits)
        var i = first
        while i <= last && Int(i / 64) < bits.count {
            if i % 64 == 0 && last - i >= 63 {
                bits[Int(i / 64)] = UInt64.max
                i += 64
            } else {
                bits[Int(i / 64)] |= 1 << (i % 64)
                i += 1
            }
        }
    }
}

/// The bitmaps of one image, guarded by the node's metadata lock.
final class Qcow2BitmapSet {
    var bitmaps: [Qcow2Bitmap] = []
    var changed = false
    /// The bitmaps carry the in-use flag on disk: they must be stored at close.
    var markedInUse = false
    /// Limit on what one image's bitmaps may make us hold in memory.
    static let maxMemory = 256 << 20

    func markWrite(_ offset: UInt64, _ length: UInt64) {
        for i in bitmaps.indices where bitmaps[i].enabled && !bitmaps[i].inconsistent {
            bitmaps[i].mark(offset, length)
            changed = true
        }
    }
}

extension Qcow2Node {
    /// Records a guest write in the enabled bitmaps.
    func markBitmaps(_ offset: UInt64, _ length: UInt64) {
        guard bitmapSet != nil else { return }
        metaLock.withLock { bitmapSet?.markWrite(offset, length) }
    }

    /// Loads the bitmaps named by the header (QEMU's qcow2_load_dirty_bitmaps); on a writable open
    /// marks them in use on disk.
    func loadBitmaps(writable: Bool) throws {
        let h = meta.header
        guard let ext = h.bitmaps, h.autoclearFeatures & Qcow2.autoclearBitmaps != 0 else { return }
        let cs = meta.clusterSize
        let read: (UInt64, Int) throws -> [UInt8] = { [file] o, n in try file.read(at: o, count: n) }
        let entries = try Qcow2Bitmaps.parseDirectory(read: read, offset: ext.directoryOffset, size: ext.directorySize,
                                                      count: ext.count, clusterSize: cs, fileSize: file.size)
        let set = Qcow2BitmapSet()
        var memory = 0
        for e in entries {
            guard e.type == 1 else { throw BlockError.invalid("Bitmap '\(e.name)' has an unsupported type") }
            guard (9...31).contains(e.granularityBits) else { throw BlockError.invalid("Bitmap '\(e.name)' has an invalid granularity") }
            let words = Qcow2Bitmap.wordCount(diskSize: size, granularityBits: e.granularityBits)
            memory += words * 8
            guard memory <= Qcow2BitmapSet.maxMemory else {
                throw BlockError.unsupported("The image's bitmaps would need more than \(Qcow2BitmapSet.maxMemory >> 20) MiB of memory")
            }
            var b = Qcow2Bitmap(name: e.name, granularityBits: e.granularityBits, flags: e.flags, type: e.type,
                                extraData: e.extraData, bits: [UInt64](repeating: 0, count: words),
                                oldTable: (e.tableOffset, e.tableSize))
            if e.flags & Qcow2BitmapEntry.flagInUse != 0 {
                b.inconsistent = true
            } else {
                let expected = (UInt64(words) * 8 + cs - 1) / cs
                guard UInt64(e.tableSize) == expected else { throw BlockError.invalid("Bitmap '\(e.name)' has a table of the wrong size") }
                // QEMU's wording for the two reads that can fail here.
                func failed(_ error: Error, _ what: String) -> BlockError {
                    let code = (error as? BlockError)?.errno ?? EIO
                    return BlockError.system(what, errno: code == 0 ? EIO : code)
                }
                let table: [UInt8]
                do { table = try read(e.tableOffset, Int(e.tableSize) * 8) } catch {
                    throw failed(error, "Could not read bitmap_table table from image for bitmap '\(e.name)'")
                }
                for t in 0..<Int(e.tableSize) {
                    let entry = table.be64(t * 8)
                    let off = entry & 0x00FF_FFFF_FFFF_FE00
                    let firstWord = t * Int(cs / 8)
                    let n = min(Int(cs / 8), words - firstWord)
                    guard n > 0 else { break }
                    if off == 0 {
                        if entry & 1 != 0 { for w in 0..<n { b.bits[firstWord + w] = UInt64.max } }
                        continue
                    }
                    guard off % cs == 0 else { throw BlockError.invalid("Bitmap '\(e.name)' has a corrupted table") }
                    let data: [UInt8]
                    do { data = try read(off, Int(cs)) } catch { throw failed(error, "Could not read bitmap '\(e.name)' from image") }
                    for w in 0..<n { b.bits[firstWord + w] = data.le64(w * 8) }
                }
            }
            set.bitmaps.append(b)
        }
        bitmapSet = set
        if writable && !entries.isEmpty {
            // Mark them in use where they are, so a crash leaves them inconsistent, not stale.
            try writeBitmapDirectory(at: ext.directoryOffset, inUse: true)
            set.markedInUse = true
        }
    }

    /// The directory bytes for the current set (entries for inconsistent bitmaps keep their old table).
    private func directoryBytes(tables: [(UInt64, UInt32)], inUse: Bool) -> [UInt8] {
        var d: [UInt8] = []
        for (i, b) in (bitmapSet?.bitmaps ?? []).enumerated() {
            var e = [UInt8](repeating: 0, count: 24)
            e.setBE64(0, tables[i].0)
            e.setBE32(8, tables[i].1)
            var flags = b.flags & ~Qcow2BitmapEntry.flagInUse
            if inUse || b.inconsistent { flags |= Qcow2BitmapEntry.flagInUse }
            e.setBE32(12, flags)
            e[16] = b.type
            e[17] = b.granularityBits
            e.setBE16(18, UInt16(b.name.utf8.count))
            e.setBE32(20, UInt32(b.extraData.count))
            d += e + b.extraData + Array(b.name.utf8)
            while d.count % 8 != 0 { d.append(0) }
        }
        return d
    }

    /// Rewrites the existing directory in place with the in-use flags set (same size, same place).
    private func writeBitmapDirectory(at offset: UInt64, inUse: Bool) throws {
        let tables = (bitmapSet?.bitmaps ?? []).map { ($0.oldTable?.offset ?? 0, $0.oldTable?.size ?? 0) }
        let d = directoryBytes(tables: tables, inUse: inUse)
        try d.withUnsafeBytes { try file.write(at: offset, from: $0, flags: []) }
        try file.flush()
    }

    /// QEMU's qcow2_store_persistent_dirty_bitmaps: writes every consistent bitmap anew and switches
    /// the header to the new directory (or drops the extension when no bitmap is left).
    func storeBitmaps() throws {
        guard let set = bitmapSet else { return }
        let cs = meta.clusterSize
        var oldClusters: [(UInt64, UInt64)] = []
        if let ext = meta.header.bitmaps { oldClusters.append((ext.directoryOffset, ext.directorySize)) }
        var tables: [(UInt64, UInt32)] = []
        for i in set.bitmaps.indices {
            let b = set.bitmaps[i]
            if b.inconsistent, let t = b.oldTable {
                tables.append(t)
                continue
            }
            if let t = b.oldTable, t.size > 0 {
                oldClusters.append((t.offset, UInt64(t.size) * 8))
                let raw = try file.read(at: t.offset, count: Int(t.size) * 8)
                for k in 0..<Int(t.size) {
                    let off = raw.be64(k * 8) & 0x00FF_FFFF_FFFF_FE00
                    if off != 0 && off % cs == 0 { oldClusters.append((off, cs)) }
                }
            }
            let words = Qcow2Bitmap.wordCount(diskSize: size, granularityBits: b.granularityBits)
            var bits = b.bits
            if bits.count != words { bits = Array(bits.prefix(words)) + [UInt64](repeating: 0, count: max(0, words - bits.count)) }
            let perCluster = Int(cs / 8)
            let tableSize = (words + perCluster - 1) / perCluster
            var table = [UInt8](repeating: 0, count: tableSize * 8)
            for t in 0..<tableSize {
                let slice = bits[(t * perCluster)..<min(words, (t + 1) * perCluster)]
                if slice.allSatisfy({ $0 == 0 }) { continue }
                var data = [UInt8](repeating: 0, count: Int(cs))
                for (w, v) in slice.enumerated() { data.setLE64(w * 8, v) }
                let off = try meta.allocateClusters(bytes: cs)
                try data.withUnsafeBytes { try file.write(at: off, from: $0, flags: []) }
                table.setBE64(t * 8, off)
            }
            let tableOffset = tableSize > 0 ? try meta.allocateClusters(bytes: UInt64(table.count)) : 0
            if tableSize > 0 { try table.withUnsafeBytes { try file.write(at: tableOffset, from: $0, flags: []) } }
            tables.append((tableOffset, UInt32(tableSize)))
            set.bitmaps[i].oldTable = (tableOffset, UInt32(tableSize))
            set.bitmaps[i].bits = bits
        }
        if set.bitmaps.isEmpty {
            meta.header.bitmaps = nil
            meta.header.autoclearFeatures &= ~Qcow2.autoclearBitmaps
        } else {
            let dir = directoryBytes(tables: tables, inUse: false)
            let dirOffset = try meta.allocateClusters(bytes: UInt64(dir.count))
            try dir.withUnsafeBytes { try file.write(at: dirOffset, from: $0, flags: []) }
            meta.header.bitmaps = (UInt32(set.bitmaps.count), UInt64(dir.count), dirOffset)
            meta.header.autoclearFeatures |= Qcow2.autoclearBitmaps
        }
        try meta.flushCaches()
        try file.flush()
        try meta.writeHeader()
        try file.flush()
        for (o, l) in oldClusters where l > 0 { try meta.freeClusters(offset: o, length: l, discard: .always) }
        set.changed = false
        set.markedInUse = false
    }
}

/// Bitmap operations of qemu-img bitmap, on any node that keeps persistent bitmaps.
public protocol BitmapCapableNode: BlockNode {
    func addBitmap(name: String, granularity: UInt64?, enabled: Bool) throws
    func removeBitmap(name: String) throws
    func clearBitmap(name: String) throws
    func setBitmapEnabled(name: String, _ enabled: Bool) throws
    /// ORs `source` (from `from`, or this image) into `name`.
    func mergeBitmap(into name: String, from source: String, of other: (any BitmapCapableNode)?) throws
    /// The dirty bits of a bitmap (granularity, words), for merging, NBD export and convert --bitmaps.
    func bitmapContents(_ name: String) throws -> (granularity: UInt64, words: [UInt64], enabled: Bool)
    /// Creates a bitmap with given contents (convert --bitmaps).
    func importBitmap(name: String, granularity: UInt64, enabled: Bool, words: [UInt64]) throws
}

extension Qcow2Node: BitmapCapableNode {
    private func notFound(_ name: String) -> BlockError {
        BlockError(.notFound, "Dirty bitmap '\(name)' not found", errno: ENOENT)
    }

    private func withSet<T>(_ body: (Qcow2BitmapSet) throws -> T) throws -> T {
        try checkWritable()
        guard meta.header.version >= 3 else {
            throw BlockError(.unsupported, "Cannot store dirty bitmaps in qcow2 v2 files", errno: ENOTSUP)
        }
        return try metaLock.withLock {
            if bitmapSet == nil { bitmapSet = Qcow2BitmapSet() }
            let r = try body(bitmapSet!)
            bitmapSet!.changed = true
            return r
        }
    }

    public func addBitmap(name: String, granularity: UInt64?, enabled: Bool) throws {
        try withSet { set in
            if set.bitmaps.contains(where: { $0.name == name }) {
                throw BlockError(.invalidArgument, "Bitmap already exists: \(name)", errno: EEXIST)
            }
            guard name.utf8.count <= 1023, !name.isEmpty else { throw BlockError(.invalidArgument, "Bitmap name is too long", errno: EINVAL) }
            let g = granularity ?? max(meta.clusterSize, 65536)
            guard g >= 512, g & (g - 1) == 0, g <= 1 << 31 else {
                throw BlockError(.invalidArgument, "Granularity must be power of 2 and at least 512", errno: EINVAL)
            }
            guard set.bitmaps.count < 65535 else { throw BlockError(.invalidArgument, "Too many bitmaps", errno: EFBIG) }
            let bitsLog = UInt8(g.trailingZeroBitCount)
            let words = Qcow2Bitmap.wordCount(diskSize: size, granularityBits: bitsLog)
            set.bitmaps.append(Qcow2Bitmap(name: name, granularityBits: bitsLog, flags: enabled ? Qcow2BitmapEntry.flagAuto : 0,
                                           bits: [UInt64](repeating: 0, count: words)))
        }
    }

    public func removeBitmap(name: String) throws {
        try withSet { set in
            guard let i = set.bitmaps.firstIndex(where: { $0.name == name }) else { throw notFound(name) }
            let b = set.bitmaps.remove(at: i)
            // Its clusters are freed when the set is stored.
            if let t = b.oldTable, t.size > 0 {
                let raw = try file.read(at: t.offset, count: Int(t.size) * 8)
                for k in 0..<Int(t.size) {
                    let off = raw.be64(k * 8) & 0x00FF_FFFF_FFFF_FE00
                    if off != 0 { try meta.freeClusters(offset: off, length: meta.clusterSize, discard: .always) }
                }
                try meta.freeClusters(offset: t.offset, length: UInt64(t.size) * 8, discard: .always)
            }
        }
    }

    public func clearBitmap(name: String) throws {
        try withSet { set in
            guard let i = set.bitmaps.firstIndex(where: { $0.name == name }) else { throw notFound(name) }
            if set.bitmaps[i].inconsistent { throw BlockError(.invalidArgument, "Bitmap '\(name)' is inconsistent and cannot be used", errno: EINVAL) }
            for w in set.bitmaps[i].bits.indices { set.bitmaps[i].bits[w] = 0 }
        }
    }

    public func setBitmapEnabled(name: String, _ enabled: Bool) throws {
        try withSet { set in
            guard let i = set.bitmaps.firstIndex(where: { $0.name == name }) else { throw notFound(name) }
            if enabled { set.bitmaps[i].flags |= Qcow2BitmapEntry.flagAuto } else { set.bitmaps[i].flags &= ~Qcow2BitmapEntry.flagAuto }
        }
    }

    public func bitmapContents(_ name: String) throws -> (granularity: UInt64, words: [UInt64], enabled: Bool) {
        try metaLock.withLock {
            guard let b = bitmapSet?.bitmaps.first(where: { $0.name == name }) else { throw notFound(name) }
            if b.inconsistent { throw BlockError(.invalidArgument, "Bitmap '\(name)' is inconsistent and cannot be used", errno: EINVAL) }
            return (b.granularity, b.bits, b.enabled)
        }
    }

    public func mergeBitmap(into name: String, from source: String, of other: (any BitmapCapableNode)?) throws {
        let src = try (other ?? self).bitmapContents(source)
        try withSet { set in
            guard let i = set.bitmaps.firstIndex(where: { $0.name == name }) else { throw notFound(name) }
            let dst = set.bitmaps[i]
            if src.granularity == dst.granularity && src.words.count == dst.bits.count {
                for w in dst.bits.indices { set.bitmaps[i].bits[w] |= src.words[w] }
                return
            }
            // Different granularity: every dirty source granule dirties what it covers here.
            for (w, word) in src.words.enumerated() where word != 0 {
                for bit in 0..<64 where word & (1 << UInt64(bit)) != 0 {
                    let off = (UInt64(w) * 64 + UInt64(bit)) * src.granularity
                    if off < size { set.bitmaps[i].mark(off, min(src.granularity, size - off)) }
                }
            }
        }
    }

    public func importBitmap(name: String, granularity: UInt64, enabled: Bool, words: [UInt64]) throws {
        try addBitmap(name: name, granularity: granularity, enabled: enabled)
        try withSet { set in
            let i = set.bitmaps.count - 1
            for w in 0..<min(words.count, set.bitmaps[i].bits.count) { set.bitmaps[i].bits[w] = words[w] }
        }
    }

    /// The run of one dirty state at `offset` in bitmap `name` (for NBD's qemu:dirty-bitmap).
    func bitmapRun(_ name: String, at offset: UInt64, maxLength: UInt64) -> (dirty: Bool, length: UInt64) {
        metaLock.withLock {
            guard let b = bitmapSet?.bitmaps.first(where: { $0.name == name }) else { return (false, maxLength) }
            let g = b.granularity
            let end = min(size, offset &+ maxLength)
            guard offset < end else { return (false, maxLength) }
            func dirty(_ i: UInt64) -> Bool {
                let w = Int(i / 64)
                return w < b.bits.count && b.bits[w] & (1 << (i % 64)) != 0
            }
            var bit = offset / g
            let state = dirty(bit)
            var pos = (bit + 1) * g
            while pos < end {
                bit += 1
                // Whole words of one state at a time.
                if bit % 64 == 0, Int(bit / 64) < b.bits.count, b.bits[Int(bit / 64)] == (state ? UInt64.max : 0), pos + 64 * g <= end {
                    pos += 64 * g
                    bit += 63
                    continue
                }
                if dirty(bit) != state { break }
                pos += g
            }
            return (state, min(pos, end) - offset)
        }
    }

    /// The bitmaps for `info` (QEMU's Qcow2BitmapInfo).
    var bitmapInfo: JSONValue? {
        let list = metaLock.withLock { bitmapSet?.bitmaps ?? [] }
        guard !list.isEmpty else { return nil }
        return .array(list.map { b in
            var flags: [JSONValue] = []
            if b.inconsistent { flags.append(.string("in-use")) }
            if b.enabled { flags.append(.string("auto")) }
            return .object([("flags", .array(flags)), ("name", .string(b.name)), ("granularity", .uint(b.granularity))])
        })
    }
}
