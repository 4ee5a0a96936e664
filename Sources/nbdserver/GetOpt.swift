// GNU getopt_long semantics, in Swift (glibc's `struct option` does not reach Swift through Glibc).
//
// What scripts rely on: options and operands may be mixed (operands are collected, "--" ends the
// options), short options bundle ("-rt") and take attached values ("-p10809", "-fqcow2"), long
// options take "--opt=value" or "--opt value" and may be abbreviated to any unique prefix. The
// error messages are glibc's, prefixed with argv[0] as given, as glibc prints them.

struct LongOption {
    enum Argument { case none, required }
    var name: String
    var argument: Argument
    /// The key handed back (a short option letter, or any string for long-only options).
    var key: String
}

struct ParsedOption: Equatable {
    var key: String
    var value: String?
}

struct GetOptError: Error, CustomStringConvertible {
    var description: String
}

enum GetOpt {
    /// Parses `args` (without argv[0]). `shortSpec` is getopt's optstring ("p:rt": ':' = takes a value).
    static func parse(_ args: [String], shortSpec: String, long: [LongOption], program: String) throws
        -> (options: [ParsedOption], operands: [String])
    {
        var shortTakesValue: [Character: Bool] = [:]
        let spec = Array(shortSpec)
        var i = 0
        while i < spec.count {
            let c = spec[i]
            let takes = i + 1 < spec.count && spec[i + 1] == ":"
            shortTakesValue[c] = takes
            i += takes ? 2 : 1
        }

        var options: [ParsedOption] = []
        var operands: [String] = []
        var k = 0
        while k < args.count {
            let a = args[k]
            k += 1
            if a == "--" {
                operands.append(contentsOf: args[k...])
                break
            }
            if a.hasPrefix("--") {
                let body = String(a.dropFirst(2))
                let name: String
                var value: String? = nil
                if let eq = body.firstIndex(of: "=") {
                    name = String(body[..<eq])
                    value = String(body[body.index(after: eq)...])
                } else {
                    name = body
                }
                let opt = try match(name, long, program: program, shown: a)
                switch opt.argument {
                case .none:
                    if value != nil {
                        throw GetOptError(description: "\(program): option '--\(opt.name)' doesn't allow an argument")
                    }
                case .required:
                    if value == nil {
                        guard k < args.count else {
                            throw GetOptError(description: "\(program): option '--\(opt.name)' requires an argument")
                        }
                        value = args[k]
                        k += 1
                    }
                }
                options.append(ParsedOption(key: opt.key, value: value))
                continue
            }
            if a.hasPrefix("-") && a.count > 1 {
                let chars = Array(a.dropFirst())
                var j = 0
                while j < chars.count {
                    let c = chars[j]
                    j += 1
                    guard let takes = shortTakesValue[c], c != ":" else {
                        throw GetOptError(description: "\(program): invalid option -- '\(c)'")
                    }
                    if !takes {
                        options.append(ParsedOption(key: String(c), value: nil))
                        continue
                    }
                    if j < chars.count {
                        options.append(ParsedOption(key: String(c), value: String(chars[j...])))
                    } else {
                        guard k < args.count else {
                            throw GetOptError(description: "\(program): option requires an argument -- '\(c)'")
                        }
                        options.append(ParsedOption(key: String(c), value: args[k]))
                        k += 1
                    }
                    break
                }
                continue
            }
            operands.append(a)
        }
        return (options, operands)
    }

    /// Exact name, else the unique option the name abbreviates.
    private static func match(_ name: String, _ long: [LongOption], program: String, shown: String) throws -> LongOption {
        if let exact = long.first(where: { $0.name == name }) { return exact }
        let candidates = name.isEmpty ? [] : long.filter { $0.name.hasPrefix(name) }
        if candidates.count == 1 { return candidates[0] }
        if candidates.isEmpty {
            throw GetOptError(description: "\(program): unrecognized option '\(shown)'")
        }
        // Abbreviations of options that are the same in all but name still count as ambiguous in glibc
        // unless they share key and argument kind.
        let first = candidates[0]
        if candidates.allSatisfy({ $0.key == first.key && $0.argument == first.argument }) { return first }
        let list = candidates.map { " '--\($0.name)'" }.joined()
        throw GetOptError(description: "\(program): option '--\(name)' is ambiguous; possibilities:\(list)")
    }
}
