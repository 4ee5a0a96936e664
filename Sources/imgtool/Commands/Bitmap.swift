// imgtool bitmap: persistent dirty bitmaps (--add [-g], --remove, --clear, --enable, --disable,
// --merge SOURCE [-b FILE [-F FMT]]), applied in the order given, as qemu-img does.
import ImageFormats

private let optAdd: Int32 = 256, optRemove: Int32 = 257, optClear: Int32 = 258, optEnable: Int32 = 259,
            optDisable: Int32 = 260, optMerge: Int32 = 261, optObject: Int32 = 262, optImageOpts: Int32 = 263

func runBitmap(_ args: [String]) throws -> Int32 {
    enum Action { case add, remove, clear, enable, disable, merge(String) }
    var actions: [Action] = []
    var src = ImageSource()
    var granularity: UInt64?
    var sourceFile: String?, sourceFormat: String?
    let (events, operands) = getopt(args, "b:f:F:g:h", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "add", hasArgument: false, code: optAdd),
        LongOption(name: "remove", hasArgument: false, code: optRemove),
        LongOption(name: "clear", hasArgument: false, code: optClear),
        LongOption(name: "enable", hasArgument: false, code: optEnable),
        LongOption(name: "disable", hasArgument: false, code: optDisable),
        LongOption(name: "merge", hasArgument: true, code: optMerge),
        LongOption(name: "granularity", hasArgument: true, code: Character("g").code),
        LongOption(name: "source-file", hasArgument: true, code: Character("b").code),
        LongOption(name: "source-format", hasArgument: true, code: Character("F").code),
    ])
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optAdd: actions.append(.add)
        case optRemove: actions.append(.remove)
        case optClear: actions.append(.clear)
        case optEnable: actions.append(.enable)
        case optDisable: actions.append(.disable)
        case optMerge: actions.append(.merge(v!))
        case optImageOpts: src.imageOpts = true
        case optObject: try createObject(v!)
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "b": sourceFile = v
            case "f": src.format = v
            case "F": sourceFormat = v
            case "g": granularity = try parseSize(v!, name: "granularity")
            default: break
            }
        }
    }
    if actions.isEmpty { throw fail("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge") }
    let hasAdd = actions.contains { if case .add = $0 { return true }; return false }
    let hasMerge = actions.contains { if case .merge = $0 { return true }; return false }
    if granularity != nil && !hasAdd { throw fail("granularity only supported with --add") }
    if sourceFormat != nil && sourceFile == nil { throw fail("-F only supported with -b") }
    if sourceFile != nil && !hasMerge { throw fail("Merge bitmap source file only supported with --merge") }
    guard operands.count == 2 else { throw fail("Expecting filename and bitmap name") }
    let (filename, name) = (operands[0], operands[1])
    let node = try openImage(filename, src, flags: [.readWrite, .noBacking])
    defer { _ = closeImage(node) }
    var source: (any BlockNode)?
    if let f = sourceFile { source = try openImage(f, ImageSource(format: sourceFormat), flags: [.noBacking]) }
    defer { if let s = source { _ = closeImage(s) } }
    for a in actions {
        let op: String
        do {
            guard let bm = node as? any BitmapCapableNode else {
                throw BlockError(.unsupported, "Can't store persistent bitmaps to \(filename)", errno: 95)
            }
            switch a {
            case .add: op = "add"; try bm.addBitmap(name: name, granularity: granularity, enabled: true)
            case .remove: op = "remove"; try bm.removeBitmap(name: name)
            case .clear: op = "clear"; try bm.clearBitmap(name: name)
            case .enable: op = "enable"; try bm.setBitmapEnabled(name: name, true)
            case .disable: op = "disable"; try bm.setBitmapEnabled(name: name, false)
            case .merge(let from):
                op = "merge"
                var other: (any BitmapCapableNode)? = nil
                if let s = source {
                    guard let sb = s as? any BitmapCapableNode else {
                        throw BlockError(.notFound, "Dirty bitmap '\(from)' not found", errno: 2)
                    }
                    other = sb
                }
                try bm.mergeBitmap(into: name, from: from, of: other)
            }
        } catch let e as BlockError {
            let opName: String
            switch a {
            case .add: opName = "add"
            case .remove: opName = "remove"
            case .clear: opName = "clear"
            case .enable: opName = "enable"
            case .disable: opName = "disable"
            case .merge: opName = "merge"
            }
            report(e, prefix: "Operation \(opName) on bitmap \(name) failed: ")
            return 1
        }
        _ = op
    }
    return 0
}
