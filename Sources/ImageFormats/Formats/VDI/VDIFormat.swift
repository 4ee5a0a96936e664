// The vdi driver's entry points: probe, open, -o options and creation (QEMU's vdi_co_do_create:
// header, then the block map padded to a sector; a static image is then grown to its full size
// with every block mapped in order).
import Glibc

public enum VDIFormat: FormatDriver {
    public static let name = "vdi"

    public static func probe(_ head: [UInt8], filename: String) -> Int {
        guard head.count >= VDI.headerSize else { return 0 }
        return head.le32(0x40) == VDI.signature ? 100 : 0
    }

    public static func open(file: any BlockNode, options: BlockOptions, context: OpenContext, probed: Bool) throws -> any BlockNode {
        try VDINode(file: file, context: context)
    }

    public static let createOptions: [CreateOptionSpec] = [
        CreateOptionSpec("size", .size, "Virtual disk size"),
        CreateOptionSpec("static", .bool, "VDI static (pre-allocated) image", default: "off"),
    ]

    public static func create(filename: String, size requested: UInt64, options: BlockOptions) throws {
        let isStatic = try options.bool("static") ?? false
        if let p = options.string("preallocation"), p != "off" {
            throw BlockError(.invalidArgument, "Invalid parameter 'preallocation'", errno: EINVAL)
        }
        let size = roundUp(requested, VDI.sectorSize)
        if size > VDI.maxDiskSize {
            throw BlockError.unsupported("Unsupported VDI image size (size is 0x\(String(size, radix: 16)), max supported is 0x\(String(VDI.maxDiskSize, radix: 16)))")
        }
        try FileProtocol.create(filename: filename, size: 0, preallocation: .off)
        let f = try PosixFile.open(filename, flags: O_RDWR)
        defer { f.close() }
        let blocks = UInt32((size + VDI.defaultBlockSize - 1) / VDI.defaultBlockSize)
        let bmapBytes = roundUp(UInt64(blocks) * 4, VDI.sectorSize)
        let h = VDIHeader.make(size: size, isStatic: isStatic, blocks: blocks, bmapBytes: bmapBytes)
        try h.bytes.withUnsafeBytes { try f.write(at: 0, from: $0) }
        if bmapBytes > 0 {
            var map = [UInt8](repeating: 0, count: Int(bmapBytes))
            for i in 0..<Int(blocks) { map.setLE32(i * 4, isStatic ? UInt32(i) : VDI.unallocated) }
            try map.withUnsafeBytes { try f.write(at: UInt64(VDI.headerSize), from: $0) }
        }
        if isStatic {
            do {
                try f.truncate(UInt64(VDI.headerSize) + bmapBytes + UInt64(blocks) * VDI.defaultBlockSize)
            } catch let e as BlockError {
                throw e.prepending("Failed to statically allocate file")
            }
        }
    }
}
