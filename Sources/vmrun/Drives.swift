// -drive, -blockdev and the drive= property of -device virtio-blk-pci: front-end keys are taken out
// here (if, id, index, media, cache, aio, discard, detect-zeroes, readonly, snapshot, werror, rerror),
// everything else is the block graph's business and goes to BlockGraph.open as options, which
// parses formats, protocols, backing chains and locking with QEMU's messages.
import Glibc
import ImageFormats
import Machine

struct DriveTable {
    struct Pending {
        var config: DriveConfig
        var interface: String
        var nodeName: String?
        var claimed = false
    }
    var drives: [Pending] = []
    var blockdevs: [(name: String, node: any BlockNode, readOnly: Bool, discard: Bool)] = []
    /// Each -blockdev's own options, so that a later one can refer to it by node-name.
    var blockdevOptions: [String: BlockOptions] = [:]
    var virtioIndex = 0
    /// -snapshot: every -drive defaults to snapshot=on.
    var globalSnapshot = false

    static func bool(_ v: String?, key: String, spelled: String, arg: String) throws -> Bool? {
        guard let v else { return nil }
        guard let b = BlockOptions.parseBool(v) else {
            throw ArgvError(message: "\(spelled) \(arg): Parameter '\(key)' expects 'on' or 'off'")
        }
        return b
    }

    mutating func addDrive(_ arg: String, spelled: String) throws {
        var opts = try BlockOptions.parseKeyValue(arg)
        func take(_ k: String) -> String? { opts.take(k)?.description }
        let interface = take("if") ?? "ide"
        guard ["virtio", "none"].contains(interface) else {
            if ["ide", "scsi", "floppy", "sd", "pflash", "mtd"].contains(interface) {
                throw ArgvError(message: "\(spelled) \(arg): machine type does not support if=\(interface),bus=0,unit=0")
            }
            throw ArgvError(message: "\(spelled) \(arg): unsupported bus type '\(interface)'")
        }
        let index = take("index").flatMap { Int($0) }
        var id = take("id")
        if id == nil {
            if interface == "virtio" { id = "virtio\(index ?? virtioIndex)" } else { id = "none\(drives.count)" }
        }
        if interface == "virtio" { virtioIndex = (index ?? virtioIndex) + 1 }
        if drives.contains(where: { $0.config.id == id }) {
            throw ArgvError(message: "\(spelled) \(arg): Duplicate ID '\(id!)' for drive")
        }
        let readOnly = try DriveTable.bool(take("readonly"), key: "readonly", spelled: spelled, arg: arg) ?? false
        let snapshot = try DriveTable.bool(take("snapshot"), key: "snapshot", spelled: spelled, arg: arg) ?? globalSnapshot
        let cacheText = take("cache") ?? "writeback"
        let cache: CacheMode
        do { cache = try CacheMode.parse(cacheText) } catch { throw ArgvError(message: "\(spelled) \(arg): invalid cache option") }
        let discardText = take("discard") ?? "ignore"
        guard ["ignore", "off", "unmap", "on"].contains(discardText) else {
            throw ArgvError(message: "\(spelled) \(arg): Invalid discard option")
        }
        let aio = take("aio") ?? "threads"
        guard ["threads", "native", "io_uring"].contains(aio) else {
            throw ArgvError(message: "\(spelled) \(arg): invalid aio option")
        }
        let detectZeroes = take("detect-zeroes") ?? "off"
        guard ["off", "on", "unmap"].contains(detectZeroes) else {
            throw ArgvError(message: "\(spelled) \(arg): Parameter 'detect-zeroes' does not accept value '\(detectZeroes)'")
        }
        for k in ["media", "werror", "rerror", "bus", "unit", "serial", "copy-on-read"] { _ = take(k) }
        let nodeName = take("node-name")
        let format = take("format")
        let file = take("file")
        // A protocol driver (driver=nbd,server.path=...) needs no file child.
        let isProtocol = opts.string("driver").flatMap(ProtocolRegistry.driver(named:)) != nil
        guard file != nil || opts.hasSub("file") || isProtocol else {
            throw ArgvError(message: "\(spelled) \(arg): A block device must be specified for \"file\"")
        }
        let ctx = OpenContext(flags: readOnly ? [] : [.readWrite], cache: cache)
        let node: any BlockNode
        do {
            if snapshot && !readOnly {
                node = try DriveTable.openTemporarySnapshot(file: file, format: format, options: opts, cache: cache)
            } else {
                node = try BlockGraph.open(filename: file, format: format, options: opts, context: ctx,
                                           warn: { Diagnostics.warn($0) })
            }
        } catch let e as BlockError {
            throw ArgvError(message: "\(spelled) \(arg): \(e.message)" + (e.hint.map { "\n" + $0 } ?? ""))
        }
        var dc = DriveConfig(id: id!, node: node, readOnly: readOnly, discard: discardText == "unmap" || discardText == "on")
        dc.cache = (!cache.writeThrough, cache.direct, cache.noFlush)
        dc.detectZeroes = detectZeroes
        dc.nodeName = nodeName
        drives.append(Pending(config: dc, interface: interface, nodeName: nodeName))
    }

