// A qcow2 image as a block node: opening (header, tables, data file, backing file, snapshots),
// reads, block status, flush, close and `info` data. Writes are in Qcow2Write.swift, resizing in
// Qcow2Resize.swift.
//
// Locking: `rw` is held shared by reads and in-place writes (plans stay valid while they do their
// I/O) and exclusively by anything that changes the mapping (allocation, zeroing, discard, resize);
// `metaLock` guards the caches and tables themselves and is held only while planning.
import Glibc
import Synchronization

public final class Qcow2Node: BlockNode, @unchecked Sendable {
    public let driverName = "qcow2"
    public let file: any BlockNode
    public private(set) var dataFile: (any BlockNode)?
    public private(set) var backingNode: (any BlockNode)?
    let meta: Qcow2Meta
    let rw = RWLock()
    let metaLock = NSLockLite()
    public let isReadOnly: Bool
    private let currentSize: Atomic<UInt64>
    var snapshotTable: [Qcow2Snapshot]
    var snapshotTableSize: UInt64
    let compression: Qcow2CompressionType
    /// Set when the image looked like metadata preallocation (QEMU's detection, done once).
    private var metadataPreallocation: Bool?
    private let closed = Atomic<Bool>(false)
    /// Persistent dirty bitmaps (nil when the image has none loaded).
    var bitmapSet: Qcow2BitmapSet?
    /// The snapshot whose tables are shown instead of the active ones (`-l`), if any.
    public let loadedSnapshot: String?

    public var filename: String { file.filename }
    public var size: UInt64 { currentSize.load(ordering: .acquiring) }
    public var supportsBacking: Bool { true }
    public var hasZeroInit: Bool { backingNode == nil && !meta.hasDataFile && file.hasZeroInit }
    public var children: [BlockChild] {
        var c = [BlockChild(name: "file", node: file)]
        if let b = backingNode { c.append(BlockChild(name: "backing", node: b)) }
        if let d = dataFile { c.append(BlockChild(name: "data-file", node: d)) }
        return c
    }

    public var clusterSize: UInt64 { meta.clusterSize }
    public var backingFileName: String? { meta.header.backingFile }
    public var backingFormatName: String? { meta.header.backingFormat }
    public var version: UInt32 { meta.header.version }
    public var isDirty: Bool { meta.header.isDirty }
    public var isCorrupt: Bool { meta.header.isCorrupt }

