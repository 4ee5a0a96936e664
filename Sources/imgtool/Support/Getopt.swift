// GNU getopt_long from glibc, so option parsing is exactly qemu-img's: attached short values
// (-fqcow2), permuted arguments (options after file names), "--" to end options, and the same
// error cases, which qemu-img reports itself (its option strings start with ':').
import CLinux
import Glibc

struct LongOption {
    let name: String
    let hasArgument: Bool
    /// The value getopt_long returns for it (a short option character, or a code >= 256).
    let code: Int32
}

enum OptionEvent {
    case option(Int32, String?)
    case missingArgument(String)
    case unrecognized(String)
}

/// Parses `args` (args[0] is the subcommand name) and returns the options in order plus the operands.
func getopt(_ args: [String], _ shortOptions: String, _ longOptions: [LongOption]) -> (events: [OptionEvent], operands: [String]) {
    var cArgs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
    defer { for p in cArgs { free(p) } }
    var cLong: [option] = []
    var names: [UnsafeMutablePointer<CChar>?] = []
    for o in longOptions {
        let n = strdup(o.name)
        names.append(n)
        cLong.append(option(name: n, has_arg: o.hasArgument ? required_argument : no_argument, flag: nil, val: o.code))
    }
    cLong.append(option(name: nil, has_arg: 0, flag: nil, val: 0))
    defer { for n in names { free(n) } }

    var events: [OptionEvent] = []
    clinux_getopt_reset()          // GNU: optind = 0 re-initialises fully
    let optstring = shortOptions.hasPrefix("+") ? "+:" + shortOptions.dropFirst() : ":" + shortOptions
    let argc = Int32(args.count)
    while true {
        let c = cArgs.withUnsafeMutableBufferPointer { argv in
            getopt_long(argc, argv.baseAddress!, optstring, cLong, nil)
        }
        if c == -1 { break }
        let optind = Int(clinux_optind())
        let current = optind > 0 && optind - 1 < cArgs.count ? cArgs[optind - 1].map { String(cString: $0) } ?? "" : ""
        switch c {
        case Int32(UInt8(ascii: ":")):
            events.append(.missingArgument(current))
        case Int32(UInt8(ascii: "?")):
            // For an unknown short option glibc leaves optopt; name it as qemu-img does.
            let optopt = clinux_optopt()
            if optopt != 0 {
                events.append(.unrecognized("-" + String(UnicodeScalar(UInt8(truncatingIfNeeded: optopt)))))
            } else {
                events.append(.unrecognized(current))
            }
        default:
            let value = clinux_optarg().map { String(cString: $0) }
            events.append(.option(c, value))
        }
    }
    var operands: [String] = []
    var i = Int(clinux_optind())
    while i < args.count {
        if let p = cArgs[i] { operands.append(String(cString: p)) }
        i += 1
    }
    return (events, operands)
}

extension Character {
    var code: Int32 { Int32(asciiValue ?? 0) }
}
