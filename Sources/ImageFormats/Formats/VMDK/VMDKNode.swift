// A VMDK image as a block node: the descriptor (embedded in a monolithic sparse file, or a text
// file naming its extents), the extents in guest order, the parent (parentFileNameHint, always
// vmdk), reads, block status, flush, close and `info` data. Writes are in VMDKWrite.swift, the
// check in VMDKCheck.swift, opening of files and extents in VMDKOpen.swift.
//
// Locking: `rw` shared for reads and in-place writes, exclusive for grain allocation; `metaLock`
// guards the extents' tables and the CID state during lookups.
import CZlib
import Glibc

public final class VMDKNode: BlockNode, CheckableNode, @unchecked Sendable {
    public let driverName = "vmdk"
    public let file: any BlockNode
    public private(set) var backingNode: (any BlockNode)?
    public let isReadOnly: Bool
    let extents: [VMDKExtent]
    let createType: String
    /// Where the descriptor text lives in `file` (0x200 in a monolithic sparse file).
    let descOffset: UInt64
    let cid: UInt32
    let parentCID: UInt32
    let parentHint: String?
    public let size: UInt64
    let rw = RWLock()
    let metaLock = NSLockLite()
    var cidChecked = false
    var cidUpdated = false
    private var closed = false

    public var filename: String { file.filename }
    public var supportsBacking: Bool { true }
    public var hasZeroInit: Bool { extents.allSatisfy { !$0.flat || $0.file.hasZeroInit } }
    public var children: [BlockChild] {
        var c = [BlockChild(name: "file", node: file)]
        if let b = backingNode { c.append(BlockChild(name: "backing", node: b)) }
        for (i, e) in extents.enumerated() where e.ownsFile { c.append(BlockChild(name: "extents.\(i)", node: e.file)) }
        return c
    }

