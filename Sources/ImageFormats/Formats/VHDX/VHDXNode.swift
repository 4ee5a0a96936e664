// A VHDX image as a block node: opening (QEMU's vhdx_open order: signature, headers, log replay,
// region table, metadata, BAT with its entries checked against the file), reads, block status,
// check, close and `info` data. Writes are in VHDXWrite.swift.
//
// A log left by a crash is replayed when the image is opened read-write; a read-only open refuses
// with QEMU's message (as QEMU does, replaying needs writes). Differencing images (with a parent
// locator) are refused as in QEMU.
//
// Locking: `rw` shared for reads and in-place writes, exclusive for allocation and header/log
// updates; `metaLock` guards the BAT and the headers during lookups.
import Glibc

public final class VHDXNode: BlockNode, CheckableNode, @unchecked Sendable {
    public let driverName = "vhdx"
    public let file: any BlockNode
    public let isReadOnly: Bool
    var headers: [VHDXHeader]
    var current: Int
    let meta: VHDXMetadata
    let batOffset: UInt64
    var bat: [UInt64]
    public let size: UInt64
    let sessionGUID: [UInt8]
    var firstVisibleWrite = true
    var logSequence: UInt64
    let logReplayedOnOpen: Bool
    /// Registered regions (start, end) for overlap checks: log, region tables' entries.
    let regions: [(UInt64, UInt64)]
    let rw = RWLock()
    let metaLock = NSLockLite()
    private var closed = false

    public var filename: String { file.filename }
    public var children: [BlockChild] { [BlockChild(name: "file", node: file)] }
    var blockSize: UInt64 { UInt64(meta.blockSize) }
    public var hasZeroInit: Bool {
        guard let first = bat.first else { return true }
        return first & VHDX.stateMask == VHDX.fullyPresent ? file.hasZeroInit : true
    }

    init(file: any BlockNode, context: OpenContext) throws {
        self.file = file
        isReadOnly = !context.writable
        let fileLength = file.size
        guard try file.read(at: 0, count: 8) == VHDX.fileSignature else {
            throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL)
        }
        // Headers.
        let h1 = VHDXHeader(raw: try file.read(at: VHDX.header1Offset, count: VHDX.headerSize))
        let h2 = VHDXHeader(raw: try file.read(at: VHDX.header2Offset, count: VHDX.headerSize))
        func valid(_ h: VHDXHeader) -> Bool {
            VHDX.checksumValid(h.raw, at: 4) && h.signature == VHDX.headerSignature && h.version == 1
        }
        var cur0 = 0
        switch (valid(h1), valid(h2)) {
        case (true, false): cur0 = 0
        case (false, true): cur0 = 1
        case (false, false): throw BlockError.invalid("No valid VHDX header found")
        case (true, true):
            if h1.sequence > h2.sequence { cur0 = 0 } else if h2.sequence > h1.sequence { cur0 = 1 }
            else if h1.raw == h2.raw { cur0 = 0 } else { throw BlockError.invalid("No valid VHDX header found") }
        }
        var hs = [h1, h2]
        var cur = cur0
        let session = VHDX.randomGUID()
        var seq: UInt64 = 1
        var visible = true
        var regions: [(UInt64, UInt64)] = []
        let hdr = hs[cur]
        regions.append((hdr.logOffset, hdr.logOffset &+ UInt64(hdr.logLength)))

