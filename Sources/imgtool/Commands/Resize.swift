// imgtool resize: grow, shrink with --shrink, relative +N/-N, --preallocation, as qemu-img.
import ImageFormats

private let optObject: Int32 = 256, optImageOpts: Int32 = 257, optPrealloc: Int32 = 258, optShrink: Int32 = 259

func runResize(_ argsIn: [String]) throws -> Int32 {
    // The size is taken off the end first, so that "-1M" is not read as an option.
    guard argsIn.count >= 3 else { throw usageError("Not enough arguments") }
    var args = argsIn
    var sizeArg = args.removeLast()
    var src = ImageSource()
    var quiet = false
    var prealloc: Preallocation = .off
    var shrink = false
    let (events, operands) = getopt(args, "f:hqU", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "preallocation", hasArgument: true, code: optPrealloc),
        LongOption(name: "shrink", hasArgument: false, code: optShrink),
    ])
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optImageOpts: src.imageOpts = true
        case optObject: try createObject(v!)
        case optShrink: shrink = true
        case optPrealloc:
            guard let p = Preallocation(rawValue: v!) else { throw fail("Invalid preallocation mode '\(v!)'") }
            prealloc = p
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "f": src.format = v
            case "q": quiet = true
            case "U": src.forceShare = true
            default: break
            }
        }
    }
    guard operands.count == 1 else { throw usageError("Expecting image file name and size") }
    var relative = 0
    if sizeArg.hasPrefix("+") { relative = 1; sizeArg.removeFirst() }
    else if sizeArg.hasPrefix("-") { relative = -1; sizeArg.removeFirst() }
    guard let n = SizeParser.parse(sizeArg) else {
        throw fail("Parameter 'size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.")
    }
    let node = try openImage(operands[0], src, flags: [.readWrite, .resize])
    defer { _ = closeImage(node) }
    let current = node.size
    let total: Int64
    switch relative {
    case 1: total = Int64(clamping: current) &+ Int64(clamping: n)
    case -1: total = Int64(clamping: current) - Int64(clamping: n)
    default: total = Int64(clamping: n)
    }
    if total <= 0 { throw fail("New image size must be positive") }
    if UInt64(total) <= current && prealloc != .off { throw fail("Preallocation can only be used for growing images") }
    if UInt64(total) < current && !shrink {
        printError("Use the --shrink option to perform a shrink operation.")
        printError("warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.")
        return 1
    }
    do {
        try node.truncate(to: UInt64(total), preallocation: prealloc, exact: true)
    } catch let e as BlockError {
        report(e)
        return 1
    }
    if !quiet { out("Image resized.") }
    return 0
}