    init(file: any BlockNode, options: BlockOptions, context: OpenContext) throws {
        self.file = file
        let writable = context.writable
        let repairing = context.flags.contains(.checkRepair)
        let fileSize = file.size
        let read: (UInt64, Int) throws -> [UInt8] = { off, n in try file.read(at: off, count: n) }
        var header = try Qcow2Header.parse(read: read, fileSize: fileSize, writable: writable, repairing: repairing)
        self.compression = Qcow2CompressionType(rawValue: header.compressionType) ?? .zlib

        // Tables (sizes already bounded by the header checks).
        let l1Bytes = Int(header.l1Size) * 8
        let l1Raw = l1Bytes > 0 ? try file.read(at: header.l1TableOffset, count: l1Bytes) : []
        var l1 = [UInt64](repeating: 0, count: Int(header.l1Size))
        for i in 0..<l1.count { l1[i] = l1Raw.be64(i * 8) }
        let rtEntries = Int(UInt64(header.refcountTableClusters) * header.clusterSize / 8)
        let rtRaw = rtEntries > 0 ? try file.read(at: header.refcountTableOffset, count: rtEntries * 8) : []
        var rt = [UInt64](repeating: 0, count: rtEntries)
        for i in 0..<rtEntries { rt[i] = rtRaw.be64(i * 8) }

        // Snapshots.
        (snapshotTable, snapshotTableSize) = try Qcow2Snapshots.parse(read: read, offset: header.snapshotsOffset,
                                                                  count: header.nbSnapshots, imageSize: header.size)

        // External data file.
        var dataHost: any BlockNode = file
        if header.hasDataFile {
            let given = options.string("data-file")
            guard let name = given ?? header.dataFile else {
                throw BlockError(.invalidArgument, "'data-file' is required for this image", errno: EINVAL)
            }
            // Like QEMU, the recorded name is used as is (relative to the working directory).
            let path = name
            var dctx = context
            dctx.flags.remove(.metadataFormat)
            var o = BlockOptions()
            o.set("filename", path)
            do {
                dataHost = try BlockGraph.openProtocol(options: o, context: dctx, formatHasMetadata: false)
            } catch let e as BlockError {
                throw e.prepending("Could not open data file: ")
            }
            dataFile = dataHost
        } else if options.string("data-file") != nil {
            throw BlockError(.invalidArgument, "'data-file' can only be set for images with an external data file", errno: EINVAL)
        }

        // Drop autoclear bits we do not maintain (a writer unaware of them must clear them).
        var headerChanged = false
        let known = Qcow2.autoclearDataFileRaw | Qcow2.autoclearBitmaps
        if writable && header.autoclearFeatures & ~known != 0 {
            header.autoclearFeatures &= known
            headerChanged = true
        }

        let cacheBytes = min(32 << 20, max(1 << 20, Qcow2Header.l1EntriesNeeded(size: header.size, clusterBits: header.clusterBits, l2EntrySize: header.l2EntrySize) * header.clusterSize))
        self.meta = Qcow2Meta(header: header, file: file, dataHost: dataHost, l1Table: l1, refcountTable: rt,
                              readOnly: !writable, l2CacheBytes: cacheBytes)
        self.isReadOnly = !writable
        self.currentSize = Atomic(header.size)
        meta.passDiscardRequests = (try? options.bool("discard-request")) ?? false
        if (options.string("discard") ?? "ignore") == "unmap" || options.string("discard") == "on" { meta.passDiscardRequests = true }

        // Snapshot view (-l): read-only, the snapshot's L1 table and size.
        if let key = options.string("load-snapshot") {
            guard !writable else {
                throw BlockError(.invalidArgument, "Snapshots can only be loaded read-only", errno: EINVAL)
            }
            guard let i = Qcow2Snapshots.find(key, in: snapshotTable) else {
                throw BlockError(.notFound, "Failed to load snapshot: Can't find snapshot", errno: ENOENT)
            }
            let sn = snapshotTable[i]
            try Qcow2Header.validateTable(offset: sn.l1TableOffset, entries: UInt64(sn.l1Size), entrySize: 8,
                                          maxBytes: Qcow2.maxL1Bytes, name: "Snapshot L1 table",
                                          clusterSize: header.clusterSize, fileSize: fileSize)
            let raw = try file.read(at: sn.l1TableOffset, count: Int(sn.l1Size) * 8)
            meta.l1Table = (0..<Int(sn.l1Size)).map { raw.be64($0 * 8) }
            meta.viewingSnapshot = true
            currentSize.store(sn.diskSize, ordering: .releasing)
            loadedSnapshot = key
        } else {
            loadedSnapshot = nil
        }

        // Backing file.
        if let name = header.backingFile, !context.flags.contains(.noBacking), options["backing"] != .null {
            do {
                backingNode = try BlockGraph.openBacking(name: name, format: header.backingFormat,
                                                         overlayFilename: file.filename, context: context)
            } catch let e as BlockError {
                try? dataFile?.close()
                throw e.prepending("Could not open backing file: ")
            }
        }

        if loadedSnapshot == nil && !context.flags.contains(.checkRepair) {
            try loadBitmaps(writable: writable)
        } else if context.flags.contains(.checkRepair) {
            try loadBitmaps(writable: false)
        }
        if writable {
            if header.isDirty && !repairing {
                try Qcow2Check(node: self).repairDirtyOnOpen()
                headerChanged = true
            }
            if headerChanged { try metaLock.withLock { try meta.writeHeader() } }
        }
    }

    func setSize(_ s: UInt64) { currentSize.store(s, ordering: .releasing) }

