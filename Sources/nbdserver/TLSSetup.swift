// TLS from --object: tls-creds-x509 / tls-creds-psk / tls-creds-anon become GnuTLS credentials,
// --tls-authz's authz-simple / authz-list object becomes the authorization check, and a secret
// object supplies an x509 key password (passwordid=).
import Glibc
import ImageFormats
import NBD

struct TLSSetup {
    var creds: UserObject
    var authz: UserObject?
    var objects: [UserObject]

    func credentials(server: Bool) throws -> NBDTLSCredentials {
        let dir = creds.props["dir"] ?? "/etc/pki/qemu"
        let kind: NBDTLSCredentials.Kind
        switch creds.type {
        case "tls-creds-x509":
            kind = .x509(verifyPeer: creds.props["verify-peer"].flatMap(BlockOptions.parseBool) ?? true)
        case "tls-creds-psk":
            kind = .psk(username: creds.props["username"] ?? "qemu")
        default:
            kind = .anon
        }
        var password: String? = nil
        if let pid = creds.props["passwordid"] {
            guard let secret = objects.first(where: { $0.id == pid && $0.type == "secret" }) else {
                throw NBDError(.tls, "No secret with id '\(pid)'", errno: ENOENT)
            }
            password = try Secrets.value(secret)
        }
        return try NBDTLSCredentials(kind: kind, directory: dir, isServer: server, priority: creds.props["priority"],
                                     password: password, authorize: server ? authz.map(Authorization.check) : nil)
    }

    func serverUpgrade() throws -> @Sendable (NBDTransport) throws -> NBDTransport {
        try credentials(server: true).serverUpgrade()
    }

    func clientUpgrade(hostname: String) throws -> @Sendable (NBDTransport) throws -> NBDTransport {
        try credentials(server: false).clientUpgrade(hostname: hostname)
    }
}

/// secret objects: data=VALUE or file=PATH, format=raw|base64.
enum Secrets {
    static func value(_ o: UserObject) throws -> String {
        var text: String
        if let d = o.props["data"] {
            text = d
        } else if let path = o.props["file"] {
            guard let f = fopen(path, "r") else {
                throw NBDError(.invalidArgument, "Unable to read \(path): \(String(cString: strerror(errno)))", errno: errno)
            }
            defer { fclose(f) }
            var bytes: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = fread(&buf, 1, 4096, f)
                if n <= 0 { break }
                bytes += buf[0..<n]
            }
            text = String(decoding: bytes, as: UTF8.self)
        } else {
            throw NBDError(.invalidArgument, "Either 'data' or 'file' must be provided", errno: EINVAL)
        }
        if o.props["format"] == "base64" {
            guard let decoded = base64Decode(text) else {
                throw NBDError(.invalidArgument, "Failed to decode base64 data", errno: EINVAL)
            }
            text = String(decoding: decoded, as: UTF8.self)
        }
        return text
    }

    static func base64Decode(_ s: String) -> [UInt8]? {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var map = [Int](repeating: -1, count: 256)
        for (i, c) in table.enumerated() { map[Int(c)] = i }
        var out: [UInt8] = []
        var acc = 0, bits = 0
        for c in s.utf8 where c != UInt8(ascii: "=") && c != 10 && c != 13 {
            let v = map[Int(c)]
            if v < 0 { return nil }
            acc = (acc << 6) | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> bits) & 0xff))
            }
        }
        return out
    }
}

/// --tls-authz: authz-simple (identity=) and authz-list (policy=, rules.N.match/policy/format).
enum Authorization {
    static func check(_ o: UserObject) -> @Sendable (String) -> Bool {
        switch o.type {
        case "authz-simple":
            let want = o.props["identity"] ?? ""
            return { $0 == want }
        case "authz-list":
            let defaultAllow = (o.props["policy"] ?? "deny") == "allow"
            var rules: [(match: String, allow: Bool, glob: Bool)] = []
            var i = 0
            while let m = o.props["rules.\(i).match"] {
                rules.append((m, (o.props["rules.\(i).policy"] ?? "deny") == "allow", (o.props["rules.\(i).format"] ?? "exact") == "glob"))
                i += 1
            }
            let fixed = rules
            return { id in
                for r in fixed where r.glob ? fnmatch(r.match, id, 0) == 0 : r.match == id { return r.allow }
                return defaultAllow
            }
        default:
            return { _ in false }
        }
    }
}
