// TLS credentials in QEMU's layout, loaded into GnuTLS once and shared by every session.
//
// x509 (tls-creds-x509, dir=DIR): ca-cert.pem (trust), ca-crl.pem (optional), and for a server
// server-cert.pem + server-key.pem, for a client client-cert.pem + client-key.pem when present.
// verify-peer (default on) makes a server demand and check a client certificate, and a client check
// the server's certificate and host name. PSK (tls-creds-psk): DIR/keys.psk with "username:hexkey"
// lines, GnuTLS's own format; a client uses the key of `username` (default "qemu"). Anonymous
// (tls-creds-anon): no authentication, for tests. Messages follow QEMU's crypto/tlscreds*.c.
// Creating credentials is what loads GnuTLS (GnuTLS.swift): without it, this init throws.
import CGnuTLS
import Glibc

public final class NBDTLSCredentials: @unchecked Sendable {
    public enum Kind: Sendable, Equatable {
        case x509(verifyPeer: Bool)
        case psk(username: String)
        case anon
    }

    public let kind: Kind
    public let isServer: Bool
    public let priority: String
    /// For a server: decides whether a client identity (x509 DN or PSK user name) may connect.
    public let authorize: (@Sendable (String) -> Bool)?
    /// An x509 client with verify-peer checks the server's certificate after the handshake as QEMU's
    /// qcrypto_tls_session_check_certificate does, with its messages ("No hostname for certificate
    /// validation" without a host name); otherwise GnuTLS checks it during the handshake (libnbd's way,
    /// which skips the host name check when there is none).
    public let qemuPeerCheck: Bool
    private var certificate: gnutls_certificate_credentials_t?
    private var pskServer: gnutls_psk_server_credentials_t?
    private var pskClient: gnutls_psk_client_credentials_t?
    private var anonServer: gnutls_anon_server_credentials_t?
    private var anonClient: gnutls_anon_client_credentials_t?

    static func gnutlsError(_ what: String, _ rc: Int32) -> NBDError {
        NBDError(.tls, "\(what): \(GnuTLS.strerror(rc))", errno: EINVAL)
    }

    private static func readable(_ path: String) -> Bool { access(path, R_OK) == 0 }

    private static func requireFile(_ path: String) throws {
        if access(path, R_OK) != 0 {
            throw NBDError(.tls, "Unable to access credentials \(path): \(String(cString: strerror(errno)))", errno: errno)
        }
    }

