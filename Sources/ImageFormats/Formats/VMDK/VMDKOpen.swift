// Opening a VMDK: QEMU's vmdk_open. A file starting with a sparse magic is a monolithic sparse
// (or streamOptimized) image with its descriptor at 0x200; anything else is a text descriptor
// whose extent lines name the extent files (relative to the descriptor's directory). A VMDK4
// header with capacity 0 and a descriptor offset carries its descriptor inside.
import Glibc

struct VMDKOpen {
    var extents: [VMDKExtent] = []
    var createType: String = ""
    var descOffset: UInt64 = 0
    /// Descriptors being parsed (a sparse extent may carry one naming further extents).
    var depth = 0

    static let supportedTypes = ["monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"]

    /// QEMU's vmdk_read_desc: up to 1 MiB - 1 of text from `offset`, NUL-terminated by the caller.
    static func readDesc(_ file: any BlockNode, at offset: UInt64) throws -> [UInt8] {
        let size = file.size
        if size < 4 { throw BlockError.invalid("File is too small, not a valid image") }
        return try file.read(at: offset, count: Int(min(size, (1 << 20) - 1)))
    }

    static func open(file: any BlockNode, context: OpenContext) throws -> VMDKOpen {
        var o = VMDKOpen()
        let buf = try readDesc(file, at: 0)
        let magic = buf.be32(0)
        if magic == VMDK.magic3 || magic == VMDK.magic4 {
            try o.openSparse(file, owns: false, type: nil, head: buf, context: context)
            o.descOffset = 0x200
        } else {
            try o.openDescriptor(buf, descriptorFile: file, context: context)
        }
        return o
    }

    var nextStart: UInt64 { extents.last?.endSector ?? 0 }

    mutating func openSparse(_ file: any BlockNode, owns: Bool, type: String?, head: [UInt8], context: OpenContext) throws {
        switch head.be32(0) {
        case VMDK.magic3:
            let layout = try VMDKSparseLayout.vmdk3(Array(head[4..<min(head.count, 4 + 40)]) + [UInt8](repeating: 0, count: 40))
            extents.append(try VMDKExtent(sparseFile: file, owns: owns, type: type, layout: layout, start: nextStart))
        case VMDK.magic4:
            var raw = Array(head[4..<min(head.count, VMDK.headerStructSize)])
            if raw.count < VMDK.headerStructSize - 4 { raw += [UInt8](repeating: 0, count: VMDK.headerStructSize - 4 - raw.count) }
            let h = VMDK4Header(afterMagic: raw)
            if h.capacity == 0 && h.descOffset != 0 {
                // A descriptor inside an extent named by a descriptor: refuse the loop it could make.
                if depth > 0 { throw BlockError.invalid("Invalid VMDK extent '\(file.filename)': nested descriptor") }
                let (off, o) = h.descOffset.multipliedReportingOverflow(by: 512)
                if o || off >= file.size { throw BlockError.invalid("Could not read from file") }
                try openDescriptor(try VMDKOpen.readDesc(file, at: off), descriptorFile: file, context: context)
                return
            }
            if createType.isEmpty { createType = "monolithicSparse" }
            let fileSize = file.size
            let layout = try VMDKSparseLayout.vmdk4(h, fileSize: fileSize, writable: context.writable) {
                guard fileSize >= 1536 else { throw BlockError.invalid("Invalid footer") }
                return try file.read(at: fileSize - 1536, count: 1536)
            }
            if layout.compressed && layout.clusterSectors * 512 > 64 << 20 {
                throw BlockError(.invalidImage, "Invalid granularity, image may be corrupt", errno: EFBIG)
            }
            if layout.compressed { createType = "streamOptimized" }
            extents.append(try VMDKExtent(sparseFile: file, owns: owns, type: type, layout: layout, start: nextStart))
        default:
            throw BlockError.invalid("Image not in VMDK format")
        }
    }

    /// QEMU's vmdk_open_desc_file and vmdk_parse_extents.
    mutating func openDescriptor(_ desc: [UInt8], descriptorFile: any BlockNode, context: OpenContext) throws {
        guard let ct = VMDKDescriptor.value(desc, "createType"), ct.utf8.count < 128 else {
            throw BlockError.invalid("invalid VMDK image descriptor")
        }
        guard VMDKOpen.supportedTypes.contains(ct) else { throw BlockError.unsupported("Unsupported image type '\(ct)'") }
        createType = ct
        descOffset = 0
        depth += 1
        defer { depth -= 1 }
        var dir: String? = nil
        for line in VMDKDescriptor.lines(desc) {
            guard let (e, matches) = VMDKDescriptor.parseExtentLine(line), e.access == "RW" else { continue }
            var flatOffset = e.flatOffset
            let invalid = BlockError.invalid("Invalid extent line: \(line.hasSuffix("\r") ? String(line.dropLast()) : line)")
            switch e.type {
            case "FLAT": if matches != 5 || flatOffset < 0 { throw invalid }
            case "VMFS": if matches == 4 { flatOffset = 0 } else { throw invalid }
            default: if matches != 4 { throw invalid }
            }
            if e.sectors <= 0 || !["FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE"].contains(e.type) { continue }
            let path: String
            if e.filename.hasPrefix("/") {
                path = e.filename
            } else {
                if dir == nil {
                    let f = descriptorFile.filename
                    if f.hasPrefix("json:") {
                        throw BlockError.invalid("Cannot use relative paths with VMDK descriptor file '\(f)': Cannot generate a base directory")
                    }
                    dir = f.lastIndex(of: "/").map { String(f[...$0]) } ?? ""
                }
                path = dir! + e.filename
            }
            if e.type == "SESPARSE" { throw BlockError.unsupported("Unsupported extent type '\(e.type)'") }
            var fo = BlockOptions()
            fo.set("filename", path)
            let ef = try BlockGraph.openProtocol(options: fo, context: context, formatHasMetadata: e.type != "FLAT" && e.type != "VMFS")
            do {
                if e.type == "FLAT" || e.type == "VMFS" {
                    let (off, o) = UInt64(flatOffset).multipliedReportingOverflow(by: 512)
                    if o { throw invalid }
                    extents.append(VMDKExtent(flatFile: ef, owns: true, type: e.type, sectors: UInt64(e.sectors), start: nextStart, offset: off))
                } else {
                    let head = try VMDKOpen.readDesc(ef, at: 0)
                    try openSparse(ef, owns: true, type: e.type, head: head, context: context)
                }
            } catch {
                try? ef.close()
                throw error
            }
        }
    }
}
