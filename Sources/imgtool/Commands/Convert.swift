// imgtool convert: qemu-img convert's options, checks and messages on top of the library's
// Converter (Jobs/Convert.swift), which does the sparse, parallel copy.

import ImageFormats

private let optObject: Int32 = 256, optImageOpts: Int32 = 257, optTargetImageOpts: Int32 = 258,
            optTargetIsZero: Int32 = 259, optSalvage: Int32 = 260, optBitmaps: Int32 = 261, optSkipBroken: Int32 = 262

func runConvert(_ args: [String]) throws -> Int32 {
    var src = ImageSource()
    var outFormat: String?
    var backingFile: String?
    var backingFormat: String?
    var optionStrings: [String] = []
    var snapshot: String?
    var conv = ConvertOptions()
    var progress = false
    var quiet = false
    var skipCreate = false
    var targetCache = "unsafe"
    var srcCache = "writeback"
    var copyOffload = false
    var targetImageOpts = false
    var targetIsZero = false
    var copyBitmaps = false, skipBroken = false
    let (events, operands) = getopt(args, "hf:O:B:b:F:Cco:l:S:pt:T:qnm:WUr:", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "target-image-opts", hasArgument: false, code: optTargetImageOpts),
        LongOption(name: "target-is-zero", hasArgument: false, code: optTargetIsZero),
        LongOption(name: "salvage", hasArgument: false, code: optSalvage),
        LongOption(name: "bitmaps", hasArgument: false, code: optBitmaps),
        LongOption(name: "skip-broken-bitmaps", hasArgument: false, code: optSkipBroken),
        LongOption(name: "force-share", hasArgument: false, code: Character("U").code),
    ])
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optImageOpts: src.imageOpts = true
        case optTargetImageOpts: targetImageOpts = true
        case optTargetIsZero: targetIsZero = true
        case optBitmaps: copyBitmaps = true
        case optSkipBroken: skipBroken = true
        case optSalvage: conv.salvage = true
        case optObject: try createObject(v!)
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "f": src.format = v
            case "O": outFormat = v
            case "B", "b": backingFile = v       // QEMU 10.1 renamed -B to -b
            case "F": backingFormat = v
            case "C": copyOffload = true; conv.copyOffload = true
            case "c": conv.compress = true
            case "o":
                try validateOptionList(v!)
                optionStrings.append(v!)
            case "l": snapshot = v
            case "S":
                guard let s = SizeParser.parse(v!) else {
                    printError("Invalid buffer size for sparse output specified. You may use k, M, G, T, P or E suffixes for")
                    printError("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
                    throw ExitStatus(code: 1)
                }
                guard s % 512 == 0, s <= 16 << 20 else {
                    throw fail("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).")
                }
                conv.sparseSize = s
            case "p": progress = true
            case "t": targetCache = v!
            case "T": srcCache = v!
            case "q": quiet = true
            case "n": skipCreate = true
            case "m":
                guard let m = Int(v!), m >= 1, m <= 16 else {
                    throw fail("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16")
                }
                conv.workers = m
            case "W": conv.outOfOrder = true
            case "U": src.forceShare = true
            case "r":
                guard let r = SizeParser.parse(v!) else { throw fail("Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for") }
                conv.rateLimit = r
            default: break
            }
        }
    }
    if quiet { progress = false }
    if !quiet { conv.warn = { printError("warning: " + $0) } }
    if targetIsZero && !skipCreate { throw fail("--target-is-zero requires use of -n flag") }
    if copyOffload && conv.compress { throw fail("Cannot enable copy offloading when -c is used") }
    guard operands.count >= 2 else {
        if operands.count == 1, !optionStrings.isEmpty, CreateOptions.asksForHelp(optionStrings.joined(separator: ",")) {
            return try printCreateOptionHelp(format: outFormat ?? "raw", filename: operands[0])
        }
        throw fail("Must specify image file name")
    }
    let outFilename = operands.last!
    let sourceNames = Array(operands.dropLast())
    let format = outFormat ?? "raw"
    if !optionStrings.isEmpty && CreateOptions.asksForHelp(optionStrings.joined(separator: ",")) {
        return try printCreateOptionHelp(format: format, filename: outFilename)
    }
    if skipCreate && !optionStrings.isEmpty { throw fail("-o has no effect when skipping image creation") }
    if sourceNames.count > 1 && snapshot != nil { throw fail("No support for concatenating multiple snapshot") }
    if copyBitmaps && sourceNames.count > 1 { throw fail("Copying bitmaps only possible with single source") }
    if skipBroken && !copyBitmaps { throw fail("--skip-broken-bitmaps requires --bitmaps") }
    guard let srcMode = try? CacheMode.parse(srcCache) else { throw fail("Invalid source cache option: \(srcCache)") }
    guard let dstMode = try? CacheMode.parse(targetCache) else { throw fail("Invalid cache option: \(targetCache)") }
    src.cache = srcMode

    // Sources: read-only, not sharing writes (qemu-img convert's BDRV_O_NO_SHARE).
    var sources: [any BlockNode] = []
    defer { for s in sources { _ = closeImage(s) } }
    for name in sourceNames {
        var extra = BlockOptions()
        if let s = snapshot {
            let parsed = try? BlockOptions.parseKeyValue(s)
            extra.set("load-snapshot", parsed?.string("snapshot.id") ?? parsed?.string("snapshot.name") ?? s)
        }
        do {
            sources.append(try openSource(name, src, extra))
        }
    }
    let total = sources.reduce(0) { $0 + $1.size }

    // Target.
    var createOpts: CreateOptions? = nil
    if !skipCreate {
        guard let driver = FormatRegistry.driver(named: format) else { throw fail("Unknown file format '\(format)'") }
        var opts = CreateOptions(format: driver)
        do {
            for s in optionStrings { try opts.parse(s) }
            if let b = backingFile {
                guard opts.specs.contains(where: { $0.name == "backing_file" }) else {
                    throw BlockError(.invalidArgument, "Backing file not supported for file format '\(format)'", errno: 22)
                }
                try opts.set("backing_file", b)
            }
            if let bf = backingFormat { try opts.set("backing_fmt", bf) }
        } catch let e as BlockError {
            report(e)
            return 1
        }
        if opts.value("backing_file") != nil && opts.value("backing_fmt") == nil {
            throw fail("Use of backing file requires explicit backing format")
        }
        if conv.compress && format != "qcow2" { throw fail("Compression not supported for this file format") }
        opts.setNumber("size", total)
        createOpts = opts
        do {
            try driver.create(filename: outFilename, size: total, options: opts.blockOptions)
        } catch let e as BlockError {
            report(e, prefix: "\(outFilename): error while converting \(format): ")
            return 1
        }
    }
    var targetSrc = ImageSource(format: targetImageOpts ? nil : format, imageOpts: targetImageOpts, forceShare: false, cache: dstMode)
    if targetImageOpts { targetSrc.format = nil }
    let target = try openImage(outFilename, targetSrc, flags: [.readWrite, .noBacking])
    defer { _ = closeImage(target) }
    if conv.compress && !(target is Qcow2Node) { throw fail("Compression not supported for this file format") }
    if skipCreate && target.size < total { throw fail("output file is smaller than input file") }

    conv.targetHasBacking = createOpts?.value("backing_file") != nil
    conv.targetIsZero = targetIsZero || (!skipCreate && !conv.targetHasBacking && target.hasZeroInit && conv.sparseSize != 0)
    if progress {
        let last = ProgressPrinter()
        conv.progress = { last.update($0) }
        last.update(0)
    }
    do {
        try Converter(sources: sources, target: target, options: conv).run()
        if copyBitmaps { try copyPersistentBitmaps(from: sources[0], to: target, skipBroken: skipBroken) }
        try target.flush()
    } catch let e as ConvertError {
        if progress { out("") }
        throw fail(e.message)
    } catch let e as BlockError {
        if progress { out("") }
        throw fail(e.message)
    }
    if progress { out("", terminator: "\n") }
    return 0
}

