// VMDK writes (QEMU's vmdk_pwritev): flat extents are written in place; sparse grains in place
// when allocated, otherwise a run of new grains is appended at the extent's end (untouched parts
// copied from the parent, or zeroes) and then pointed to from the grain table and its redundant
// copy. streamOptimized extents take whole grains only, each deflated behind a marker, and never
// overwrite a grain. Write-zeroes uses zeroed-grain entries where the extent has them. The first
// write of each open gives the descriptor a new random CID.
import CZlib
import Glibc

/// Lets worker threads read one buffer.
struct RawBufferBox: @unchecked Sendable { let buffer: UnsafeRawBufferPointer }

/// Lets worker threads fill disjoint slots of one buffer.
struct UnsafeMutablePointerBox<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ p: UnsafeMutablePointer<T>) { pointer = p }
}

extension VMDKNode {
    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        try checkRequest(offset, UInt64(buffer.count))
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let e = try extent(at: pos)
            let want = min(UInt64(buffer.count - done), e.endSector * 512 - pos)
            let rest = UnsafeRawBufferPointer(rebasing: buffer[done..<done + Int(want)])
            let n: UInt64
            if e.flat {
                try rw.read { try e.file.write(at: e.flatStartOffset + pos - e.startSector * 512, from: rest, flags: flags) }
                n = want
            } else {
                let (m, _, _) = try metaLock.withLock { try e.lookup(pos, maxLength: want) }
                if e.compressed {
                    n = try writeCompressedGrains(e, pos, rest)
                } else if m.kind == .data {
                    try rw.read { try e.file.write(at: m.hostOffset, from: UnsafeRawBufferPointer(rebasing: rest[0..<Int(m.length)]), flags: flags) }
                    n = m.length
                } else {
                    n = try rw.write { try allocatingWrite(e, pos, rest) }
                }
            }
            done += Int(n)
            try updateCIDOnce()
        }
        if flags.contains(.fua) { try flush() }
    }

    /// QEMU rewrites the CID once per open, on the first write (vmdk_write_cid).
    func updateCIDOnce() throws {
        let needed = metaLock.withLock { () -> Bool in
            defer { cidUpdated = true }
            return !cidUpdated
        }
        guard needed else { return }
        let desc = try file.read(at: descOffset, count: VMDK.descSize)
        guard let updated = VMDKDescriptor.withCID(desc, UInt32.random(in: 0...UInt32.max)) else {
            throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL)
        }
        try file.write(at: descOffset, bytes: updated)
    }

    /// Under the exclusive lock: new grains for the unallocated (or zeroed) run at `pos`.
    private func allocatingWrite(_ e: VMDKExtent, _ pos: UInt64, _ data: UnsafeRawBufferPointer) throws -> UInt64 {
        let (m, table, index) = try metaLock.withLock { try e.lookup(pos, maxLength: UInt64(data.count)) }
        let part = UnsafeRawBufferPointer(rebasing: data[0..<Int(m.length)])
        if m.kind == .data {
            try e.file.write(at: m.hostOffset, from: part, flags: [])
            return m.length
        }
        guard table != 0 else {
            throw BlockError(.unsupported, "Could not allocate a grain: the grain table is missing", errno: ENOTSUP)
        }
        let l = e.layout!
        let cs = l.clusterSectors * 512
        let head = Int(m.inGrain)
        let grains = (UInt64(head) + m.length + cs - 1) / cs
        let total = Int(grains * cs)
        let firstSector = try metaLock.withLock { () -> UInt64 in
            let s = e.nextClusterSector
            if s + grains * l.clusterSectors > VMDK.extentMaxSectors { throw BlockError(.io, "Invalid argument", errno: EINVAL) }
            e.nextClusterSector += grains * l.clusterSectors
            return s
        }
        let start = pos - UInt64(head)
        if head == 0 && part.count == total {
            try e.file.write(at: firstSector * 512, from: part, flags: [])
        } else {
            var buf = [UInt8](repeating: 0, count: total)
            let fromParent = m.kind == .unallocated && backingNode != nil
            try buf.withUnsafeMutableBytes { b in
                let tail = head + part.count
                if fromParent && head > 0 { try readBacking(start, UnsafeMutableRawBufferPointer(rebasing: b[0..<head])) }
                if fromParent && tail < total {
                    try readBacking(start + UInt64(tail), UnsafeMutableRawBufferPointer(rebasing: b[tail..<total]))
                }
                UnsafeMutableRawBufferPointer(rebasing: b[head..<tail]).copyMemory(from: part)
            }
            try e.file.write(at: firstSector * 512, bytes: buf)
        }
        try metaLock.withLock {
            let l1i = e.l1Index(of: pos)
            var raw = [UInt8](repeating: 0, count: Int(grains) * 4)
            for i in 0..<Int(grains) { raw.setLE32(i * 4, UInt32(firstSector + UInt64(i) * l.clusterSectors)) }
            try e.file.write(at: UInt64(table) * 512 + UInt64(index) * 4, bytes: raw)
            if let backup = e.l1Backup, l1i < backup.count, backup[l1i] != 0 {
                try e.file.write(at: UInt64(backup[l1i]) * 512 + UInt64(index) * 4, bytes: raw)
            }
            for i in 0..<Int(grains) { e.setL2Entry(table: table, index: index + i, value: UInt32(firstSector + UInt64(i) * l.clusterSectors)) }
        }
        return m.length
    }

    /// streamOptimized: whole grains (the last one may be shorter), each deflated behind its
    /// marker. Grains are compressed in parallel outside the lock, then appended in order.
    private func writeCompressedGrains(_ e: VMDKExtent, _ pos: UInt64, _ data: UnsafeRawBufferPointer) throws -> UInt64 {
        let cs = e.clusterBytes
        guard pos % 512 == 0, (pos - e.startSector * 512) % cs == 0, e.layout!.hasMarker else {
            throw BlockError(.invalidArgument, "Invalid argument", errno: EINVAL)
        }
        // The grains this request covers: whole ones, or the shorter last grain of the extent.
        var grains: [(pos: UInt64, range: Range<Int>)] = []
        var o = 0
        while o < data.count {
            let n = Int(min(UInt64(data.count - o), cs))
            let gpos = pos + UInt64(o)
            guard n == Int(cs) || gpos + UInt64(n) == e.endSector * 512 else {
                if grains.isEmpty { throw BlockError(.invalidArgument, "Invalid argument", errno: EINVAL) }
                break
            }
            grains.append((gpos, o..<o + n))
            o += n
        }
        let compressed = UnsafeMutablePointer<[UInt8]>.allocate(capacity: grains.count)
        compressed.initialize(repeating: [], count: grains.count)
        defer { compressed.deinitialize(count: grains.count); compressed.deallocate() }
        let base = RawBufferBox(buffer: data)
        let out = UnsafeMutablePointerBox(compressed)
        let gs = grains
        let workers = min(grains.count, onlineCPUCount)
        let work: @Sendable (Int) -> Void = { w in
            var i = w
            while i < gs.count {
                let g = gs[i]
                // A grain that does not compress is left empty and fails the request below.
                if let c = VMDKNode.compressGrain(UnsafeRawBufferPointer(rebasing: base.buffer[g.range]), lba: g.pos / 512) {
                    out.pointer[i] = c
                }
                i += workers
            }
        }
        if workers > 1 { runThreads(workers, work) } else { work(0) }
        if (0..<grains.count).contains(where: { compressed[$0].isEmpty }) { throw BlockError(.io, "Invalid argument", errno: EINVAL) }
        var done: UInt64 = 0
        for (i, g) in grains.enumerated() {
            try rw.write { try appendCompressedGrain(e, g.pos, compressed[i]) }
            done += UInt64(g.range.count)
        }
        return done
    }

    /// zlib (QEMU's compress()) behind a marker, padded to a sector.
    static func compressGrain(_ data: UnsafeRawBufferPointer, lba: UInt64) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 12 + Int(compressBound(uLong(data.count))))
        var clen = uLongf(out.count - 12)
        let r = out.withUnsafeMutableBytes { o in
            compress((o.baseAddress! + 12).assumingMemoryBound(to: Bytef.self), &clen,
                     data.baseAddress!.assumingMemoryBound(to: Bytef.self), uLong(data.count))
        }
        guard r == Z_OK, clen > 0 else { return nil }
        out.setLE64(0, lba)
        out.setLE32(8, UInt32(clen))
        let used = 12 + Int(clen)
        out.removeLast(out.count - used)
        out += [UInt8](repeating: 0, count: Int(roundUp(UInt64(used), 512)) - used)
        return out
    }

    /// Under the exclusive lock: a compressed grain appended and pointed to (never overwritten).
    private func appendCompressedGrain(_ e: VMDKExtent, _ pos: UInt64, _ bytes: [UInt8]) throws {
        try metaLock.withLock {
            let (m, table, index) = try e.lookup(pos, maxLength: 1)
            if m.kind == .data {
                throw BlockError(.io, "Could not write to allocated cluster for streamOptimized", errno: EIO)
            }
            guard table != 0 else { throw BlockError(.invalidArgument, "Invalid argument", errno: EINVAL) }
            let sector = e.nextClusterSector
            if sector >= VMDK.extentMaxSectors { throw BlockError(.io, "Invalid argument", errno: EINVAL) }
            try e.file.write(at: sector * 512, bytes: bytes)
            e.nextClusterSector = sector + UInt64(bytes.count) / 512
            try e.updateL2(table: table, l1Index: e.l1Index(of: pos), index: index, value: UInt32(sector))
        }
    }

    /// Zeroed-grain entries for whole grains (QEMU's vmdk_co_pwrite_zeroes); otherwise zeroes are
    /// written, except where the range already reads as zero (unallocated without a parent).
    public func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        try checkRequest(offset, length)
        if try zeroGrains(offset, length, dryRun: true) {
            _ = try zeroGrains(offset, length, dryRun: false)
            try updateCIDOnce()
            return
        }
        if flags.contains(.noFallback) {
            throw BlockError(.unsupported, "Write zeroes without fallback is not supported", errno: ENOTSUP)
        }
        var done: UInt64 = 0
        while done < length {
            let pos = offset + done
            let e = try extent(at: pos)
            let want = min(length - done, e.endSector * 512 - pos)
            let (m, _, _) = try metaLock.withLock { try e.lookup(pos, maxLength: want) }
            if e.flat {
                var f = flags
                f.remove(.noFallback)
                try rw.read { try e.file.writeZeroes(at: m.hostOffset, length: m.length, flags: f) }
                try updateCIDOnce()
            } else if m.kind == .zeroed || (m.kind == .unallocated && backingNode == nil) {
                // Reads as zeroes already.
            } else {
                let chunk = [UInt8](repeating: 0, count: Int(min(m.length, 1 << 20)))
                var d: UInt64 = 0
                while d < m.length {
                    let n = Int(min(UInt64(chunk.count), m.length - d))
                    try chunk.withUnsafeBytes { try write(at: pos + d, from: UnsafeRawBufferPointer(rebasing: $0[0..<n]), flags: []) }
                    d += UInt64(n)
                }
            }
            done += m.length
        }
    }

    /// Whether [offset, offset+length) is whole grains of zeroed-grain extents; with !dryRun,
    /// marks them zeroed.
    private func zeroGrains(_ offset: UInt64, _ length: UInt64, dryRun: Bool) throws -> Bool {
        var done: UInt64 = 0
        while done < length {
            let pos = offset + done
            let e = try extent(at: pos)
            guard !e.flat, e.hasZeroGrain, !e.compressed else { return false }
            let cs = e.clusterBytes
            let (m, table, index) = try metaLock.withLock { try e.lookup(pos, maxLength: cs) }
            guard m.inGrain == 0, length - done >= cs, table != 0 else { return false }
            if !dryRun && m.kind != .zeroed {
                try rw.write {
                    try metaLock.withLock { try e.updateL2(table: table, l1Index: e.l1Index(of: pos), index: index, value: VMDK.gteZeroed) }
                }
            }
            done += cs
        }
        return true
    }

    public func discard(at offset: UInt64, length: UInt64) throws {}

    public func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws {
        throw BlockError(.unsupported, "Image format driver does not support resize", errno: ENOTSUP)
    }
}
