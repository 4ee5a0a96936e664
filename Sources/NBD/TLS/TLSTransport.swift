// A TLS session (GnuTLS) over a socket transport: what NBD_OPT_STARTTLS upgrades a connection to.
//
// GnuTLS reads and writes through our push/pull functions, so the socket keeps its deadline (the
// server's handshake limit covers the TLS handshake too) and sends never raise SIGPIPE. The
// handshake runs in the initializer; certificate and host name checks happen inside it
// (gnutls_session_set_verify_cert), authorization (--tls-authz) right after. One thread may send
// while another receives, which is what the NBD client does.
// Every GnuTLS call goes through GnuTLS.fn (dlopen()ed, GnuTLS.swift); credentials loaded it.
import CGnuTLS
import Glibc

public final class TLSTransport: NBDTransport, @unchecked Sendable {
    let inner: NBDTransport
    private var session: gnutls_session_t?
    private var timedOut = false
    private var closed = false
    public var fd: Int32 { inner.fd }
    public var deadline: Deadline? {
        get { inner.deadline }
        set { inner.deadline = newValue }
    }
    /// The peer's identity: the x509 distinguished name or the PSK user name (nil if none).
    public private(set) var peerIdentity: String?

    init(inner: NBDTransport, credentials: NBDTLSCredentials, hostname: String?,
         authorize: (@Sendable (String) -> Bool)?) throws {
        self.inner = inner
        var s: gnutls_session_t?
        var rc = GnuTLS.fn.gnutls_init(&s, UInt32(credentials.isServer ? GNUTLS_SERVER : GNUTLS_CLIENT))
        guard rc == 0, let sess = s else { throw NBDTLSCredentials.gnutlsError("Cannot initialize TLS session", rc) }
        session = sess
        do {
            rc = GnuTLS.fn.gnutls_priority_set_direct(sess, credentials.priority, nil)
            if rc < 0 { throw NBDTLSCredentials.gnutlsError("Unable to set TLS session priority \(credentials.priority)", rc) }
            try credentials.apply(to: sess)
            var qemuCheck = false
            if case .x509(let verify) = credentials.kind, verify {
                if !credentials.isServer && credentials.qemuPeerCheck {
                    qemuCheck = true
                } else {
                    GnuTLS.fn.gnutls_session_set_verify_cert(sess, credentials.isServer ? nil : hostname, 0)
                }
            }
            if !credentials.isServer, let h = hostname, !h.isEmpty, h.first?.isLetter == true {
                _ = GnuTLS.fn.gnutls_server_name_set(sess, GNUTLS_NAME_DNS, h, h.utf8.count)
            }
            GnuTLS.fn.gnutls_transport_set_ptr(sess, Unmanaged.passUnretained(self).toOpaque())
            GnuTLS.fn.gnutls_transport_set_push_function(sess, { ptr, data, len in
                let t = Unmanaged<TLSTransport>.fromOpaque(ptr!).takeUnretainedValue()
                return t.push(data, len)
            })
            GnuTLS.fn.gnutls_transport_set_pull_function(sess, { ptr, data, len in
                let t = Unmanaged<TLSTransport>.fromOpaque(ptr!).takeUnretainedValue()
                return t.pull(data, len)
            })
            try handshake(sess)
            if qemuCheck { try checkServerCertificate(sess, hostname: hostname) }
            try checkPeer(sess, credentials, authorize: authorize)
        } catch {
            GnuTLS.fn.gnutls_deinit(sess)
            session = nil
            throw error
        }
    }

    deinit {
        if let s = session { GnuTLS.fn.gnutls_deinit(s) }
    }

    // MARK: the socket side

    private func push(_ data: UnsafeRawPointer?, _ len: Int) -> Int {
        guard let d = data else { return 0 }
        do {
            try inner.send(UnsafeRawBufferPointer(start: d, count: len), .empty, .empty)
            return len
        } catch let e as NBDError {
            GnuTLS.fn.gnutls_transport_set_errno(session, e.errno == 0 ? EIO : e.errno)
            return -1
        } catch {
            GnuTLS.fn.gnutls_transport_set_errno(session, EIO)
            return -1
        }
    }

