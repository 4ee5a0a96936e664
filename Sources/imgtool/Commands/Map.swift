// imgtool map: the allocation map, human and JSON, merged as qemu-img merges it.

import ImageFormats

private let optOutput: Int32 = 256, optObject: Int32 = 257, optImageOpts: Int32 = 258

func runMap(_ args: [String]) throws -> Int32 {
    var src = ImageSource()
    var outputArg: String?
    var startOffset: UInt64 = 0
    var maxLength: UInt64?
    let (events, operands) = getopt(args, "f:s:l:hU", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "format", hasArgument: true, code: Character("f").code),
        LongOption(name: "output", hasArgument: true, code: optOutput),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "force-share", hasArgument: false, code: Character("U").code),
        LongOption(name: "start-offset", hasArgument: true, code: Character("s").code),
        LongOption(name: "max-length", hasArgument: true, code: Character("l").code),
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
            case "U": src.forceShare = true
            case "s": startOffset = try parseSize(v!, name: "start offset")
            case "l": maxLength = try parseSize(v!, name: "max length")
            default: break
            }
        }
    }
    guard operands.count == 1 else { throw usageError("Expecting one image file name") }
    let output = try outputArg.map(OutputFormat.parse) ?? .human
    let node = try openImage(operands[0], src, flags: [])
    defer { _ = closeImage(node) }
    var end = node.size
    if let m = maxLength { end = min(startOffset &+ m, end) }
    if output == .human {
        out(padRight("Offset", 16) + padRight("Length", 16) + padRight("Mapped to", 16) + "File")
    } else {
        out("[", terminator: "")
    }
    do {
        try ImageMap.walk(node, start: startOffset, end: end) { e, next in
            switch output {
            case .human:
                if e.data && e.offset == nil {
                    throw fail("File contains external, encrypted or compressed clusters.")
                }
                if e.data && !e.zero {
                    out(padRight(cHex(e.start), 16) + padRight(cHex(e.length), 16) + padRight(cHex(e.offset ?? 0), 16) + (e.filename ?? ""))
                }
                if var n = next, !n.data || n.zero {
                    n.data = false
                    n.zero = true
                    next = n
                }
            case .json:
                var s = "{ \"start\": \(e.start), \"length\": \(e.length), \"depth\": \(e.depth), \"present\": \(e.present), \"zero\": \(e.zero), \"data\": \(e.data), \"compressed\": \(e.compressed)"
                if let o = e.offset { s += ", \"offset\": \(o)" }
                s += "}"
                out(s, terminator: next != nil ? ",\n" : "")
            }
        }
    } catch let e as BlockError {
        throw fail("Could not read file metadata: \(e.message)")
    }
    if output == .json { out("]") }
    return 0
}

/// C's "%#x": 0 prints as "0", anything else with a 0x prefix.
func cHex(_ v: UInt64) -> String { v == 0 ? "0" : "0x" + String(v, radix: 16) }
