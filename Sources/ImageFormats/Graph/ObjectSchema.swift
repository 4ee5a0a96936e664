// The QAPI schema of the user-creatable objects we create (qapi/qom.json, QEMU 7.2), and the input
// visitor that checks an --object tree against it with QEMU's messages, in QEMU's order: members in
// schema order (a missing required one, a value of the wrong type), then the first unexpected key.
//
// Three visitor flavours, as QEMU has: keyval (qemu-img, qemu-nbd: string leaves, nested keys),
// QemuOpts (qemu-system: string leaves, flat, its own wording) and JSON ('{...}': typed leaves).
// The result is flat: dotted keys ("rules.0.match") to the value as text (booleans "on"/"off").

struct ObjectSchema: Sendable {
    indirect enum Kind: Sendable {
        case str, bool, int
        case enumeration([String])
        case list(Kind)
        case object([Member])
    }

    struct Member: Sendable {
        var name: String
        var kind: Kind
        var required = false
        /// QOM's type name in "--object TYPE,help" ("<string>", "<QCryptoSecretFormat>"); nil: not listed.
        var helpType: String?
    }

    var members: [Member]

    // MARK: the modelled types

    static let endpoint = Member(name: "endpoint", kind: .enumeration(["client", "server"]), helpType: "QCryptoTLSCredsEndpoint")
    static let tlsCreds: [Member] = [
        Member(name: "verify-peer", kind: .bool, helpType: "bool"),
        Member(name: "dir", kind: .str, helpType: "string"),
        endpoint,
        Member(name: "priority", kind: .str, helpType: "string"),
    ]
    static let loaded = Member(name: "loaded", kind: .bool)
    static let eventLoopBase: [Member] = ["aio-max-batch", "thread-pool-min", "thread-pool-max"].map {
        Member(name: $0, kind: .int, helpType: "int")
    }
    static let policy = Kind.enumeration(["deny", "allow"])
    static let rule = Kind.object([
        Member(name: "match", kind: .str, required: true),
        Member(name: "policy", kind: policy, required: true),
        Member(name: "format", kind: .enumeration(["exact", "glob"])),
    ])

    /// Schemas by qom-type.
    static let byType: [String: ObjectSchema] = [
        "secret": ObjectSchema(members: [
            loaded,
            Member(name: "format", kind: .enumeration(["raw", "base64"]), helpType: "QCryptoSecretFormat"),
            Member(name: "keyid", kind: .str, helpType: "string"),
            Member(name: "iv", kind: .str, helpType: "string"),
            Member(name: "data", kind: .str, helpType: "string"),
            Member(name: "file", kind: .str, helpType: "string"),
        ]),
        "tls-creds-anon": ObjectSchema(members: tlsCreds + [loaded]),
        "tls-creds-psk": ObjectSchema(members: tlsCreds + [loaded, Member(name: "username", kind: .str, helpType: "string")]),
        "tls-creds-x509": ObjectSchema(members: tlsCreds + [
            loaded,
            Member(name: "sanity-check", kind: .bool, helpType: "bool"),
            Member(name: "passwordid", kind: .str, helpType: "string"),
        ]),
        "authz-simple": ObjectSchema(members: [Member(name: "identity", kind: .str, required: true, helpType: "string")]),
        "authz-list": ObjectSchema(members: [
            Member(name: "policy", kind: policy, helpType: "QAuthZListPolicy"),
            Member(name: "rules", kind: .list(rule), helpType: "QAuthZListRule"),
        ]),
        "authz-listfile": ObjectSchema(members: [
            Member(name: "filename", kind: .str, required: true, helpType: "string"),
            Member(name: "refresh", kind: .bool, helpType: "bool"),
        ]),
        "iothread": ObjectSchema(members: eventLoopBase + ["poll-max-ns", "poll-grow", "poll-shrink"].map {
            Member(name: $0, kind: .int, helpType: "int")
        }),
    ]

    /// Every qom-type QEMU 7.2's ObjectType enum has (a type outside it is not even parsed).
    static let qemuTypes: Set<String> = [
        "authz-list", "authz-listfile", "authz-pam", "authz-simple", "can-bus", "can-host-socketcan", "colo-compare",
        "cryptodev-backend", "cryptodev-backend-builtin", "cryptodev-backend-lkcf", "cryptodev-vhost-user", "dbus-vmstate",
        "filter-buffer", "filter-dump", "filter-mirror", "filter-redirector", "filter-replay", "filter-rewriter",
        "input-barrier", "input-linux", "iothread", "main-loop", "memory-backend-epc", "memory-backend-file",
        "memory-backend-memfd", "memory-backend-ram", "pef-guest", "pr-manager-helper", "qtest", "rng-builtin", "rng-egd",
        "rng-random", "secret", "secret_keyring", "sev-guest", "thread-context", "s390-pv-guest", "throttle-group",
        "tls-creds-anon", "tls-creds-psk", "tls-creds-x509", "tls-cipher-suites", "x-remote-object", "x-vfio-user-server",
    ]

