// The qcow2 driver's entry points: probe, open, the -o option list and image creation.
//
// Creation follows QEMU's qcow2_co_create step by step, so that a new image has QEMU's layout:
// a header with size 0, a one-cluster refcount table at cluster 1 pointing to a refcount block at
// cluster 2; then the image is opened, those three clusters are allocated, the full header is
// written, and the image is grown to its size (L1 table at cluster 3, preallocation if asked);
// finally the backing file is recorded.
import Glibc

public enum Qcow2Format: FormatDriver {
    public static let name = "qcow2"
    public static var supportsBacking: Bool { true }

    public static func probe(_ head: [UInt8], filename: String) -> Int {
        guard head.count >= 8, head.be32(0) == Qcow2.magic else { return 0 }
        let v = head.be32(4)
        return v >= 2 ? 100 : 0
    }

    public static func open(file: any BlockNode, options: BlockOptions, context: OpenContext, probed: Bool) throws -> any BlockNode {
        try Qcow2Node(file: file, options: options, context: context)
    }

    public static let createOptions: [CreateOptionSpec] = [
        CreateOptionSpec("encryption", .bool, "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"),
        CreateOptionSpec("encrypt.format", .string, "Encrypt the image, format choices: 'aes', 'luks'"),
        CreateOptionSpec("encrypt.key-secret", .string, "ID of secret providing qcow AES key or LUKS passphrase"),
        CreateOptionSpec("encrypt.cipher-alg", .string, "Name of encryption cipher algorithm"),
        CreateOptionSpec("encrypt.cipher-mode", .string, "Name of encryption cipher mode"),
        CreateOptionSpec("encrypt.ivgen-alg", .string, "Name of IV generator algorithm"),
        CreateOptionSpec("encrypt.ivgen-hash-alg", .string, "Name of IV generator hash algorithm"),
        CreateOptionSpec("encrypt.hash-alg", .string, "Name of encryption hash algorithm"),
        CreateOptionSpec("encrypt.iter-time", .number, "Time to spend in PBKDF in milliseconds"),
        CreateOptionSpec("cluster_size", .size, "qcow2 cluster size", default: "65536"),
        CreateOptionSpec("extended_l2", .bool, "Extended L2 tables", default: "off"),
        CreateOptionSpec("preallocation", .string, "Preallocation mode (allowed values: off, metadata, falloc, full)"),
        CreateOptionSpec("compression_type", .string, "Compression method used for image cluster compression", default: "zlib"),
        CreateOptionSpec("size", .size, "Virtual disk size"),
        CreateOptionSpec("compat", .string, "Compatibility level (v2 [0.10] or v3 [1.1])"),
        CreateOptionSpec("backing_file", .string, "File name of a base image"),
        CreateOptionSpec("backing_fmt", .string, "Image format of the base image"),
        CreateOptionSpec("data_file", .string, "File name of an external data file"),
        CreateOptionSpec("data_file_raw", .bool, "The external data file must stay valid as a raw image"),
        CreateOptionSpec("lazy_refcounts", .bool, "Postpone refcount updates", default: "off"),
        CreateOptionSpec("refcount_bits", .number, "Width of a reference count entry in bits", default: "16"),
    ]

    /// Validated qcow2 creation parameters.
    struct CreateParameters {
        var version: UInt32 = 3
        var clusterSize: UInt64 = 65536
        var extendedL2 = false
        var preallocation: Preallocation = .off
        var compression: Qcow2CompressionType = .zlib
        var backingFile: String?
        var backingFormat: String?
        var dataFile: String?
        var dataFileRaw = false
        var lazyRefcounts = false
        var refcountBits: UInt64 = 16
    }

