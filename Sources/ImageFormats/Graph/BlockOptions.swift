// Block options: one parser for every way QEMU users spell them, shared by the three programs.
//
// QEMU flattens all option sources into one dictionary with dotted keys ("file.filename"):
//   -o k=v,k=v (QemuOpts, ",," is a literal comma, a bare "flag" means flag=on), given several times
//   with the later value winning per key (feature T5); --image-opts / -blockdev dotted keys; and
//   json:{...} filenames, whose nested objects flatten to dotted keys. Values keep their JSON type
//   where they had one, so that `info` can print json: filenames back as QEMU does.

public struct BlockOptions: Sendable, Equatable {
    public enum Value: Sendable, Equatable, CustomStringConvertible {
        case string(String)
        case bool(Bool)
        case int(Int64)
        case null

        public var description: String {
            switch self {
            case .string(let s): return s
            case .bool(let b): return b ? "on" : "off"
            case .int(let i): return String(i)
            case .null: return ""
            }
        }

        var json: JSONValue {
            switch self {
            case .string(let s): return .string(s)
            case .bool(let b): return .bool(b)
            case .int(let i): return .int(i)
            case .null: return .null
            }
        }
    }

    public private(set) var entries: [(key: String, value: Value)] = []

    public init() {}

    public init(_ pairs: [(String, Value)]) {
        for (k, v) in pairs { set(k, v) }
    }

