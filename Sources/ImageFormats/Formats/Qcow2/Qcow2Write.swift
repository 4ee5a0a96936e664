// The qcow2 write paths: in place, allocating with copy-on-write, compressed, zeroing, discard.
//
// In place: every byte lands in a cluster this image owns alone (COPIED), so only data moves.
// Allocating: one cluster at a time: make the L2 table writable, build the cluster's new content
// (copy-on-write of the parts not written: from the old cluster, a compressed cluster, the backing
// file or zeroes), allocate, write the data, then point the L2 entry at it and drop the old
// reference. With extended L2 entries only the subclusters touched (plus any that the old host
// cluster held) become allocated; the rest keep reading from the backing file.
import Glibc

extension Qcow2Node {
    func checkWritable() throws {
        if isReadOnly { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        if meta.markedCorrupt || meta.header.isCorrupt {
            throw BlockError(.corrupt, "qcow2: Image is corrupt; writes are refused", errno: EIO)
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        try checkWritable()
        try checkRequest(offset, UInt64(buffer.count))
        guard buffer.count > 0 else { return }
        let done = try rw.read { try writeInPlace(offset, buffer) }
        if !done {
            try rw.write {
                var pos = offset
                let end = offset + UInt64(buffer.count)
                let cs = meta.clusterSize
                while pos < end {
                    if pos % cs == 0, end - pos >= 2 * cs {
                        let rest = UnsafeRawBufferPointer(rebasing: buffer[Int(pos - offset)...])
                        let n = try writeNewClusterRun(pos, available: UInt64(rest.count), minClusters: 2) { host, bytes in
                            try meta.dataHost.write(at: host, from: UnsafeRawBufferPointer(rebasing: rest[0..<Int(bytes)]), flags: [])
                        }
                        if n > 0 { pos += n; continue }
                    }
                    let cStart = pos - pos % cs
                    let wEnd = min(end, cStart + cs)
                    let part = UnsafeRawBufferPointer(rebasing: buffer[Int(pos - offset)..<Int(wEnd - offset)])
                    try writeCluster(cStart, writeStart: pos, data: part)
                    pos = wEnd
                }
            }
        }
        markBitmaps(offset, UInt64(buffer.count))
        if flags.contains(.fua) { try flush() }
    }

    /// Writes without touching metadata when every byte maps to an allocated cluster with refcount
    /// one. Returns false (having written nothing) otherwise.
    private func writeInPlace(_ offset: UInt64, _ buffer: UnsafeRawBufferPointer) throws -> Bool {
        var plan: [(host: UInt64, start: Int, count: Int)] = []
        let ok: Bool = try metaLock.withLock {
            var done = 0
            while done < buffer.count {
                let m = try meta.lookup(offset + UInt64(done), maxLength: UInt64(buffer.count - done))
                guard m.type == .normal && m.copied else { return false }
                plan.append((m.hostOffset, done, Int(m.length)))
                done += Int(m.length)
            }
            return true
        }
        guard ok else { return false }
        for p in plan {
            try meta.dataHost.write(at: p.host, from: UnsafeRawBufferPointer(rebasing: buffer[p.start..<p.start + p.count]), flags: [])
        }
        return true
    }

    /// The common case of sequential writes to fresh space: whole clusters with nothing to keep
    /// (unallocated, zero, no backing data under them) get one contiguous host run, one data write
    /// (`writeData(hostOffset, bytes)`, before any L2 entry points there) and their L2 entries.
    /// Returns the bytes written (0 when the fast path does not apply). Callers hold `rw` exclusively.
    func writeNewClusterRun(_ start: UInt64, available: UInt64, minClusters: UInt64,
                            writeData: (UInt64, UInt64) throws -> Void) throws -> UInt64 {
        let cs = meta.clusterSize
        guard !meta.isExtendedL2, !meta.hasDataFile, start % cs == 0 else { return 0 }
        let (l1Index, first) = meta.l2Location(start)
        let maxClusters = min(available / cs, meta.l2Entries - first)
        guard maxClusters >= max(minClusters, 1) else { return 0 }
        let plan: (l2: UInt64, count: UInt64, old: [UInt64], host: UInt64)? = try metaLock.withLock {
            let l2 = try meta.l2TableForWrite(l1Index)
            var old: [UInt64] = []
            for i in 0..<maxClusters {
                let (e, _) = try meta.l2Entry(table: l2, index: first + i)
                let t = meta.clusterType(e)
                // Only entries whose replacement needs no copy-on-write and frees nothing shared.
                guard t == .unallocated || t == .zeroPlain else { break }
                old.append(e)
            }
            guard old.count >= max(minClusters, 1) else { return nil }
            let count = UInt64(old.count)
            return (l2, count, old, try meta.allocateClusters(bytes: count * cs))
        }
        guard let plan else { return 0 }
        let bytes = plan.count * cs
        try writeData(plan.host, bytes)
        try metaLock.withLock {
            for i in 0..<plan.count {
                try meta.setL2Entry(table: plan.l2, index: first + i, entry: (plan.host + i * cs) | Qcow2.oflagCopied, bitmap: 0)
            }
        }
        return bytes
    }

    /// Writes `data` at `writeStart` inside the guest cluster starting at `cStart` (rw held exclusively).
    private func writeCluster(_ cStart: UInt64, writeStart: UInt64, data: UnsafeRawBufferPointer) throws {
        let cs = meta.clusterSize
        let ext = meta.isExtendedL2
        let scSize = meta.subclusterSize
        let (l1Index, index) = meta.l2Location(cStart)
        let (l2Offset, entry, bitmap) = try metaLock.withLock { () -> (UInt64, UInt64, UInt64) in
            let l2 = try meta.l2TableForWrite(l1Index)
            let (e, b) = try meta.l2Entry(table: l2, index: index)
            return (l2, e, b)
        }
        let type = meta.clusterType(entry)
        let inCluster = Int(writeStart - cStart)
        let wEndIn = inCluster + data.count
        let firstSc = UInt64(inCluster) / scSize
        let lastSc = UInt64(wEndIn - 1) / scSize
        let touchedMask = ext ? Qcow2Node.bits(firstSc, lastSc) : 0
        let keepOld = (type == .normal || type == .zeroAlloc) && entry & Qcow2.oflagCopied != 0

        if keepOld {
            let host = entry & Qcow2.l2OffsetMask
            if !ext && type == .normal {
                try meta.dataHost.write(at: host + UInt64(inCluster), from: data, flags: [])
                return
            }
            // A preallocated zero cluster (or, with extended L2, subclusters that are not allocated
            // yet): fill the partial edges with what they read as now, then write.
            let unitStart = ext ? firstSc * scSize : 0
            let unitEnd = ext ? (lastSc + 1) * scSize : cs
            let span = try mergedSpan(cStart: cStart, spanStart: unitStart, spanEnd: unitEnd, unit: ext ? scSize : cs,
                                      writeStart: UInt64(inCluster), data: data)
            try span.withUnsafeBytes { try meta.dataHost.write(at: host + unitStart, from: $0, flags: []) }
            try metaLock.withLock {
                if ext {
                    let newBitmap = (bitmap | touchedMask) & ~(touchedMask << 32)
                    try meta.setL2Entry(table: l2Offset, index: index, entry: entry, bitmap: newBitmap)
                } else {
                    try meta.setL2Entry(table: l2Offset, index: index, entry: entry & ~Qcow2.oflagZero, bitmap: 0)
                }
            }
            return
        }

        // A new host cluster. Decide which parts need their current content copied.
        var image = [UInt8](repeating: 0, count: Int(cs))
        var newBitmap: UInt64 = 0
        if ext {
            let oldHasHost = type == .normal || type == .zeroAlloc
            let oldAlloc = type == .compressed ? 0xFFFF_FFFF : (oldHasHost ? bitmap & 0xFFFF_FFFF : 0)
            let alloc = oldAlloc | touchedMask
            for sc in 0..<meta.header.subclustersPerCluster where alloc & (1 << sc) != 0 {
                let s = Int(sc * scSize), e = s + Int(scSize)
                let fully = inCluster <= s && wEndIn >= e
                if !fully { try readCurrent(cStart + UInt64(s), into: &image, at: s, count: Int(scSize)) }
            }
            newBitmap = alloc | (((type == .compressed ? 0 : bitmap) >> 32 & ~alloc & 0xFFFF_FFFF) << 32)
        } else if inCluster > 0 || wEndIn < Int(cs) {
            try readCurrent(cStart, into: &image, at: 0, count: Int(cs))
        }
        image.withUnsafeMutableBytes { dst in
            UnsafeMutableRawBufferPointer(rebasing: dst[inCluster..<wEndIn]).copyMemory(from: data)
        }
        let host = try metaLock.withLock { try meta.allocateDataCluster(guestCluster: cStart) }
        try image.withUnsafeBytes { try meta.dataHost.write(at: host, from: $0, flags: []) }
        try metaLock.withLock {
            let entryValue = (meta.hasDataFile ? cStart : host) | Qcow2.oflagCopied
            try meta.setL2Entry(table: l2Offset, index: index, entry: entryValue, bitmap: newBitmap)
            try meta.freeAnyCluster(entry, discard: .never)
        }
    }

    /// Reads what the guest currently sees at [offset, offset+count) into image[at...], clipped to
    /// the virtual size (the rest stays zero).
    private func readCurrent(_ offset: UInt64, into image: inout [UInt8], at: Int, count: Int) throws {
        let sz = size
        guard offset < sz else { return }
        let n = Int(min(UInt64(count), sz - offset))
        try image.withUnsafeMutableBytes { b in
            try readUnlocked(offset, UnsafeMutableRawBufferPointer(rebasing: b[at..<at + n]))
        }
    }

    /// The bytes of [spanStart, spanEnd) within the cluster after the write: the edge units that are
    /// only partly written are first filled with their current content.
    private func mergedSpan(cStart: UInt64, spanStart: UInt64, spanEnd: UInt64, unit: UInt64, writeStart: UInt64,
                            data: UnsafeRawBufferPointer) throws -> [UInt8] {
        var span = [UInt8](repeating: 0, count: Int(spanEnd - spanStart))
        let wEnd = writeStart + UInt64(data.count)
        if writeStart > spanStart {
            try readCurrent(cStart + spanStart, into: &span, at: 0, count: Int(unit))
        }
        if wEnd < spanEnd {
            let lastUnit = spanEnd - unit
            try readCurrent(cStart + lastUnit, into: &span, at: Int(lastUnit - spanStart), count: Int(unit))
        }
        span.withUnsafeMutableBytes { dst in
            let s = Int(writeStart - spanStart)
            UnsafeMutableRawBufferPointer(rebasing: dst[s..<s + data.count]).copyMemory(from: data)
        }
        return span
    }

    static func bits(_ first: UInt64, _ last: UInt64) -> UInt64 {
        ((UInt64(1) << (last + 1)) - 1) & ~((UInt64(1) << first) - 1)
    }

    // MARK: compressed writes

    /// Writes one whole cluster (or the last, partial one) compressed, as `convert -c` does. The
    /// cluster must be unallocated. Data that does not compress is written normally.
    public func writeCompressed(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        try checkWritable()
        let cs = meta.clusterSize
        guard offset % cs == 0, UInt64(buffer.count) == cs || (UInt64(buffer.count) < cs && offset + UInt64(buffer.count) == size) else {
            throw BlockError(.invalidArgument, "Compressed writes must cover whole clusters", errno: EINVAL)
        }
        if meta.hasDataFile {
            throw BlockError.unsupported("Compression is not supported with external data files")
        }
        var input = [UInt8](repeating: 0, count: Int(cs))
        input.withUnsafeMutableBytes { $0.copyMemory(from: buffer) }
        var out = [UInt8](repeating: 0, count: Int(cs) - 1)
        let n = input.withUnsafeBytes { i in out.withUnsafeMutableBytes { o in Qcow2Compression.compress(compression, i, into: o) } }
        guard let clen = n else {
            try write(at: offset, from: buffer, flags: [])
            return
        }
        try writeCompressedData(guestOffset: offset, compressed: out, length: clen)
    }

    /// Stores already compressed cluster data (compression happens on the caller's thread, so that
    /// convert can compress in parallel).
    public func writeCompressedData(guestOffset offset: UInt64, compressed: [UInt8], length clen: Int) throws {
        try checkWritable()
        try rw.write {
            let (l1Index, index) = meta.l2Location(offset)
            let (l2, offsetOnDisk) = try metaLock.withLock { () -> (UInt64, UInt64) in
                let l2 = try meta.l2TableForWrite(l1Index)
                let (e, _) = try meta.l2Entry(table: l2, index: index)
                if e & Qcow2.l2OffsetMask != 0 || e & Qcow2.oflagCompressed != 0 {
                    throw BlockError(.io, "Compressed writes can only overwrite unallocated clusters", errno: EIO)
                }
                return (l2, try meta.allocateBytes(UInt64(clen)))
            }
            try compressed.withUnsafeBytes {
                try file.write(at: offsetOnDisk, from: UnsafeRawBufferPointer(rebasing: $0[0..<clen]), flags: [])
            }
            try metaLock.withLock {
                let shift = 62 - (meta.clusterBits - 8)
                let sectors = ((offsetOnDisk + UInt64(clen) - 1) >> 9) - (offsetOnDisk >> 9)
                let entry = offsetOnDisk | Qcow2.oflagCompressed | (sectors << shift)
                try meta.setL2Entry(table: l2, index: index, entry: entry, bitmap: 0)
            }
        }
        markBitmaps(offset, min(meta.clusterSize, size - offset))
    }

    public var compressionType: String { compression.name }

    /// Compresses one cluster's worth of data for `writeCompressedData`; nil when it does not shrink.
    public func compressCluster(_ data: UnsafeRawBufferPointer) -> [UInt8]? {
        let cs = Int(meta.clusterSize)
        var input = [UInt8](repeating: 0, count: cs)
        input.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: data[0..<min(cs, data.count)])) }
        var out = [UInt8](repeating: 0, count: cs - 1)
        let n = input.withUnsafeBytes { i in out.withUnsafeMutableBytes { o in Qcow2Compression.compress(compression, i, into: o) } }
        guard let n else { return nil }
        out.removeLast(out.count - n)
        return out
    }

    // MARK: write zeroes and discard

    public func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws {
        try checkWritable()
        try checkRequest(offset, length)
        guard length > 0 else { return }
        let unit = meta.isExtendedL2 ? meta.subclusterSize : meta.clusterSize
        let end = offset + length
        let sz = size
        let alignedStart = roundUp(offset, unit)
        var alignedEnd = end - end % unit
        if end == sz { alignedEnd = end }   // the tail at the end of the image counts as whole
        try rw.write {
            if alignedStart >= alignedEnd {
                try zeroPartial(offset, end, flags)
                return
            }
            if offset < alignedStart { try zeroPartial(offset, alignedStart, flags) }
            if alignedEnd < end { try zeroPartial(alignedEnd, end, flags) }
            try zeroize(alignedStart, alignedEnd, flags)
        }
        if meta.header.dataFileRaw {
            try meta.dataHost.writeZeroes(at: offset, length: length, flags: flags)
        }
        markBitmaps(offset, length)
        if flags.contains(.fua) { try flush() }
    }

    /// An unaligned piece of a zero write: nothing to do where the guest already reads zeroes,
    /// otherwise zero buffers through the normal write path.
    private func zeroPartial(_ start: UInt64, _ end: UInt64, _ flags: WriteFlags) throws {
        if try readsAsZero(start, end) { return }
        if flags.contains(.noFallback) {
            throw BlockError(.unsupported, "Write zeroes without fallback is not supported here", errno: ENOTSUP)
        }
        let zeros = [UInt8](repeating: 0, count: Int(end - start))
        let cs = meta.clusterSize
        try zeros.withUnsafeBytes { buf in
            var pos = start
            while pos < end {
                let cStart = pos - pos % cs
                let wEnd = min(end, cStart + cs)
                try writeClusterPublic(cStart, pos, UnsafeRawBufferPointer(rebasing: buf[Int(pos - start)..<Int(wEnd - start)]))
                pos = wEnd
            }
        }
    }

    private func writeClusterPublic(_ cStart: UInt64, _ pos: UInt64, _ data: UnsafeRawBufferPointer) throws {
        try writeCluster(cStart, writeStart: pos, data: data)
    }

    /// Whether [start, end) reads as zero without reading data (metadata only).
    private func readsAsZero(_ start: UInt64, _ end: UInt64) throws -> Bool {
        var pos = start
        while pos < end {
            let m = try metaLock.withLock { try meta.lookup(pos, maxLength: end - pos) }
            switch m.type {
            case .zeroPlain, .zeroAlloc: break
            case .unallocatedPlain, .unallocatedAlloc:
                if let b = backingNode {
                    if pos < b.size {
                        let n = min(m.length, b.size - pos)
                        let (ext, _) = try b.blockStatusAbove(base: nil, at: pos, length: n)
                        if !ext.flags.contains(.zero) { return false }
                        pos += max(1, min(ext.length, n))
                        continue
                    }
                }
            default: return false
            }
            pos += m.length
        }
        return true
    }

    /// Aligned zeroing through L2 entries (QEMU's qcow2_subcluster_zeroize).
    private func zeroize(_ start: UInt64, _ end: UInt64, _ flags: WriteFlags) throws {
        let cs = meta.clusterSize
        let canZeroFlag = meta.header.version >= 3
        var pos = start
        while pos < end {
            let cStart = pos - pos % cs
            let cEnd = min(cStart + cs, end)
            let whole = pos == cStart && (cEnd == cStart + cs || cEnd == size)
            if !canZeroFlag {
                // v2 has no zero flag: unallocated clusters read as zero only without a backing file.
                if backingNode == nil && whole {
                    try discardCluster(cStart, zeroAfter: false)
                } else {
                    try zeroPartialForced(pos, cEnd)
                }
                pos = cEnd
                continue
            }
            try metaLock.withLock {
                let (l1Index, index) = meta.l2Location(cStart)
                let l2 = try meta.l2TableForWrite(l1Index)
                let (entry, bitmap) = try meta.l2Entry(table: l2, index: index)
                let type = meta.clusterType(entry)
                if meta.isExtendedL2 {
                    let first = (pos - cStart) / meta.subclusterSize
                    let last = (cEnd - cStart - 1) / meta.subclusterSize
                    if type == .compressed && !whole {
                        throw BlockError(.unsupported, "partial zeroing of a compressed cluster", errno: ENOTSUP)
                    }
                    if whole {
                        let unmap = type == .compressed || (flags.contains(.mayUnmap) && (type == .normal || type == .zeroAlloc) && !meta.hasDataFile)
                        let newEntry = unmap ? 0 : entry
                        try meta.setL2Entry(table: l2, index: index, entry: newEntry, bitmap: 0xFFFF_FFFF << 32)
                        if unmap { try meta.freeAnyCluster(entry, discard: .request) }
                    } else {
                        let mask = Qcow2Node.bits(first, last)
                        try meta.setL2Entry(table: l2, index: index, entry: entry, bitmap: (bitmap & ~mask) | (mask << 32))
                    }
                } else {
                    let unmap = type == .compressed || (flags.contains(.mayUnmap) && (type == .normal || type == .zeroAlloc) && !meta.hasDataFile)
                    let newEntry = (unmap ? 0 : entry) | Qcow2.oflagZero
                    if newEntry != entry {
                        try meta.setL2Entry(table: l2, index: index, entry: newEntry, bitmap: 0)
                        if unmap { try meta.freeAnyCluster(entry, discard: .request) }
                    }
                }
            }
            pos = cEnd
        }
    }

    private func zeroPartialForced(_ start: UInt64, _ end: UInt64) throws {
        if try readsAsZero(start, end) { return }
        let zeros = [UInt8](repeating: 0, count: Int(end - start))
        try zeros.withUnsafeBytes { try writeCluster(start - start % meta.clusterSize, writeStart: start, data: $0) }
    }

    public func discard(at offset: UInt64, length: UInt64) throws {
        try checkWritable()
        try checkRequest(offset, length)
        let cs = meta.clusterSize
        if meta.header.version < 3 && backingNode != nil { return }
        let start = roundUp(offset, cs)
        var end = (offset + length) - (offset + length) % cs
        if offset + length == size { end = offset + length }
        guard start < end else { return }
        try rw.write {
            var pos = start
            while pos < end {
                try discardCluster(pos, zeroAfter: true)
                pos += cs
            }
        }
        markBitmaps(start, end - start)
    }

    /// QEMU's discard_in_l2_slice for one cluster (full_discard = false: the cluster then reads as
    /// zero, or falls through to nothing when there is no backing file and it was unallocated).
    private func discardCluster(_ cStart: UInt64, zeroAfter: Bool) throws {
        try metaLock.withLock {
            let (l1Index, index) = meta.l2Location(cStart)
            guard l1Index < meta.l1Table.count, meta.l1Table[l1Index] & Qcow2.l1OffsetMask != 0 else { return }
            let l2 = try meta.l2TableForWrite(l1Index)
            let (entry, bitmap) = try meta.l2Entry(table: l2, index: index)
            let type = meta.clusterType(entry)
            let allocated = type == .normal || type == .compressed || type == .zeroAlloc
            var newEntry: UInt64 = 0
            var newBitmap: UInt64 = 0
            if zeroAfter && (backingNode != nil || allocated) {
                if meta.isExtendedL2 {
                    newBitmap = 0xFFFF_FFFF << 32
                } else if meta.header.version >= 3 {
                    newEntry = Qcow2.oflagZero
                }
            }
            if newEntry == entry && newBitmap == bitmap { return }
            try meta.setL2Entry(table: l2, index: index, entry: newEntry, bitmap: newBitmap)
            try meta.freeAnyCluster(entry, discard: .request)
        }
    }
}