    /// QEMU's checks, in QEMU's order, with its messages.
    static func parameters(_ o: BlockOptions) throws -> CreateParameters {
        var p = CreateParameters()
        func fail(_ m: String) -> BlockError { BlockError(.invalidArgument, m, errno: EINVAL) }
        if let e = try o.bool("encryption"), e {
            throw BlockError.unsupported("Encrypted qcow2 images are not supported")
        }
        if o.string("encrypt.format") != nil {
            throw BlockError.unsupported("Encrypted qcow2 images are not supported")
        }
        if let c = o.string("compat") {
            switch c {
            case "0.10", "v2": p.version = 2
            case "1.1", "v3": p.version = 3
            default: throw fail("Parameter 'version' does not accept value '\(c)'")
            }
        }
        if let cs = try o.size("cluster_size") { p.clusterSize = cs }
        p.extendedL2 = try o.bool("extended_l2") ?? false
        if let pa = o.string("preallocation") {
            guard let m = Preallocation(rawValue: pa) else { throw fail("Parameter 'preallocation' does not accept value '\(pa)'") }
            p.preallocation = m
        }
        if let ct = o.string("compression_type") {
            guard let t = Qcow2CompressionType(name: ct) else { throw fail("Parameter 'compression-type' does not accept value '\(ct)'") }
            p.compression = t
        }
        p.backingFile = o.string("backing_file")
        p.backingFormat = o.string("backing_fmt")
        p.dataFile = o.string("data_file")
        p.dataFileRaw = try o.bool("data_file_raw") ?? false
        p.lazyRefcounts = try o.bool("lazy_refcounts") ?? false
        if let rb = try o.integer("refcount_bits") {
            guard rb > 0 else { throw fail("Refcount width must be a power of two and may not exceed 64 bits") }
            p.refcountBits = UInt64(rb)
        }

        if p.extendedL2 && p.version < 3 {
            throw fail("Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
        }
        let bits = p.clusterSize.trailingZeroBitCount
        if p.clusterSize == 0 || p.clusterSize & (p.clusterSize - 1) != 0 || bits < 9 || bits > 21 {
            throw fail("Cluster size must be a power of two between 512 and 2048k")
        }
        if p.extendedL2 && p.clusterSize < 16384 {
            throw fail("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
        }
        if p.backingFile != nil && p.preallocation != .off && !p.extendedL2 {
            throw fail("Backing file and preallocation can only be used at the same time if extended_l2 is on")
        }
        if p.backingFormat != nil && p.backingFile == nil {
            throw fail("Backing format cannot be used without backing file")
        }
        if p.version < 3 && p.lazyRefcounts {
            throw fail("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)")
        }
        if p.refcountBits > 64 || p.refcountBits & (p.refcountBits - 1) != 0 {
            throw fail("Refcount width must be a power of two and may not exceed 64 bits")
        }
        if p.version < 3 && p.refcountBits != 16 {
            throw fail("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)")
        }
        if p.dataFileRaw && p.dataFile == nil { throw fail("data-file-raw requires data-file") }
        if p.dataFileRaw && p.backingFile != nil {
            throw fail("Backing file and data-file-raw cannot be used at the same time")
        }
        if p.dataFileRaw && p.preallocation == .off { p.preallocation = .metadata }
        if p.dataFile != nil && p.version < 3 {
            throw fail("External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
        }
        if p.compression != .zlib && p.version < 3 {
            throw fail("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)")
        }
        return p
    }

    public static func create(filename: String, size requestedSize: UInt64, options: BlockOptions) throws {
        let p = try parameters(options)
        let size = roundUp(requestedSize, 512)
        try FileProtocol.create(filename: filename, size: 0, preallocation: .off)
        do {
            if let d = p.dataFile {
                // QEMU takes the data file name as given (relative to the working directory).
                try FileProtocol.create(filename: d, size: 0, preallocation: .off)
            }
            try writeInitialImage(filename: filename, p: p)
            var o = BlockOptions()
            o.set("filename", filename)
            let ctx = OpenContext(flags: [.readWrite, .noBacking], cache: .unsafe)
            let file = try BlockGraph.openProtocol(options: o, context: ctx, formatHasMetadata: true)
            let node: Qcow2Node
            var nodeOptions = BlockOptions()
            if let d = p.dataFile { nodeOptions.set("data-file", d) }
            do {
                node = try Qcow2Node(file: file, options: nodeOptions, context: ctx)
            } catch {
                try? file.close()
                throw error
            }
            do {
                try node.finishCreation(size: size, p: p)
                try node.flush()
                try node.close()
            } catch {
                try? node.close()
                throw error
            }
        } catch {
            unlink(filename)
            throw error
        }
    }

    /// Step 1: a minimal image of size 0 (header, refcount table, empty refcount block).
    private static func writeInitialImage(filename: String, p: CreateParameters) throws {
        var h = Qcow2Header()
        h.version = p.version
        h.clusterBits = UInt32(p.clusterSize.trailingZeroBitCount)
        h.refcountTableOffset = p.clusterSize
        h.refcountTableClusters = 1
        h.refcountOrder = UInt32(p.refcountBits.trailingZeroBitCount)
        h.compressionType = p.compression.rawValue
        if p.lazyRefcounts { h.compatibleFeatures |= Qcow2.compatLazyRefcounts }
        if p.dataFile != nil { h.incompatibleFeatures |= Qcow2.incompatDataFile }
        if p.dataFileRaw { h.autoclearFeatures |= Qcow2.autoclearDataFileRaw }
        if p.compression != .zlib { h.incompatibleFeatures |= Qcow2.incompatCompression }
        if p.extendedL2 { h.incompatibleFeatures |= Qcow2.incompatExtendedL2 }
        // QEMU writes the bare struct (no extensions yet) in a cluster of its own.
        var bare = h
        bare.featureTable = []
        var cluster = [UInt8](repeating: 0, count: Int(p.clusterSize))
        let full = try bare.serializeBare()
        for (i, b) in full.enumerated() { cluster[i] = b }
        var tables = [UInt8](repeating: 0, count: Int(p.clusterSize) * 2)
        tables.setBE64(0, 2 * p.clusterSize)
        let f = try PosixFile.open(filename, flags: O_RDWR)
        defer { f.close() }
        try cluster.withUnsafeBytes { try f.write(at: 0, from: $0) }
        try tables.withUnsafeBytes { try f.write(at: p.clusterSize, from: $0) }
    }
}

extension Qcow2Header {
    /// The header struct alone, as the first write of qcow2_co_create (no extensions, no end marker).
    func serializeBare() throws -> [UInt8] {
        var b = [UInt8](repeating: 0, count: Qcow2.headerStructSize)
        b.setBE32(0, Qcow2.magic)
        b.setBE32(4, version)
        b.setBE32(20, clusterBits)
        b.setBE64(48, refcountTableOffset)
        b.setBE32(56, refcountTableClusters)
        b.setBE64(72, incompatibleFeatures)
        b.setBE64(80, compatibleFeatures)
        b.setBE64(88, autoclearFeatures)
        b.setBE32(96, refcountOrder)
        b.setBE32(100, UInt32(Qcow2.headerStructSize))
        b[104] = compressionType
        return b
    }
}

extension Qcow2Node {
    /// Steps 2-4 of creation on the freshly opened image.
    func finishCreation(size: UInt64, p: Qcow2Format.CreateParameters) throws {
        try rw.write {
            try metaLock.withLock {
                let first = try meta.allocateClusters(bytes: 3 * meta.clusterSize)
                guard first == 0 else { throw BlockError(.io, "Huh, first cluster in empty image is already in use?", errno: EIO) }
                if let d = p.dataFile { meta.header.dataFile = d }
                try meta.writeHeader()
            }
        }
        if size > 0 || p.preallocation != .off {
            do {
                try truncate(to: size, preallocation: p.preallocation, exact: false)
            } catch let e as BlockError {
                throw e.prepending("Could not resize image: ")
            }
        }
        if let b = p.backingFile {
            try metaLock.withLock {
                guard b.utf8.count <= 1023 else {
                    throw BlockError(.invalidArgument, "Could not assign backing file '\(b)' with format '\(p.backingFormat ?? "")': Invalid argument", errno: EINVAL)
                }
                meta.header.backingFile = b
                meta.header.backingFormat = p.backingFormat
                try meta.writeHeader()
            }
        }
    }
}