    private func pull(_ data: UnsafeMutableRawPointer?, _ len: Int) -> Int {
        guard let d = data else { return 0 }
        do {
            return try inner.receive(into: UnsafeMutableRawBufferPointer(start: d, count: len))
        } catch let e as NBDError {
            if e.kind == .timeout { timedOut = true }
            GnuTLS.fn.gnutls_transport_set_errno(session, e.errno == 0 ? EIO : e.errno)
            return -1
        } catch {
            GnuTLS.fn.gnutls_transport_set_errno(session, EIO)
            return -1
        }
    }

    private func error(_ what: String, _ rc: Int32) -> NBDError {
        if timedOut { return NBDError(.timeout, "timed out", errno: ETIMEDOUT) }
        if rc == GNUTLS_E_PREMATURE_TERMINATION || rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_PULL_ERROR {
            return NBDError(.eof, "\(what): \(GnuTLS.strerror(rc))", errno: EIO)
        }
        return NBDTLSCredentials.gnutlsError(what, rc)
    }

    private func handshake(_ s: gnutls_session_t) throws {
        while true {
            let rc = GnuTLS.fn.gnutls_handshake(s)
            if rc == 0 { return }
            if GnuTLS.fn.gnutls_error_is_fatal(rc) == 0 { continue }
            if rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR {
                let status = GnuTLS.fn.gnutls_session_get_verify_cert_status(s)
                var out = gnutls_datum_t()
                let type = GnuTLS.fn.gnutls_certificate_type_get(s)
                var msg = "certificate verification failed"
                if GnuTLS.fn.gnutls_certificate_verification_status_print(status, type, &out, 0) == 0, let p = out.data {
                    msg = String(cString: UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self))
                    gnutls_free_wrapper(p)
                }
                throw NBDError(.tls, "TLS handshake failed: \(msg)", errno: EACCES)
            }
            throw error("TLS handshake failed", rc)
        }
    }

    /// QEMU's client-side check of the server's certificate chain, validity period and host name.
    private func checkServerCertificate(_ s: gnutls_session_t, hostname: String?) throws {
        func fail(_ m: String) -> NBDError { NBDError(.tls, m, errno: EACCES) }
        var status: UInt32 = 0
        let rc = GnuTLS.fn.gnutls_certificate_verify_peers2(s, &status)
        if rc < 0 { throw fail("Verify failed: \(GnuTLS.strerror(rc))") }
        if status != 0 {
            var reason = "Invalid certificate"
            if status & GNUTLS_CERT_INVALID.rawValue != 0 { reason = "The certificate is not trusted" }
            if status & GNUTLS_CERT_SIGNER_NOT_FOUND.rawValue != 0 { reason = "The certificate hasn't got a known issuer" }
            if status & GNUTLS_CERT_REVOKED.rawValue != 0 { reason = "The certificate has been revoked" }
            if status & GNUTLS_CERT_INSECURE_ALGORITHM.rawValue != 0 { reason = "The certificate uses an insecure algorithm" }
            throw fail(reason)
        }
        var n: UInt32 = 0
        guard let list = GnuTLS.fn.gnutls_certificate_get_peers(s, &n), n > 0 else { throw fail("No certificate peers") }
        let now = time(nil)
        for i in 0..<Int(n) {
            var crt: gnutls_x509_crt_t?
            let r = GnuTLS.fn.gnutls_x509_crt_init(&crt)
            guard r >= 0, let crt else { throw fail("Cannot initialize certificate: \(GnuTLS.strerror(r))") }
            defer { GnuTLS.fn.gnutls_x509_crt_deinit(crt) }
            let r2 = GnuTLS.fn.gnutls_x509_crt_import(crt, list + i, GNUTLS_X509_FMT_DER)
            if r2 < 0 { throw fail("Cannot import certificate: \(GnuTLS.strerror(r2))") }
            if GnuTLS.fn.gnutls_x509_crt_get_activation_time(crt) > now { throw fail("The certificate is not yet activated") }
            if GnuTLS.fn.gnutls_x509_crt_get_expiration_time(crt) < now { throw fail("The certificate has expired") }
            if i == 0 {
                guard let h = hostname, !h.isEmpty else { throw fail("No hostname for certificate validation") }
                if GnuTLS.fn.gnutls_x509_crt_check_hostname(crt, h) == 0 {
                    throw fail("Certificate does not match the hostname \(h)")
                }
            }
        }
    }

    /// The peer's identity and the --tls-authz decision.
    private func checkPeer(_ s: gnutls_session_t, _ c: NBDTLSCredentials, authorize: (@Sendable (String) -> Bool)?) throws {
        switch c.kind {
        case .x509:
            var n: UInt32 = 0
            if let list = GnuTLS.fn.gnutls_certificate_get_peers(s, &n), n > 0 {
                var crt: gnutls_x509_crt_t?
                if GnuTLS.fn.gnutls_x509_crt_init(&crt) == 0, let crt {
                    defer { GnuTLS.fn.gnutls_x509_crt_deinit(crt) }
                    if GnuTLS.fn.gnutls_x509_crt_import(crt, list, GNUTLS_X509_FMT_DER) == 0 {
                        var size = 0
                        _ = GnuTLS.fn.gnutls_x509_crt_get_dn(crt, nil, &size)
                        var buf = [CChar](repeating: 0, count: size + 1)
                        if GnuTLS.fn.gnutls_x509_crt_get_dn(crt, &buf, &size) == 0 {
                            peerIdentity = String(decoding: buf.prefix(size).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                        }
                    }
                }
            }
        case .psk:
            if c.isServer, let u = GnuTLS.fn.gnutls_psk_server_get_username(s) { peerIdentity = String(cString: u) }
        case .anon:
            break
        }
        if c.isServer, let authorize {
            let id = peerIdentity ?? ""
            if !authorize(id) {
                let what: String
                switch c.kind {
                case .x509: what = "TLS x509 authz check for \(id) is denied"
                case .psk: what = "TLS PSK authz check for \(id) is denied"
                case .anon: what = "TLS authz check is denied"
                }
                throw NBDError(.tls, what, errno: EACCES)
            }
        }
    }

    // MARK: NBDTransport

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let s = session, buffer.count > 0 else { return 0 }
        while true {
            let n = GnuTLS.fn.gnutls_record_recv(s, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let rc = Int32(n)
            if rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED { continue }
            if rc == GNUTLS_E_PREMATURE_TERMINATION { return 0 }
            throw error("Cannot read from TLS channel", rc)
        }
    }

    private func sendAll(_ s: gnutls_session_t, _ b: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < b.count {
            let n = GnuTLS.fn.gnutls_record_send(s, b.baseAddress! + off, b.count - off)
            if n >= 0 {
                off += n
                continue
            }
            let rc = Int32(n)
            if rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED { continue }
            throw error("Cannot write to TLS channel", rc)
        }
    }

    public func send(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ c: UnsafeRawBufferPointer) throws {
        guard let s = session else { throw NBDError(.eof, "TLS session closed", errno: EPIPE) }
        let total = a.count + b.count + c.count
        // Small messages go out as one record; big payloads stream record by record.
        let cork = total <= 64 * 1024
        if cork { GnuTLS.fn.gnutls_record_cork(s) }
        try sendAll(s, a)
        try sendAll(s, b)
        try sendAll(s, c)
        if cork {
            while true {
                let rc = GnuTLS.fn.gnutls_record_uncork(s, UInt32(GNUTLS_RECORD_WAIT))
                if rc >= 0 { break }
                if Int32(rc) == GNUTLS_E_AGAIN || Int32(rc) == GNUTLS_E_INTERRUPTED { continue }
                throw error("Cannot write to TLS channel", Int32(rc))
            }
        }
    }

    public func shutdown() { inner.shutdown() }

    public func close() {
        if closed { return }
        closed = true
        if let s = session { _ = GnuTLS.fn.gnutls_bye(s, GNUTLS_SHUT_WR) }
        inner.close()
    }
}

/// gnutls_free is a C variable Swift 6 will not touch; GnuTLS's default allocator is malloc.
@inline(__always) func gnutls_free_wrapper(_ p: UnsafeMutableRawPointer?) {
    free(p)
}
