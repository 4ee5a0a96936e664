// The vmdk driver's entry points: probe (sparse magics, or a text descriptor whose first
// non-comment line is version=1..3), open, -o options and creation (QEMU's vmdk_co_do_create).
//
// Creation: monolithicSparse/streamOptimized write one sparse file (header, descriptor at 0x200,
// redundant and primary grain directories with their grain tables); monolithicFlat writes a
// descriptor file and NAME-flat.vmdk; the twoGbMaxExtent subformats write a descriptor and 2 GiB
// extents NAME-s001.vmdk / NAME-f001.vmdk .... The descriptor text is QEMU's template.
import Glibc

public enum VMDKFormat: FormatDriver {
    public static let name = "vmdk"
    public static var supportsBacking: Bool { true }

    public static func probe(_ head: [UInt8], filename: String) -> Int {
        guard head.count >= 4 else { return 0 }
        let magic = head.be32(0)
        if magic == VMDK.magic3 || magic == VMDK.magic4 { return 100 }
        var p = 0
        let end = head.count
        while p < end {
            if head[p] == UInt8(ascii: "#") {
                while p < end && head[p] != 0x0a { p += 1 }
                p += 1
                continue
            }
            if head[p] == 0x20 {
                while p < end && head[p] == 0x20 { p += 1 }
                if p < end && head[p] == 0x0d { p += 1 }
                if p == end || head[p] != 0x0a { return 0 }
                p += 1
                continue
            }
            for v in ["1", "2", "3"] {
                for eol in ["\n", "\r\n"] {
                    let s = Array("version=\(v)\(eol)".utf8)
                    if end - p >= s.count && Array(head[p..<p + s.count]) == s { return 100 }
                }
            }
            return 0
        }
        return 0
    }

    public static func open(file: any BlockNode, options: BlockOptions, context: OpenContext, probed: Bool) throws -> any BlockNode {
        try VMDKNode(file: file, options: options, context: context)
    }

    public static let createOptions: [CreateOptionSpec] = [
        CreateOptionSpec("size", .size, "Virtual disk size"),
        CreateOptionSpec("adapter_type", .string, "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX"),
        CreateOptionSpec("backing_file", .string, "File name of a base image"),
        CreateOptionSpec("backing_fmt", .string, "Must be 'vmdk' if present"),
        CreateOptionSpec("compat6", .bool, "VMDK version 6 image", default: "off"),
        CreateOptionSpec("hwversion", .string, "VMDK hardware version", default: "undefined"),
        CreateOptionSpec("toolsversion", .string, "VMware guest tools version"),
        CreateOptionSpec("subformat", .string, "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} "),
        CreateOptionSpec("zeroed_grain", .bool, "Enable efficient zero writes using the zeroed-grain GTE feature"),
    ]

    static let subformats = ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"]
    static let adapters = ["ide", "buslogic", "lsilogic", "legacyESX"]

