// imgtool rebase: change an image's backing file, safely (copying what would change) or with -u
// just rewriting the name. -b "" removes the backing file.
import ImageFormats

private let optObject: Int32 = 256, optImageOpts: Int32 = 257

func runRebase(_ args: [String]) throws -> Int32 {
    var src = ImageSource()
    var newBase: String?
    var newFormat: String?
    var unsafe = false, progress = false, quiet = false, compress = false
    var cache = "writeback", srcCache = "writeback"
    let (events, operands) = getopt(args, "hf:F:B:b:upt:T:qUc", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "force-share", hasArgument: false, code: Character("U").code),
        LongOption(name: "compress", hasArgument: false, code: Character("c").code),
    ])
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optImageOpts: src.imageOpts = true
        case optObject: try createObject(v!)
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "f": src.format = v
            case "F", "B": newFormat = v     // QEMU 10.1 spells it -B
            case "b": newBase = v
            case "u": unsafe = true
            case "p": progress = true
            case "t": cache = v!
            case "T": srcCache = v!
            case "q": quiet = true
            case "U": src.forceShare = true
            case "c": compress = true
            default: break
            }
        }
    }
    if quiet { progress = false }
    guard operands.count == 1 else { throw usageError("Expecting one image file name") }
    if !unsafe && newBase == nil { throw usageError("Must specify backing file (-b) or use unsafe mode (-u)") }
    let filename = operands[0]
    guard let mode = try? CacheMode.parse(cache) else { throw fail("Invalid cache option: \(cache)") }
    guard (try? CacheMode.parse(srcCache)) != nil else { throw fail("Invalid source cache option: \(srcCache)") }
    let forceShare = src.forceShare
    src.forceShare = false
    src.cache = mode
    let image = try openImage(filename, src, flags: unsafe ? [.readWrite, .noBacking] : [.readWrite])
    defer { _ = closeImage(image) }
    if compress && !(image is Qcow2Node) { throw fail("Compression not supported for this file format") }
    if let f = newFormat, FormatRegistry.driver(named: f) == nil { throw fail("Invalid format name: '\(f)'") }

    if !unsafe {
        let oldBacking = image.backing
        var newNode: (any BlockNode)? = nil
        var opened: (any BlockNode)? = nil
        var inChain = false
        if let nb = newBase, !nb.isEmpty {
            if let n = findInChain(image, nb, topFilename: image.filename) {
                newNode = n
                inChain = true
            } else {
                let path = BlockGraph.resolveBackingPath(nb, relativeTo: image.filename)
                var o = BlockOptions()
                if let f = newFormat { o.set("driver", f) }
                var flags: OpenFlags = []
                if forceShare { flags.insert(.forceShare) }
                do {
                    opened = try BlockGraph.open(filename: path, options: o, context: OpenContext(flags: flags))
                } catch let e as BlockError {
                    report(e, prefix: "Could not open new backing file '\(nb)': ")
                    return 1
                }
                newNode = opened
            }
        }
        defer { if let o = opened { _ = closeImage(o) } }
        let printer = progress ? ProgressPrinter() : nil
        printer?.update(0)
        do {
            try RebaseJob.copyDifferences(image: image, oldBacking: oldBacking, newBacking: newNode, newIsInChain: inChain,
                                          compress: compress, progress: printer.map { p in { p.update($0) } })
        } catch let e as BlockError {
            if progress { out("") }
            throw fail("Error while writing to COW image: \(BlockError.strerror(e.errno))")
        }
        if progress { printer?.update(1); out("") }
    }
    let target = (newBase?.isEmpty ?? true) ? nil : newBase
    guard let changer = image as? any BackingChangeableNode else {
        throw fail("Could not change the backing file to '\(newBase ?? "")': Operation not supported")
    }
    if target != nil && newFormat == nil {
        throw fail("Could not change the backing file to '\(target!)': backing format must be specified")
    }
    do {
        try changer.changeBackingFile(target, format: newFormat)
    } catch let e as BlockError {
        if e.errno == 28 { throw fail("Could not change the backing file to '\(newBase ?? "")': No space left in the file header") }
        throw fail("Could not change the backing file to '\(newBase ?? "")': \(BlockError.strerror(e.errno))")
    }
    return 0
}
