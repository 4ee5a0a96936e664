// TLS from --tls-creds / --tls-authz: the credentials the named tls-creds object loaded when it was
// created (ImageFormats' UserObjects), and the named authz object's check for a server.
import ImageFormats
import NBD

struct TLSSetup {
    var credentials: NBDTLSCredentials
    var authorize: (@Sendable (String) -> Bool)?

    func serverUpgrade() throws -> @Sendable (NBDTransport) throws -> NBDTransport {
        credentials.serverUpgrade(authorize: authorize)
    }

    func clientUpgrade(hostname: String) throws -> @Sendable (NBDTransport) throws -> NBDTransport {
        credentials.clientUpgrade(hostname: hostname)
    }
}
