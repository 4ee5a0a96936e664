// imgtool commit: merge an image into its backing file (or a base further down with -b), grow the
// base when the top is larger (B2), empty the top unless -d or -b. The copying is the library's
// CommitJob, the same engine a running VM's block-commit uses.
import ImageFormats

private let optObject: Int32 = 256, optImageOpts: Int32 = 257

/// The node of `top`'s backing chain that `name` designates (QEMU's bdrv_find_backing_image):
/// the recorded backing name, or the same file under another path.
func findInChain(_ top: any BlockNode, _ name: String, topFilename: String) -> (any BlockNode)? {
    let wanted = [FileIdentity(path: name), FileIdentity(path: BlockGraph.resolveBackingPath(name, relativeTo: topFilename))]
    var node = top
    while let next = node.backing {
        if node.recordedBacking?.name == name { return next }
        if let id = FileIdentity(path: next.filename), wanted.contains(id) { return next }
        node = next
    }
    return nil
}

func runCommit(_ args: [String]) throws -> Int32 {
    var src = ImageSource()
    var base: String?
    var drop = true
    var progress = false, quiet = false
    var cache = "writeback"
    var rate: UInt64?
    let (events, operands) = getopt(args, "f:ht:b:dpqr:", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
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
            case "t": cache = v!
            case "b": base = v; drop = false    // -b implies -d: the top stays valid
            case "d": drop = false
            case "p": progress = true
            case "q": quiet = true
            case "r":
                guard let r = SizeParser.parse(v!) else { throw fail("Invalid rate limit specified") }
                rate = r
            default: break
            }
        }
    }
    if quiet { progress = false }
    guard operands.count == 1 else { throw usageError("Expecting one image file name") }
    let filename = operands[0]
    guard let mode = try? CacheMode.parse(cache) else { throw fail("Invalid cache option: \(cache)") }
    src.cache = mode

    // Find the base with the chain opened read-only, then reopen with the base writable.
    var baseID: FileIdentity?
    do {
        let probe = try openImage(filename, src, flags: [.forceShare])
        defer { _ = closeImage(probe) }
        let b: (any BlockNode)?
        if let name = base {
            b = findInChain(probe, name, topFilename: probe.filename)
            guard b != nil else { throw fail("Did not find '\(name)' in the backing chain of '\(filename)'") }
        } else {
            b = probe.backing
            guard b != nil else { throw fail("Image does not have a backing file") }
        }
        baseID = FileIdentity(path: b!.filename)
    }
    var ctxSource = src
    ctxSource.forceShare = false
    let top: any BlockNode
    do {
        top = try openWritableChain(filename, ctxSource, writable: baseID)
    }
    defer { _ = closeImage(top) }
    guard let baseNode = chainNode(top, identity: baseID) else { throw fail("Image does not have a backing file") }
    var opts = CommitOptions()
    opts.rateLimit = rate
    let printer = progress ? ProgressPrinter() : nil
    printer?.update(0)
    if let p = printer { opts.progress = { p.update($0) } }
    do {
        try CommitJob.run(top: top, base: baseNode, options: opts)
        if drop {
            guard let e = top as? any EmptiableNode else { throw BlockError.unsupported("Could not empty \(filename): Operation not supported") }
            try e.makeEmpty()
        }
    } catch let e as BlockError {
        if progress { out("") }
        report(e)
        return 1
    }
    if progress { out("") }
    if !quiet { out("Image committed.") }
    return 0
}

/// Opens `filename` writable with the backing file `writable` (by identity) writable too.
func openWritableChain(_ filename: String, _ src: ImageSource, writable: FileIdentity?) throws -> any BlockNode {
    var ctx = OpenContext(flags: [.readWrite], cache: src.cache)
    if let w = writable { ctx.writableBacking = [w] }
    do {
        if src.imageOpts {
            return try BlockGraph.open(filename: nil, options: try BlockOptions.parseKeyValue(filename), context: ctx, warn: { printStderr($0) })
        }
        return try BlockGraph.open(filename: filename, format: src.format, context: ctx, warn: { printStderr($0) })
    } catch let e as BlockError {
        report(e, prefix: "Could not open '\(filename)': ")
        throw ExitStatus(code: 1)
    }
}

func chainNode(_ top: any BlockNode, identity: FileIdentity?) -> (any BlockNode)? {
    var node = top
    while let next = node.backing {
        if let id = identity, FileIdentity(path: next.filename) == id { return next }
        node = next
    }
    return nil
}
