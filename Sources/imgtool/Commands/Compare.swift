// imgtool compare: exit 0 identical, 1 different, 2 open error, 3 allocation-test error,
// 4 read error, as qemu-img.

import ImageFormats

private let optObject: Int32 = 256, optImageOpts: Int32 = 257

func runCompare(_ args: [String]) throws -> Int32 {
    var src1 = ImageSource(), src2 = ImageSource()
    var cache = "writeback"
    var progress = false, quiet = false, strict = false, imageOpts = false, forceShare = false
    let (events, operands) = getopt(args, "hf:F:T:pqsU", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "force-share", hasArgument: false, code: Character("U").code),
    ])
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optImageOpts: imageOpts = true
        case optObject: try createObject(v!)
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "f": src1.format = v
            case "F": src2.format = v
            case "T": cache = v!
            case "p": progress = true
            case "q": quiet = true
            case "s": strict = true
            case "U": forceShare = true
            default: break
            }
        }
    }
    if quiet { progress = false }
    guard operands.count == 2 else { throw usageError("Expecting two image file names") }
    guard let mode = try? CacheMode.parse(cache) else {
        printError("Invalid source cache option: \(cache)")
        return 2
    }
    for s in [\ImageSource.cache] { src1[keyPath: s] = mode; src2[keyPath: s] = mode }
    src1.imageOpts = imageOpts; src2.imageOpts = imageOpts
    src1.forceShare = forceShare; src2.forceShare = forceShare
    let a: any BlockNode, b: any BlockNode
    do { a = try openImage(operands[0], src1, flags: []) } catch { return 2 }
    defer { _ = closeImage(a) }
    do { b = try openImage(operands[1], src2, flags: []) } catch { return 2 }
    defer { _ = closeImage(b) }
    let printer = progress ? ProgressPrinter() : nil
    printer?.update(0)
    let outcome: CompareOutcome
    do {
        outcome = try ImageCompare.run(a, b, nameA: operands[0], nameB: operands[1], strict: strict, progress: printer.map { p in { p.update($0) } })
    } catch let f as CompareFailure {
        printError(f.message)
        return f.status
    }
    if progress { out("") }
    func say(_ s: String) { if !quiet { out(s) } }
    switch outcome {
    case .strictSizeMismatch:
        say("Strict mode: Image size mismatch!")
        return 1
    case .strictStatusMismatch(let off):
        say("Strict mode: Offset \(off) block status mismatch!")
        return 1
    case .contentMismatch(let off, let sizeMismatch):
        if sizeMismatch { say("Warning: Image size mismatch!") }
        say("Content mismatch at offset \(off)!")
        return 1
    case .identical(let sizeMismatch):
        if sizeMismatch { say("Warning: Image size mismatch!") }
        say("Images are identical.")
        return 0
    }
}
