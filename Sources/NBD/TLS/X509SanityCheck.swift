// QEMU's sanity check of its own x509 credentials, made when a tls-creds-x509 object is created with
// sanity-check=on (the default), so that a bad certificate is refused at start-up with a message
// naming the file, not later as an obscure handshake failure.
//
// Follows QEMU 7.2's crypto/tlscredsx509.c as Debian ships it (with the stable backport that no
// longer requires the "key encipherment" usage), in its order: the own certificate (server-cert.pem
// or client-cert.pem, when readable) is parsed before the CA list (ca-cert.pem, at most 16
// certificates); then the own certificate is checked, then every CA certificate, each for validity
// times, basic constraints, a critical key usage and (not for CAs) a critical key purpose; last, the
// own certificate is verified against the CAs. Messages are QEMU's, word for word.
import CGnuTLS
import Glibc

public enum X509SanityCheck {
    /// What a certificate is for, which decides the checks and the words of the messages.
    enum Role {
        case server, client, ca

        var name: String {
            switch self {
            case .server: "server"
            case .client: "client"
            case .ca: "CA"
            }
        }
    }

    /// QEMU imports at most this many CA certificates (MAX_CERTS); more fail the import.
    static let maxCACertificates = 16

    /// Checks `certFile` (nil or unreadable: only the CAs) and the CA list in `caFile` as QEMU does;
    /// throws QEMU's message for the first problem found.
    public static func check(caFile: String, certFile: String?, isServer: Bool) throws(NBDError) {
        try GnuTLS.load()
        var loaded: [gnutls_x509_crt_t] = []
        defer { for c in loaded { GnuTLS.fn.gnutls_x509_crt_deinit(c) } }

        var own: (cert: gnutls_x509_crt_t, file: String)? = nil
        if let certFile, access(certFile, R_OK) == 0 {
            let cert = try loadCertificate(certFile, isServer: isServer)
            loaded.append(cert)
            own = (cert, certFile)
        }
        var cas: [gnutls_x509_crt_t] = []
        if access(caFile, R_OK) == 0 {
            cas = try loadCAList(caFile)
            loaded += cas
        }

        if let own { try checkCertificate(own.cert, file: own.file, role: isServer ? .server : .client) }
        for ca in cas { try checkCertificate(ca, file: caFile, role: .ca) }
        if let own, !cas.isEmpty { try verify(own.cert, file: own.file, against: cas, caFile: caFile, isServer: isServer) }
    }

    static func failure(_ message: String, errno code: Int32 = EINVAL) -> NBDError {
        NBDError(.tls, message, errno: code)
    }

    // MARK: Loading

