// QEMU's two command-line option dialects, parsed into a tree for the QAPI visitor (ObjectSchema):
//
// - keyval (util/keyval.c): what qemu-img and qemu-nbd --object take. "k=v,k=v", ",," is a comma in a
//   value, an implied first key ("secret,id=s" is qom-type=secret), dotted keys nest ("rules.0.match")
//   and a dictionary whose keys are all indices becomes a list. "help" or "?" anywhere asks for help.
//   A bare key without '=' is an error ("Expected '=' after parameter 'x'"), a later value wins.
// - QemuOpts (util/qemu-option.c): what qemu-system's -object takes. Flat: dotted keys stay whole,
//   a bare "flag" means flag=on ("noflag" flag=off) with a deprecation warning, the id is the first
//   "id=" and is checked (well-formed, unique) before anything else.
//
// Both give a JSONValue whose leaves are strings; a JSON argument ('{...}') gives typed leaves.

enum Keyval {
    /// A parsed argument: the tree, and whether help was asked for.
    struct Parsed {
        var tree: JSONValue
        var help = false
        /// QemuOpts' deprecation warnings (short-form booleans), each with its "Please use" line.
        var warnings: [String] = []
        /// QemuOpts' id (the first "id=" element).
        var id: String?
    }

    static func error(_ message: String) -> BlockError {
        BlockError(.invalidArgument, message, errno: 22)
    }

    // MARK: keyval

    /// A mutable dictionary node while parsing (QDict semantics: a later put replaces in place).
    private final class Node {
        var leaf: String?
        var members: [(key: String, node: Node)] = []
        init(leaf: String? = nil) { self.leaf = leaf }
        func member(_ k: String) -> Node? { members.first { $0.key == k }?.node }
        func put(_ k: String, _ n: Node) {
            if let i = members.firstIndex(where: { $0.key == k }) { members[i].node = n } else { members.append((k, n)) }
        }
    }

    static func parseKeyval(_ text: String, impliedKey: String?) throws(BlockError) -> Parsed {
        let b = Array(text.utf8)
        let root = Node()
        var parsed = Parsed(tree: .null)
        var implied = impliedKey
        var i = 0
        while i < b.count {
            i = try parseOne(b, i, root, implied, &parsed.help)
            implied = nil
        }
        parsed.tree = try listify(root, path: [])
        return parsed
    }

    private static func text(_ b: ArraySlice<UInt8>) -> String { String(decoding: b, as: UTF8.self) }

    private static func isAlpha(_ c: UInt8) -> Bool { (c | 0x20) >= UInt8(ascii: "a") && (c | 0x20) <= UInt8(ascii: "z") }
    private static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
    private static func isAlnum(_ c: UInt8) -> Bool { isAlpha(c) || isDigit(c) }

    /// QEMU's parse_qapi_name(s, false): the length of the QAPI name at `s`, or nil.
    private static func qapiNameLength(_ k: [UInt8], _ s: Int) -> Int? {
        var p = s
        if p < k.count && k[p] == UInt8(ascii: "_") {   // downstream extension prefix __RFQDN_
            p += 1
            guard p < k.count, k[p] == UInt8(ascii: "_") else { return nil }
            p += 1
            while p < k.count && (isAlnum(k[p]) || k[p] == UInt8(ascii: "-") || k[p] == UInt8(ascii: ".")) { p += 1 }
            guard p < k.count, k[p] == UInt8(ascii: "_") else { return nil }
            p += 1
        }
        guard p < k.count, isAlpha(k[p]) else { return nil }
        p += 1
        while p < k.count && (isAlnum(k[p]) || k[p] == UInt8(ascii: "-") || k[p] == UInt8(ascii: "_")) { p += 1 }
        return p - s
    }

    /// QEMU's key_to_index: the length of a decimal index at `s`, or nil.
    private static func indexLength(_ k: [UInt8], _ s: Int) -> Int? {
        var p = s
        while p < k.count && isDigit(k[p]) { p += 1 }
        return p > s ? p - s : nil
    }

    private static func isIndex(_ key: String) -> Bool {
        let u = Array(key.utf8)
        return !u.isEmpty && isDigit(u[0])
    }