private func openSource(_ name: String, _ src: ImageSource, _ extra: BlockOptions) throws -> any BlockNode {
    if src.imageOpts && src.format != nil { throw fail("--image-opts and --format are mutually exclusive") }
    var flags: OpenFlags = [.noShare]
    if src.forceShare { flags.insert(.forceShare) }
    let ctx = OpenContext(flags: flags, cache: src.cache)
    do {
        if src.imageOpts {
            return try BlockGraph.open(filename: nil, options: try BlockOptions.parseKeyValue(name).merging(extra), context: ctx,
                                       warn: { printStderr($0) })
        }
        return try BlockGraph.open(filename: name, format: src.format, options: extra, context: ctx, warn: { printStderr($0) })
    } catch let e as BlockError {
        if e.message.hasPrefix("Failed to load snapshot") { throw fail(e.message) }
        report(e, prefix: "Could not open '\(name)': ")
        throw ExitStatus(code: 1)
    }
}

/// qemu-img's progress line: "    (xx.xx/100%)\r", printed when it moves by at least 1%.
final class ProgressPrinter: @unchecked Sendable {
    private let lock = Monitor()
    private var last = -1.0
    func update(_ fraction: Double) {
        lock.locked { update(locked: fraction) }
    }

    private func update(locked fraction: Double) {
        let pct = fraction * 100
        guard pct - last >= 1 || (pct >= 100 && last < 100) || last < 0 else { return }
        last = pct
        out(cFormat("    (%3.2f/100%%)\r", pct), terminator: "")
        Stdout.shared.flush()
    }
}

/// QEMU's convert_copy_bitmaps: every persistent bitmap of the source, with its granularity,
/// enabled state and bits, into the target.
private func copyPersistentBitmaps(from source: any BlockNode, to target: any BlockNode, skipBroken: Bool) throws {
    guard let src = source as? Qcow2Node else { return }
    guard let dst = target as? any BitmapCapableNode else { throw fail("Target does not support bitmaps") }
    for b in src.persistentBitmaps {
        let contents: (granularity: UInt64, words: [UInt64], enabled: Bool)
        do {
            contents = try src.bitmapContents(b.name)
        } catch {
            if skipBroken {
                printError("warning: Skipping inconsistent bitmap '\(b.name)'")
                continue
            }
            printError("Cannot copy inconsistent bitmap '\(b.name)'")
            printStderr("Try --skip-broken-bitmaps, or use '\(programName) bitmap --remove' to delete it")
            throw ExitStatus(code: 1)
        }
        do {
            try dst.importBitmap(name: b.name, granularity: contents.granularity, enabled: contents.enabled, words: contents.words)
        } catch let e as BlockError {
            report(e, prefix: "Failed to add bitmap \(b.name): ")
            throw ExitStatus(code: 1)
        }
    }
}