    public static func == (a: BlockOptions, b: BlockOptions) -> Bool {
        a.entries.count == b.entries.count && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var keys: [String] { entries.map(\.key) }

    public subscript(key: String) -> Value? {
        get { entries.last { $0.key == key }?.value }
        set {
            if let v = newValue { set(key, v) } else { remove(key) }
        }
    }

    /// Sets `key`, replacing an earlier value in place (the later value wins, the first position stays).
    public mutating func set(_ key: String, _ value: Value) {
        if let i = entries.firstIndex(where: { $0.key == key }) {
            entries[i].value = value
        } else {
            entries.append((key, value))
        }
    }

    public mutating func set(_ key: String, _ value: String) { set(key, .string(value)) }

    public mutating func remove(_ key: String) {
        entries.removeAll { $0.key == key }
    }

    /// Removes and returns a value (for drivers consuming their options).
    public mutating func take(_ key: String) -> Value? {
        let v = self[key]
        remove(key)
        return v
    }

    /// `other`'s keys override ours.
    public func merging(_ other: BlockOptions) -> BlockOptions {
        var r = self
        for (k, v) in other.entries { r.set(k, v) }
        return r
    }

    /// The options under `prefix.` with the prefix removed.
    public func sub(_ prefix: String) -> BlockOptions {
        var r = BlockOptions()
        let p = prefix + "."
        for (k, v) in entries where k.hasPrefix(p) {
            r.set(String(k.dropFirst(p.count)), v)
        }
        return r
    }

    /// Removes every key under `prefix.`.
    public mutating func removeSub(_ prefix: String) {
        let p = prefix + "."
        entries.removeAll { $0.key.hasPrefix(p) }
    }

    public func hasSub(_ prefix: String) -> Bool {
        let p = prefix + "."
        return entries.contains { $0.key.hasPrefix(p) }
    }

    public func string(_ key: String) -> String? {
        guard let v = self[key] else { return nil }
        if case .null = v { return nil }
        return v.description
    }

    /// A boolean in QEMU's spellings (on/off, yes/no, true/false).
    public func bool(_ key: String) throws -> Bool? {
        guard let v = self[key] else { return nil }
        switch v {
        case .bool(let b): return b
        case .null: return nil
        case .int(let i): return i != 0
        case .string(let s):
            if let b = BlockOptions.parseBool(s) { return b }
            throw BlockError(.invalidArgument, "Parameter '\(key)' expects 'on' or 'off'", errno: 22)
        }
    }

    public static func parseBool(_ s: String) -> Bool? {
        switch s {
        case "on", "yes", "true", "y": return true
        case "off", "no", "false", "n": return false
        default: return nil
        }
    }

    /// A size with QEMU's suffixes (k, M, G, T, P, E; binary), as -o cluster_size=64k takes.
    public func size(_ key: String) throws -> UInt64? {
        guard let v = self[key] else { return nil }
        switch v {
        case .int(let i) where i >= 0: return UInt64(i)
        case .null: return nil
        default:
            if let n = SizeParser.parse(v.description) { return n }
            throw BlockError(.invalidArgument,
                             "Parameter '\(key)' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.", errno: 22)
        }
    }

    public func integer(_ key: String) throws -> Int64? {
        guard let v = self[key] else { return nil }
        switch v {
        case .int(let i): return i
        case .null: return nil
        default:
            if let n = Int64(v.description) { return n }
            throw BlockError(.invalidArgument, "Parameter '\(key)' expects a number", errno: 22)
        }
    }

    // MARK: parsing

    /// Parses QemuOpts syntax: "k=v,k2=v2", ",," is a literal comma, a bare "flag" means flag=on.
    /// With `impliedKey`, a first element without '=' is that key's value (as -drive's file name is not).
    public static func parseKeyValue(_ text: String, impliedKey: String? = nil) throws -> BlockOptions {
        var result = BlockOptions()
        var first = true
        for item in splitEscaped(text) {
            defer { first = false }
            if item.isEmpty { continue }
            if let eq = item.firstIndex(of: "=") {
                let key = String(item[..<eq])
                let value = String(item[item.index(after: eq)...])
                if key.isEmpty {
                    throw BlockError(.invalidArgument, "Invalid parameter ''", errno: 22)
                }
                result.set(key, .string(value))
            } else if first, let implied = impliedKey {
                result.set(implied, .string(item))
            } else {
                result.set(item, .string("on"))
            }
        }
        return result
    }

    /// Splits on single commas; ",," stands for one comma.
    static func splitEscaped(_ text: String) -> [String] {
        var items: [String] = []
        var current = ""
        var chars = Array(text)[...]
        while let c = chars.popFirst() {
            if c == "," {
                if chars.first == "," {
                    current.append(",")
                    chars.removeFirst()
                } else {
                    items.append(current)
                    current = ""
                }
            } else {
                current.append(c)
            }
        }
        items.append(current)
        return items
    }

    /// Parses a "json:{...}" filename (the prefix included) into flat options.
    public static func parseJSONFilename(_ filename: String) throws -> BlockOptions {
        let body = String(filename.dropFirst("json:".count))
        let value: JSONValue
        do {
            value = try JSONValue.parse(body)
        } catch let e as JSONParseError {
            throw BlockError(.invalidArgument, "Could not parse the JSON options: \(e.message)", errno: 22)
        }
        guard case .object = value else {
            throw BlockError(.invalidArgument, "Invalid JSON object given", errno: 22)
        }
        return try flatten(value)
    }

    /// Flattens a JSON object into dotted keys ({"file": {"filename": "x"}} -> file.filename=x).
    public static func flatten(_ value: JSONValue) throws -> BlockOptions {
        var result = BlockOptions()
        func walk(_ v: JSONValue, _ prefix: String) throws {
            switch v {
            case .object(let members):
                for (k, sub) in members { try walk(sub, prefix.isEmpty ? k : prefix + "." + k) }
            case .array(let items):
                for (i, sub) in items.enumerated() { try walk(sub, prefix + "." + String(i)) }
            case .string(let s): result.set(prefix, .string(s))
            case .bool(let b): result.set(prefix, .bool(b))
            case .int(let i): result.set(prefix, .int(i))
            case .uint(let u): result.set(prefix, u <= UInt64(Int64.max) ? .int(Int64(u)) : .string(String(u)))
            case .double(let d): result.set(prefix, .string(JSONValue.formatDouble(d)))
            case .null: result.set(prefix, .null)
            }
        }
        try walk(value, "")
        return result
    }

    /// The nested JSON object these dotted keys describe (for json:{...} filenames).
    public func nestedJSON() -> JSONValue {
        final class Node {
            var leaf: JSONValue?
            var children: [(String, Node)] = []
            func child(_ k: String) -> Node {
                if let c = children.first(where: { $0.0 == k }) { return c.1 }
                let n = Node()
                children.append((k, n))
                return n
            }
            func json() -> JSONValue {
                if let l = leaf, children.isEmpty { return l }
                return .object(children.map { ($0.0, $0.1.json()) })
            }
        }
        let root = Node()
        for (k, v) in entries {
            var node = root
            for part in k.split(separator: ".", omittingEmptySubsequences: false) { node = node.child(String(part)) }
            node.leaf = v.json
        }
        return root.json()
    }
}

/// Sizes with QEMU's suffixes: B, k/K, M, G, T, P, E (powers of 1024), decimals allowed ("1.5G").
public enum SizeParser {
    public static func parse(_ text: String, defaultSuffix: Character = "B") -> UInt64? {
        let s = text.trimmingCharacters(in: " ")
        guard !s.isEmpty else { return nil }
        var numberPart = s
        var suffix: Character = defaultSuffix
        if let last = s.last, last.isLetter {
            suffix = last
            numberPart = String(s.dropLast())
        }
        let shift: UInt64
        switch suffix {
        case "B", "b": shift = 0
        case "k", "K": shift = 10
        case "m", "M": shift = 20
        case "g", "G": shift = 30
        case "t", "T": shift = 40
        case "p", "P": shift = 50
        case "e", "E": shift = 60
        default: return nil
        }
        guard !numberPart.isEmpty, numberPart.first != "-", numberPart.first != "+" else { return nil }
        if let whole = UInt64(numberPart) {
            let (v, o) = whole.multipliedReportingOverflow(by: 1 << shift)
            return o ? nil : v
        }
        // A fraction is allowed with a suffix ("1.5G"); QEMU rejects it for plain bytes.
        guard shift > 0, let d = Double(numberPart), d.isFinite, d >= 0 else { return nil }
        let v = d * Double(UInt64(1) << shift)
        guard v < 18446744073709550592.0 else { return nil }
        return UInt64(v)
    }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s.removeFirst() }
        while s.last == set { s.removeLast() }
        return String(s)
    }
}
