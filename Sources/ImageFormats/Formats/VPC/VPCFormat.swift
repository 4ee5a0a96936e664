// The vpc driver's entry points: probe ("conectix" at offset 0: fixed disks, whose footer is only
// at the end, are not probed, as in QEMU), open, -o options and creation (QEMU's vpc_co_create:
// the size rounded up to a CHS geometry unless force_size; a dynamic disk is footer, dynamic
// header, BAT of 0xff, footer; a fixed disk is the data then the footer).
import Glibc

public enum VPCFormat: FormatDriver {
    public static let name = "vpc"

    public static func probe(_ head: [UInt8], filename: String) -> Int {
        head.count >= 8 && Array(head[0..<8]) == Array("conectix".utf8) ? 100 : 0
    }

    public static func open(file: any BlockNode, options: BlockOptions, context: OpenContext, probed: Bool) throws -> any BlockNode {
        try VPCNode(file: file, options: options, context: context)
    }

    public static let createOptions: [CreateOptionSpec] = [
        CreateOptionSpec("size", .size, "Virtual disk size"),
        CreateOptionSpec("subformat", .string, "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} "),
        CreateOptionSpec("force_size", .bool, "Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation"),
    ]

    public static func create(filename: String, size requested: UInt64, options: BlockOptions) throws {
        let sub = options.string("subformat") ?? "dynamic"
        guard sub == "dynamic" || sub == "fixed" else {
            throw BlockError(.invalidArgument, "Parameter 'subformat' does not accept value '\(sub)'", errno: EINVAL)
        }
        let forceSize = try options.bool("force_size") ?? false
        let type = sub == "fixed" ? VPC.fixed : VPC.dynamic
        let requestedSize = roundUp(requested, 512)
        var totalSectors: UInt64
        var g: (cyls: UInt64, heads: UInt64, secs: UInt64) = (0, 0, 0)
        if forceSize {
            g = (65535, 16, 255)
        } else {
            totalSectors = min(VPC.maxGeometry, requestedSize / 512)
            var i: UInt64 = 0
            while totalSectors > g.cyls * g.heads * g.secs {
                g = VPC.geometry(totalSectors: totalSectors + i)
                i += 1
            }
        }
        if g.cyls * g.heads * g.secs == VPC.maxGeometry {
            totalSectors = requestedSize / 512
            if totalSectors > VPC.maxSectors {
                throw BlockError(.invalidArgument, "The image size is too large for file format 'vpc'", errno: EFBIG)
            }
        } else {
            totalSectors = g.cyls * g.heads * g.secs
        }
        let totalSize = totalSectors * 512
        let footer = VPCFooter.make(totalSize: totalSize, cyls: g.cyls, heads: g.heads, secs: g.secs, type: type, forceSize: forceSize)

        try FileProtocol.create(filename: filename, size: 0, preallocation: .off)
        let f = try PosixFile.open(filename, flags: O_RDWR)
        defer { f.close() }
        if type == VPC.dynamic {
            let entries = (totalSectors + VPC.defaultBlockSize / 512 - 1) / (VPC.defaultBlockSize / 512)
            let batBytes = roundUp(entries * 4, 512)
            try footer.bytes.withUnsafeBytes { try f.write(at: 0, from: $0) }
            try footer.bytes.withUnsafeBytes { try f.write(at: 1536 + batBytes, from: $0) }
            let bat = [UInt8](repeating: 0xff, count: Int(batBytes))
            try bat.withUnsafeBytes { try f.write(at: 1536, from: $0) }
            let dyn = VPCDynHeader.make(entries: UInt32(entries), blockSize: UInt32(VPC.defaultBlockSize))
            try dyn.withUnsafeBytes { try f.write(at: 512, from: $0) }
        } else {
            try f.truncate(totalSize + UInt64(VPC.footerSize))
            try footer.bytes.withUnsafeBytes { try f.write(at: totalSize, from: $0) }
        }
    }
}
