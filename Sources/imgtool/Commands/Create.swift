// imgtool create: qemu-img create's options, checks, "Formatting" line and messages.
import ImageFormats

func runCreate(_ args: [String]) throws -> Int32 {
    var format = "raw"
    var backingFile: String?
    var backingFormat: String?
    var optionStrings: [String] = []
    var quiet = false
    var skipBacking = false
    let (events, operands) = getopt(args, "F:B:b:f:ho:qu", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "object", hasArgument: true, code: 256),
    ])
    for e in events {
        switch e {
        case .missingArgument(let o): throw usageError("missing argument for option '\(o)'")
        case .unrecognized(let o): throw usageError("unrecognized option '\(o)'")
        case .option(let c, let v):
            if c == 256 {
                try createObject(v!)
                continue
            }
            switch UnicodeScalar(UInt8(truncatingIfNeeded: c)) {
            case "h" where c < 256: printHelp(); return 0
            case "F", "B": backingFormat = v   // -B is QEMU 10.1's spelling of -F
            case "b": backingFile = v
            case "f": format = v!
            case "o":
                try validateOptionList(v!)
                optionStrings.append(v!)
            case "q": quiet = true
            case "u": skipBacking = true
            default: break
            }
        }
    }
    let filename = operands.first
    let joined = optionStrings.joined(separator: ",")
    if !optionStrings.isEmpty && CreateOptions.asksForHelp(joined) {
        return try printCreateOptionHelp(format: format, filename: filename)
    }
    guard let filename else { throw usageError("Expecting image file name") }
    var size: UInt64? = nil
    if operands.count >= 2 { size = try parseSize(operands[1], name: "image size") }
    if operands.count > 2 { throw usageError("Unexpected argument: \(operands[2])") }
    do {
        guard let driver = FormatRegistry.driver(named: format) else {
            throw BlockError(.invalidArgument, "Unknown file format '\(format)'", errno: 22)
        }
        var opts = CreateOptions(format: driver)
        for s in optionStrings { try opts.parse(s) }
        try ImageCreator.create(filename: filename, format: format, size: size, options: opts,
                                backingFile: backingFile, backingFormat: backingFormat, skipBackingCheck: skipBacking,
                                announce: quiet ? nil : { out($0); Stdout.shared.flush() })
    } catch let e as BlockError {
        report(e, prefix: "\(filename): ")
        return 1
    }
    return 0
}

/// qemu-img's accumulate_options check: not empty, no lone trailing comma.
func validateOptionList(_ s: String) throws {
    var trailing = 0
    for c in s.reversed() { if c == "," { trailing += 1 } else { break } }
    if s.isEmpty || trailing % 2 == 1 { throw fail("Invalid option list: \(s)") }
}

/// qemu-img's cvtnum: a size with suffixes, with its two-line message on bad input.
func parseSize(_ s: String, name: String, max: UInt64 = UInt64(Int64.max)) throws -> UInt64 {
    guard let v = SizeParser.parse(s) else {
        printError("Invalid \(name) specified. You may use k, M, G, T, P or E suffixes for")
        printError("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
        throw ExitStatus(code: 1)
    }
    if v > max { throw fail("Invalid \(name) specified. Must be between 0 and \(max).") }
    return v
}

func printCreateOptionHelp(format: String, filename: String?) throws -> Int32 {
    guard let driver = FormatRegistry.driver(named: format) else { throw fail("Unknown file format '\(format)'") }
    let opts = CreateOptions(format: driver, includeProtocol: filename != nil)
    if filename == nil {
        out("Supported \(format) options:")
        for l in opts.helpLines { out(l) }
        out("\nThe protocol level may support further options.\nSpecify the target filename to include those options.")
    } else {
        out("Supported options:")
        for l in opts.helpLines { out(l) }
    }
    return 0
}
