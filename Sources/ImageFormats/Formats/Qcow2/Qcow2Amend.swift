// qemu-img amend for qcow2 (QEMU's qcow2_amend_options): compat 0.10 <-> 1.1 (a downgrade expands
// zero clusters into real ones), refcount width changes (a new refcount structure written from the
// counted references), lazy_refcounts, data-file name, size. Options qemu-img only takes at
// creation are refused with its hint.
import Glibc

/// The program name hints mention ("qemu-img" in QEMU; ours is set by the running tool).
nonisolated(unsafe) public var toolName = "qemu-img"

/// A node whose format options can be changed in place (qemu-img amend).
public protocol AmendableNode: BlockNode {
    /// Changes the options present in `options` (QEMU's amend option names).
    func amend(options: BlockOptions, force: Bool) throws
}

extension Qcow2Format {
    /// The amend option list, in QEMU's order (for `amend -o help`).
    public static let amendOptions: [CreateOptionSpec] = [
        CreateOptionSpec("size", .size, "Virtual disk size"),
        CreateOptionSpec("compat", .string, "Compatibility level (v2 [0.10] or v3 [1.1])"),
        CreateOptionSpec("backing_file", .string, "File name of a base image"),
        CreateOptionSpec("backing_fmt", .string, "Image format of the base image"),
        CreateOptionSpec("data_file", .string, "File name of an external data file"),
        CreateOptionSpec("data_file_raw", .bool, "The external data file must stay valid as a raw image"),
        CreateOptionSpec("encrypt.keyslot", .number, "Select a single keyslot to modify explicitly"),
        CreateOptionSpec("encrypt.state", .string, "Select new state of affected keyslots (active/inactive)"),
        CreateOptionSpec("encrypt.old-secret", .string, "Select all keyslots that match this password"),
        CreateOptionSpec("encrypt.new-secret", .string, "New secret to set in the matching keyslots. Empty string to erase"),
        CreateOptionSpec("encrypt.iter-time", .number, "Time to spend in PBKDF in milliseconds"),
        CreateOptionSpec("lazy_refcounts", .bool, "Postpone refcount updates"),
        CreateOptionSpec("refcount_bits", .number, "Width of a reference count entry in bits"),
    ]
}

