// The convert engine (qemu-img convert), shared by imgtool and anything else that copies images.
//
// The sources' block status (through their backing chains, or only their top layers when the
// target gets a backing file) splits the work into chunks of data, zeroes and "leave to backing".
// Worker threads read data chunks, find zero runs inside them (-S) and compress (-c) in parallel;
// writes happen in source order unless out-of-order writes are allowed (-W), so a qcow2 target is
// laid out sequentially. Zero chunks cost nothing on a target that reads as zero already; on other
// targets they become write-zeroes with unmap (holes on raw files, zero clusters in qcow2), never
// written zero buffers, except with -S 0, which fully allocates the target.
//
// With copy offloading (-C, as qemu-img) or no zero detection (-S 0), data that sits verbatim in a
// host file on both sides (raw, qcow2 data clusters: HostMapping.swift) is copied by the kernel
// (copy_file_range: a reflink on XFS/btrfs) instead of through a buffer. Otherwise data is read so
// that zero runs inside it become holes, exactly where qemu-img makes them (on ext4 the kernel copy
// is no faster than pread/pwrite, so there is nothing to trade that for). The target's host files
// allocate the blocks of big writes just before taking them (FileNode.allocatesBeforeWrite), which
// on ext4 saves a third of the kernel's write time.
import Glibc
import Synchronization

public struct ConvertOptions: Sendable {
    /// -S: zero runs at least this long become holes; 0 writes everything (fully allocated target).
    public var sparseSize: UInt64 = 4096
    public var compress = false
    /// -m: parallel workers (1...16).
    public var workers = 8
    /// -W: writes may complete out of order.
    public var outOfOrder = false
    /// The target was given a backing file (-B/-b): copy only the sources' top layers.
    public var targetHasBacking = false
    /// Copy only what the source's chain holds above this node (commit: the base is the target).
    public var copyAbove: (any BlockNode)?
    /// Look for zero runs inside data (-S); commit copies data as it is.
    public var detectZeroes = true
    /// The target reads as zeroes before we start (new image, or --target-is-zero).
    public var targetIsZero = false
    /// -r: bytes per second, nil for unlimited.
    public var rateLimit: UInt64?
    /// --salvage: a sector that cannot be read is reported through `warn` and copied as zeroes.
    public var salvage = false
    /// Where --salvage's warnings go (QEMU's "error while reading offset N: ...").
    public var warn: (@Sendable (String) -> Void)?
    /// -C: copy offloading; data is copied as it is, without looking for zeroes in it.
    public var copyOffload = false
    /// Called with the fraction done (0...1) as chunks complete.
    public var progress: (@Sendable (Double) -> Void)?

    public init() {}
}

public struct ConvertError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

public final class Converter: @unchecked Sendable {
    enum Status { case data, zero, backing }

    struct Chunk {
        var index: Int
        var targetOffset: UInt64
        var length: UInt64
        var status: Status
        var source: Int
        var sourceOffset: UInt64
    }

    let sources: [any BlockNode]
    let target: any BlockNode
    let options: ConvertOptions
    let chunkSize: UInt64
    let alignment: UInt64
    let totalSize: UInt64
    /// Slot i % 16 is where the writer of chunk i waits for its turn (at most 16 workers, so the
    /// chunks in flight never share a slot).
    private let monitor = Monitor(conditions: 16)
    // Guarded by `monitor`:
    private var nextChunk: Chunk?
    private var planner: Planner
    private var nextToWrite = 0
    private var failure: Error?
    private var done: UInt64 = 0
    /// The target takes kernel copies (copy_file_range) into its host file.
    private let directTarget: (any HostMappedNode)?
    /// Cleared the first time the kernel refuses copy_file_range between these files.
    private let kernelCopy = Atomic<Bool>(true)

