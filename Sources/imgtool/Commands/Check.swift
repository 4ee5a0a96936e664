// imgtool check: human and JSON reports, -r leaks|all, qemu-img's exit codes
// (0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 format cannot be checked).

import ImageFormats

private let optOutput: Int32 = 256, optObject: Int32 = 257, optImageOpts: Int32 = 258

func runCheck(_ args: [String]) throws -> Int32 {
    var src = ImageSource()
    var outputArg: String?
    var fix: CheckFix = []
    var quiet = false
    var cache = "writeback"
    var flags: OpenFlags = []
    let (events, operands) = getopt(args, "hf:r:T:qU", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "format", hasArgument: true, code: Character("f").code),
        LongOption(name: "repair", hasArgument: true, code: Character("r").code),
        LongOption(name: "output", hasArgument: true, code: optOutput),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "force-share", hasArgument: false, code: Character("U").code),
    ])
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optOutput: outputArg = v
        case optImageOpts: src.imageOpts = true
        case optObject: try createObject(v!)
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "f": src.format = v
            case "r":
                flags.insert(.readWrite)
                switch v! {
                case "leaks": fix = .leaks
                case "all": fix = [.leaks, .errors]
                default: throw usageError("Unknown option value for -r (expecting 'leaks' or 'all'): \(v!)")
                }
            case "T": cache = v!
            case "q": quiet = true
            case "U": src.forceShare = true
            default: break
            }
        }
    }
    guard operands.count == 1 else { throw usageError("Expecting one image file name") }
    let filename = operands[0]
    let output = try outputArg.map(OutputFormat.parse) ?? .human
    guard let mode = try? CacheMode.parse(cache) else { throw fail("Invalid source cache option: \(cache)") }
    src.cache = mode
    flags.insert(.checkRepair)
    let node = try openImage(filename, src, flags: flags)
    defer { _ = closeImage(node) }
    guard let checkable = node as? any CheckableNode else {
        printError("This image format does not support checks")
        return 63
    }
    let log: (String) -> Void = { line in printStderr(line) }
    var result: CheckResult
    do {
        result = try checkable.check(fix: fix, log: log)
        if result.corruptionsFixed > 0 || result.leaksFixed > 0 {
            if output == .human && !quiet {
                out("The following inconsistencies were found and repaired:\n\n    \(result.leaksFixed) leaked clusters\n    \(result.corruptionsFixed) corruptions\n\nDouble checking the fixed image now...")
            }
            var again = try checkable.check(fix: [], log: log)
            again.leaksFixed = result.leaksFixed
            again.corruptionsFixed = result.corruptionsFixed
            result = again
        }
    } catch let e as BlockError where e.errno == 95 /* ENOTSUP: e.g. vdi refuses -r, as in QEMU */ {
        printError("This image format does not support checks")
        return 63
    } catch let e as BlockError {
        Stdout.shared.flush()
        printError("Check failed: \(BlockError.strerror(e.errno))")
        return 1
    }
    if !quiet {
        switch output {
        case .human: printHumanCheck(result)
        case .json: out(checkJSON(result, filename: filename, format: node.driverName).pretty())
        }
    }
    if result.checkErrors > 0 {
        Stdout.shared.flush()
        printError("Check failed")
        return 1
    }
    if result.corruptions > 0 { return 2 }
    if result.leaks > 0 { return 3 }
    return 0
}

func printHumanCheck(_ r: CheckResult) {
    if r.corruptions == 0 && r.leaks == 0 && r.checkErrors == 0 {
        out("No errors were found on the image.")
    } else {
        if r.corruptions > 0 {
            out("\n\(r.corruptions) errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.")
        }
        if r.leaks > 0 {
            out("\n\(r.leaks) leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.")
        }
        if r.checkErrors > 0 {
            out("\n\(r.checkErrors) internal errors have occurred during the check.")
        }
    }
    if r.totalClusters != 0 && r.allocatedClusters != 0 {
        let a = Double(r.allocatedClusters)
        out(cFormat("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters",
                   r.allocatedClusters, r.totalClusters, a * 100 / Double(r.totalClusters),
                   Double(r.fragmentedClusters) * 100 / a, Double(r.compressedClusters) * 100 / a))
    }
    if r.imageEndOffset != 0 { out("Image end offset: \(r.imageEndOffset)") }
}

/// QEMU's ImageCheck (optional members only when non-zero).
func checkJSON(_ r: CheckResult, filename: String, format: String) -> JSONValue {
    var m: [(String, JSONValue)] = [("filename", .string(filename)), ("format", .string(format)), ("check-errors", .int(r.checkErrors))]
    if r.imageEndOffset != 0 { m.append(("image-end-offset", .uint(r.imageEndOffset))) }
    if r.corruptions != 0 { m.append(("corruptions", .int(r.corruptions))) }
    if r.leaks != 0 { m.append(("leaks", .int(r.leaks))) }
    if r.corruptionsFixed != 0 { m.append(("corruptions-fixed", .int(r.corruptionsFixed))) }
    if r.leaksFixed != 0 { m.append(("leaks-fixed", .int(r.leaksFixed))) }
    if r.totalClusters != 0 { m.append(("total-clusters", .uint(r.totalClusters))) }
    if r.allocatedClusters != 0 { m.append(("allocated-clusters", .uint(r.allocatedClusters))) }
    if r.fragmentedClusters != 0 { m.append(("fragmented-clusters", .uint(r.fragmentedClusters))) }
    if r.compressedClusters != 0 { m.append(("compressed-clusters", .uint(r.compressedClusters))) }
    return .qdict(m)
}