    private static func parseOne(_ b: [UInt8], _ start: Int, _ root: Node, _ implied: String?,
                                 _ help: inout Bool) throws(BlockError) -> Int {
        var len = 0
        while start + len < b.count && b[start + len] != UInt8(ascii: "=") && b[start + len] != UInt8(ascii: ",") { len += 1 }
        let atEquals = start + len < b.count && b[start + len] == UInt8(ascii: "=")
        var key = Array(b[start..<(start + len)])
        var valueEnd: Int? = nil
        if len > 0 && !atEquals {
            if key == Array("help".utf8) || key == [UInt8(ascii: "?")] {
                help = true
                var s = start + len
                if s < b.count && b[s] == UInt8(ascii: ",") { s += 1 }
                return s
            }
            if let implied {
                key = Array(implied.utf8)
                valueEnd = start + len
            }
        }
        // The key's fragments: a QAPI name first, then names or indices, separated by dots.
        var cur = root
        var s = 0
        var previous = ""
        while true {
            var flen: Int
            if s != 0, let n = indexLength(key, s) { flen = n } else { flen = qapiNameLength(key, s) ?? 0 }
            if flen == 0 || (s + flen < key.count && key[s + flen] != UInt8(ascii: ".")) {
                throw error("Invalid parameter '\(text(key[...]))'")
            }
            if flen >= 128 {
                let fragment = s != 0 || s + flen != key.count ? " fragment" : ""
                throw error("Parameter\(fragment) '\(text(key[s..<(s + flen)]))' is too long")
            }
            if s != 0 {
                cur = try put(cur, previous, nil, key: key, cursor: s - 1)
            }
            previous = text(key[s..<(s + flen)])
            s += flen
            if s >= key.count || key[s] != UInt8(ascii: ".") { break }
            s += 1
        }
        var value: [UInt8] = []
        var p: Int
        if let end = valueEnd {
            value = Array(b[start..<end])
            p = end
            if p < b.count && b[p] == UInt8(ascii: ",") { p += 1 }
        } else {
            p = start + len
            guard p < b.count, b[p] == UInt8(ascii: "=") else {
                throw error("Expected '=' after parameter '\(text(key[0..<s]))'")
            }
            p += 1
            while p < b.count {
                if b[p] == UInt8(ascii: ",") {
                    p += 1
                    if p >= b.count || b[p] != UInt8(ascii: ",") { break }
                }
                value.append(b[p])
                p += 1
            }
        }
        _ = try put(cur, previous, String(decoding: value, as: UTF8.self), key: key, cursor: key.count)
        return p
    }

    /// QEMU's keyval_parse_put: a leaf (value) or a dictionary (nil) under `k`.
    private static func put(_ cur: Node, _ k: String, _ value: String?, key: [UInt8], cursor: Int) throws(BlockError) -> Node {
        if let old = cur.member(k) {
            if (old.leaf != nil) != (value != nil) {
                throw error("Parameters '\(text(key[0..<cursor])).*' used inconsistently")
            }
            guard let value else { return old }
            let n = Node(leaf: value)
            cur.put(k, n)
            return n
        }
        let n = value.map { Node(leaf: $0) } ?? Node()
        cur.put(k, n)
        return n
    }

    /// QEMU's keyval_listify: dictionaries whose keys are all indices become lists.
    private static func listify(_ n: Node, path: [String]) throws(BlockError) -> JSONValue {
        if let leaf = n.leaf { return .string(leaf) }
        var hasIndex = false, hasMember = false
        var members: [(String, JSONValue)] = []
        for (k, child) in n.members {
            if isIndex(k) { hasIndex = true } else { hasMember = true }
            members.append((k, try listify(child, path: path + [k])))
        }
        let prefix = path.map { $0 + "." }.joined()
        if hasIndex && hasMember {
            throw error("Parameters '\(prefix)*' used inconsistently")
        }
        guard hasIndex else { return .object(members) }
        var elements = [JSONValue?](repeating: nil, count: members.count)
        var maxIndex = -1
        for (k, v) in members {
            let index = Int(k) ?? Int.max
            maxIndex = max(maxIndex, index)
            if index < members.count { elements[index] = v }
        }
        var list: [JSONValue] = []
        for i in 0..<min(members.count + 1, maxIndex + 1) {
            guard i < elements.count, let e = elements[i] else { throw error("Parameter '\(prefix)\(i)' missing") }
            list.append(e)
        }
        return .array(list)
    }

    // MARK: QemuOpts

    /// QemuOpts with an implied first key: a flat object of string values (the last value of a key
    /// wins), the first "id=" taken out as the id.
    static func parseQemuOpts(_ text: String, impliedKey: String) throws(BlockError) -> Parsed {
        var parsed = Parsed(tree: .null)
        var members: [(String, JSONValue)] = []
        var first = true
        for item in BlockOptions.splitEscaped(text) where !(item.isEmpty && !first) {
            defer { first = false }
            let name: String, value: String
            if let eq = item.firstIndex(of: "=") {
                name = String(item[..<eq])
                value = String(item[item.index(after: eq)...])
            } else if first {
                name = impliedKey
                value = item
            } else if item.hasPrefix("no") {
                name = String(item.dropFirst(2))
                value = "off"
                parsed.warnings.append("short-form boolean option '\(item)' deprecated\nPlease use \(name)=off instead")
            } else {
                name = item
                value = "on"
                if item == "help" || item == "?" {
                    parsed.help = true
                    continue
                }
                parsed.warnings.append("short-form boolean option '\(item)' deprecated\nPlease use \(item)=on instead")
            }
            if name == "id" {
                if parsed.id == nil { parsed.id = value }
                continue
            }
            if let i = members.firstIndex(where: { $0.0 == name }) { members[i].1 = .string(value) } else { members.append((name, .string(value))) }
        }
        parsed.tree = .object(members)
        return parsed
    }

    /// QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'.
    static func isWellFormedID(_ id: String) -> Bool {
        let u = Array(id.utf8)
        guard let f = u.first, isAlpha(f) else { return false }
        return u.dropFirst().allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") }
    }
}
