// A QED image as a block node: opening (header, L1 table, backing file, the consistency check
// QEMU runs on images left with the need-check flag), reads, block status, flush, close, info.
// Writes and resizing are in QEDWrite.swift, the check in QEDCheck.swift.
//
// Locking: `rw` is held shared by reads and in-place writes, exclusively by allocation and L2
// updates (so a half-written new cluster is never read); `metaLock` guards QEDMeta and is held
// only while planning.
import Glibc

public final class QEDNode: BlockNode, CheckableNode, @unchecked Sendable {
    public let driverName = "qed"
    public let file: any BlockNode
    public private(set) var backingNode: (any BlockNode)?
    public let isReadOnly: Bool
    let meta: QEDMeta
    let rw = RWLock()
    let metaLock = NSLockLite()
    let backingName: String?
    let backingFormat: String?
    private var closed = false

    public var filename: String { file.filename }
    public var size: UInt64 { metaLock.withLock { meta.header.imageSize } }
    public var supportsBacking: Bool { true }
    public var hasZeroInit: Bool { backingNode == nil }
    public var children: [BlockChild] {
        var c = [BlockChild(name: "file", node: file)]
        if let b = backingNode { c.append(BlockChild(name: "backing", node: b)) }
        return c
    }
    var clusterSize: UInt64 { meta.header.clusterBytes }

    init(file: any BlockNode, options: BlockOptions, context: OpenContext) throws {
        self.file = file
        isReadOnly = !context.writable
        let (header, fileSize) = try QEDHeader.parse(try file.read(at: 0, count: QED.headerStructSize), fileLength: file.size)
        if header.features & QED.featureBackingFile != 0 {
            let raw = try file.read(at: UInt64(header.backingNameOffset), count: Int(header.backingNameSize))
            let name = String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            backingName = name.isEmpty ? nil : name   // QEMU treats an empty name as no backing file
            backingFormat = header.features & QED.featureBackingNoProbe != 0 ? "raw" : nil
        } else {
            backingName = nil
            backingFormat = nil
        }
        meta = try QEDMeta(header: header, fileSize: fileSize, file: file)

        if context.writable && meta.header.autoclearFeatures & ~QED.autoclearMask != 0 {
            meta.header.autoclearFeatures &= QED.autoclearMask
            try meta.writeHeader()
            try file.flush()
        }
        if let name = backingName, !context.flags.contains(.noBacking), options["backing"] != .null {
            do {
                backingNode = try BlockGraph.openBacking(name: name, format: backingFormat,
                                                         overlayFilename: file.filename, context: context)
            } catch let e as BlockError {
                throw e.prepending("Could not open backing file: ")
            }
        }
        // An image not closed cleanly is checked (and repaired) by a writer, as QEMU does.
        if context.writable && !context.flags.contains(.checkRepair) && meta.header.features & QED.featureNeedCheck != 0 {
            _ = try check(fix: [.leaks, .errors], log: { _ in })
        }
    }

    // MARK: reads

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRequest(offset, UInt64(buffer.count))
        try rw.read {
            var done = 0
            while done < buffer.count {
                let pos = offset + UInt64(done)
                let m = try metaLock.withLock { try meta.lookup(pos, maxLength: UInt64(buffer.count - done)) }
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + Int(m.length)])
                switch m.kind {
                case .found: try file.read(at: m.hostOffset, into: part)
                case .zero: part.initializeMemory(as: UInt8.self, repeating: 0)
                case .unallocatedL1, .unallocatedL2: try readBacking(pos, part)
                }
                done += Int(m.length)
            }
        }
    }

    /// Reads from the backing file; zeroes where there is none or it is shorter.
    func readBacking(_ pos: UInt64, _ part: UnsafeMutableRawBufferPointer) throws {
        guard let b = backingNode else { part.initializeMemory(as: UInt8.self, repeating: 0); return }
        let bsize = b.size
        let inside = pos < bsize ? Int(min(UInt64(part.count), bsize - pos)) : 0
        if inside > 0 { try b.read(at: pos, into: UnsafeMutableRawBufferPointer(rebasing: part[0..<inside])) }
        if inside < part.count {
            UnsafeMutableRawBufferPointer(rebasing: part[inside...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    // MARK: status, flush, close, info

    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        let m = try rw.read { try metaLock.withLock { try meta.lookup(offset, maxLength: length) } }
        switch m.kind {
        case .found: return BlockExtent(flags: [.data, .offsetValid], length: m.length, hostOffset: m.hostOffset, file: file)
        case .zero: return BlockExtent(flags: .zero, length: m.length)
        case .unallocatedL1, .unallocatedL2: return BlockExtent(flags: [], length: m.length)
        }
    }

    public func flush() throws {
        if isReadOnly { return }
        try file.flush()
    }

    public func close() throws {
        let first = metaLock.withLock { () -> Bool in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        var firstError: Error?
        if !isReadOnly {
            do {
                try file.flush()
                try metaLock.withLock {
                    // Clean shutdown: no check needed on the next open.
                    if meta.header.features & QED.featureNeedCheck != 0 {
                        meta.header.features &= ~QED.featureNeedCheck
                        try meta.writeHeader()
                    }
                }
                try file.flush()
            } catch { firstError = error }
        }
        try closeChildren(after: firstError)
    }

    public func allocatedHostBytes() -> UInt64? { file.allocatedHostBytes() }

    public func driverInfo() -> DriverInfo? {
        metaLock.withLock {
            DriverInfo(clusterSize: meta.header.clusterBytes, isDirty: meta.header.features & QED.featureNeedCheck != 0)
        }
    }

    public var recordedBacking: (name: String, format: String?)? { backingName.map { ($0, backingFormat) } }
}
