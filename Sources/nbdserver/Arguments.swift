// qemu-nbd's command line: the same options, the same checks in the same order, the same messages.
//
// Parsing produces a plain `ServerArguments` value; nothing is opened here. Each refusal is a
// `UsageError` carrying qemu-nbd's text (the program prints "nbdserver: " before it and exits 1).

struct UsageError: Error {
    var message: String
    /// A second line printed as is (qemu-nbd's "Try `qemu-nbd --help' ...").
    var hint: String?
}

struct ServerArguments {
    enum Action { case serve, help, version, list, disconnect }

    var action: Action = .serve
    var bindTo: String?
    var port: String?
    var socketPath: String?
    var shared = 1
    var persistent = false
    var verbose = false
    var exportName: String?
    var description: String?
    var offset: UInt64 = 0
    var allocationDepth = false
    var bitmaps: [String] = []
    var objects: [String] = []
    var tlsCreds: String?
    var tlsAuthz: String?
    var tlsHostname: String?
    var traces: [String] = []
    var fork = false
    var pidFile: String?
    var selinuxLabel: String?
    var device: String?
    var format: String?
    var readOnly = false
    var snapshot = false
    var loadSnapshot: String?
    var cache: String?
    var aio: String?
    var discard: String?
    var detectZeroes: String?
    var imageOpts = false
    var handshakeLimit: Double = 10
    var file: String?

    static let shortSpec = "hVb:o:p:rsnc:dvk:e:f:tl:x:T:D:AB:L"
    static let longOptions: [LongOption] = [
        LongOption(name: "help", argument: .none, key: "h"),
        LongOption(name: "version", argument: .none, key: "V"),
        LongOption(name: "bind", argument: .required, key: "b"),
        LongOption(name: "port", argument: .required, key: "p"),
        LongOption(name: "socket", argument: .required, key: "k"),
        LongOption(name: "offset", argument: .required, key: "o"),
        LongOption(name: "read-only", argument: .none, key: "r"),
        LongOption(name: "allocation-depth", argument: .none, key: "A"),
        LongOption(name: "bitmap", argument: .required, key: "B"),
        LongOption(name: "connect", argument: .required, key: "c"),
        LongOption(name: "disconnect", argument: .none, key: "d"),
        LongOption(name: "list", argument: .none, key: "L"),
        LongOption(name: "snapshot", argument: .none, key: "s"),
        LongOption(name: "load-snapshot", argument: .required, key: "l"),
        LongOption(name: "nocache", argument: .none, key: "n"),
        LongOption(name: "cache", argument: .required, key: "cache"),
        LongOption(name: "aio", argument: .required, key: "aio"),
        LongOption(name: "discard", argument: .required, key: "discard"),
        LongOption(name: "detect-zeroes", argument: .required, key: "detect-zeroes"),
        LongOption(name: "shared", argument: .required, key: "e"),
        LongOption(name: "format", argument: .required, key: "f"),
        LongOption(name: "persistent", argument: .none, key: "t"),
        LongOption(name: "verbose", argument: .none, key: "v"),
        LongOption(name: "object", argument: .required, key: "object"),
        LongOption(name: "export-name", argument: .required, key: "x"),
        LongOption(name: "description", argument: .required, key: "D"),
        LongOption(name: "tls-creds", argument: .required, key: "tls-creds"),
        LongOption(name: "tls-hostname", argument: .required, key: "tls-hostname"),
        LongOption(name: "tls-authz", argument: .required, key: "tls-authz"),
        LongOption(name: "image-opts", argument: .none, key: "image-opts"),
        LongOption(name: "trace", argument: .required, key: "T"),
        LongOption(name: "fork", argument: .none, key: "fork"),
        LongOption(name: "pid-file", argument: .required, key: "pid-file"),
        LongOption(name: "selinux-label", argument: .required, key: "selinux-label"),
        LongOption(name: "handshake-limit", argument: .required, key: "handshake-limit"),
    ]

