// imgtool amend: change format options of an existing image (qemu-img amend).
import ImageFormats

private let optObject: Int32 = 256, optImageOpts: Int32 = 257, optForce: Int32 = 258

func runAmend(_ args: [String]) throws -> Int32 {
    var src = ImageSource()
    var optionStrings: [String] = []
    var progress = false, quiet = false, force = false
    var cache = "writeback"
    let (events, operands) = getopt(args, "ho:f:t:pqU", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "force", hasArgument: false, code: optForce),
    ])
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optImageOpts: src.imageOpts = true
        case optForce: force = true
        case optObject: try createObject(v!)
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "o":
                try validateOptionList(v!)
                optionStrings.append(v!)
            case "f": src.format = v
            case "t": cache = v!
            case "p": progress = true
            case "q": quiet = true
            case "U": src.forceShare = true
            default: break
            }
        }
    }
    _ = progress; _ = quiet
    guard !optionStrings.isEmpty else { throw usageError("Must specify options (-o)") }
    let joined = optionStrings.joined(separator: ",")
    if let f = src.format, CreateOptions.asksForHelp(joined) { return try printAmendHelp(f) }
    guard operands.count == 1 else { throw fail("Expecting one image file name") }
    guard let mode = try? CacheMode.parse(cache) else { throw fail("Invalid cache option: \(cache)") }
    src.cache = mode
    src.forceShare = false
    let node = try openImage(operands[0], src, flags: [.readWrite])
    defer { _ = closeImage(node) }
    if CreateOptions.asksForHelp(joined) { return try printAmendHelp(node.driverName) }
    guard let amendable = node as? any AmendableNode, node.driverName == "qcow2" else {
        throw fail("Format driver '\(node.driverName)' does not support option amendment")
    }
    var opts = CreateOptions(format: "qcow2", specs: Qcow2Format.amendOptions)
    do {
        for s in optionStrings { try opts.parse(s) }
    } catch var e as BlockError {
        var create = CreateOptions(format: Qcow2Format.self)
        if (try? optionStrings.forEach { try create.parse($0) }) != nil {
            e.hint = "This option is only supported for image creation"
        }
        report(e)
        return 1
    }
    // Only the options the user named are changed.
    var given = BlockOptions()
    for (k, v) in opts.blockOptions.entries where opts.has(k) { given.set(k, v) }
    do {
        try amendable.amend(options: given, force: force)
    } catch let e as BlockError {
        report(e)
        return 1
    }
    return 0
}

private func printAmendHelp(_ format: String) throws -> Int32 {
    guard format == "qcow2" else { throw fail("Format driver '\(format)' does not support option amendment") }
    out("Amend options for '\(format)':")
    for l in CreateOptions(format: format, specs: Qcow2Format.amendOptions).helpLines { out(l) }
    return 0
}
