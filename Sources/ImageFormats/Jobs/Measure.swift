// qemu-img measure: the file size a new image needs for given options, empty or holding the data
// of an existing image. The numbers follow QEMU's raw_measure and qcow2_measure exactly.

public struct MeasureResult: Sendable, Equatable {
    public var required: UInt64
    public var fullyAllocated: UInt64
    /// Bytes for the source's persistent bitmaps, when both sides support them.
    public var bitmaps: UInt64?
}

extension FormatDriver {
    public static func measure(options: CreateOptions, source: (any BlockNode)?) throws -> MeasureResult {
        throw BlockError.unsupported("Block driver '\(name)' does not support size measurement")
    }
}

public enum Measure {
    public static func run(format: String, options: CreateOptions, source: (any BlockNode)?) throws -> MeasureResult {
        guard let d = FormatRegistry.driver(named: format) else {
            throw BlockError(.invalidArgument, "Unknown file format '\(format)'", errno: 22)
        }
        switch d {
        case is RawFormat.Type: return try RawFormat.measureRaw(options: options, source: source)
        case is Qcow2Format.Type: return try Qcow2Format.measureQcow2(options: options, source: source)
        default: return try d.measure(options: options, source: source)
        }
    }
}

extension RawFormat {
    static func measureRaw(options: CreateOptions, source: (any BlockNode)?) throws -> MeasureResult {
        let required = source?.size ?? roundUp(options.number("size") ?? 0, 512)
        return MeasureResult(required: required, fullyAllocated: required, bitmaps: nil)
    }
}

extension Qcow2Format {
    static func measureQcow2(options: CreateOptions, source: (any BlockNode)?) throws -> MeasureResult {
        let p = try parameters(options.blockOptions)
        let cs = p.clusterSize
        var virtualSize = roundUp(options.number("size") ?? 0, cs)
        let l2eSize: UInt64 = p.extendedL2 ? 16 : 8
        let l2Tables = (virtualSize / cs + cs / l2eSize - 1) / (cs / l2eSize)
        if l2Tables * 8 > Qcow2.maxL1Bytes {
            throw BlockError(.invalidArgument, "The image size is too large (try using a larger cluster size)", errno: 22)
        }
        var required: UInt64 = 0
        if let src = source {
            let ssize = src.size
            virtualSize = roundUp(ssize, cs)
            if p.backingFile != nil {
                required = virtualSize
            } else {
                var offset: UInt64 = 0
                while offset < ssize {
                    let (e, _) = try src.blockStatusAbove(base: nil, at: offset, length: ssize - offset)
                    var pnum = max(e.length, 1)
                    if e.flags.contains(.zero) {
                    } else if e.flags.contains(.data) && e.flags.contains(.allocated) {
                        pnum = roundUp(offset + pnum, cs) - offset
                        required += offset % cs + pnum
                    }
                    offset += pnum
                }
            }
        }
        if p.preallocation == .full || p.preallocation == .falloc { required = virtualSize }
        let full = calcPreallocSize(virtualSize, clusterSize: cs, refcountOrder: UInt32(p.refcountBits.trailingZeroBitCount),
                                    extendedL2: p.extendedL2)
        var result = MeasureResult(required: full - virtualSize + required, fullyAllocated: full, bitmaps: nil)
        if p.version >= 3, let q = source as? Qcow2Node, q.version >= 3 {
            result.bitmaps = q.persistentBitmapsSize(clusterSize: cs)
        }
        return result
    }

    /// QEMU's qcow2_calc_prealloc_size: the whole file of a fully allocated image.
    static func calcPreallocSize(_ totalSize: UInt64, clusterSize cs: UInt64, refcountOrder: UInt32, extendedL2: Bool) -> UInt64 {
        var meta: UInt64 = cs
        let aligned = roundUp(totalSize, cs)
        let l2e: UInt64 = extendedL2 ? 16 : 8
        var nl2e = aligned / cs
        nl2e = roundUp(nl2e, cs / l2e)
        meta += nl2e * l2e
        var nl1e = nl2e * l2e / cs
        nl1e = roundUp(nl1e, cs / 8)
        meta += nl1e * 8
        meta += Qcow2Meta.refcountMetadataSize(clusters: (meta + aligned) / cs, clusterSize: cs, refcountOrder: refcountOrder,
                                               generousIncrease: false).bytes
        return meta + aligned
    }
}

extension Qcow2Node {
    /// QEMU's qcow2_get_persistent_dirty_bitmap_size: directory, tables and data of the bitmaps this
    /// image holds, laid out with `clusterSize` clusters.
    func persistentBitmapsSize(clusterSize cs: UInt64) -> UInt64 {
        let list = persistentBitmaps
        guard !list.isEmpty else { return 0 }
        var dirSize: UInt64 = 0
        var total: UInt64 = 0
        for b in list {
            let bits = (size + b.granularity - 1) / b.granularity
            let clusters = (bits + cs * 8 - 1) / (cs * 8)
            dirSize += roundUp(24 + UInt64(b.name.utf8.count), 8)
            total += roundUp(clusters * 8, cs) + clusters * cs
        }
        return total + roundUp(dirSize, cs)
    }

    /// The bitmaps stored in this image (name and granularity), empty when there are none.
    public var persistentBitmaps: [(name: String, granularity: UInt64, flags: UInt32)] {
        guard let bm = meta.header.bitmaps, meta.header.autoclearFeatures & Qcow2.autoclearBitmaps != 0 else { return [] }
        let read: (UInt64, Int) throws -> [UInt8] = { [file] o, n in try file.read(at: o, count: n) }
        let entries = (try? Qcow2Bitmaps.parseDirectory(read: read, offset: bm.directoryOffset, size: bm.directorySize,
                                                        count: bm.count, clusterSize: meta.clusterSize, fileSize: file.size)) ?? []
        return entries.map { ($0.name, UInt64(1) << UInt64(min($0.granularityBits, 63)), $0.flags) }
    }
}
