// The qed driver's entry points: probe, open, -o options and creation (QEMU's bdrv_qed_co_create:
// the header cluster, the backing file name right after the header struct, then a zeroed L1 table).
import Glibc

public enum QEDFormat: FormatDriver {
    public static let name = "qed"
    public static var supportsBacking: Bool { true }

    public static func probe(_ head: [UInt8], filename: String) -> Int {
        head.count >= QED.headerStructSize && head.le32(0) == QED.magic ? 100 : 0
    }

    public static func open(file: any BlockNode, options: BlockOptions, context: OpenContext, probed: Bool) throws -> any BlockNode {
        try QEDNode(file: file, options: options, context: context)
    }

    public static let createOptions: [CreateOptionSpec] = [
        CreateOptionSpec("size", .size, "Virtual disk size"),
        CreateOptionSpec("backing_file", .string, "File name of a base image"),
        CreateOptionSpec("backing_fmt", .string, "Image format of the base image"),
        CreateOptionSpec("cluster_size", .size, "Cluster size (in bytes)", default: "65536"),
        CreateOptionSpec("table_size", .size, "L1/L2 table size (in clusters)"),
    ]

    public static func create(filename: String, size requested: UInt64, options: BlockOptions) throws {
        func fail(_ m: String) -> BlockError { BlockError(.invalidArgument, m, errno: EINVAL) }
        let cs64 = try options.size("cluster_size") ?? UInt64(QED.defaultClusterSize)
        let ts64 = try options.size("table_size") ?? UInt64(QED.defaultTableSize)
        let size = roundUp(requested, 512)
        guard cs64 <= UInt64(UInt32.max), QED.clusterSizeValid(UInt32(cs64)) else {
            throw fail("QED cluster size must be within range [\(QED.minClusterSize), \(QED.maxClusterSize)] and power of 2")
        }
        guard ts64 <= UInt64(UInt32.max), QED.tableSizeValid(UInt32(ts64)) else {
            throw fail("QED table size must be within range [\(QED.minTableSize), \(QED.maxTableSize)] and power of 2")
        }
        let cs = UInt32(cs64), ts = UInt32(ts64)
        guard QED.imageSizeValid(size, clusterSize: cs, tableSize: ts) else {
            throw fail("QED image size must be a non-zero multiple of cluster size and less than \(QED.maxImageSize(clusterSize: cs, tableSize: ts)) bytes")
        }
        var h = QEDHeader(clusterSize: cs, tableSize: ts, imageSize: size)
        let backing = options.string("backing_file")
        if let b = backing {
            h.features |= QED.featureBackingFile
            h.backingNameOffset = UInt32(QED.headerStructSize)
            h.backingNameSize = UInt32(b.utf8.count)
            if options.string("backing_fmt") == "raw" { h.features |= QED.featureBackingNoProbe }
            guard UInt64(QED.headerStructSize + b.utf8.count) <= h.headerBytes else {
                throw fail("Backing file name too long")
            }
        }
        try FileProtocol.create(filename: filename, size: 0, preallocation: .off)
        let f = try PosixFile.open(filename, flags: O_RDWR)
        defer { f.close() }
        try h.bytes.withUnsafeBytes { try f.write(at: 0, from: $0) }
        if let b = backing, !b.isEmpty {
            try Array(b.utf8).withUnsafeBytes { try f.write(at: UInt64(QED.headerStructSize), from: $0) }
        }
        let l1 = [UInt8](repeating: 0, count: Int(h.tableBytes))
        try l1.withUnsafeBytes { try f.write(at: h.l1TableOffset, from: $0) }
    }
}