    // MARK: reads

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRequest(offset, UInt64(buffer.count))
        try rw.read { try readUnlocked(offset, buffer) }
    }

    /// The read path without the rw lock (callers hold it, shared or exclusive).
    func readUnlocked(_ offset: UInt64, _ buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let m = try metaLock.withLock { try meta.lookup(pos, maxLength: UInt64(buffer.count - done)) }
            let n = Int(m.length)
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
            switch m.type {
            case .normal:
                try meta.dataHost.read(at: m.hostOffset, into: part)
            case .zeroPlain, .zeroAlloc:
                part.initializeMemory(as: UInt8.self, repeating: 0)
            case .unallocatedPlain, .unallocatedAlloc:
                try readFromBacking(pos, part)
            case .compressed:
                try readCompressed(m, guestOffset: pos, into: part)
            }
            done += n
        }
    }

    /// Reads from the backing file; zeroes where there is none or it is shorter than this image.
    func readFromBacking(_ offset: UInt64, _ part: UnsafeMutableRawBufferPointer) throws {
        guard let backing = backingNode else {
            part.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        let bsize = backing.size
        let inside = offset < bsize ? Int(min(UInt64(part.count), bsize - offset)) : 0
        if inside > 0 { try backing.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: part[0..<inside])) }
        if inside < part.count {
            UnsafeMutableRawBufferPointer(rebasing: part[inside...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    func readCompressed(_ m: Qcow2Mapping, guestOffset: UInt64, into part: UnsafeMutableRawBufferPointer) throws {
        let cs = Int(meta.clusterSize)
        let (coffset, csize) = meta.compressedLocation(m.l2Entry)
        let input = try file.read(at: coffset, count: Int(csize))
        let cluster = UnsafeMutableRawBufferPointer.allocate(byteCount: cs, alignment: 64)
        defer { cluster.deallocate() }
        try input.withUnsafeBytes { try Qcow2Compression.decompress(compression, $0, into: cluster) }
        let start = Int(guestOffset % meta.clusterSize)
        part.copyMemory(from: UnsafeRawBufferPointer(rebasing: cluster[start..<start + part.count]))
    }

    // MARK: block status

    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        try rw.read {
            try metaLock.withLock {
                // As QEMU: a refcount that cannot be read (a corrupt table) just means "no".
                if metadataPreallocation == nil { metadataPreallocation = (try? detectMetadataPreallocation()) ?? false }
                let m = try meta.lookup(offset, maxLength: length)
                var flags: BlockStatusFlags = []
                var e = BlockExtent(flags: [], length: m.length)
                switch m.type {
                case .normal, .zeroAlloc, .unallocatedAlloc:
                    flags.insert(.offsetValid)
                    e.hostOffset = m.hostOffset
                    e.file = meta.dataHost
                default: break
                }
                switch m.type {
                case .zeroPlain, .zeroAlloc: flags.insert(.zero)
                case .unallocatedPlain, .unallocatedAlloc: break
                case .compressed: flags.formUnion([.data, .compressed])
                case .normal: flags.insert(.data)
                }
                if metadataPreallocation == true && flags.contains(.data) && flags.contains(.offsetValid) {
                    flags.insert(.recurse)
                }
                e.flags = flags
                return e
            }
        }
    }

    /// QEMU's qcow2_detect_metadata_preallocation: far more clusters are refcounted than the file
    /// really occupies on the host.
    private func detectMetadataPreallocation() throws -> Bool {
        guard let allocated = file.allocatedHostBytes() else { return false }
        let realClusters = Int64(allocated / meta.clusterSize)
        let threshold = max(realClusters * 10 / 9, realClusters + 2)
        let endCluster = (file.size + meta.clusterSize - 1) / meta.clusterSize
        var count: Int64 = 0
        var i: UInt64 = 0
        while i < endCluster && count <= threshold {
            if try meta.refcount(ofCluster: i) != 0 { count += 1 }
            i += 1
        }
        return count > threshold
    }

    // MARK: flush, close

    public func flush() throws {
        if isReadOnly { return }
        try rw.write {
            try metaLock.withLock { try meta.flushCaches() }
        }
        try file.flush()
        if let d = dataFile { try d.flush() }
    }

    public func close() throws {
        if closed.exchange(true, ordering: .acquiringAndReleasing) { return }
        var firstError: Error?
        if !isReadOnly {
            do {
                try metaLock.withLock {
                    if let set = bitmapSet, set.changed || set.markedInUse { try storeBitmaps() }
                    try meta.flushCaches()
                    if meta.header.isDirty && !meta.header.lazyRefcounts {
                        meta.header.incompatibleFeatures &= ~Qcow2.incompatDirty
                        try meta.writeHeader()
                    }
                }
                try file.flush()
            } catch { firstError = error }
        }
        try closeChildren(after: firstError)
    }

    // MARK: info

    /// qemu-img's "disk size": the image file's allocation (the data file is listed as a child).
    public func allocatedHostBytes() -> UInt64? { file.allocatedHostBytes() }

    public func driverInfo() -> DriverInfo? {
        DriverInfo(clusterSize: meta.clusterSize, isDirty: meta.header.isDirty)
    }

    public var recordedBacking: (name: String, format: String?)? {
        meta.header.backingFile.map { ($0, meta.header.backingFormat) }
    }

    /// qemu-img info's qcow2 format-specific data (QEMU's ImageInfoSpecificQCow2).
    public func formatSpecificInfo() -> JSONValue? {
        let h = meta.header
        var data: [(String, JSONValue)] = []
        if h.version == 2 {
            data = [("compat", .string("0.10")), ("compression-type", .string(compression.name)), ("refcount-bits", .int(Int64(h.refcountBits)))]
        } else {
            data.append(("compat", .string("1.1")))
            data.append(("compression-type", .string(compression.name)))
            data.append(("lazy-refcounts", .bool(h.lazyRefcounts)))
            if let bm = bitmapInfo { data.append(("bitmaps", bm)) }
            data.append(("refcount-bits", .int(Int64(h.refcountBits))))
            if h.hasDataFile {
                if let d = h.dataFile { data.append(("data-file", .string(d))) }
                data.append(("data-file-raw", .bool(h.dataFileRaw)))
            }
            data.append(("corrupt", .bool(h.isCorrupt)))
            data.append(("extended-l2", .bool(h.extendedL2)))
        }
        return .object([("type", .string("qcow2")), ("data", .object(data))])
    }

    /// The snapshot list for `info`, in table order.
    public var snapshots: [SnapshotInfo] {
        snapshotTable.map {
            SnapshotInfo(id: $0.id, name: $0.name, vmStateSize: $0.vmStateSize, dateSec: $0.dateSec, dateNsec: $0.dateNsec,
                         vmClockNsec: $0.vmClockNsec, icount: $0.icount)
        }
    }
}

/// What `info` shows of an internal snapshot (QEMU's SnapshotInfo).
public struct SnapshotInfo: Sendable, Equatable {
    public var id: String
    public var name: String
    public var vmStateSize: UInt64
    public var dateSec: UInt32
    public var dateNsec: UInt32
    public var vmClockNsec: UInt64
    public var icount: UInt64?
}