    init(file: any BlockNode, options: BlockOptions, context: OpenContext) throws {
        self.file = file
        isReadOnly = !context.writable
        var opened = try VMDKOpen.open(file: file, context: context)
        do {
            extents = opened.extents
            createType = opened.createType
            descOffset = opened.descOffset
            let desc = try file.read(at: descOffset, count: VMDK.descSize)
            parentHint = try VMDKDescriptor.parentHint(desc)
            guard let c = VMDKDescriptor.cid(desc, parent: false), let p = VMDKDescriptor.cid(desc, parent: true) else {
                throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL)
            }
            cid = c
            parentCID = p
            size = extents.last.map { $0.endSector * 512 } ?? 0
            if let hint = parentHint, !context.flags.contains(.noBacking), options["backing"] != .null {
                do {
                    backingNode = try BlockGraph.openBacking(name: hint, format: "vmdk", overlayFilename: file.filename, context: context)
                } catch let e as BlockError {
                    throw e.prepending("Could not open backing file: ")
                }
            }
        } catch {
            for e in opened.extents where e.ownsFile { try? e.file.close() }
            opened.extents = []
            throw error
        }
    }

    /// The extent holding guest byte `pos`.
    func extent(at pos: UInt64) throws -> VMDKExtent {
        let sector = pos / 512
        for e in extents where sector < e.endSector { return e }
        throw BlockError(.io, "Input/output error", errno: EIO)
    }

    /// QEMU's vmdk_is_cid_valid, checked once before the parent is first read.
    func checkParentCID() throws {
        let ok = try metaLock.withLock { () -> Bool in
            if cidChecked { return true }
            guard let b = backingNode as? VMDKNode else { return false }
            let desc = try b.file.read(at: b.descOffset, count: VMDK.descSize)
            guard let c = VMDKDescriptor.cid(desc, parent: false), c == parentCID else { return false }
            cidChecked = true
            return true
        }
        if !ok { throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL) }
    }

    // MARK: reads

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRequest(offset, UInt64(buffer.count))
        try rw.read {
            var done = 0
            while done < buffer.count {
                let pos = offset + UInt64(done)
                let e = try extent(at: pos)
                let want = min(UInt64(buffer.count - done), e.endSector * 512 - pos)
                let (m, _, _) = try metaLock.withLock { try e.lookup(pos, maxLength: want) }
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + Int(m.length)])
                switch m.kind {
                case .data:
                    if e.compressed {
                        try readCompressed(e, m, into: part)
                    } else {
                        try e.file.read(at: m.hostOffset, into: part)
                    }
                case .zeroed:
                    part.initializeMemory(as: UInt8.self, repeating: 0)
                case .unallocated:
                    try readBacking(pos, part)
                }
                done += Int(m.length)
            }
        }
    }

    func readBacking(_ pos: UInt64, _ part: UnsafeMutableRawBufferPointer) throws {
        guard let b = backingNode else {
            part.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        try checkParentCID()
        let bsize = b.size
        let inside = pos < bsize ? Int(min(UInt64(part.count), bsize - pos)) : 0
        if inside > 0 { try b.read(at: pos, into: UnsafeMutableRawBufferPointer(rebasing: part[0..<inside])) }
        if inside < part.count {
            UnsafeMutableRawBufferPointer(rebasing: part[inside...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// One compressed grain (QEMU's vmdk_read_extent): marker, then zlib data.
    func readCompressed(_ e: VMDKExtent, _ m: VMDKMapping, into part: UnsafeMutableRawBufferPointer) throws {
        let cs = Int(e.clusterBytes)
        let hasMarker = e.layout!.hasMarker
        var dataOffset = m.hostOffset
        var dataLen = cs
        if hasMarker {
            let marker = try e.file.read(at: m.hostOffset, count: 12)
            dataLen = Int(marker.le32(8))
            dataOffset += 12
        }
        guard dataLen > 0, dataLen <= 2 * cs else { throw BlockError(.io, "Invalid argument", errno: EINVAL) }
        let input = try e.file.read(at: dataOffset, count: dataLen)
        var out = [UInt8](repeating: 0, count: cs)
        var outLen = uLongf(cs)
        let r = out.withUnsafeMutableBytes { o in
            input.withUnsafeBytes { i in
                uncompress(o.baseAddress!.assumingMemoryBound(to: Bytef.self), &outLen,
                           i.baseAddress!.assumingMemoryBound(to: Bytef.self), uLong(dataLen))
            }
        }
        guard r == Z_OK, m.inGrain + UInt64(part.count) <= UInt64(outLen) else {
            throw BlockError(.io, "Invalid argument", errno: EINVAL)
        }
        out.withUnsafeBytes { o in
            part.copyMemory(from: UnsafeRawBufferPointer(rebasing: o[Int(m.inGrain)..<Int(m.inGrain) + part.count]))
        }
    }

    // MARK: status

    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        let e = try extent(at: offset)
        let want = min(length, e.endSector * 512 - offset)
        let (m, _, _) = try rw.read { try metaLock.withLock { try e.lookup(offset, maxLength: want) } }
        switch m.kind {
        case .unallocated: return BlockExtent(flags: [], length: m.length)
        case .zeroed: return BlockExtent(flags: .zero, length: m.length)
        case .data:
            if e.compressed { return BlockExtent(flags: .data, length: m.length, file: e.file) }
            var f: BlockStatusFlags = [.data, .offsetValid]
            if e.flat { f.insert(.recurse) }
            return BlockExtent(flags: f, length: m.length, hostOffset: m.hostOffset, file: e.file)
        }
    }

    // MARK: flush, close, info

    public func flush() throws {
        if isReadOnly { return }
        try file.flush()
        for e in extents where e.ownsFile { try e.file.flush() }
    }

    public func close() throws {
        let first = metaLock.withLock { () -> Bool in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        var firstError: Error?
        if !isReadOnly { do { try flush() } catch { firstError = error } }
        var nodes: [any BlockNode] = extents.filter { $0.ownsFile }.map { $0.file }
        nodes.append(file)
        if let b = backingNode { nodes.append(b) }
        for n in nodes {
            do { try n.close() } catch { if firstError == nil { firstError = error } }
        }
        if let e = firstError { throw e }
    }

    public func allocatedHostBytes() -> UInt64? {
        guard var total = file.allocatedHostBytes() else { return nil }
        for e in extents where e.ownsFile {
            guard let n = e.file.allocatedHostBytes() else { return nil }
            total += n
        }
        return total
    }

    /// QEMU's vmdk_get_info: nothing when extents differ in kind.
    public func driverInfo() -> DriverInfo? {
        guard let f = extents.first else { return nil }
        for e in extents.dropFirst() {
            if e.flat != f.flat || e.compressed != f.compressed || (!f.flat && e.clusterBytes != f.clusterBytes) { return nil }
        }
        return DriverInfo(clusterSize: f.flat ? nil : f.clusterBytes, isDirty: false)
    }

    public var recordedBacking: (name: String, format: String?)? { parentHint.map { ($0, "vmdk") } }

    public func formatSpecificInfo() -> JSONValue? {
        let list: [JSONValue] = extents.map { e in
            var m: [(String, JSONValue)] = [("filename", .string(e.file.filename)), ("format", .string(e.type ?? "")),
                                           ("virtual-size", .uint(e.sectors * 512))]
            if !e.flat { m.append(("cluster-size", .uint(e.clusterBytes))) }
            if e.compressed { m.append(("compressed", .bool(true))) }
            return .object(m)
        }
        return .object([("type", .string("vmdk")), ("data", .object([
            ("create-type", .string(createType)), ("cid", .uint(UInt64(cid))), ("parent-cid", .uint(UInt64(parentCID))),
            ("extents", .array(list)),
        ]))])
    }
}
