// --object: QEMU's user-creatable objects that qemu-nbd uses: TLS credentials (x509, psk, anon),
// secrets (for x509 key passwords) and authorization lists (--tls-authz).
//
// "qom-type,id=ID,key=value,..." is parsed with the library's QemuOpts parser; unknown types and
// unknown keys are refused with QEMU's messages. Credentials are checked when the object is
// created, as QEMU does: a missing file is reported before anything else is opened.
import Glibc
import ImageFormats

struct UserObject {
    var type: String
    var id: String
    var props: [String: String]
}

enum ObjectRegistry {
    static let knownKeys: [String: Set<String>] = [
        "secret": ["data", "file", "format", "keyid", "iv"],
        "tls-creds-x509": ["dir", "endpoint", "verify-peer", "priority", "sanity-check", "passwordid", "loaded"],
        "tls-creds-psk": ["dir", "endpoint", "verify-peer", "priority", "username", "loaded"],
        "tls-creds-anon": ["dir", "endpoint", "verify-peer", "priority", "loaded"],
        "authz-simple": ["identity"],
        "authz-list": ["policy", "rules"],
        "authz-listfile": ["filename", "refresh"],
    ]

    /// Parses one --object argument.
    static func parse(_ text: String) throws -> UserObject {
        let opts: BlockOptions
        do {
            opts = try BlockOptions.parseKeyValue(text, impliedKey: "qom-type")
        } catch let e as BlockError {
            throw UsageError(message: e.message)
        }
        guard let type = opts.string("qom-type") else {
            throw UsageError(message: "Parameter 'qom-type' is missing")
        }
        guard let keys = knownKeys[type] else {
            throw UsageError(message: "Parameter 'qom-type' does not accept value '\(type)'")
        }
        guard let id = opts.string("id") else {
            throw UsageError(message: "Parameter 'id' is missing")
        }
        var props: [String: String] = [:]
        for k in opts.keys where k != "qom-type" && k != "id" {
            guard keys.contains(k) || (type == "authz-list" && k.hasPrefix("rules.")) else {
                throw UsageError(message: "Parameter '\(k)' is unexpected")
            }
            props[k] = opts.string(k)
        }
        if let ep = props["endpoint"], ep != "server" && ep != "client" {
            throw UsageError(message: "Parameter 'endpoint' does not accept value '\(ep)'")
        }
        return UserObject(type: type, id: id, props: props)
    }

    /// Creates all objects in order: checks ids are unique and credential files are readable.
    static func create(_ texts: [String]) throws -> [UserObject] {
        var out: [UserObject] = []
        for t in texts {
            let o = try parse(t)
            if out.contains(where: { $0.id == o.id }) {
                throw UsageError(message: "attempt to add duplicate property '\(o.id)' to object (type 'container')")
            }
            try checkFiles(o)
            out.append(o)
        }
        return out
    }

    /// The files each credential type needs, checked as QEMU checks them at creation.
    static func requiredFiles(_ o: UserObject) -> [String] {
        let dir = o.props["dir"] ?? ""
        let server = (o.props["endpoint"] ?? "client") == "server"
        switch o.type {
        case "tls-creds-x509":
            if server {
                return ["ca-cert.pem", "server-cert.pem", "server-key.pem"].map { "\(dir)/\($0)" }
            }
            return ["\(dir)/ca-cert.pem"]
        case "tls-creds-psk":
            return ["\(dir)/keys.psk"]
        default:
            return []
        }
    }

    static func checkFiles(_ o: UserObject) throws {
        if o.type == "tls-creds-x509" || o.type == "tls-creds-psk" {
            guard o.props["dir"] != nil else {
                throw UsageError(message: "Missing 'dir' property value")
            }
        }
        for f in requiredFiles(o) where access(f, R_OK) != 0 {
            throw UsageError(message: "Unable to access credentials \(f): \(String(cString: strerror(errno)))")
        }
    }
}
