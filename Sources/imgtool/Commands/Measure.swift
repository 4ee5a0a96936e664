// imgtool measure: required and fully allocated sizes for a new image, human and JSON.

import ImageFormats

private let optImageOpts: Int32 = 256, optObject: Int32 = 257, optOutput: Int32 = 258, optSize: Int32 = 259

func runMeasure(_ args: [String]) throws -> Int32 {
    var src = ImageSource()
    var outFormat = "raw"
    var optionStrings: [String] = []
    var snapshot: String?
    var size: UInt64?
    var outputArg: String?
    let (events, operands) = getopt(args, "hf:O:o:l:U", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "output", hasArgument: true, code: optOutput),
        LongOption(name: "size", hasArgument: true, code: optSize),
        LongOption(name: "force-share", hasArgument: false, code: Character("U").code),
    ])
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optImageOpts: src.imageOpts = true
        case optObject: try createObject(v!)
        case optOutput: outputArg = v
        case optSize: size = try parseSize(v!, name: "image size")
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "f": src.format = v
            case "O": outFormat = v!
            case "o":
                try validateOptionList(v!)
                optionStrings.append(v!)
            case "l": snapshot = v
            case "U": src.forceShare = true
            default: break
            }
        }
    }
    let filename = operands.first
    if filename == nil && (src.imageOpts || src.format != nil || snapshot != nil) {
        throw fail("--image-opts, -f, and -l require a filename argument.")
    }
    if filename != nil && size != nil { throw fail("--size N cannot be used together with a filename.") }
    if filename == nil && size == nil { throw fail("Either --size N or one filename must be specified.") }
    if operands.count > 1 { throw fail("At most one filename argument is allowed.") }
    let output = try outputArg.map(OutputFormat.parse) ?? .human

    var source: (any BlockNode)?
    defer { if let s = source { _ = closeImage(s) } }
    if let f = filename {
        var extra = BlockOptions()
        if let s = snapshot { extra.set("load-snapshot", s) }
        source = try openImage(f, src, flags: [], options: extra)
    }
    guard let driver = FormatRegistry.driver(named: outFormat) else { throw fail("Unknown file format '\(outFormat)'") }
    var opts = CreateOptions(format: driver)
    do {
        for s in optionStrings { try opts.parse(s) }
    } catch let e as BlockError {
        report(e)
        throw fail("Invalid options for file format '\(outFormat)'")
    }
    if let s = size { opts.setNumber("size", s) }
    let r: MeasureResult
    do {
        r = try Measure.run(format: outFormat, options: opts, source: source)
    } catch let e as BlockError {
        report(e)
        return 1
    }
    switch output {
    case .human:
        out("required size: \(r.required)")
        out("fully allocated size: \(r.fullyAllocated)")
        if let b = r.bitmaps { out("bitmaps size: \(b)") }
    case .json:
        var m: [(String, JSONValue)] = [("required", .uint(r.required)), ("fully-allocated", .uint(r.fullyAllocated))]
        if let b = r.bitmaps { m.append(("bitmaps", .uint(b))) }
        out(JSONValue.qdict(m).pretty())
    }
    return 0
}
