// imgtool dd: copy part of an image into a new one, dd(1)-style operands (if, of, bs, count, skip).
import ImageFormats

private let optImageOpts: Int32 = 256, optTargetImageOpts: Int32 = 257, optObject: Int32 = 258

func runDD(_ args: [String]) throws -> Int32 {
    var src = ImageSource()
    var outFormat = "raw"
    let (events, operands) = getopt(args, "hf:O:U", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "target-image-opts", hasArgument: false, code: optTargetImageOpts),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "force-share", hasArgument: false, code: Character("U").code),
    ])
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optImageOpts: src.imageOpts = true
        case optTargetImageOpts: break
        case optObject: try createObject(v!)
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "f": src.format = v
            case "O": outFormat = v!
            case "U": src.forceShare = true
            default: break
            }
        }
    }
    var input: String?, output: String?
    var bs: UInt64 = 512
    var count: UInt64?, skip: UInt64?
    for op in operands {
        guard let eq = op.firstIndex(of: "=") else { throw fail("unrecognized operand \(op)") }
        let key = String(op[..<eq]), value = String(op[op.index(after: eq)...])
        switch key {
        case "if": input = value
        case "of": output = value
        case "bs":
            guard let v = SizeParser.parse(value) else {
                printError("Invalid bs specified. You may use k, M, G, T, P or E suffixes for")
                printError("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
                throw ExitStatus(code: 1)
            }
            guard v >= 1 && v <= UInt64(Int32.max) else { throw fail("Invalid bs specified. Must be between 1 and 2147483647.") }
            bs = v
        case "count": count = try parseSize(value, name: "count")
        case "skip": skip = try parseSize(value, name: "skip")
        default: throw fail("unrecognized operand \(key)")
        }
    }
    guard let input, let output else { throw fail("Must specify both input and output files") }
    let source = try openImage(input, src, flags: [])
    defer { _ = closeImage(source) }
    guard let driver = FormatRegistry.driver(named: outFormat) else { throw fail("Unknown file format") }
    var size = source.size
    if let c = count, c <= UInt64(Int64.max) / bs, c * bs < size { size = c * bs }
    let skipBytes: UInt64? = skip.map { $0 > UInt64(Int64.max) / bs ? UInt64.max : $0 * bs }
    let beyond = skipBytes.map { $0 == UInt64.max || size < $0 } ?? false
    let outSize = beyond ? 0 : size - (skipBytes ?? 0)
    var opts = CreateOptions(format: driver)
    opts.setNumber("size", outSize)
    do {
        try driver.create(filename: output, size: outSize, options: opts.blockOptions)
    } catch let e as BlockError {
        report(e, prefix: "\(output): error while creating output image: ")
        return 1
    }
    let target = try openImage(output, ImageSource(format: outFormat), flags: [.readWrite])
    defer { _ = closeImage(target) }
    var inPos: UInt64
    if beyond {
        printError("\(input): cannot skip to specified offset")
        inPos = size
    } else {
        inPos = skipBytes ?? 0
    }
    var buf = [UInt8](repeating: 0, count: Int(bs))
    var outPos: UInt64 = 0
    while inPos < size {
        let n = Int(min(bs, size - inPos))
        do {
            try buf.withUnsafeMutableBytes { try source.read(at: inPos, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
        } catch let e as BlockError { throw fail("error while reading from input image file: \(BlockError.strerror(e.errno))") }
        do {
            try buf.withUnsafeBytes { try target.write(at: outPos, from: UnsafeRawBufferPointer(rebasing: $0[0..<n]), flags: []) }
        } catch let e as BlockError { throw fail("error while writing to output image file: \(BlockError.strerror(e.errno))") }
        inPos += UInt64(n)
        outPos += UInt64(n)
    }
    return 0
}