    /// The file's bytes up to the first NUL (QEMU hands GnuTLS strlen() bytes), with GLib's messages
    /// for a file that cannot be read, behind QEMU's prefix (which says "CA cert list" for any file).
    static func contents(_ path: String) throws(NBDError) -> [UInt8] {
        let prefix = "Cannot load CA cert list \(path): "
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            throw failure(prefix + "Failed to open file “\(path)”: \(String(cString: strerror(e)))", errno: e)
        }
        defer { close(fd) }
        var st = stat()
        let regular = fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                let what = regular ? "Failed to read from file" : "Error reading file"
                throw failure(prefix + "\(what) “\(path)”: \(String(cString: strerror(e)))", errno: e)
            }
            bytes += chunk[0..<n]
        }
        if let nul = bytes.firstIndex(of: 0) { bytes.removeSubrange(nul...) }
        return bytes
    }

    /// Runs `body` with `bytes` as a GnuTLS datum.
    static func withDatum<R>(_ bytes: [UInt8], _ body: (UnsafePointer<gnutls_datum_t>) -> R) -> R {
        var copy = bytes
        return copy.withUnsafeMutableBufferPointer { buf in
            var datum = gnutls_datum_t(data: buf.baseAddress, size: UInt32(buf.count))
            return body(&datum)
        }
    }

    static func loadCertificate(_ file: String, isServer: Bool) throws(NBDError) -> gnutls_x509_crt_t {
        var crt: gnutls_x509_crt_t?
        let rc = GnuTLS.fn.gnutls_x509_crt_init(&crt)
        guard rc >= 0, let cert = crt else { throw failure("Unable to initialize certificate: \(GnuTLS.strerror(rc))") }
        let bytes: [UInt8]
        do {
            bytes = try contents(file)
        } catch {
            GnuTLS.fn.gnutls_x509_crt_deinit(cert)
            throw error
        }
        let imported = withDatum(bytes) { GnuTLS.fn.gnutls_x509_crt_import(cert, $0, GNUTLS_X509_FMT_PEM) }
        if imported < 0 {
            GnuTLS.fn.gnutls_x509_crt_deinit(cert)
            let role = isServer ? "server" : "client"
            throw failure("Unable to import \(role) certificate \(file): \(GnuTLS.strerror(imported))")
        }
        return cert
    }

    static func loadCAList(_ file: String) throws(NBDError) -> [gnutls_x509_crt_t] {
        let bytes = try contents(file)
        var slots = [gnutls_x509_crt_t?](repeating: nil, count: maxCACertificates)
        var count = UInt32(maxCACertificates)
        let rc = withDatum(bytes) { datum in
            slots.withUnsafeMutableBufferPointer {
                GnuTLS.fn.gnutls_x509_crt_list_import($0.baseAddress!, &count, datum, GNUTLS_X509_FMT_PEM, 0)
            }
        }
        if rc < 0 { throw failure("Unable to import CA certificate list \(file)") }
        return slots.prefix(Int(count)).compactMap { $0 }
    }

    // MARK: Checks of one certificate

    static func checkCertificate(_ cert: gnutls_x509_crt_t, file: String, role: Role) throws(NBDError) {
        try checkTimes(cert, file: file, role: role)
        try checkBasicConstraints(cert, file: file, role: role)
        try checkKeyUsage(cert, file: file, role: role)
        if role != .ca { try checkKeyPurpose(cert, file: file, role: role) }
    }

    static func checkTimes(_ cert: gnutls_x509_crt_t, file: String, role: Role) throws(NBDError) {
        let now = time(nil)
        if now == -1 {
            let e = errno
            throw failure("cannot get current time: \(String(cString: strerror(e)))", errno: e)
        }
        // An unreadable time comes back as -1, which counts as expired (as in QEMU).
        if GnuTLS.fn.gnutls_x509_crt_get_expiration_time(cert) < now {
            throw failure("The \(role.name) certificate \(file) has expired")
        }
        if GnuTLS.fn.gnutls_x509_crt_get_activation_time(cert) > now {
            throw failure("The \(role.name) certificate \(file) is not yet active")
        }
    }

    static func checkBasicConstraints(_ cert: gnutls_x509_crt_t, file: String, role: Role) throws(NBDError) {
        let status = GnuTLS.fn.gnutls_x509_crt_get_basic_constraints(cert, nil, nil, nil)
        if status > 0 {  // a CA
            if role != .ca {
                throw failure("The certificate \(file) basic constraints show a CA, but we need one for a \(role.name)")
            }
        } else if status == 0 {  // not a CA
            if role == .ca { throw failure("The certificate \(file) basic constraints do not show a CA") }
        } else if status == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE {
            if role == .ca { throw failure("The certificate \(file) is missing basic constraints for a CA") }
        } else {
            throw failure("Unable to query certificate \(file) basic constraints: \(GnuTLS.strerror(status))")
        }
    }

    /// Only a critical key usage extension can make a certificate unfit; without one anything goes.
    static func checkKeyUsage(_ cert: gnutls_x509_crt_t, file: String, role: Role) throws(NBDError) {
        var usage: UInt32 = 0, critical: UInt32 = 0
        let status = GnuTLS.fn.gnutls_x509_crt_get_key_usage(cert, &usage, &critical)
        if status == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE { return }
        if status < 0 { throw failure("Unable to query certificate \(file) key usage: \(GnuTLS.strerror(status))") }
        guard critical != 0 else { return }
        if role == .ca {
            if usage & UInt32(GNUTLS_KEY_KEY_CERT_SIGN) == 0 {
                throw failure("Certificate \(file) usage does not permit certificate signing")
            }
        } else if usage & UInt32(GNUTLS_KEY_DIGITAL_SIGNATURE) == 0 {
            throw failure("Certificate \(file) usage does not permit digital signature")
        }
    }

    /// A certificate without key purposes may be used for anything; with purposes, a server needs
    /// TLS WWW server (or any), a client TLS WWW client (or any), when the extension is critical.
    static func checkKeyPurpose(_ cert: gnutls_x509_crt_t, file: String, role: Role) throws(NBDError) {
        var allowServer = false, allowClient = false, critical = false
        var index: UInt32 = 0
        while true {
            var size = 0
            var status = GnuTLS.fn.gnutls_x509_crt_get_key_purpose_oid(cert, index, nil, &size, nil)
            if status == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE {
                if index == 0 { allowServer = true; allowClient = true }
                break
            }
            if status != GNUTLS_E_SHORT_MEMORY_BUFFER {
                throw failure("Unable to query certificate \(file) key purpose: \(GnuTLS.strerror(status))")
            }
            var oid = [CChar](repeating: 0, count: size + 1)
            var purposeCritical: UInt32 = 0
            status = GnuTLS.fn.gnutls_x509_crt_get_key_purpose_oid(cert, index, &oid, &size, &purposeCritical)
            if status < 0 {
                throw failure("Unable to query certificate \(file) key purpose: \(GnuTLS.strerror(status))")
            }
            if purposeCritical != 0 { critical = true }
            switch String(decoding: oid.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) {
            case GNUTLS_KP_TLS_WWW_SERVER: allowServer = true
            case GNUTLS_KP_TLS_WWW_CLIENT: allowClient = true
            case GNUTLS_KP_ANY: allowServer = true; allowClient = true
            default: break
            }
            index += 1
        }
        guard critical else { return }
        if role == .server && !allowServer {
            throw failure("Certificate \(file) purpose does not allow use with a TLS server")
        }
        if role == .client && !allowClient {
            throw failure("Certificate \(file) purpose does not allow use with a TLS client")
        }
    }

    // MARK: The own certificate against the CAs

    static func verify(_ cert: gnutls_x509_crt_t, file: String, against cas: [gnutls_x509_crt_t], caFile: String,
                       isServer: Bool) throws(NBDError) {
        var status: UInt32 = 0
        let chain: [gnutls_x509_crt_t?] = [cert]
        let authorities: [gnutls_x509_crt_t?] = cas
        let rc = GnuTLS.fn.gnutls_x509_crt_list_verify(chain, 1, authorities, UInt32(authorities.count), nil, 0, 0, &status)
        if rc < 0 {
            let role = isServer ? "server" : "client"
            throw failure("Unable to verify \(role) certificate \(file) against CA certificate \(caFile)")
        }
        guard status != 0 else { return }
        // The most telling flag wins, in QEMU's order of precedence.
        var reason = "Invalid certificate"
        if status & GNUTLS_CERT_INVALID.rawValue != 0 { reason = "The certificate is not trusted" }
        if status & GNUTLS_CERT_SIGNER_NOT_FOUND.rawValue != 0 { reason = "The certificate hasn't got a known issuer" }
        if status & GNUTLS_CERT_REVOKED.rawValue != 0 { reason = "The certificate has been revoked" }
        if status & GNUTLS_CERT_INSECURE_ALGORITHM.rawValue != 0 { reason = "The certificate uses an insecure algorithm" }
        throw failure("Our own certificate \(file) failed validation against \(caFile): \(reason)")
    }
}