extension Qcow2Node: AmendableNode {
    public func amend(options o: BlockOptions, force: Bool) throws {
        try checkWritable()
        func fail(_ m: String, hint: String? = nil) -> BlockError { BlockError(.invalidArgument, m, errno: EINVAL, hint: hint) }
        let h = meta.header
        let oldVersion = h.version
        var newVersion = oldVersion
        if let c = o.string("compat") {
            switch c {
            case "0.10", "v2": newVersion = 2
            case "1.1", "v3": newVersion = 3
            default: throw fail("Unknown compatibility level \(c)")
            }
        }
        var refcountBits = h.refcountBits
        if let rb = try o.integer("refcount_bits") {
            guard rb > 0, rb <= 64, rb & (rb - 1) == 0 else {
                throw fail("Refcount width must be a power of two and may not exceed 64 bits")
            }
            refcountBits = UInt64(rb)
        }
        let dataFileName = o.string("data_file")
        if dataFileName != nil && !h.hasDataFile {
            throw fail("data-file can only be set for images that use an external data file")
        }
        var dataFileRaw = h.dataFileRaw
        if let r = try o.bool("data_file_raw") {
            if r && !h.dataFileRaw { throw fail("data-file-raw cannot be set on existing images") }
            dataFileRaw = r
        }
        if o.keys.contains(where: { $0.hasPrefix("encrypt.") }) {
            throw BlockError.unsupported("Encrypted qcow2 images are not supported")
        }
        let lazy = try o.bool("lazy_refcounts") ?? h.lazyRefcounts

        if newVersion > oldVersion {
            try metaLock.withLock {
                meta.header.version = newVersion
                meta.header.headerLength = UInt32(Qcow2.headerStructSize)
                try meta.writeHeader()
            }
        }
        if refcountBits != meta.header.refcountBits {
            if newVersion < 3 && refcountBits != 16 {
                throw fail("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
            }
            try rw.write { try metaLock.withLock { try meta.changeRefcountOrder(UInt32(refcountBits.trailingZeroBitCount)) } }
        }
        try metaLock.withLock {
            if dataFileRaw { meta.header.autoclearFeatures |= Qcow2.autoclearDataFileRaw }
            else { meta.header.autoclearFeatures &= ~Qcow2.autoclearDataFileRaw }
            if let d = dataFileName { meta.header.dataFile = d.isEmpty ? nil : d }
            try meta.writeHeader()
        }
        let bf = o.string("backing_file"), bfmt = o.string("backing_fmt")
        if bf != nil || bfmt != nil {
            if bf != meta.header.backingFile || bfmt != meta.header.backingFormat {
                throw fail("Cannot amend the backing file", hint: "You can use '\(toolName) rebase' instead.")
            }
        }
        if lazy != meta.header.lazyRefcounts {
            if lazy && newVersion < 3 {
                throw fail("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
            }
            try metaLock.withLock {
                if lazy { meta.header.compatibleFeatures |= Qcow2.compatLazyRefcounts }
                else {
                    meta.header.incompatibleFeatures &= ~Qcow2.incompatDirty
                    meta.header.compatibleFeatures &= ~Qcow2.compatLazyRefcounts
                }
                try meta.writeHeader()
            }
        }
        if let s = try o.size("size"), s != 0 {
            try truncate(to: s, preallocation: .off, exact: true)
        }
        if newVersion < oldVersion { try downgrade() }
    }

    /// QEMU's qcow2_downgrade to compat 0.10.
    private func downgrade() throws {
        let h = meta.header
        if h.refcountOrder != 4 { throw BlockError(.unsupported, "compat=0.10 requires refcount_bits=16", errno: ENOTSUP) }
        if h.hasDataFile { throw BlockError(.unsupported, "Cannot downgrade an image with a data file", errno: ENOTSUP) }
        for sn in snapshotTable where sn.vmStateSize != 0 || sn.diskSize != size {
            throw BlockError(.unsupported, "Internal snapshots cannot be stored in v2 images if they have a different size or if they contain VM state", errno: ENOTSUP)
        }
        if h.incompatibleFeatures & ~(Qcow2.incompatCompression | Qcow2.incompatDirty) != 0 {
            throw BlockError(.unsupported, "Cannot downgrade an image with incompatible features \(hex(h.incompatibleFeatures & ~Qcow2.incompatDirty)) set", errno: ENOTSUP)
        }
        if compression != .zlib {
            if try hasCompressedClusters() {
                throw BlockError(.unsupported, "Cannot downgrade an image with zstd compression type and existing compressed clusters", errno: ENOTSUP)
            }
        }
        try rw.write {
            try metaLock.withLock {
                meta.header.incompatibleFeatures &= ~Qcow2.incompatDirty
                meta.header.compatibleFeatures = 0
                meta.header.autoclearFeatures = 0
                try expandZeroClusters()
                meta.header.compressionType = 0
                meta.header.incompatibleFeatures &= ~Qcow2.incompatCompression
                meta.header.version = 2
                meta.header.headerLength = UInt32(Qcow2.v2HeaderSize)
                meta.header.unknownHeaderFields = []
                meta.header.featureTable = []
                try meta.flushCaches()
                try meta.writeHeader()
                try file.flush()
            }
        }
    }

    private func hasCompressedClusters() throws -> Bool {
        try metaLock.withLock {
            for l1 in [meta.l1Table] + snapshotTable.map({ sn -> [UInt64] in
                let raw = (try? file.read(at: sn.l1TableOffset, count: Int(sn.l1Size) * 8)) ?? []
                return (0..<raw.count / 8).map { raw.be64($0 * 8) }
            }) {
                for e in l1 {
                    let l2 = e & Qcow2.l1OffsetMask
                    guard l2 != 0 else { continue }
                    let found = try meta.l2Cache.read(l2) { t in
                        (0..<Int(meta.l2Entries)).contains { t.be64($0 * Int(meta.l2EntrySize)) & Qcow2.oflagCompressed != 0 }
                    }
                    if found { return true }
                }
            }
            return false
        }
    }

    /// QEMU's qcow2_expand_zero_clusters: v2 has no zero flag, so zero clusters become real
    /// clusters of zeroes (or plain unallocated ones where nothing lies beneath).
    private func expandZeroClusters() throws {
        let cs = meta.clusterSize
        let zeros = [UInt8](repeating: 0, count: Int(cs))
        var tables: [(offset: UInt64, size: Int, active: Bool)] = [(meta.header.l1TableOffset, meta.l1Table.count, true)]
        for sn in snapshotTable { tables.append((sn.l1TableOffset, Int(sn.l1Size), false)) }
        for t in tables {
            let l1: [UInt64]
            if t.active { l1 = meta.l1Table } else {
                let raw = try file.read(at: t.offset, count: t.size * 8)
                l1 = (0..<t.size).map { raw.be64($0 * 8) }
            }
            for e in l1 {
                let l2 = e & Qcow2.l1OffsetMask
                guard l2 != 0 else { continue }
                let l2Refcount = try meta.refcount(ofCluster: l2 / cs)
                var table = try meta.l2Cache.read(l2) { $0 }
                var dirty = false
                for j in 0..<Int(meta.l2Entries) {
                    let entry = table.be64(j * 8)
                    let type = meta.clusterType(entry)
                    guard type == .zeroPlain || type == .zeroAlloc else { continue }
                    var host = entry & Qcow2.l2OffsetMask
                    if type == .zeroPlain {
                        if backingNode == nil {
                            table.setBE64(j * 8, 0)
                            dirty = true
                            continue
                        }
                        host = try meta.allocateClusters(bytes: cs)
                        if l2Refcount > 1 {
                            try meta.updateRefcount(offset: host, length: cs, addend: l2Refcount - 1, decrease: false)
                        }
                    }
                    try zeros.withUnsafeBytes { try file.write(at: host, from: $0, flags: []) }
                    table.setBE64(j * 8, l2Refcount == 1 ? host | Qcow2.oflagCopied : host)
                    dirty = true
                }
                if dirty {
                    try meta.l2Cache.installEmpty(l2, contents: table)
                    try meta.l2Cache.writeBack(l2)
                }
            }
        }
    }
}

extension Qcow2Meta {
    /// Rewrites the refcount structure with a new entry width: every cluster's current refcount is
    /// read, then new refcount blocks and table are written past the end of the file, covering
    /// themselves, and switched in with one header write; the old structure's clusters are free.
    func changeRefcountOrder(_ newOrder: UInt32) throws {
        let cs = clusterSize
        try flushCaches()
        let fileClusters = (file.size + cs - 1) / cs
        var counts = [UInt64](repeating: 0, count: Int(fileClusters))
        for i in 0..<Int(fileClusters) { counts[i] = try refcount(ofCluster: UInt64(i)) }
        // The old table and blocks are freed by the switch.
        for c in 0..<Int(header.refcountTableClusters) {
            let idx = Int(header.refcountTableOffset / cs) + c
            if idx < counts.count { counts[idx] = 0 }
        }
        for e in refcountTable where e & Qcow2.refTableOffsetMask != 0 {
            let idx = Int((e & Qcow2.refTableOffsetMask) / cs)
            if idx < counts.count { counts[idx] = 0 }
        }
        let newMax: UInt64 = newOrder == 6 ? UInt64.max : (1 << (UInt64(1) << UInt64(newOrder))) - 1
        if let i = counts.firstIndex(where: { $0 > newMax }) {
            throw BlockError(.invalidArgument, "Cannot decrease refcount entry width to \(1 << newOrder) bits: Cluster at offset \(hex(UInt64(i) * cs)) has a refcount of \(counts[i])", errno: EINVAL)
        }
        let perBlock = cs * 8 / (UInt64(1) << UInt64(newOrder))
        let start = fileClusters
        var blocks: UInt64 = 0, tableClusters: UInt64 = 0
        while true {
            let total = start + blocks + tableClusters
            let b = (total + perBlock - 1) / perBlock
            let t = (b * 8 + cs - 1) / cs
            if b == blocks && t == tableClusters { break }
            blocks = b
            tableClusters = t
        }
        counts += [UInt64](repeating: 1, count: Int(blocks + tableClusters))
        var table = [UInt64](repeating: 0, count: Int(tableClusters * cs / 8))
        for b in 0..<blocks {
            var block = [UInt8](repeating: 0, count: Int(cs))
            for k in 0..<perBlock {
                let idx = b * perBlock + k
                if idx < UInt64(counts.count) { Qcow2Meta.setRefcount(&block, k, counts[Int(idx)], order: newOrder) }
            }
            let off = (start + b) * cs
            try block.withUnsafeBytes { try file.write(at: off, from: $0, flags: []) }
            table[Int(b)] = off
        }
        var tb = [UInt8](repeating: 0, count: table.count * 8)
        for (i, e) in table.enumerated() { tb.setBE64(i * 8, e) }
        let tableOffset = (start + blocks) * cs
        try tb.withUnsafeBytes { try file.write(at: tableOffset, from: $0, flags: []) }
        try file.flush()
        refcountCache.clear()
        header.refcountOrder = newOrder
        header.refcountTableOffset = tableOffset
        header.refcountTableClusters = UInt32(tableClusters)
        refcountTable = table
        freeClusterIndex = 0
        try writeHeader()
        try file.flush()
    }
}
