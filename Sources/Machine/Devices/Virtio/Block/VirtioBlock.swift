// The virtio-blk device type: a client of one block node of the ImageFormats graph.
//
// Requests are parsed (BlockRequest.parse) and then carried out as BlockNode calls: read, write
// (FUA never needed: we offer no writeback toggle), flush, discard, write-zeroes (with the unmap
// flag when discard=unmap), GET_ID (the serial). Each queue is served where its notification lands:
// on the notifying vCPU thread, or on the device's iothread when one is configured (feature B5).
// A malformed chain completes with VIRTIO_BLK_S_IOERR when it has a status byte, and marks the
// device as needing a reset when the ring itself is broken; neither can crash the process.
import ImageFormats
import Synchronization

public struct VirtioBlockOptions: Sendable {
    public var serial: String?
    public var numQueues: Int = 1
    public var queueSize: UInt16 = 256
    public var readOnly = false
    /// discard=unmap on the drive: guest discards reach the node.
    public var discard = false
    /// detect-zeroes: "off", "on" (all-zero writes become write-zeroes), "unmap" (and may unmap
    /// when discard=unmap), as QEMU's BlockdevDetectZeroesOptions.
    public var detectZeroes = "off"
    public var logicalBlockSize: UInt32 = 512
    public init() {}
}

public final class VirtioBlock: VirtioDeviceType, @unchecked Sendable {
    public static let featureSegMax: UInt64 = 1 << 2, featureRO: UInt64 = 1 << 5, featureBlkSize: UInt64 = 1 << 6
    public static let featureFlush: UInt64 = 1 << 9, featureTopology: UInt64 = 1 << 10, featureMQ: UInt64 = 1 << 12
    public static let featureDiscard: UInt64 = 1 << 13, featureWriteZeroes: UInt64 = 1 << 14
    public static let statusOK: UInt8 = 0, statusIOErr: UInt8 = 1, statusUnsupported: UInt8 = 2
    public static let maxDiscardSectors: UInt32 = 0x3FFF_FFFF / 512

    public let node: any BlockNode
    public let options: VirtioBlockOptions
    public let stats = BlockStats()
    private let iothread: IOThread?
    private struct Active { var queues: [Virtqueue]; var contexts: [QueueContext]; var interrupts: any VirtioInterrupts; var features: UInt64 }
    private let active = Mutex<Active?>(nil)

    /// Small guest buffers are gathered into one node request of up to this many bytes (a scatter
    /// read, or a write through a bounce buffer per queue); pieces of at least `directThreshold`
    /// bytes go to the node as they are.
    static let bounceSize = 512 << 10
    static let directThreshold = 64 << 10

    /// Per-queue state, used only under the queue's lock: the chain popped into (its storage is
    /// reused), the pieces of the batch being gathered, and the bounce buffer (allocated on first use).
    final class QueueContext: @unchecked Sendable {
        var chain = VirtqChain()
        var pieces: [UnsafeMutableRawBufferPointer] = []
        private var bounceStorage: UnsafeMutableRawPointer?
        var source: IOSource?

        var bounce: UnsafeMutableRawPointer {
            if let b = bounceStorage { return b }
            let b = UnsafeMutableRawPointer.allocate(byteCount: VirtioBlock.bounceSize, alignment: 4096)
            bounceStorage = b
            return b
        }

        deinit { bounceStorage?.deallocate() }
    }

    public init(node: any BlockNode, options: VirtioBlockOptions, iothread: IOThread? = nil) {
        self.node = node
        self.options = options
        self.iothread = iothread
    }

    public var virtioDeviceID: UInt16 { 2 }
    public var queueCount: Int { max(1, options.numQueues) }
    public var queueMaxSize: UInt16 { options.queueSize }

    public var deviceFeatures: UInt64 {
        var f = VirtioFeature.version1 | VirtioFeature.indirectDesc | VirtioBlock.featureSegMax | VirtioBlock.featureBlkSize
            | VirtioBlock.featureFlush | VirtioBlock.featureTopology | VirtioBlock.featureWriteZeroes
        if options.discard { f |= VirtioBlock.featureDiscard }
        if options.readOnly || node.isReadOnly { f |= VirtioBlock.featureRO }
        if queueCount > 1 { f |= VirtioBlock.featureMQ }
        return f
    }

    private var readOnly: Bool { options.readOnly || node.isReadOnly }

    /// The configuration layout (struct virtio_blk_config), 60 bytes.
    func configBytes() -> [UInt8] {
        var c = [UInt8](repeating: 0, count: 60)
        func put(_ o: Int, _ v: UInt64, _ n: Int) { for i in 0..<n { c[o + i] = UInt8((v >> (8 * UInt64(i))) & 0xFF) } }
        put(0, node.size / 512, 8)                          // capacity in 512-byte sectors
        put(12, UInt64(options.queueSize) - 2, 4)           // seg_max
        put(20, UInt64(options.logicalBlockSize), 4)        // blk_size
        put(34, UInt64(queueCount), 2)                      // num_queues
        put(36, UInt64(VirtioBlock.maxDiscardSectors), 4)   // max_discard_sectors
        put(40, 1, 4)                                       // max_discard_seg
        put(44, 1, 4)                                       // discard_sector_alignment
        put(48, UInt64(VirtioBlock.maxDiscardSectors), 4)   // max_write_zeroes_sectors
        put(52, 1, 4)                                       // max_write_zeroes_seg
        c[56] = options.discard ? 1 : 0                     // write_zeroes_may_unmap
        return c
    }

