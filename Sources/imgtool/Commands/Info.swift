// imgtool info: human and JSON output in QEMU 8.0+'s shape (every node with its children),
// --backing-chain, -U, --image-opts.

import ImageFormats

private let optOutput: Int32 = 256, optBackingChain: Int32 = 257, optObject: Int32 = 258, optImageOpts: Int32 = 259

func runInfo(_ args: [String]) throws -> Int32 {
    var src = ImageSource()
    var output = OutputFormat.human
    var chain = false
    let (events, operands) = getopt(args, "f:hU", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "format", hasArgument: true, code: Character("f").code),
        LongOption(name: "output", hasArgument: true, code: optOutput),
        LongOption(name: "backing-chain", hasArgument: false, code: optBackingChain),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "force-share", hasArgument: false, code: Character("U").code),
    ])
    var outputArg: String?
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optOutput: outputArg = v
        case optBackingChain: chain = true
        case optImageOpts: src.imageOpts = true
        case optObject: try createObject(v!)
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "f": src.format = v
            case "U": src.forceShare = true
            default: break
            }
        }
    }
    guard operands.count == 1 else { throw usageError("Expecting one image file name") }
    if let o = outputArg { output = try OutputFormat.parse(o) }

    // Collect one BlockGraphInfo per image of the chain (each opened without its backing file).
    var infos: [JSONValue] = []
    var seen: Set<String> = []
    var next: String? = operands[0]
    var first = true
    while let filename = next {
        if seen.contains(filename) { throw fail("Backing file '\(filename)' creates an infinite loop.") }
        seen.insert(filename)
        let node = try openImage(filename, src, flags: [.noBacking, .noIO])
        let info = ImageInfo.graph(node)
        _ = closeImage(node)
        infos.append(info)
        next = nil
        if first { src.format = nil; src.imageOpts = false; first = false }
        if chain {
            if let full = info["full-backing-filename"]?.stringValue { next = full }
            src.format = info["backing-filename-format"]?.stringValue
        }
    }
    switch output {
    case .json:
        out(chain ? JSONValue.array(infos).pretty() : infos[0].pretty())
    case .human:
        for (i, info) in infos.enumerated() {
            if i > 0 { out("") }
            dumpHuman(info, indentation: 0, path: "/")
        }
    }
    return 0
}

/// QEMU's dump_human_image_info: the node, then each child under "Child node '/name':".
func dumpHuman(_ info: JSONValue, indentation: Int, path: String) {
    let children = info["children"]?.arrayValue ?? []
    dumpNode(info, indentation: indentation, isProtocol: indentation > 0 && children.isEmpty)
    let pad = String(repeating: " ", count: indentation * 4)
    for c in children {
        let name = c["name"]?.stringValue ?? ""
        out("\(pad)Child node '\(path)\(name)':")
        if let i = c["info"] { dumpHuman(i, indentation: indentation + 1, path: "\(path)\(name)/") }
    }
}

/// QEMU's bdrv_node_info_dump.
func dumpNode(_ info: JSONValue, indentation: Int, isProtocol: Bool) {
    let pad = String(repeating: " ", count: indentation * 4)
    let vsize = UInt64(info["virtual-size"]?.int64Value ?? 0)
    let dsize = info["actual-size"]?.int64Value.map { sizeToString(UInt64($0)) } ?? "unavailable"
    out("\(pad)\(isProtocol ? "filename" : "image"): \(info["filename"]?.stringValue ?? "")")
    out("\(pad)\(isProtocol ? "protocol type" : "file format"): \(info["format"]?.stringValue ?? "")")
    out("\(pad)\(isProtocol ? "file length" : "virtual size"): \(sizeToString(vsize)) (\(vsize) bytes)")
    out("\(pad)disk size: \(dsize)")
    if info["encrypted"]?.boolValue == true { out("\(pad)encrypted: yes") }
    if let cs = info["cluster-size"]?.int64Value { out("\(pad)cluster_size: \(cs)") }
    if info["dirty-flag"]?.boolValue == true { out("\(pad)cleanly shut down: no") }
    if let b = info["backing-filename"]?.stringValue {
        var line = "\(pad)backing file: \(b)"
        if let full = info["full-backing-filename"]?.stringValue {
            if full != b { line += " (actual path: \(full))" }
        } else {
            line += " (cannot determine actual path)"
        }
        out(line)
        if let f = info["backing-filename-format"]?.stringValue { out("\(pad)backing file format: \(f)") }
    }
    if let snaps = info["snapshots"]?.arrayValue {
        out("\(pad)Snapshot list:")
        out(pad + snapshotHeader())
        for s in snaps { out(pad + snapshotLine(s)) }
    }
    if let fs = info["format-specific"], let data = fs["data"], !isEmptyDump(data) {
        out("\(pad)Format specific information:")
        dumpObject(data, indentation: indentation + 1)
    }
}

func isEmptyDump(_ v: JSONValue) -> Bool {
    switch v {
    case .object(let m): return m.isEmpty
    case .array(let a): return a.isEmpty
    default: return false
    }
}

/// QEMU's dump_qobject / dump_qdict / dump_qlist.
func dumpObject(_ v: JSONValue, indentation: Int) {
    let pad = String(repeating: " ", count: indentation * 4)
    func scalar(_ v: JSONValue) -> String? {
        switch v {
        case .string(let s): return s
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .uint(let u): return String(u)
        case .double(let d): return String(d)
        case .null: return "null"
        default: return nil
        }
    }
    switch v {
    case .object(let members):
        for (k, val) in members {
            let key = String(k.map { $0 == "-" ? " " : $0 })
            if let s = scalar(val) { out("\(pad)\(key): \(s)") } else {
                out("\(pad)\(key):")
                dumpObject(val, indentation: indentation + 1)
            }
        }
    case .array(let items):
        for (i, val) in items.enumerated() {
            if let s = scalar(val) { out("\(pad)[\(i)]: \(s)") } else {
                out("\(pad)[\(i)]:")
                dumpObject(val, indentation: indentation + 1)
            }
        }
    default:
        if let s = scalar(v) { out(pad + s) }
    }
}

func snapshotHeader() -> String {
    padRight("ID", 10) + padRight("TAG", 17) + padLeft("VM SIZE", 8) + padLeft("DATE", 20) + padLeft("VM CLOCK", 13) + padLeft("ICOUNT", 11)
}

/// QEMU's bdrv_snapshot_dump for one snapshot (local time, as QEMU prints it).
func snapshotLine(_ s: JSONValue) -> String {
    let clockSec = UInt64(s["vm-clock-sec"]?.int64Value ?? 0)
    let clockNsec = UInt64(s["vm-clock-nsec"]?.int64Value ?? 0)
    let total = clockSec * 1_000_000_000 + clockNsec
    let secs = total / 1_000_000_000
    let clock = cFormat("%02d:%02d:%02d.%03d", Int(secs / 3600), Int((secs / 60) % 60), Int(secs % 60), Int((total / 1_000_000) % 1000))
    let size = sizeToString(UInt64(s["vm-state-size"]?.int64Value ?? 0))
    let date = formatLocalDate(Int(s["date-sec"]?.int64Value ?? 0))
    let icount = s["icount"]?.int64Value.map { String($0) } ?? ""
    return padRight(s["id"]?.stringValue ?? "", 9) + " " + padRight(s["name"]?.stringValue ?? "", 16) + " " +
        padLeft(size, 8) + padLeft(date, 20) + padLeft(clock, 13) + padLeft(icount, 11)
}

func padRight(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
func padLeft(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