        // Log.
        if hdr.logOffset < VHDX.mib || hdr.logOffset % VHDX.mib != 0 || hdr.logVersion != 0 {
            throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL)
        }
        var replayed = false
        if hdr.hasLog && hdr.logLength != 0 {
            if UInt64(hdr.logLength) % VHDX.mib != 0 || hdr.logOffset + UInt64(hdr.logLength) > fileLength {
                throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL)
            }
            let entries = try VHDXLog.findActiveSequence(file, header: hdr)
            if !entries.isEmpty {
                if !context.writable {
                    throw BlockError(.permission, "VHDX image file '\(file.filename)' opened read-only, but contains a log that needs to be replayed",
                                     errno: EPERM, hint: "To replay the log, run:\nqemu-img check -r all '\(file.filename)'")
                }
                seq = entries.last!.sequence + 1
                // QEMU marks the data as changed before replaying (vhdx_user_visible_write).
                try VHDXNode.updateHeaders(file, &hs, &cur, session: session, newDataGUID: true, logGUID: nil)
                visible = false
                try VHDXLog.replay(entries, file: file)
                try VHDXNode.updateHeaders(file, &hs, &cur, session: session, newDataGUID: false, logGUID: [UInt8](repeating: 0, count: 16))
                replayed = true
            }
        }

        // Region table (QEMU reads the first copy only).
        let rt = try file.read(at: VHDX.regionTableOffset, count: VHDX.headerBlockSize)
        guard VHDX.checksumValid(rt, at: 4), rt.le32(0) == VHDX.regionSignature, rt.le32(8) <= 2047 else {
            throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL)
        }
        var batRegion: VHDXRegion?, mdRegion: VHDXRegion?
        for i in 0..<Int(rt.le32(8)) {
            let o = 16 + i * 32
            let r = VHDXRegion(guid: Array(rt[o..<o + 16]), fileOffset: rt.le64(o + 16), length: rt.le32(o + 24), required: rt.le32(o + 28) & 1 != 0)
            let end = r.fileOffset &+ UInt64(r.length)
            if regions.contains(where: { !(r.fileOffset >= $0.1 || end <= $0.0) }) {
                throw BlockError.invalid("VHDX region \(r.fileOffset)-\(end) overlaps with another region")
            }
            regions.append((r.fileOffset, end))
            if r.guid == VHDX.batGUID {
                if batRegion != nil { throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL) }
                batRegion = r
            } else if r.guid == VHDX.metadataGUID {
                if mdRegion != nil { throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL) }
                mdRegion = r
            } else if r.required {
                throw BlockError(.unsupported, "Operation not supported", errno: ENOTSUP)
            }
        }
        guard let batR = batRegion, let mdR = mdRegion else { throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL) }
        self.regions = regions

        // Metadata.
        meta = try VHDXNode.parseMetadata(file, region: mdR)
        size = meta.virtualSize / UInt64(meta.logicalSectorSize) * UInt64(meta.logicalSectorSize)
        let entries = meta.batEntries
        guard entries <= UInt64(batR.length) / 8 else { throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL) }
        let (batEnd, o) = batR.fileOffset.addingReportingOverflow(entries * 8)
        guard !o, batEnd <= fileLength else {
            throw BlockError.invalid("VHDX BAT (\(entries) entries at offset \(batR.fileOffset)) exceeds the end of the image file")
        }
        batOffset = batR.fileOffset
        let raw = try file.read(at: batOffset, count: Int(entries) * 8)
        bat = (0..<Int(entries)).map { raw.le64($0 * 8) }
        logReplayedOnOpen = replayed
        headers = hs
        current = cur
        sessionGUID = session
        logSequence = seq
        firstVisibleWrite = visible
        if !context.flags.contains(.checkRepair) {
            var problems: [String] = []
            checkBAT(fileLength: file.size, problems: &problems, stopAtFirst: true)
            if let p = problems.first { throw BlockError.invalid(p) }
        }
    }

    /// QEMU's vhdx_parse_metadata, with its checks.
    static func parseMetadata(_ file: any BlockNode, region: VHDXRegion) throws -> VHDXMetadata {
        let einval = BlockError(.invalidImage, "Invalid argument", errno: EINVAL)
        let enotsup = BlockError(.unsupported, "Operation not supported", errno: ENOTSUP)
        let t = try file.read(at: region.fileOffset, count: VHDX.headerBlockSize)
        guard Array(t[0..<8]) == VHDX.metadataSignature else { throw einval }
        let count = Int(t.le16(10))
        guard count * 32 <= VHDX.headerBlockSize - 32 else { throw einval }
        var found: [[UInt8]: (offset: UInt32, length: UInt32)] = [:]
        let known = [VHDX.fileParamGUID, VHDX.virtualSizeGUID, VHDX.page83GUID, VHDX.logicalSectorGUID, VHDX.physSectorGUID, VHDX.parentLocatorGUID]
        for i in 0..<count {
            let o = 32 + i * 32
            let id = Array(t[o..<o + 16])
            if known.contains(id) {
                if found[id] != nil { throw einval }
                found[id] = (t.le32(o + 16), t.le32(o + 20))
            } else if t.le32(o + 24) & 4 != 0 {
                throw enotsup
            }
        }
        for k in known.dropLast() where found[k] == nil { throw enotsup }
        func item(_ g: [UInt8], _ n: Int) throws -> [UInt8] {
            let e = found[g]!
            return try file.read(at: region.fileOffset + UInt64(e.offset), count: n)
        }
        let params = try item(VHDX.fileParamGUID, 8)
        let m = VHDXMetadata(blockSize: params.le32(0), paramsFlags: params.le32(4), virtualSize: try item(VHDX.virtualSizeGUID, 8).le64(0),
                             logicalSectorSize: try item(VHDX.logicalSectorGUID, 4).le32(0),
                             physicalSectorSize: try item(VHDX.physSectorGUID, 4).le32(0))
        if m.paramsFlags & 2 != 0 {
            // Differencing images are not supported (as in QEMU).
            throw found[VHDX.parentLocatorGUID] != nil ? enotsup : einval
        }
        let bs = UInt64(m.blockSize)
        guard bs >= VHDX.minBlockSize, bs <= VHDX.maxBlockSize, bs & (bs - 1) == 0 else { throw einval }
        guard m.logicalSectorSize == 512 || m.logicalSectorSize == 4096 else { throw einval }
        guard m.virtualSize <= VHDX.maxImageSize else { throw einval }
        return m
    }

    /// QEMU's vhdx_check_bat_entries: fully present blocks inside the file and outside metadata.
    func checkBAT(fileLength: UInt64, problems: inout [String], stopAtFirst: Bool) {
        var payload = meta.chunkRatio
        for (i, e) in bat.enumerated() where e & VHDX.stateMask == VHDX.fullyPresent {
            let offset = e & VHDX.offsetMask
            let blockIndex = UInt64(i) - UInt64(i) / (meta.chunkRatio + 1)
            let remaining = size > blockIndex * blockSize ? size - blockIndex * blockSize : 0
            let len = min(blockSize, remaining)
            if offset >= fileLength {
                problems.append("VHDX BAT entry \(i) start offset \(offset) points after end of file (\(fileLength)). Image has probably been truncated.")
            } else if offset + len > fileLength {
                problems.append("VHDX BAT entry \(i) end offset \(offset + len - 1) points after end of file (\(fileLength)). Image has probably been truncated.")
            }
            if stopAtFirst && !problems.isEmpty { return }
            if payload > 0 {
                payload -= 1
                let end = offset + blockSize
                if let r = regions.first(where: { !(offset >= $0.1 || end <= $0.0) }) {
                    problems.append("VHDX region \(offset)-\(end) overlaps with region \(r.0)-\(r.1)")
                    if stopAtFirst { return }
                }
            } else {
                payload = meta.chunkRatio
            }
        }
    }

    /// The state and host offset for guest byte `pos`, and how far that kind runs.
    func mapping(_ pos: UInt64, maxLength: UInt64) -> (state: UInt64, host: UInt64, length: UInt64) {
        metaLock.withLock {
            var block = pos / blockSize
            let e = bat[meta.batIndex(block: block)]
            let state = e & VHDX.stateMask
            var length = blockSize - pos % blockSize
            if state != VHDX.fullyPresent {
                while length < maxLength {
                    block += 1
                    let i = meta.batIndex(block: block)
                    if i >= bat.count || bat[i] & VHDX.stateMask == VHDX.fullyPresent || bat[i] & VHDX.stateMask == VHDX.partiallyPresent { break }
                    length += blockSize
                }
            }
            return (state, (e & VHDX.offsetMask) + pos % blockSize, min(length, maxLength))
        }
    }

    // MARK: reads, status

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRequest(offset, UInt64(buffer.count))
        try rw.read {
            var done = 0
            while done < buffer.count {
                let pos = offset + UInt64(done)
                let m = mapping(pos, maxLength: UInt64(buffer.count - done))
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + Int(m.length)])
                switch m.state {
                case VHDX.fullyPresent: try file.read(at: m.host, into: part)
                case VHDX.partiallyPresent, 4: throw BlockError(.io, "Input/output error", errno: EIO)
                default: part.initializeMemory(as: UInt8.self, repeating: 0)
                }
                done += Int(m.length)
            }
        }
    }

    /// QEMU has no block status for vhdx (everything reads as data); we report what the BAT says,
    /// so that convert skips blocks that are not present.
    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        let m = mapping(offset, maxLength: length)
        switch m.state {
        case VHDX.fullyPresent: return BlockExtent(flags: [.data, .offsetValid], length: m.length, hostOffset: m.host, file: file)
        case VHDX.partiallyPresent, 4: return BlockExtent(flags: .data, length: m.length)
        default: return BlockExtent(flags: .zero, length: m.length)
        }
    }

    // MARK: check, info, close

    /// QEMU's vhdx_co_check: a replayed log counts as a fixed corruption; BAT entries are checked.
    public func check(fix: CheckFix, log: (String) -> Void) throws -> CheckResult {
        var r = CheckResult()
        if logReplayedOnOpen { r.corruptionsFixed += 1 }
        var problems: [String] = []
        metaLock.withLock { checkBAT(fileLength: file.size, problems: &problems, stopAtFirst: false) }
        for p in problems { log(p) }
        r.corruptions += Int64(problems.count)
        return r
    }

    public func allocatedHostBytes() -> UInt64? { file.allocatedHostBytes() }
    public func driverInfo() -> DriverInfo? { DriverInfo(clusterSize: blockSize, isDirty: false) }

    public func flush() throws {
        if !isReadOnly { try file.flush() }
    }

    public func close() throws {
        let first = metaLock.withLock { () -> Bool in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        if !isReadOnly { try? file.flush() }
        try file.close()
    }
}