    /// Loads credentials from `dir`. `password` unlocks an encrypted x509 key (passwordid=).
    public init(kind: Kind, directory dir: String, isServer: Bool, priority: String? = nil, password: String? = nil,
                authorize: (@Sendable (String) -> Bool)? = nil, qemuPeerCheck: Bool = false) throws {
        try GnuTLS.load()  // first: every GnuTLS call below goes through the loaded table
        self.kind = kind
        self.isServer = isServer
        self.authorize = authorize
        self.qemuPeerCheck = qemuPeerCheck
        switch kind {
        case .x509:
            self.priority = priority ?? "NORMAL"
            var cred: gnutls_certificate_credentials_t?
            var rc = GnuTLS.fn.gnutls_certificate_allocate_credentials(&cred)
            guard rc == 0, let c = cred else { throw NBDTLSCredentials.gnutlsError("Cannot allocate credentials", rc) }
            certificate = c
            let ca = "\(dir)/ca-cert.pem"
            try NBDTLSCredentials.requireFile(ca)
            rc = GnuTLS.fn.gnutls_certificate_set_x509_trust_file(c, ca, GNUTLS_X509_FMT_PEM)
            if rc < 0 { throw NBDTLSCredentials.gnutlsError("Cannot load CA certificate '\(ca)'", rc) }
            let crl = "\(dir)/ca-crl.pem"
            if NBDTLSCredentials.readable(crl) {
                rc = GnuTLS.fn.gnutls_certificate_set_x509_crl_file(c, crl, GNUTLS_X509_FMT_PEM)
                if rc < 0 { throw NBDTLSCredentials.gnutlsError("Cannot load CRL '\(crl)'", rc) }
            }
            let role = isServer ? "server" : "client"
            let cert = "\(dir)/\(role)-cert.pem", key = "\(dir)/\(role)-key.pem"
            if isServer {
                try NBDTLSCredentials.requireFile(cert)
                try NBDTLSCredentials.requireFile(key)
            }
            if NBDTLSCredentials.readable(cert) && NBDTLSCredentials.readable(key) {
                rc = GnuTLS.fn.gnutls_certificate_set_x509_key_file2(c, cert, key, GNUTLS_X509_FMT_PEM, password, 0)
                if rc < 0 { throw NBDTLSCredentials.gnutlsError("Cannot load certificate '\(cert)' & key '\(key)'", rc) }
            }
            if isServer { _ = GnuTLS.fn.gnutls_certificate_set_known_dh_params(c, GNUTLS_SEC_PARAM_MEDIUM) }
        case .psk(let username):
            self.priority = priority ?? "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"
            let file = "\(dir)/keys.psk"
            try NBDTLSCredentials.requireFile(file)
            if isServer {
                var cred: gnutls_psk_server_credentials_t?
                let rc = GnuTLS.fn.gnutls_psk_allocate_server_credentials(&cred)
                guard rc == 0, let c = cred else { throw NBDTLSCredentials.gnutlsError("Cannot allocate credentials", rc) }
                pskServer = c
                let r2 = GnuTLS.fn.gnutls_psk_set_server_credentials_file(c, file)
                if r2 < 0 { throw NBDTLSCredentials.gnutlsError("Cannot set PSK server credentials", r2) }
                _ = GnuTLS.fn.gnutls_psk_set_server_known_dh_params(c, GNUTLS_SEC_PARAM_MEDIUM)
            } else {
                guard let hex = try NBDTLSCredentials.pskKey(file: file, username: username) else {
                    throw NBDError(.tls, "Username \(username) not found in PSK file \(file)", errno: ENOENT)
                }
                var cred: gnutls_psk_client_credentials_t?
                let rc = GnuTLS.fn.gnutls_psk_allocate_client_credentials(&cred)
                guard rc == 0, let c = cred else { throw NBDTLSCredentials.gnutlsError("Cannot allocate credentials", rc) }
                pskClient = c
                var bytes = Array(hex.utf8)
                let r2 = bytes.withUnsafeMutableBytes { raw -> Int32 in
                    var datum = gnutls_datum_t(data: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), size: UInt32(raw.count))
                    return GnuTLS.fn.gnutls_psk_set_client_credentials(c, username, &datum, GNUTLS_PSK_KEY_HEX)
                }
                if r2 < 0 { throw NBDTLSCredentials.gnutlsError("Cannot set PSK client credentials", r2) }
            }
        case .anon:
            self.priority = priority ?? "NORMAL:+ANON-ECDH:+ANON-DH"
            if isServer {
                var cred: gnutls_anon_server_credentials_t?
                let rc = GnuTLS.fn.gnutls_anon_allocate_server_credentials(&cred)
                guard rc == 0, let c = cred else { throw NBDTLSCredentials.gnutlsError("Cannot allocate credentials", rc) }
                anonServer = c
                _ = GnuTLS.fn.gnutls_anon_set_server_known_dh_params(c, GNUTLS_SEC_PARAM_MEDIUM)
            } else {
                var cred: gnutls_anon_client_credentials_t?
                let rc = GnuTLS.fn.gnutls_anon_allocate_client_credentials(&cred)
                guard rc == 0, let c = cred else { throw NBDTLSCredentials.gnutlsError("Cannot allocate credentials", rc) }
                anonClient = c
            }
        }
    }

    deinit {
        if let c = certificate { GnuTLS.fn.gnutls_certificate_free_credentials(c) }
        if let c = pskServer { GnuTLS.fn.gnutls_psk_free_server_credentials(c) }
        if let c = pskClient { GnuTLS.fn.gnutls_psk_free_client_credentials(c) }
        if let c = anonServer { GnuTLS.fn.gnutls_anon_free_server_credentials(c) }
        if let c = anonClient { GnuTLS.fn.gnutls_anon_free_client_credentials(c) }
    }

    /// The hex key of `username` in a keys.psk file.
    static func pskKey(file: String, username: String) throws -> String? {
        guard let f = fopen(file, "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 4096)
        while fgets(&line, 4096, f) != nil {
            let s = String(decoding: line.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let t = s.trimmingNewline()
            if let colon = t.firstIndex(of: ":"), t[..<colon] == username {
                return String(t[t.index(after: colon)...])
            }
        }
        return nil
    }

    /// Attaches these credentials to a new session.
    func apply(to session: gnutls_session_t) throws {
        var rc: Int32 = 0
        if let c = certificate {
            rc = GnuTLS.fn.gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(c))
            if isServer, case .x509(let verify) = kind, verify {
                GnuTLS.fn.gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE)
            }
        } else if let c = pskServer {
            rc = GnuTLS.fn.gnutls_credentials_set(session, GNUTLS_CRD_PSK, UnsafeMutableRawPointer(c))
        } else if let c = pskClient {
            rc = GnuTLS.fn.gnutls_credentials_set(session, GNUTLS_CRD_PSK, UnsafeMutableRawPointer(c))
        } else if let c = anonServer {
            rc = GnuTLS.fn.gnutls_credentials_set(session, GNUTLS_CRD_ANON, UnsafeMutableRawPointer(c))
        } else if let c = anonClient {
            rc = GnuTLS.fn.gnutls_credentials_set(session, GNUTLS_CRD_ANON, UnsafeMutableRawPointer(c))
        }
        if rc < 0 { throw NBDTLSCredentials.gnutlsError("Cannot set session credentials", rc) }
    }

    /// A transport upgrade for the server side; `authorize` (--tls-authz), when given, replaces the
    /// check these credentials were made with.
    public func serverUpgrade(authorize: (@Sendable (String) -> Bool)? = nil) -> @Sendable (NBDTransport) throws -> NBDTransport {
        { [self] inner in try TLSTransport(inner: inner, credentials: self, hostname: nil, authorize: authorize ?? self.authorize) }
    }

    /// A transport upgrade for a client that expects `hostname` in the server's certificate.
    public func clientUpgrade(hostname: String?) -> @Sendable (NBDTransport) throws -> NBDTransport {
        { [self] inner in try TLSTransport(inner: inner, credentials: self, hostname: hostname, authorize: nil) }
    }
}

extension String {
    func trimmingNewline() -> Substring {
        var s = Substring(self)
        while let l = s.last, l == "\n" || l == "\r" { s.removeLast() }
        return s
    }
}