    /// "TYPE options:" and one "  name=<type>" line per property, sorted, as QEMU prints them.
    func helpText(_ type: String) -> String {
        let lines = members.compactMap { m in m.helpType.map { "  \(m.name)=<\($0)>" } }.sorted()
        return "\(type) options:\n" + lines.joined(separator: "\n")
    }

    // MARK: the visitor

    enum Flavour { case keyval, qemuOpts, json }

    struct Visitor {
        var flavour: Flavour
        var flat: [(String, String)] = []

        static func error(_ message: String) -> BlockError { BlockError(.invalidArgument, message, errno: 22) }

        func fullName(_ path: String, _ name: String) -> String { path + name }
        func elementName(_ path: String, _ name: String, _ index: Int) -> String {
            flavour == .json ? "\(path)\(name)[\(index)]" : "\(path)\(name).\(index)"
        }

        /// Visits the members of an object; `consumed` keys are already taken (qom-type, id).
        mutating func visitStruct(_ members: [(String, JSONValue)], _ schema: [Member], path: String,
                                  consumed: Set<String> = []) throws(BlockError) {
            var left = members.filter { !consumed.contains($0.0) }
            for m in schema {
                guard let i = left.lastIndex(where: { $0.0 == m.name }) else {
                    if m.required { throw Visitor.error("Parameter '\(fullName(path, m.name))' is missing") }
                    continue
                }
                let v = left[i].1
                left.removeAll { $0.0 == m.name }
                try visit(v, m.kind, name: m.name, full: fullName(path, m.name))
            }
            if let extra = left.first {
                throw Visitor.error(flavour == .qemuOpts ? "Invalid parameter '\(extra.0)'"
                                                         : "Parameter '\(fullName(path, extra.0))' is unexpected")
            }
        }

        /// The text of a scalar member (QEMU's qobject_input_get_keyval for the text flavours); in JSON,
        /// a string or the type error naming `expected`.
        func text(_ v: JSONValue, full: String, expected: String) throws(BlockError) -> String {
            switch v {
            case .string(let s): return s
            case .object where flavour != .json, .array where flavour != .json:
                throw Visitor.error("Parameters '\(full).*' are unexpected")
            default:
                throw Visitor.error("Invalid parameter type for '\(full)', expected: \(flavour == .json ? expected : "string")")
            }
        }

        mutating func visit(_ v: JSONValue, _ kind: Kind, name: String, full: String) throws(BlockError) {
            switch kind {
            case .str:
                flat.append((full, try text(v, full: full, expected: "string")))
            case .bool:
                if flavour == .json {
                    guard case .bool(let b) = v else { throw Visitor.error("Invalid parameter type for '\(full)', expected: boolean") }
                    flat.append((full, b ? "on" : "off"))
                    return
                }
                guard let b = BlockOptions.parseBool(try text(v, full: full, expected: "boolean")) else {
                    throw Visitor.error("Parameter '\(full)' expects 'on' or 'off'")
                }
                flat.append((full, b ? "on" : "off"))
            case .int:
                if flavour == .json {
                    switch v {
                    case .int(let i): flat.append((full, String(i)))
                    case .uint(let u) where u <= UInt64(Int64.max): flat.append((full, String(u)))
                    default: throw Visitor.error("Invalid parameter type for '\(full)', expected: integer")
                    }
                    return
                }
                guard let i = Visitor.parseInt64(try text(v, full: full, expected: "integer")) else {
                    throw Visitor.error(flavour == .qemuOpts ? "Parameter '\(full)' expects an int64 value"
                                                             : "Parameter '\(full)' expects integer")
                }
                flat.append((full, String(i)))
            case .enumeration(let values):
                let s = try text(v, full: full, expected: "string")
                guard values.contains(s) else { throw Visitor.error("Parameter '\(name)' does not accept value '\(s)'") }
                flat.append((full, s))
            case .list(let element):
                guard case .array(let items) = v else { throw Visitor.error("Invalid parameter type for '\(full)', expected: array") }
                for (i, item) in items.enumerated() {
                    try visit(item, element, name: name, full: elementName("", full, i))
                }
            case .object(let members):
                guard case .object(let m) = v else { throw Visitor.error("Invalid parameter type for '\(full)', expected: object") }
                try visitStruct(m, members, path: full + ".")
            }
        }

        /// qemu_strtoi64(s, NULL, 0): decimal, 0x hex or 0 octal, optional sign, nothing after.
        static func parseInt64(_ s: String) -> Int64? {
            var t = Substring(s.drop { $0 == " " || $0 == "\t" })
            var negative = false
            if t.hasPrefix("-") { negative = true; t = t.dropFirst() } else if t.hasPrefix("+") { t = t.dropFirst() }
            var radix = 10
            if t.hasPrefix("0x") || t.hasPrefix("0X") { radix = 16; t = t.dropFirst(2) } else if t.count > 1 && t.hasPrefix("0") { radix = 8; t = t.dropFirst() }
            guard !t.isEmpty, let m = UInt64(t, radix: radix) else { return nil }
            if negative { return m <= UInt64(Int64.max) + 1 ? Int64(truncatingIfNeeded: 0 &- m) : nil }
            return m <= UInt64(Int64.max) ? Int64(m) : nil
        }
    }
}
