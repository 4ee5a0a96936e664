// Image creation as qemu-img does it (bdrv_img_create): -o options typed and merged over the format's
// and the protocol's option lists (later values win, feature T5), the size taken from the backing
// file when none is given, the backing file checked, then the driver's create.

/// The -o options of one creation, typed and validated against the merged option list.
public struct CreateOptions: Sendable {
    public let format: String
    /// The format's options followed by the protocol's (duplicates dropped), QEMU's qemu_opts_append.
    public let specs: [CreateOptionSpec]
    /// User values (raw strings as given, or normalised numbers for size/number), last one wins.
    private var values: [String: String] = [:]
    private var parsedNumbers: [String: UInt64] = [:]

    public init(format: any FormatDriver.Type, includeProtocol: Bool = true) {
        self.format = format.name
        var specs = format.createOptions
        if includeProtocol {
            for s in FileProtocol.createOptions where !specs.contains(where: { $0.name == s.name }) { specs.append(s) }
        }
        self.specs = specs
    }

    /// An option list of its own (qemu-img amend's).
    public init(format: String, specs: [CreateOptionSpec]) {
        self.format = format
        self.specs = specs
    }

    /// Whether "help" or "?" is among the options (qemu-img's has_help_option).
    public static func asksForHelp(_ optionString: String) -> Bool {
        BlockOptions.splitEscaped(optionString).contains { $0 == "help" || $0 == "?" }
    }

    /// Adds one "k=v,k=v" string, with QemuOpts' type checks and messages.
    public mutating func parse(_ optionString: String) throws {
        for item in BlockOptions.splitEscaped(optionString) where !item.isEmpty {
            let key: String, value: String
            if let eq = item.firstIndex(of: "=") {
                key = String(item[..<eq])
                value = String(item[item.index(after: eq)...])
            } else {
                key = item
                value = "on"
            }
            try set(key, value)
        }
    }

    public mutating func set(_ key: String, _ value: String) throws {
        guard let spec = specs.first(where: { $0.name == key }) else {
            throw BlockError(.invalidArgument, "Invalid parameter '\(key)'", errno: 22)
        }
        switch spec.kind {
        case .bool:
            guard BlockOptions.parseBool(value) != nil, ["on", "off"].contains(value) || ["yes", "no", "true", "false"].contains(value) else {
                throw BlockError(.invalidArgument, "Parameter '\(key)' expects 'on' or 'off'", errno: 22)
            }
        case .size:
            guard let n = SizeParser.parse(value) else {
                throw BlockError(.invalidArgument, "Parameter '\(key)' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.", errno: 22)
            }
            parsedNumbers[key] = n
        case .number:
            guard let n = UInt64(value) else {
                throw BlockError(.invalidArgument, "Parameter '\(key)' expects a number", errno: 22)
            }
            parsedNumbers[key] = n
        case .string:
            break
        }
        values[key] = value
    }

    /// Sets a number the tool computed (image size), printed as a number.
    public mutating func setNumber(_ key: String, _ value: UInt64) {
        values[key] = String(value)
        parsedNumbers[key] = value
    }

    public func value(_ key: String) -> String? { values[key] }
    public func number(_ key: String) -> UInt64? { parsedNumbers[key] }
    public func has(_ key: String) -> Bool { values[key] != nil }

    /// The options as block options for the driver (sizes and numbers normalised).
    public var blockOptions: BlockOptions {
        var o = BlockOptions()
        for s in specs {
            if let n = parsedNumbers[s.name] { o.set(s.name, String(n)) }
            else if let v = values[s.name] { o.set(s.name, v) }
        }
        return o
    }

    /// What follows "Formatting 'f', fmt=F " (QEMU's qemu_opts_print): defaults included, commas in
    /// strings doubled.
    public var printed: String {
        var parts: [String] = []
        for s in specs {
            if let n = parsedNumbers[s.name], s.kind == .size || s.kind == .number {
                parts.append("\(s.name)=\(n)")
            } else if let v = values[s.name] ?? s.defaultValue {
                parts.append("\(s.name)=\(s.kind == .string ? v.replacingOccurrences(",", ",,") : v)")
            }
        }
        return parts.joined(separator: " ")
    }