    /// snapshot=on, as QEMU's bdrv_append_temp_snapshot: the image is opened read-only as the
    /// backing file of a temporary qcow2 overlay in $TMPDIR (default /var/tmp), which takes every
    /// guest write and is deleted (unlinked right after opening) so nothing reaches the image.
    static func openTemporarySnapshot(file: String?, format: String?, options: BlockOptions, cache: CacheMode) throws -> any BlockNode {
        // The base, read-only, to learn its size and format.
        let base = try BlockGraph.open(filename: file, format: format, options: options,
                                       context: OpenContext(flags: [], cache: cache), warn: { Diagnostics.warn($0) })
        let size = base.size
        // The overlay lives elsewhere: its backing file name must not be relative.
        var baseName = base.filename
        if !baseName.hasPrefix("/") && !baseName.contains(":"), let real = realpath(baseName, nil) {
            baseName = String(cString: real)
            free(real)
        }
        let baseFormat = base.driverName
        try base.close()
        let dir = HostEnvironment.get("TMPDIR") ?? "/var/tmp"
        var template = Array("\(dir)/vl.XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw BlockError(.io, "Could not get temporary filename: \(String(cString: strerror(errno)))", errno: errno)
        }
        close(fd)
        let tmp = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
        defer { unlink(tmp) }
        guard let qcow2 = FormatRegistry.driver(named: "qcow2") else {
            throw BlockError(.unsupported, "snapshot=on needs the qcow2 driver", errno: ENOTSUP)
        }
        try ImageCreator.create(filename: tmp, format: "qcow2", size: size, options: CreateOptions(format: qcow2),
                                backingFile: baseName, backingFormat: baseFormat, skipBackingCheck: true, announce: nil)
        return try BlockGraph.open(filename: tmp, format: "qcow2", context: OpenContext(flags: [.readWrite], cache: .unsafe))
    }

    mutating func addBlockdev(_ arg: String, spelled: String) throws {
        var opts: BlockOptions
        do {
            if arg.hasPrefix("{") {
                opts = try BlockOptions.flatten(try JSONValue.parse(arg))
            } else {
                opts = try BlockOptions.parseKeyValue(arg)
            }
        } catch let e as BlockError {
            throw ArgvError(message: "\(spelled) \(arg): \(e.message)")
        }
        guard opts.string("driver") != nil else { throw ArgvError(message: "\(spelled) \(arg): Parameter 'driver' is missing") }
        guard let name = opts.take("node-name")?.description else {
            throw ArgvError(message: "\(spelled) \(arg): Parameter 'node-name' is missing")
        }
        guard !blockdevs.contains(where: { $0.name == name }) else {
            throw ArgvError(message: "\(spelled) \(arg): Duplicate nodes with node-name='\(name)'")
        }
        // A child given as a string that names an earlier -blockdev is a reference to that node
        // ("file": "f0"). The graph opens children from options, so the referenced node's options
        // move under the child's prefix and the standalone node is closed (it must not keep its
        // image locks against its own parent).
        for child in ["file", "backing", "data-file"] {
            guard let ref = opts.string(child), let childOpts = blockdevOptions[ref],
                  let i = blockdevs.firstIndex(where: { $0.name == ref }) else { continue }
            opts.remove(child)
            for (k, v) in childOpts.entries { opts.set("\(child).\(k)", v) }
            try? blockdevs[i].node.close()
            blockdevs.remove(at: i)
        }
        let ownOptions = opts
        let readOnly = (opts.take("read-only").flatMap { BlockOptions.parseBool($0.description) }) ?? false
        let discard = opts.take("discard")?.description
        var cache = CacheMode.writeback
        if let direct = opts.take("cache.direct").flatMap({ BlockOptions.parseBool($0.description) }), direct { cache = .none }
        _ = opts.take("cache.no-flush")
        _ = opts.take("detect-zeroes")
        _ = opts.take("auto-read-only")
        let ctx = OpenContext(flags: readOnly ? [] : [.readWrite], cache: cache)
        do {
            let node = try BlockGraph.open(filename: nil, options: opts, context: ctx, warn: { Diagnostics.warn($0) })
            blockdevs.append((name, node, readOnly, discard == "unmap" || discard == "on"))
            blockdevOptions[name] = ownOptions
        } catch let e as BlockError {
            throw ArgvError(message: "\(spelled) \(arg): \(e.message)" + (e.hint.map { "\n" + $0 } ?? ""))
        }
    }

    /// The drive named by a device's drive= property (a -drive id or a -blockdev node-name).
    mutating func claim(_ name: String, spelled: String, arg: String) throws -> DriveConfig {
        if let i = drives.firstIndex(where: { $0.config.id == name || $0.nodeName == name }) {
            guard !drives[i].claimed else {
                throw ArgvError(message: "\(spelled) \(arg): Drive '\(name)' is already in use by another device")
            }
            guard drives[i].interface == "none" else {
                throw ArgvError(message: "\(spelled) \(arg): Drive '\(name)' is already in use because it has been automatically connected to another device (did you need 'if=none' in the drive options?)")
            }
            drives[i].claimed = true
            return drives[i].config
        }
        if let b = blockdevs.first(where: { $0.name == name }) {
            var dc = DriveConfig(id: "", node: b.node, readOnly: b.readOnly, discard: b.discard)
            dc.nodeName = b.name
            return dc
        }
        throw ArgvError(message: "\(spelled) \(arg): Property 'virtio-blk-device.drive' can't find value '\(name)'")
    }
}