    public init(sources: [any BlockNode], target: any BlockNode, options: ConvertOptions) {
        self.sources = sources
        self.target = target
        self.options = options
        let clusterSize = target.driverInfo()?.clusterSize ?? 0
        if options.compress {
            chunkSize = max(clusterSize, 512)
        } else {
            chunkSize = 2 << 20
        }
        var align = max(UInt64(1) << UInt64(63 - max(options.sparseSize, 512).leadingZeroBitCount), max(target.requestAlignment, 512))
        if clusterSize > align { align = clusterSize }
        alignment = align
        totalSize = sources.reduce(0) { $0 + $1.size }
        planner = Planner(sources: sources, chunkSize: chunkSize,
                          topOnly: options.targetHasBacking || options.copyAbove != nil,
                          above: options.copyAbove, allData: options.sparseSize == 0)
        if options.copyOffload || options.sparseSize == 0, !options.compress, !options.salvage,
           let t = target as? any HostMappedNode, t.canWriteDirect {
            directTarget = t
        } else {
            directTarget = nil
        }
    }

    /// The target's own host files (not its backing chain's), which allocate the blocks of big
    /// writes before taking them while the conversion runs (FileNode.allocatesBeforeWrite).
    static func hostFiles(of node: any BlockNode) -> [FileNode] {
        var files = (node as? FileNode).map { [$0] } ?? []
        for c in node.children where c.name != "backing" { files += hostFiles(of: c.node) }
        return files
    }

    /// Runs the conversion; throws the first error (as qemu-img words it).
    public func run() throws {
        // -m is an upper bound: beyond a few requests in flight per core, more workers only add
        // buffers (memory) without adding throughput; compression wants one per core.
        let cores = onlineCPUCount
        let useful = options.compress ? max(cores, 1) : max(2 * cores, 2)
        let workers = max(1, min(options.workers, 16, useful))
        // Only while this copy runs: a node that lives on (a VM's disk after a live commit) goes
        // back to plain writes.
        let files = Converter.hostFiles(of: target).filter { !$0.allocatesBeforeWrite.load(ordering: .relaxed) }
        for f in files { f.allocatesBeforeWrite.store(true, ordering: .relaxed) }
        defer { for f in files { f.allocatesBeforeWrite.store(false, ordering: .relaxed) } }
        runThreads(workers) { [self] _ in worker() }
        if let f = failure { throw f }
        options.progress?(1)
    }

    /// Plans chunks one at a time: block status of the current source, cut at chunk boundaries.
    struct Planner {
        let sources: [any BlockNode]
        let chunkSize: UInt64
        let topOnly: Bool
        /// The node the top-only copy stops at (default: each source's backing file).
        let above: (any BlockNode)?
        let allData: Bool
        var source = 0
        var offset: UInt64 = 0
        var targetBase: UInt64 = 0
        var index = 0
        var pending: (status: Status, end: UInt64)? = nil

        mutating func next() throws -> Chunk? {
            while source < sources.count && offset >= sources[source].size {
                targetBase += sources[source].size
                source += 1
                offset = 0
                pending = nil
            }
            guard source < sources.count else { return nil }
            let src = sources[source]
            if pending == nil || pending!.end <= offset {
                if allData {
                    pending = (.data, src.size)
                } else {
                    let base = topOnly ? (above ?? src.backing) : nil
                    let (e, _) = try src.blockStatusAbove(base: base, at: offset, length: src.size - offset)
                    let st: Status
                    if e.flags.contains(.zero) { st = .zero }
                    else if e.flags.contains(.data) { st = .data }
                    else { st = topOnly ? .backing : .data }
                    pending = (st, offset + max(1, e.length))
                }
            }
            // Data chunks are at most one buffer; zero and backing runs need no buffer, so they go
            // as one chunk of up to 1 GiB (a 4 GiB image with 1 GiB of data is then ~520 chunks,
            // not 2048 turns of the writers' lock).
            let status = pending!.status
            var len = min(pending!.end - offset, status == .data ? chunkSize : max(chunkSize, 1 << 30))
            // Keep chunk ends on the chunk grid (unless the run ends first) so writes stay cluster-aligned.
            let end = offset + len
            if end < pending!.end, end % chunkSize != 0 {
                let gridEnd = end - end % chunkSize
                len = gridEnd > offset ? gridEnd - offset : len
            }
            let c = Chunk(index: index, targetOffset: targetBase + offset, length: len, status: status,
                          source: source, sourceOffset: offset)
            index += 1
            offset += len
            return c
        }
    }

