// What tls-creds-x509 / tls-creds-psk / tls-creds-anon and authz-simple / authz-list /
// authz-listfile objects make when they are created (UserObjects.add): loaded GnuTLS credentials
// (NBDTLSCredentials) and an authorization check, with QEMU's completion messages and order
// (crypto/tlscreds*.c, authz/*.c): x509 and PSK need dir=; a PSK server takes no username; the
// files each endpoint needs must be readable (x509: ca-cert.pem, and for a server server-cert.pem
// and server-key.pem; PSK: keys.psk, where a client must find its user name); an x509 key password
// comes from the secret passwordid= names, looked up only when there is a certificate to load.
// Before that, unless sanity-check=off, x509 certificates get QEMU's sanity check (X509SanityCheck:
// validity times, basic constraints, key usage and purpose, the own certificate against the CA).
// Not done: dh-params.pem.
import Glibc
import NBD

enum TLSObjects {
    static func error(_ message: String, errno code: Int32 = EINVAL) -> BlockError {
        BlockError(.invalidArgument, message, errno: code)
    }

    static func readable(_ path: String) -> Bool { access(path, R_OK) == 0 }

    static func requireFile(_ path: String) throws(BlockError) {
        if access(path, R_OK) != 0 {
            let e = errno
            throw error("Unable to access credentials \(path): \(BlockError.strerror(e))", errno: e)
        }
    }

    static func credentials(_ o: UserObject, in registry: UserObjects) throws(BlockError) -> NBDTLSCredentials {
        let server = o.endpoint == "server"
        let dir = o.props["dir"]
        let verifyPeer = o.props["verify-peer"].flatMap(BlockOptions.parseBool) ?? true
        let kind: NBDTLSCredentials.Kind
        var password: String? = nil
        switch o.type {
        case "tls-creds-x509":
            guard let dir else { throw error("Missing 'dir' property value") }
            try requireFile("\(dir)/ca-cert.pem")
            if server {
                try requireFile("\(dir)/server-cert.pem")
                try requireFile("\(dir)/server-key.pem")
            }
            let ownCertificate = "\(dir)/\(server ? "server" : "client")-cert.pem"
            let hasCertificate = server || readable(ownCertificate)
            if o.props["sanity-check"].flatMap(BlockOptions.parseBool) ?? true {
                do {
                    try X509SanityCheck.check(caFile: "\(dir)/ca-cert.pem", certFile: hasCertificate ? ownCertificate : nil,
                                              isServer: server)
                } catch {
                    throw BlockError(.invalidArgument, error.message, errno: error.errno)
                }
            }
            if hasCertificate, let pid = o.props["passwordid"] {
                password = try registry.secretText(id: pid)
            }
            kind = .x509(verifyPeer: verifyPeer)
        case "tls-creds-psk":
            if server && o.props["username"] != nil { throw error("username should not be set when endpoint=server") }
            guard let dir else { throw error("Missing 'dir' property value") }
            try requireFile("\(dir)/keys.psk")
            kind = .psk(username: o.props["username"] ?? "qemu")
        default:
            kind = .anon
        }
        do {
            return try NBDTLSCredentials(kind: kind, directory: dir ?? "", isServer: server, priority: o.props["priority"],
                                         password: password, qemuPeerCheck: true)
        } catch let e as NBDError {
            throw BlockError(.invalidArgument, e.message, errno: e.errno)
        } catch {
            throw TLSObjects.error("\(error)")
        }
    }

    /// The check an authz object makes of a client's identity.
    static func authorization(_ o: UserObject) throws(BlockError) -> @Sendable (String) -> Bool {
        switch o.type {
        case "authz-simple":
            let want = o.props["identity"] ?? ""
            return { $0 == want }
        case "authz-listfile":
            // authz/listfile.c: the file holds an authz-list's properties as JSON.
            let path = o.props["filename"] ?? ""
            let bytes = try ObjectSecrets.readFile(path, what: "")
            let tree: JSONValue
            do {
                tree = try JSONValue.parse(String(decoding: bytes, as: UTF8.self))
            } catch {
                throw TLSObjects.error("JSON parse error, \(error)")
            }
            guard case .object(let members) = tree else { throw TLSObjects.error("Invalid parameter type for 'obj', expected: dict") }
            var visitor = ObjectSchema.Visitor(flavour: .json)
            try visitor.visitStruct(members, ObjectSchema.byType["authz-list"]!.members, path: "")
            var props: [String: String] = [:]
            for (k, v) in visitor.flat { props[k.replacing("[", with: ".").replacing("]", with: "")] = v }
            return list(props)
        default:
            return list(o.props)
        }
    }

    /// authz-list: the first rule whose match (exact, or an fnmatch glob) fits decides; else policy.
    static func list(_ props: [String: String]) -> @Sendable (String) -> Bool {
        let defaultAllow = (props["policy"] ?? "deny") == "allow"
        var rules: [(match: String, allow: Bool, glob: Bool)] = []
        var i = 0
        while let m = props["rules.\(i).match"] {
            rules.append((m, props["rules.\(i).policy"] == "allow", props["rules.\(i).format"] == "glob"))
            i += 1
        }
        let fixed = rules
        return { id in
            for r in fixed where r.glob ? fnmatch(r.match, id, 0) == 0 : r.match == id { return r.allow }
            return defaultAllow
        }
    }
}