    /// `-o help`: "  name=<type>   - help", sorted as QEMU sorts them.
    public var helpLines: [String] {
        specs.map { s -> String in
            var line = "  \(s.name)=\(s.typeLabel)"
            if line.count < 24 { line += String(repeating: " ", count: 24 - line.count) }
            return line + " - " + s.help
        }.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }
}

extension String {
    func replacingOccurrences(_ a: String, _ b: String) -> String {
        guard !a.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: a) {
            out += rest[..<r.lowerBound]
            out += b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    func range(of needle: String) -> Range<Substring.Index>? {
        let n = Array(needle)
        guard !n.isEmpty else { return nil }
        var i = startIndex
        while i < endIndex {
            var j = i, k = 0
            while k < n.count, j < endIndex, self[j] == n[k] { j = index(after: j); k += 1 }
            if k == n.count { return i..<j }
            i = index(after: i)
        }
        return nil
    }
}

public enum ImageCreator {
    /// QEMU's bdrv_img_create. `announce` receives the "Formatting ..." line just before the driver
    /// runs (nil: quiet). `skipBackingCheck` is -u.
    public static func create(filename: String, format: String, size: UInt64?, options: CreateOptions,
                              backingFile: String?, backingFormat: String?, skipBackingCheck: Bool,
                              announce: ((String) -> Void)?) throws {
        guard let driver = FormatRegistry.driver(named: format) else {
            throw BlockError(.invalidArgument, "Unknown file format '\(format)'", errno: 22)
        }
        var opts = options
        if opts.has("size") {
            if size != nil { throw BlockError(.invalidArgument, "The image size must be specified only once", errno: 22) }
        } else if let s = size {
            opts.setNumber("size", s)
        }
        if let b = backingFile {
            guard opts.specs.contains(where: { $0.name == "backing_file" }) else {
                throw BlockError(.invalidArgument, "Backing file not supported for file format '\(format)'", errno: 22)
            }
            try opts.set("backing_file", b)
        }
        if let bf = backingFormat {
            guard opts.specs.contains(where: { $0.name == "backing_fmt" }) else {
                throw BlockError(.invalidArgument, "Backing file format not supported for file format '\(format)'", errno: 22)
            }
            try opts.set("backing_fmt", bf)
        }
        let backing = opts.value("backing_file")
        if let b = backing {
            if b == filename {
                throw BlockError(.invalidArgument, "Error: Trying to create an image with the same filename as the backing file", errno: 22)
            }
            if b.isEmpty { throw BlockError(.invalidArgument, "Expected backing file name, got empty string", errno: 22) }
        }
        let bfmt = opts.value("backing_fmt")
        var finalSize = opts.number("size")
        if let b = backing, !skipBackingCheck {
            let full = BlockGraph.resolveBackingPath(b, relativeTo: filename)
            var bo = BlockOptions()
            if let f = bfmt { bo.set("driver", f) }
            let node: any BlockNode
            do {
                node = try BlockGraph.open(filename: full, options: bo, context: OpenContext(flags: [.forceShare]))
            } catch var e as BlockError {
                e.hint = (e.hint.map { $0 + "\n" } ?? "") + "Could not open backing image."
                throw e
            }
            defer { try? node.close() }
            if bfmt == nil {
                throw BlockError(.invalidArgument, "Backing file specified without backing format", errno: 22,
                                 hint: "Detected format of \(node.driverName).")
            }
            if finalSize == nil {
                finalSize = node.size
                opts.setNumber("size", node.size)
            }
        } else if backing != nil && bfmt == nil {
            throw BlockError(.invalidArgument, "Backing file specified without backing format", errno: 22)
        }
        guard let size = finalSize else {
            throw BlockError(.invalidArgument, "Image creation needs a size parameter", errno: 22)
        }
        announce?("Formatting '\(filename)', fmt=\(format) \(opts.printed)")
        try driver.create(filename: filename, size: size, options: opts.blockOptions)
    }
}
