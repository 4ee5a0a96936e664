// A block cipher from the GnuTLS that TLS loads: what QEMU's secret objects need to decrypt a
// keyid= secret (AES-256-CBC, the way libvirt hands QEMU its passwords). Raw blocks, no padding:
// the caller checks and strips it, with QEMU's message.
import CGnuTLS
import Glibc

public enum TLSCipher {
    /// Decrypts whole 16-byte blocks of `data` with a 32-byte key and a 16-byte IV.
    public static func aes256CBCDecrypt(key: [UInt8], iv: [UInt8], data: [UInt8]) throws(NBDError) -> [UInt8] {
        precondition(key.count == 32 && iv.count == 16 && data.count % 16 == 0)
        try GnuTLS.load()
        var k = key, v = iv
        var handle: gnutls_cipher_hd_t?
        let rc = k.withUnsafeMutableBytes { kp in
            v.withUnsafeMutableBytes { vp in
                var kd = gnutls_datum_t(data: kp.baseAddress!.assumingMemoryBound(to: UInt8.self), size: 32)
                var vd = gnutls_datum_t(data: vp.baseAddress!.assumingMemoryBound(to: UInt8.self), size: 16)
                return GnuTLS.fn.gnutls_cipher_init(&handle, GNUTLS_CIPHER_AES_256_CBC, &kd, &vd)
            }
        }
        guard rc == 0, let h = handle else { throw NBDError(.tls, "Cannot initialize cipher: \(GnuTLS.strerror(rc))", errno: EINVAL) }
        defer { GnuTLS.fn.gnutls_cipher_deinit(h) }
        var out = [UInt8](repeating: 0, count: data.count)
        guard !data.isEmpty else { return out }
        let r2 = data.withUnsafeBytes { dp in
            out.withUnsafeMutableBytes { op in
                GnuTLS.fn.gnutls_cipher_decrypt2(h, dp.baseAddress, dp.count, op.baseAddress, op.count)
            }
        }
        guard r2 == 0 else { throw NBDError(.tls, "Cannot decrypt data: \(GnuTLS.strerror(r2))", errno: EINVAL) }
        return out
    }
}
