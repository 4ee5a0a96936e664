// TLS credentials from --object, turned into transport upgrades for the NBD module.
// (The GnuTLS session itself lives in the NBD module's TLS/ folder.)
import NBD

struct TLSSetup {
    var creds: UserObject
    var authz: UserObject?
    var objects: [UserObject]

    func serverUpgrade() throws -> @Sendable (NBDTransport) throws -> NBDTransport {
        throw NBDError(.tls, "TLS support is not built yet", errno: 95)
    }

    func clientUpgrade(hostname: String) throws -> @Sendable (NBDTransport) throws -> NBDTransport {
        throw NBDError(.tls, "TLS support is not built yet", errno: 95)
    }
}