    public func readConfig(offset: Int, size: Int) -> UInt64 {
        let c = configBytes()
        guard offset >= 0, size >= 1, size <= 8, offset + size <= c.count else { return 0 }
        var v: UInt64 = 0
        for i in 0..<size { v |= UInt64(c[offset + i]) << (8 * UInt64(i)) }
        return v
    }

    public func writeConfig(offset: Int, size: Int, value: UInt64) {}   // writeback toggle not offered

    public func activate(features: UInt64, queues: [Virtqueue], interrupts: any VirtioInterrupts) {
        let contexts = queues.indices.map { index -> QueueContext in
            let c = QueueContext()
            c.source = iothread?.makeSource { [weak self] in self?.process(queue: index) }
            return c
        }
        active.withLock { $0 = Active(queues: queues, contexts: contexts, interrupts: interrupts, features: features) }
    }

    public func deviceReset() {
        iothread?.drain()
        active.withLock { $0 = nil }
    }

    public func notify(queue index: Int) {
        if iothread != nil {
            let source = active.withLock { a -> IOSource? in
                guard let a, index < a.contexts.count else { return nil }
                return a.contexts[index].source
            }
            source?.kick()
        } else {
            process(queue: index)
        }
    }

    /// Serves every available request of one queue, then signals the driver once for the batch.
    /// On an iothread the driver is asked not to notify while the queue is being drained, and the
    /// ring is looked at once more after re-enabling notifications, so that no request is missed.
    func process(queue index: Int) {
        guard let (q, ctx, interrupts) = active.withLock({ a -> (Virtqueue, QueueContext, any VirtioInterrupts)? in
            guard let a, index < a.queues.count else { return nil }
            return (a.queues[index], a.contexts[index], a.interrupts)
        }) else { return }
        let onIOThread = iothread != nil
        var notify = false
        q.lock.withLock { _ in
            guard q.config.ready else { return }
            if onIOThread { q.suppressNotifications(true) }
            while true {
                do {
                    while try q.pop(into: &ctx.chain) {
                        let written = execute(ctx)
                        if q.push(head: ctx.chain.head, written: written) { notify = true }
                    }
                } catch {
                    interrupts.deviceNeedsReset("virtio-blk queue \(index): \(error)")
                    return
                }
                guard onIOThread else { break }
                q.suppressNotifications(false)
                guard q.hasAvailable else { break }
                q.suppressNotifications(true)
            }
        }
        if notify { interrupts.usedBuffers(queue: index) }
    }

    /// Runs one request (the chain in `ctx`); returns the number of bytes written into the chain.
    func execute(_ ctx: QueueContext) -> UInt32 {
        let chain = ctx.chain
        let capacity = node.size
        let req: BlockRequest
        do { req = try BlockRequest.parse(chain, capacity: capacity) } catch {
            stats.update { $0.invalidOps += 1 }
            if case BlockRequestError.noStatus = error { return 0 }
            if let last = chain.writableBuffers.last {
                let status: UInt8 = { if case BlockRequestError.unsupported = error { return VirtioBlock.statusUnsupported }; return VirtioBlock.statusIOErr }()
                (last.host + (last.length - 1)).storeBytes(of: status, as: UInt8.self)
                return 1
            }
            return 0
        }
        var written: UInt32 = 1
        let status: UInt8
        let start = monotonicNanos()
        switch req.type {
        case .read:
            let offset = req.sector * BlockRequest.sectorSize
            let ok = (try? transfer(ctx, read: true, buffers: chain.writableBuffers, from: 0, length: req.dataLength, at: offset)) != nil
            written += UInt32(req.dataLength)
            let n = UInt64(req.dataLength), t = monotonicNanos() - start
            stats.update { s in
                if ok { s.readOps += 1; s.readBytes += n; s.readTimeNs += t } else { s.failedReadOps += 1 }
            }
            status = ok ? VirtioBlock.statusOK : VirtioBlock.statusIOErr
        case .write:
            guard !readOnly else {
                stats.update { $0.failedWriteOps += 1 }
                status = VirtioBlock.statusIOErr
                break
            }
            let offset = req.sector * BlockRequest.sectorSize
            let ok = (try? transfer(ctx, read: false, buffers: chain.readable, from: BlockRequest.headerSize,
                                    length: req.dataLength, at: offset)) != nil
            let n = UInt64(req.dataLength), end = offset + n, t = monotonicNanos() - start
            stats.update { s in
                if ok {
                    s.writeOps += 1; s.writeBytes += n; s.writeTimeNs += t
                    s.wrHighestOffset = max(s.wrHighestOffset, end)
                } else { s.failedWriteOps += 1 }
            }
            status = ok ? VirtioBlock.statusOK : VirtioBlock.statusIOErr
        case .flush:
            let ok = (try? node.flush()) != nil
            let t = monotonicNanos() - start
            stats.update { s in if ok { s.flushOps += 1; s.flushTimeNs += t } else { s.failedFlushOps += 1 } }
            status = ok ? VirtioBlock.statusOK : VirtioBlock.statusIOErr
        case .getID:
            var id = Array((options.serial ?? "").utf8.prefix(20))
            id += [UInt8](repeating: 0, count: 20 - id.count)
            let n = min(20, req.dataLength)
            var i = 0
            _ = ChainBytes.forEach(chain.writableBuffers, from: 0, length: n) { piece in
                for j in 0..<piece.count { piece[j] = id[i]; i += 1 }
            }
            written += UInt32(n)
            status = VirtioBlock.statusOK
        case .discard, .writeZeroes:
            status = discardOrZero(req, chain: chain, capacity: capacity)
        }
        req.status.storeBytes(of: status, as: UInt8.self)
        return written
    }

