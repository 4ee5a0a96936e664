// The `nbd` protocol driver's entry points: filenames and options in, a connected node out.
//
// Filenames, as QEMU accepts them: nbd://host[:port]/export, nbd+tcp://..., nbd+unix:///export
// ?socket=PATH, nbds:// (TLS), and the legacy nbd:HOST:PORT[:exportname=NAME] and
// nbd:unix:PATH[:exportname=NAME]. Options are QEMU's -blockdev keys: server.type (inet|unix),
// server.host, server.port, server.path, export, tls-creds, tls-hostname; the legacy top-level
// host/port/path keys work too.
import Glibc
import NBD

public enum NBDProtocol: ProtocolDriver {
    public static let name = "nbd"
    public static let prefixes = ["nbd", "nbd+tcp", "nbd+unix", "nbds", "nbds+tcp", "nbds+unix"]

    public static func parseFilename(_ filename: String) throws -> BlockOptions {
        if filename.hasPrefix("nbd:") && !filename.hasPrefix("nbd://") {
            return try parseLegacy(String(filename.dropFirst(4)), original: filename)
        }
        return try parseURI(filename)
    }

    /// nbd[s][+tcp|+unix]://[host[:port]]/[export][?socket=PATH]
    static func parseURI(_ uri: String) throws -> BlockOptions {
        guard let sep = uri.firstRange(of: "://") else {
            throw BlockError(.invalidArgument, "invalid URI \(uri)", errno: EINVAL)
        }
        let scheme = String(uri[..<sep.lowerBound])
        var rest = String(uri[sep.upperBound...])
        let isUnix: Bool
        switch scheme {
        case "nbd", "nbd+tcp", "nbds", "nbds+tcp": isUnix = false
        case "nbd+unix", "nbds+unix": isUnix = true
        default: throw BlockError(.invalidArgument, "invalid URI \(uri)", errno: EINVAL)
        }
        var query = ""
        if let q = rest.firstIndex(of: "?") {
            query = String(rest[rest.index(after: q)...])
            rest = String(rest[..<q])
        }
        var authority = rest
        var path = ""
        if let slash = rest.firstIndex(of: "/") {
            authority = String(rest[..<slash])
            path = String(rest[rest.index(after: slash)...])
        }
        var o = BlockOptions()
        if !path.isEmpty { o.set("export", percentDecode(path)) }
        var params: [(String, String)] = []
        for part in query.split(separator: "&") where !part.isEmpty {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            params.append((kv[0], kv.count > 1 ? percentDecode(kv[1]) : ""))
        }
        // nbds:// takes libnbd's TLS parameters.
        let tlsKeys: Set<String> = ["tls-certificates", "tls-psk-file", "tls-username", "tls-verify-peer"]
        if scheme.hasPrefix("nbds") {
            for (k, v) in params where tlsKeys.contains(k) { o.set(k, v) }
            params.removeAll { tlsKeys.contains($0.0) }
        }
        if isUnix {
            guard authority.isEmpty, params.count == 1, params[0].0 == "socket" else {
                throw BlockError(.invalidArgument, "invalid URI \(uri)", errno: EINVAL)
            }
            o.set("server.type", "unix")
            o.set("server.path", params[0].1)
        } else {
            if !params.isEmpty {
                throw BlockError(.invalidArgument, "invalid URI \(uri)", errno: EINVAL)
            }
            var host = authority
            var port = String(NBDLimits.defaultPort)
            if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
                let after = host[host.index(after: close)...]
                if after.hasPrefix(":") { port = String(after.dropFirst()) }
                host = String(host[host.index(after: host.startIndex)..<close])
            } else if let colon = host.lastIndex(of: ":") {
                port = String(host[host.index(after: colon)...])
                host = String(host[..<colon])
            }
            o.set("server.type", "inet")
            o.set("server.host", host.isEmpty ? "localhost" : host)
            o.set("server.port", port)
        }
        if scheme.hasPrefix("nbds") { o.set("tls", "on") }
        return o
    }

    /// nbd:HOST:PORT[:exportname=NAME] and nbd:unix:PATH[:exportname=NAME]
    static func parseLegacy(_ spec: String, original: String) throws -> BlockOptions {
        var o = BlockOptions()
        var body = spec
        if let r = body.firstRange(of: ":exportname=") {
            o.set("export", String(body[r.upperBound...]))
            body = String(body[..<r.lowerBound])
        }
        if body.hasPrefix("unix:") {
            o.set("server.type", "unix")
            o.set("server.path", String(body.dropFirst(5)))
            return o
        }
        guard let colon = body.lastIndex(of: ":") else {
            throw BlockError(.invalidArgument, "No valid URL specified", errno: EINVAL)
        }
        o.set("server.type", "inet")
        o.set("server.host", String(body[..<colon]))
        o.set("server.port", String(body[body.index(after: colon)...]))
        return o
    }

    static func percentDecode(_ s: String) -> String {
        var out: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            if u[i] == UInt8(ascii: "%"), i + 2 < u.count, let v = UInt8(String(decoding: u[i + 1...i + 2], as: UTF8.self), radix: 16) {
                out.append(v)
                i += 3
            } else {
                out.append(u[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The server address from options (server.* or the legacy host/port/path keys).
    static func address(_ o: BlockOptions) throws -> SocketAddress {
        if let path = o.string("server.path") ?? o.string("path") {
            return .unix(path: path)
        }
        let type = o.string("server.type") ?? (o.string("host") != nil ? "inet" : nil)
        switch type {
        case "unix":
            throw BlockError(.invalidArgument, "Parameter 'server.path' is missing", errno: EINVAL)
        case "inet", "tcp":
            guard let host = o.string("server.host") ?? o.string("host") else {
                throw BlockError(.invalidArgument, "Parameter 'server.host' is missing", errno: EINVAL)
            }
            let port = o.string("server.port") ?? o.string("port") ?? String(NBDLimits.defaultPort)
            return .inet(host: host, port: port)
        case nil:
            throw BlockError(.invalidArgument, "NBD server address missing", errno: EINVAL)
        default:
            throw BlockError(.invalidArgument, "Parameter 'server.type' does not accept value '\(type!)'", errno: EINVAL)
        }
    }

    public static func open(options: BlockOptions, context: OpenContext) throws -> any BlockNode {
        var o = options
        if let f = o.string("filename"), !f.isEmpty, o.string("server.type") == nil, o.string("server.path") == nil,
           o.string("host") == nil, o.string("path") == nil {
            o = try parseFilename(f).merging({ var x = o; x.remove("filename"); return x }())
        }
        let addr = try address(o)
        var config = NBDClientConfig(exportName: o.string("export") ?? "")
        let wantsTLS = try o.bool("tls") == true
        if o.string("tls-creds") != nil || wantsTLS {
            config.tls = try NBDClientTLS.upgrade(options: o, address: addr)
        }
        if let bitmap = o.string("x-dirty-bitmap") { config.metaContexts = [bitmap] }
        let client: NBDClient
        do {
            client = try NBDClient.connect(addr, config: config)
        } catch let e as NBDError {
            throw BlockError(.io, e.message, errno: e.errno)
        }
        return try NBDClientNode(client: client, address: addr, exportName: o.string("export"), writable: context.writable,
                                 statusContext: o.string("x-dirty-bitmap") ?? "base:allocation")
    }
}

/// TLS for the nbd driver: the tls-creds object `tls-creds=ID` names (UserObjects, what
/// `--object tls-creds-*,id=ID,endpoint=client` creates in the programs), or credentials made on the
/// spot from libnbd-style nbds:// query parameters (tls-certificates=DIR, tls-psk-file=FILE,
/// tls-username=USER).
public enum NBDClientTLS {
    /// Puts credentials made in code under an id, as an --object would.
    public static func register(id: String, credentials: NBDTLSCredentials) {
        UserObjects.shared.register(id: id, credentials: credentials)
    }

    public static func credentials(id: String) -> NBDTLSCredentials? {
        UserObjects.shared.object(id: id)?.tlsCredentials
    }

    static func upgrade(options o: BlockOptions, address: SocketAddress) throws -> @Sendable (NBDTransport) throws -> NBDTransport {
        let host: String?
        if case .inet(let h, _) = address { host = o.string("tls-hostname") ?? h } else { host = o.string("tls-hostname") }
        do {
            if let id = o.string("tls-creds") {
                return try UserObjects.shared.clientCredentials(id: id).clientUpgrade(hostname: host)
            }
            if let psk = o.string("tls-psk-file") {
                let dir = psk.hasSuffix("/keys.psk") ? String(psk.dropLast(9)) : psk
                let c = try NBDTLSCredentials(kind: .psk(username: o.string("tls-username") ?? "qemu"), directory: dir, isServer: false)
                return c.clientUpgrade(hostname: host)
            }
            let dir = o.string("tls-certificates") ?? "/etc/pki/qemu"
            let c = try NBDTLSCredentials(kind: .x509(verifyPeer: o.string("tls-verify-peer") != "false"), directory: dir,
                                          isServer: false)
            return c.clientUpgrade(hostname: host)
        } catch let e as NBDError {
            throw BlockError(.invalidArgument, e.message, errno: e.errno)
        }
    }
}