    /// Parses argv (without argv[0]). Help and version win as soon as they are seen, as in qemu-nbd.
    static func parse(_ argv: [String], program: String, programPath: String) throws -> ServerArguments {
        let parsed: (options: [ParsedOption], operands: [String])
        do {
            parsed = try GetOpt.parse(argv, shortSpec: shortSpec, long: longOptions, program: programPath)
        } catch let e as GetOptError {
            // glibc prints its own line; qemu-nbd adds the hint through error_report.
            throw UsageError(message: e.description, hint: "\(program): Try `\(programPath) --help' for more information.")
        }
        var a = ServerArguments()
        var seenCache = false, seenAio = false, seenDiscard = false
        for o in parsed.options {
            let v = o.value ?? ""
            switch o.key {
            case "s": a.snapshot = true
            case "n", "cache":
                if seenCache { throw UsageError(message: "-n and --cache can only be specified once") }
                seenCache = true
                let mode = o.key == "n" ? "none" : v
                guard ["none", "off", "writeback", "writethrough", "directsync", "unsafe"].contains(mode) else {
                    throw UsageError(message: "Invalid cache mode `\(mode)'")
                }
                a.cache = mode
            case "aio":
                if seenAio { throw UsageError(message: "--aio can only be specified once") }
                seenAio = true
                guard ["threads", "native", "io_uring"].contains(v) else { throw UsageError(message: "Invalid aio mode '\(v)'") }
                a.aio = v
            case "discard":
                if seenDiscard { throw UsageError(message: "--discard can only be specified once") }
                seenDiscard = true
                guard ["ignore", "off", "unmap", "on"].contains(v) else { throw UsageError(message: "Invalid discard mode `\(v)'") }
                a.discard = (v == "on" || v == "unmap") ? "unmap" : "ignore"
            case "detect-zeroes":
                guard ["off", "on", "unmap"].contains(v) else {
                    throw UsageError(message: "Failed to parse detect_zeroes mode: invalid parameter value: \(v)")
                }
                if v == "unmap" && a.discard != "unmap" {
                    throw UsageError(message: "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")
                }
                a.detectZeroes = v
            case "b": a.bindTo = v
            case "p": a.port = v
            case "o":
                guard let off = parseUInt64(v) else { throw UsageError(message: "Invalid offset '\(v)'") }
                a.offset = off
            case "l":
                a.loadSnapshot = v
                a.readOnly = true
            case "r": a.readOnly = true
            case "A": a.allocationDepth = true
            case "B": a.bitmaps.append(v)
            case "k":
                guard v.hasPrefix("/") else { throw UsageError(message: "socket path must be absolute") }
                a.socketPath = v
            case "d": a.action = .disconnect
            case "c": a.device = v
            case "e":
                guard let n = parseInt(v), n >= 0 else { throw UsageError(message: "Invalid shared device number '\(v)'") }
                a.shared = n
            case "f": a.format = v
            case "t": a.persistent = true
            case "x":
                if v.utf8.count > 4096 { throw UsageError(message: "export name '\(v)' too long") }
                a.exportName = v
            case "D":
                if v.utf8.count > 4096 { throw UsageError(message: "export description '\(v)' too long") }
                a.description = v
            case "v": a.verbose = true
            case "V":
                a.action = .version
                return a
            case "h":
                a.action = .help
                return a
            case "object": a.objects.append(v)
            case "tls-creds": a.tlsCreds = v
            case "tls-hostname": a.tlsHostname = v
            case "image-opts": a.imageOpts = true
            case "T": a.traces.append(v)
            case "tls-authz": a.tlsAuthz = v
            case "fork": a.fork = true
            case "L": a.action = .list
            case "pid-file": a.pidFile = v
            case "selinux-label": a.selinuxLabel = v
            case "handshake-limit":
                guard let n = parseInt(v), n >= 0 else { throw UsageError(message: "Invalid handshake limit '\(v)'") }
                a.handshakeLimit = Double(n)
            default:
                break
            }
        }
        try a.checkOperands(parsed.operands, program: program, programPath: programPath, seen: (seenCache, seenAio, seenDiscard))
        return a
    }

    private mutating func checkOperands(_ operands: [String], program: String, programPath: String,
                                        seen: (cache: Bool, aio: Bool, discard: Bool)) throws {
        if action == .list {
            if !operands.isEmpty { throw UsageError(message: "List mode is incompatible with a file name") }
            if exportName != nil || description != nil || offset != 0 || device != nil || format != nil
                || loadSnapshot != nil || !bitmaps.isEmpty || allocationDepth || seen.aio || seen.discard || seen.cache {
                throw UsageError(message: "List mode is incompatible with per-device settings")
            }
            if fork { throw UsageError(message: "List mode is incompatible with forking") }
            return
        }
        if operands.count != 1 {
            throw UsageError(message: "Invalid number of arguments", hint: "Try `\(programPath) --help' for more information.")
        }
        file = operands[0]
        if exportName == nil { exportName = "" }
    }
}

/// qemu_strtou64 with base 0: decimal, 0x hex or 0 octal, the whole string.
func parseUInt64(_ s: String) -> UInt64? {
    let t = s.trimmingPrefix(while: { $0 == " " })
    if t.hasPrefix("0x") || t.hasPrefix("0X") { return UInt64(t.dropFirst(2), radix: 16) }
    if t.hasPrefix("0") && t.count > 1 { return UInt64(t.dropFirst(), radix: 8) }
    return UInt64(t)
}

func parseInt(_ s: String) -> Int? {
    if s.hasPrefix("-") { return parseUInt64(String(s.dropFirst())).flatMap { $0 <= UInt64(Int32.max) ? -Int($0) : nil } }
    return parseUInt64(s).flatMap { $0 <= UInt64(Int32.max) ? Int($0) : nil }
}

extension String {
    fileprivate func trimmingPrefix(while pred: (Character) -> Bool) -> Substring {
        self[(firstIndex(where: { !pred($0) }) ?? endIndex)...]
    }
}