    /// Moves `length` bytes between the node at `offset` and bytes [from, from+length) of `buffers`.
    /// Guest pieces adjacent in host memory are merged; runs of small pieces become one node request
    /// (a 1 MiB read of 4 KiB pages is two node requests, not 256): a scatter read into the pieces,
    /// or a write from the queue's bounce buffer; large pieces go to the node directly.
    private func transfer(_ ctx: QueueContext, read: Bool, buffers: ArraySlice<VirtqBuffer>, from: Int, length: Int,
                          at offset: UInt64) throws {
        var diskOffset = offset
        var batchOffset = offset
        var batched = 0
        ctx.pieces.removeAll(keepingCapacity: true)
        func flushBatch() throws {
            defer { ctx.pieces.removeAll(keepingCapacity: true); batched = 0 }
            if ctx.pieces.isEmpty { return }
            if ctx.pieces.count == 1 {
                try io(read: read, at: batchOffset, ctx.pieces[0])
                return
            }
            if read {   // straight into the guest's pages: one scatter read, no bounce copy
                try node.readScattered(at: batchOffset, into: ctx.pieces)
                return
            }
            let bounce = UnsafeMutableRawBufferPointer(start: ctx.bounce, count: batched)
            var pos = 0
            for p in ctx.pieces { (bounce.baseAddress! + pos).copyMemory(from: p.baseAddress!, byteCount: p.count); pos += p.count }
            try io(read: false, at: batchOffset, bounce)
        }
        let complete = try ChainBytes.forEach(buffers, from: from, length: length) { piece in
            if piece.count >= VirtioBlock.directThreshold {
                try flushBatch()
                try io(read: read, at: diskOffset, piece)
            } else {
                if batched + piece.count > VirtioBlock.bounceSize { try flushBatch() }
                if ctx.pieces.isEmpty { batchOffset = diskOffset }
                ctx.pieces.append(piece)
                batched += piece.count
            }
            diskOffset += UInt64(piece.count)
        }
        try flushBatch()
        guard complete else { throw BlockRequestError.outOfRange }
    }

    private func io(read: Bool, at offset: UInt64, _ buffer: UnsafeMutableRawBufferPointer) throws {
        if read { try node.read(at: offset, into: buffer); return }
        if options.detectZeroes != "off" && VirtioBlock.isZero(buffer) {
            let unmap = options.detectZeroes == "unmap" && options.discard
            try node.writeZeroes(at: offset, length: UInt64(buffer.count), flags: unmap ? [.mayUnmap] : [])
        } else {
            try node.write(at: offset, from: UnsafeRawBufferPointer(buffer), flags: [])
        }
    }

    static func isZero(_ b: UnsafeMutableRawBufferPointer) -> Bool {
        var i = 0
        let n = b.count
        while i + 8 <= n {
            if b.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
            i += 8
        }
        while i < n { if b[i] != 0 { return false }; i += 1 }
        return true
    }

    private func discardOrZero(_ req: BlockRequest, chain: VirtqChain, capacity: UInt64) -> UInt8 {
        if readOnly { return VirtioBlock.statusIOErr }
        if req.type == .discard && !options.discard { return VirtioBlock.statusUnsupported }
        guard let segs = try? req.segments(in: chain, capacity: capacity, maxSectors: VirtioBlock.maxDiscardSectors) else {
            return VirtioBlock.statusIOErr
        }
        var ok = true
        for (offset, length, unmap) in segs where length > 0 {
            do {
                if req.type == .discard {
                    try node.discard(at: offset, length: length)
                } else {
                    try node.writeZeroes(at: offset, length: length, flags: unmap && options.discard ? [.mayUnmap] : [])
                }
            } catch { ok = false }
        }
        let total = segs.reduce(UInt64(0)) { $0 + $1.1 }
        stats.update { s in
            if req.type == .discard {
                if ok { s.unmapOps += 1; s.unmapBytes += total } else { s.failedUnmapOps += 1 }
            } else if ok { s.writeOps += 1; s.writeBytes += total } else { s.failedWriteOps += 1 }
        }
        return ok ? VirtioBlock.statusOK : VirtioBlock.statusIOErr
    }
}
