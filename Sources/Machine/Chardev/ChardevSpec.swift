// Character device back ends in QEMU's syntax, parsed into a value:
//   -serial stdio | null | none | file:PATH | unix:PATH[,server=on][,wait=off] | tcp:HOST:PORT[,server=on,wait=off]
//   | mon:stdio | chardev:ID
//   -chardev stdio,id=X | null,id=X | file,id=X,path=P | socket,id=X,path=P|host=H,port=N,server=on,wait=off
// The same specs serve -serial, -monitor and -qmp.

public enum ChardevSpec: Sendable, Equatable {
    case stdio(mux: Bool)
    case null
    case none
    case file(String)
    case unixSocket(path: String, server: Bool, wait: Bool)
    case tcpSocket(host: String, port: UInt16, server: Bool, wait: Bool)
    case chardevRef(String)

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var message: String
        public var description: String { message }
    }

    /// Splits "a,b=c,d" into the first item and key/value options (QemuOpts: ",," escapes a comma).
    static func splitOptions(_ s: String) -> (String, [(String, String)]) {
        var parts: [String] = []
        var cur = ""
        var it = Array(s)
        var i = 0
        while i < it.count {
            if it[i] == "," {
                if i + 1 < it.count && it[i + 1] == "," { cur.append(","); i += 2; continue }
                parts.append(cur); cur = ""
            } else { cur.append(it[i]) }
            i += 1
        }
        parts.append(cur)
        it = []
        let first = parts.removeFirst()
        return (first, parts.map { p in
            if let eq = p.firstIndex(of: "=") { return (String(p[..<eq]), String(p[p.index(after: eq)...])) }
            return (p, "on")
        })
    }

    static func bool(_ v: String?, default d: Bool, key: String) throws -> Bool {
        guard let v else { return d }
        switch v {
        case "on", "yes", "true", "y": return true
        case "off", "no", "false", "n": return false
        default: throw ParseError(message: "Parameter '\(key)' expects 'on' or 'off'")
        }
    }

    /// Parses the -serial / -monitor / -qmp form.
    public static func parseLegacy(_ text: String) throws -> ChardevSpec {
        let (head, opts) = splitOptions(text)
        let o = Dictionary(opts, uniquingKeysWith: { _, b in b })
        switch head {
        case "stdio": return .stdio(mux: false)
        case "mon:stdio": return .stdio(mux: true)
        case "null": return .null
        case "none": return .none
        default: break
        }
        if head.hasPrefix("file:") { return .file(String(head.dropFirst(5))) }
        if head.hasPrefix("chardev:") { return .chardevRef(String(head.dropFirst(8))) }
        if head.hasPrefix("unix:") {
            let server = try bool(o["server"], default: false, key: "server")
            return .unixSocket(path: String(head.dropFirst(5)), server: server,
                               wait: try bool(o["wait"], default: server, key: "wait"))
        }
        if head.hasPrefix("tcp:") {
            let rest = head.dropFirst(4)
            guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else {
                throw ParseError(message: "address resolution failed for \(rest): Servname not supported for ai_socktype")
            }
            let server = try bool(o["server"], default: false, key: "server")
            return .tcpSocket(host: String(rest[..<colon]), port: port, server: server,
                              wait: try bool(o["wait"], default: server, key: "wait"))
        }
        throw ParseError(message: "'\(head)' is not a valid char driver")
    }

    /// Parses a -chardev argument into (id, spec).
    public static func parseChardev(_ text: String) throws -> (String, ChardevSpec) {
        let (backend, opts) = splitOptions(text)
        let o = Dictionary(opts, uniquingKeysWith: { _, b in b })
        guard let id = o["id"] else { throw ParseError(message: "chardev: no id specified") }
        switch backend {
        case "stdio": return (id, .stdio(mux: try bool(o["mux"], default: false, key: "mux")))
        case "null": return (id, .null)
        case "file":
            guard let p = o["path"] else { throw ParseError(message: "chardev: file: no filename given") }
            return (id, .file(p))
        case "socket":
            let server = try bool(o["server"], default: false, key: "server")
            let wait = try bool(o["wait"], default: server, key: "wait")
            if let p = o["path"] { return (id, .unixSocket(path: p, server: server, wait: wait)) }
            guard let portText = o["port"], let port = UInt16(portText) else {
                throw ParseError(message: "chardev: socket: no host given")
            }
            return (id, .tcpSocket(host: o["host"] ?? "localhost", port: port, server: server, wait: wait))
        default:
            throw ParseError(message: "'\(backend)' is not a valid char driver name")
        }
    }
}