    private func worker() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(chunkSize), alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            // Take the next chunk in order.
            let taken: Chunk? = monitor.locked {
                if failure != nil { return nil }
                do { return try planner.next() } catch {
                    failure = error
                    monitor.broadcast()
                    return nil
                }
            }
            guard let chunk = taken else { return }
            do {
                let work = try prepare(chunk, buffer)
                try waitTurn(chunk.index)
                defer { finishTurn(chunk) }
                try write(chunk, work, buffer)
            } catch {
                monitor.locked {
                    if failure == nil { failure = error }
                    monitor.broadcast()
                }
                return
            }
        }
    }

    /// What a chunk becomes once its data is read: a list of (offset in chunk, length, isData),
    /// and for compression the compressed bytes.
    struct Work {
        var runs: [(start: Int, length: Int, data: Bool)] = []
        var compressed: [UInt8]?
        /// The chunk's source bytes in a host file, for a kernel copy (nothing was read).
        var direct: HostExtent?
    }

    /// The source's host bytes for a data chunk the kernel can copy whole: contiguous in a host
    /// file and sector aligned.
    private func directSource(_ c: Chunk) throws -> HostExtent? {
        guard directTarget != nil, c.status == .data, c.targetOffset % 512 == 0, c.length % 512 == 0,
              let src = sources[c.source] as? any HostMappedNode,
              let ext = try src.hostExtent(at: c.sourceOffset, length: c.length), ext.length == c.length
        else { return nil }
        return ext
    }

    private func prepare(_ c: Chunk, _ buffer: UnsafeMutableRawBufferPointer) throws -> Work {
        var w = Work()
        let n = Int(c.length)
        guard c.status == .data else { return w }
        if let ext = try directSource(c) {
            w.direct = ext
            return w
        }
        let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
        do {
            try sources[c.source].read(at: c.sourceOffset, into: part)
        } catch let e as BlockError {
            guard options.salvage else {
                throw ConvertError(message: "error while reading at byte \(c.targetOffset): \(BlockError.strerror(e.errno))")
            }
            salvage(c, part)
        }
        if options.compress, let q = target as? Qcow2Node {
            if isZeroBuffer(UnsafeRawBufferPointer(part)) {
                w.runs = [(0, n, false)]
            } else {
                w.compressed = q.compressCluster(UnsafeRawBufferPointer(part))
                w.runs = [(0, n, true)]
            }
            return w
        }
        if options.sparseSize == 0 || !options.detectZeroes {
            w.runs = [(0, n, true)]
            return w
        }
        w.runs = Converter.splitZeroRuns(UnsafeRawBufferPointer(part), targetOffset: c.targetOffset,
                                          minSparse: Int(options.sparseSize / 512), alignment: Int(alignment / 512))
        return w
    }

    /// --salvage after a failed chunk read: sector by sector, what still fails reads as zeroes.
    private func salvage(_ c: Chunk, _ part: UnsafeMutableRawBufferPointer) {
        var pos = 0
        while pos < part.count {
            let n = min(512, part.count - pos)
            let sector = UnsafeMutableRawBufferPointer(rebasing: part[pos..<pos + n])
            do {
                try sources[c.source].read(at: c.sourceOffset + UInt64(pos), into: sector)
            } catch {
                let code = (error as? BlockError)?.errno ?? EIO
                options.warn?("error while reading offset \(c.sourceOffset + UInt64(pos)): \(BlockError.strerror(code))")
                sector.initializeMemory(as: UInt8.self, repeating: 0)
            }
            pos += n
        }
    }

    /// qemu-img's is_allocated_sectors_min over a whole buffer: data runs, with zero runs shorter
    /// than `minSparse` sectors folded into the data around them and run ends aligned.
    static func splitZeroRuns(_ buf: UnsafeRawBufferPointer, targetOffset: UInt64, minSparse: Int, alignment: Int) -> [(start: Int, length: Int, data: Bool)] {
        let sectors = (buf.count + 511) / 512
        func sectorIsZero(_ i: Int) -> Bool {
            let s = i * 512
            return isZeroBuffer(UnsafeRawBufferPointer(rebasing: buf[s..<min(s + 512, buf.count)]))
        }
        /// is_allocated_sectors: the run length from sector `from`, and whether it is data.
        func run(_ from: Int, _ n: Int) -> (Int, Bool) {
            let zero = sectorIsZero(from)
            var i = 1
            while i < n && sectorIsZero(from + i) == zero { i += 1 }
            if i == n { return (n, !zero) }
            var isZero = zero
            let sectorNum = Int(targetOffset / 512) + from
            let tail = (sectorNum + i) & (alignment - 1)
            if tail != 0 {
                if isZero && i <= tail { isZero = false }
                if !isZero { i = min(i + alignment - tail, n) } else { i -= tail }
            }
            return (i, !isZero)
        }
        var runs: [(Int, Int, Bool)] = []
        var pos = 0
        while pos < sectors {
            let n = sectors - pos
            let minRun = min(minSparse, n)
            var (len, data) = run(pos, n)
            if data {
                // is_allocated_sectors_min: swallow zero runs shorter than minSparse.
                var used = len
                var checked = len
                while checked < n {
                    let (l, d) = run(pos + checked, n - checked)
                    checked += l
                    if d { used = checked } else if l >= minRun { break }
                }
                len = used
            }
            let start = pos * 512
            let end = min((pos + len) * 512, buf.count)
            if let last = runs.last, last.2 == data {
                runs[runs.count - 1].1 += end - start
            } else {
                runs.append((start, end - start, data))
            }
            pos += len
        }
        return runs
    }

    private func waitTurn(_ index: Int) throws {
        guard !options.outOfOrder else { return }
        try monitor.locked {
            while nextToWrite != index && failure == nil { monitor.wait(slot: index) }
            if let f = failure { throw f }
        }
    }

    private func finishTurn(_ c: Chunk) {
        monitor.locked {
            done += c.length
            if !options.outOfOrder {
                nextToWrite = c.index + 1
                monitor.signal(slot: c.index + 1)
            }
        }
        if let p = options.progress, totalSize > 0 { p(Double(done) / Double(totalSize)) }
        if let limit = options.rateLimit, limit > 0 {
            usleep(UInt32(min(Double(c.length) / Double(limit) * 1_000_000, 10_000_000)))
        }
    }

    private func write(_ c: Chunk, _ w: Work, _ buffer: UnsafeMutableRawBufferPointer) throws {
        do {
            switch c.status {
            case .backing:
                return
            case .zero:
                try writeZeroes(c.targetOffset, c.length)
            case .data:
                if let src = w.direct {
                    try writeDirect(c, from: src, buffer)
                    return
                }
                if let compressed = w.compressed, let q = target as? Qcow2Node {
                    try q.writeCompressedData(guestOffset: c.targetOffset, compressed: compressed, length: compressed.count)
                    return
                }
                for r in w.runs {
                    let off = c.targetOffset + UInt64(r.start)
                    if r.data {
                        try target.write(at: off, from: UnsafeRawBufferPointer(rebasing: buffer[r.start..<r.start + r.length]), flags: [])
                    } else {
                        try writeZeroes(off, UInt64(r.length))
                    }
                }
            }
        } catch let e as BlockError {
            throw ConvertError(message: "error while writing at byte \(c.targetOffset): \(BlockError.strerror(e.errno))")
        }
    }

    /// Copies a chunk host file to host file; what the target cannot take that way (a partial
    /// cluster, a probed raw image's first sector) goes through the buffer.
    private func writeDirect(_ c: Chunk, from src: HostExtent, _ buffer: UnsafeMutableRawBufferPointer) throws {
        guard let t = directTarget else { return }
        var pos: UInt64 = 0
        while pos < c.length {
            let n = try t.writeDirect(at: c.targetOffset + pos, length: c.length - pos) { dst in
                let from = HostExtent(file: src.file, offset: src.offset + pos, length: dst.length)
                if !(try copyHostBytes(from: from, to: dst, bounce: buffer, useKernel: kernelCopy.load(ordering: .relaxed))) {
                    kernelCopy.store(false, ordering: .relaxed)
                }
            }
            if n == 0 { break }
            pos += n
        }
        if pos < c.length {
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(c.length - pos)])
            try sources[c.source].read(at: c.sourceOffset + pos, into: part)
            try target.write(at: c.targetOffset + pos, from: UnsafeRawBufferPointer(part), flags: [])
        }
    }

    private func writeZeroes(_ offset: UInt64, _ length: UInt64) throws {
        if options.targetIsZero { return }
        try target.writeZeroes(at: offset, length: length, flags: .mayUnmap)
    }
}