    public static func create(filename: String, size requested: UInt64, options: BlockOptions) throws {
        func fail(_ m: String, _ code: Int32 = EINVAL) -> BlockError { BlockError(.invalidArgument, m, errno: code) }
        if let bf = options.string("backing_fmt"), bf != "vmdk" { throw fail("backing_file must be a vmdk image") }
        guard !filename.isEmpty else { throw fail("No filename provided") }
        let size = roundUp(requested, 512)
        let adapter = options.string("adapter_type") ?? "ide"
        guard adapters.contains(adapter) else { throw fail("invalid parameter value: \(adapter)") }
        let subformat = options.string("subformat") ?? "monolithicSparse"
        guard subformats.contains(subformat) else { throw fail("invalid parameter value: \(subformat)") }
        let backing = options.string("backing_file")
        var hw = options.string("hwversion")
        if hw == "undefined" { hw = nil }
        let tools = options.string("toolsversion") ?? "2147483647"
        let compat6 = try options.bool("compat6") ?? false
        let zeroed = try options.bool("zeroed_grain") ?? false
        if compat6 {
            if hw != nil { throw fail("compat6 cannot be enabled with hwversion set") }
            hw = "6"
        }
        let hwVersion = hw ?? "4"
        let heads: UInt32 = adapter == "ide" ? 16 : 255
        let split = subformat.hasPrefix("twoGbMaxExtent")
        let flat = subformat == "monolithicFlat" || subformat == "twoGbMaxExtentFlat"
        let compress = subformat == "streamOptimized"
        if flat && backing != nil { throw fail("Flat image can't have backing file", ENOTSUP) }
        if flat && zeroed { throw fail("Flat image can't enable zeroed grain", ENOTSUP) }

        // Names: QEMU's filename_decompose (path, prefix, postfix).
        let slash = filename.lastIndex(of: "/")
        let path = slash.map { String(filename[...$0]) } ?? ""
        let base = slash.map { String(filename[filename.index(after: $0)...]) } ?? filename
        let dot = base.lastIndex(of: ".")
        let prefix = dot.map { String(base[..<$0]) } ?? base
        let postfix = dot.map { String(base[$0...]) } ?? ""

        let extentSize: UInt64 = split ? 0x8000_0000 : size
        var created: UInt64 = (!split && !flat) ? extentSize : 0
        var lines = ""
        func line(_ sectors: UInt64, _ name: String) -> String {
            flat ? "RW \(sectors) FLAT \"\(name)\" 0\n" : "RW \(sectors) SPARSE \"\(name)\"\n"
        }
        // The descriptor file (the whole image when not split and not flat).
        try createExtent(filename, size: created, flat: flat, compress: compress, zeroed: zeroed)
        var made = [filename]
        do {
            if !split && !flat { lines += line((created + 511) / 512, base) }
            var parentCID: UInt32 = 0xffff_ffff
            if let b = backing {
                let full = BlockGraph.resolveBackingPath(b, relativeTo: filename)
                var o = BlockOptions()
                o.set("filename", full)
                let node = try BlockGraph.open(filename: full, context: OpenContext(flags: [.noBacking, .forceShare]))
                defer { try? node.close() }
                guard let v = node as? VMDKNode else {
                    throw fail("Invalid backing file format: \(node.driverName). Must be vmdk")
                }
                parentCID = v.cid
            }
            var idx = 1
            while created < size {
                let cur = min(size - created, extentSize)
                let rel = split ? "\(prefix)-\(flat ? "f" : "s")\(threeDigits(idx))\(postfix)" : "\(prefix)-flat\(postfix)"
                try createExtent(path + rel, size: cur, flat: flat, compress: compress, zeroed: zeroed)
                made.append(path + rel)
                lines += line((cur + 511) / 512, rel)
                created += cur
                idx += 1
            }
            let desc = VMDKDescriptor.make(cid: UInt32.random(in: 0...UInt32.max), parentCID: parentCID, createType: subformat,
                                           parentHint: backing, extentLines: lines, hwVersion: hwVersion,
                                           cylinders: Int64(size / (63 * UInt64(heads) * 512)), heads: heads,
                                           adapter: adapter, toolsVersion: tools)
            let f = try PosixFile.open(filename, flags: O_RDWR)
            defer { f.close() }
            let bytes = Array(desc.utf8)
            let descOffset: UInt64 = (!split && !flat) ? 0x200 : 0
            try bytes.withUnsafeBytes { try f.write(at: descOffset, from: $0) }
            if descOffset == 0 { try f.truncate(UInt64(bytes.count)) }
        } catch {
            for m in made { unlink(m) }
            throw error
        }
    }

    static func threeDigits(_ i: Int) -> String {
        let s = String(i)
        return s.count >= 3 ? s : String(repeating: "0", count: 3 - s.count) + s
    }

    /// QEMU's vmdk_create_extent / vmdk_init_extent.
    static func createExtent(_ filename: String, size: UInt64, flat: Bool, compress: Bool, zeroed: Bool) throws {
        try FileProtocol.create(filename: filename, size: 0, preallocation: .off)
        let f = try PosixFile.open(filename, flags: O_RDWR)
        defer { f.close() }
        if flat {
            try f.truncate(size)
            return
        }
        var h = VMDK4Header()
        h.version = compress ? 3 : (zeroed ? 2 : 1)
        h.flags = VMDK.flagRGD | VMDK.flagNLDetect | (compress ? VMDK.flagCompress | VMDK.flagMarker : 0) | (zeroed ? VMDK.flagZeroGrain : 0)
        h.compressAlgorithm = compress ? VMDK.compressionDeflate : 0
        h.capacity = size / 512
        h.granularity = 128
        h.numGTEsPerGT = 512
        let grains = (h.capacity + h.granularity - 1) / h.granularity
        let gtSize: UInt64 = (512 * 4 + 511) / 512
        let gtCount = (grains + 511) / 512
        let gdSectors = (gtCount * 4 + 511) / 512
        h.descOffset = 1
        h.descSize = 20
        h.rgdOffset = h.descOffset + h.descSize
        h.gdOffset = h.rgdOffset + gdSectors + gtSize * gtCount
        h.grainOffset = roundUp(h.gdOffset + gdSectors + gtSize * gtCount, h.granularity)
        try h.bytes.withUnsafeBytes { try f.write(at: 0, from: $0) }
        try f.truncate(h.grainOffset * 512)
        var gd = [UInt8](repeating: 0, count: Int(gdSectors * 512))
        for i in 0..<Int(gtCount) { gd.setLE32(i * 4, UInt32(h.rgdOffset + gdSectors + UInt64(i) * gtSize)) }
        try gd.withUnsafeBytes { try f.write(at: h.rgdOffset * 512, from: $0) }
        for i in 0..<Int(gtCount) { gd.setLE32(i * 4, UInt32(h.gdOffset + gdSectors + UInt64(i) * gtSize)) }
        try gd.withUnsafeBytes { try f.write(at: h.gdOffset * 512, from: $0) }
    }
}
