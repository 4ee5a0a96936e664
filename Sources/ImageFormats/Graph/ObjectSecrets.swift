// secret objects (crypto/secret.c, secret_common.c): the value comes from data= or the whole of
// file= (a trailing newline included, as in QEMU), format=base64 decodes it, and keyid=/iv= decrypt
// it (AES-256-CBC with the 32-byte key of another secret). Loaded when the object is created, with
// QEMU's messages, glib's texts for unreadable files and glib's lenient base64 decoder behind QEMU's
// character check.
import Glibc
import NBD

enum ObjectSecrets {
    static func error(_ message: String) -> BlockError { BlockError(.invalidArgument, message, errno: EINVAL) }

    /// The secret's bytes, as qcrypto_secret_load_data leaves them.
    static func load(_ o: UserObject, in registry: UserObjects) throws(BlockError) -> [UInt8] {
        let data = o.props["data"], file = o.props["file"]
        let input: [UInt8]
        if data != nil && file != nil {
            throw error("'file' and 'data' are mutually exclusive")
        } else if let file {
            input = try readFile(file, what: "Unable to read \(file): ")
        } else if let data {
            input = Array(data.utf8)
        } else {
            throw error("Either 'file' or 'data' must be provided")
        }
        let base64 = o.props["format"] == "base64"
        if let keyid = o.props["keyid"] {
            return try decrypt(input, base64: base64, keyid: keyid, iv: o.props["iv"], registry: registry)
        }
        return base64 ? try decodeBase64(input) : input
    }

    /// g_file_get_contents, with glib's messages after `what`.
    static func readFile(_ path: String, what: String) throws(BlockError) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let e = errno
            throw BlockError(.invalidArgument, "\(what)Failed to open file “\(path)”: \(BlockError.strerror(e))", errno: e)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            throw BlockError(.io, "\(what)Failed to get attributes of file “\(path)”: fstat() failed: \(BlockError.strerror(e))", errno: e)
        }
        let regular = (st.st_mode & S_IFMT) == S_IFREG && st.st_size > 0
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                let text = regular ? "Failed to read from file" : "Error reading file"
                throw BlockError(.io, "\(what)\(text) “\(path)”: \(BlockError.strerror(e))", errno: e)
            }
            out += buf[0..<n]
        }
        return out
    }

    /// qbase64_decode: QEMU's character check, then g_base64_decode.
    static func decodeBase64(_ input: [UInt8]) throws(BlockError) -> [UInt8] {
        if input.contains(0) { throw error("Data contains embedded NUL characters") }
        guard input.allSatisfy({ rank($0) != nil || $0 == UInt8(ascii: "\n") }) else {
            throw error("Base64 data contains invalid characters")
        }
        return glibBase64Decode(input)
    }

    /// A base64 character's value ('=' counts as 0, as in glib); nil for anything else.
    static func rank(_ c: UInt8) -> UInt32? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return UInt32(c - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return UInt32(c - UInt8(ascii: "a")) + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c - UInt8(ascii: "0")) + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        case UInt8(ascii: "="): return 0
        default: return nil
        }
    }

    /// g_base64_decode_step: bytes come out per complete group of four characters, fewer when the
    /// group ends in '='; other characters are skipped, an incomplete last group is dropped.
    static func glibBase64Decode(_ input: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var v: UInt32 = 0, n = 0
        var last: (UInt8, UInt8) = (0, 0)
        for c in input {
            guard let r = rank(c) else { continue }
            last = (c, last.0)
            v = (v << 6) | r
            n += 1
            if n == 4 {
                out.append(UInt8(truncatingIfNeeded: v >> 16))
                if last.1 != UInt8(ascii: "=") { out.append(UInt8(truncatingIfNeeded: v >> 8)) }
                if last.0 != UInt8(ascii: "=") { out.append(UInt8(truncatingIfNeeded: v)) }
                n = 0
            }
        }
        return out
    }

    /// qcrypto_secret_decrypt: AES-256-CBC with the key secret `keyid` and a base64 IV, then the
    /// PKCS#7 padding length checked and removed.
    static func decrypt(_ input: [UInt8], base64: Bool, keyid: String, iv: String?,
                        registry: UserObjects) throws(BlockError) -> [UInt8] {
        let key = try registry.secret(id: keyid)
        guard key.count == 32 else { throw error("Key should be 32 bytes in length") }
        guard let iv else { throw error("IV is required to decrypt secret") }
        let ivBytes = try decodeBase64(Array(iv.utf8))
        guard ivBytes.count == 16 else { throw error("IV should be 16 bytes in length not \(ivBytes.count)") }
        let ciphertext = base64 ? try decodeBase64(input) : input
        guard ciphertext.count % 16 == 0 else {
            throw error("Length \(ciphertext.count) must be a multiple of block size 16")
        }
        var plain: [UInt8]
        do {
            plain = try TLSCipher.aes256CBCDecrypt(key: key, iv: ivBytes, data: ciphertext)
        } catch {
            throw BlockError(.invalidArgument, error.message, errno: error.errno)
        }
        let pad = Int(plain.last ?? 0)
        guard !plain.isEmpty, pad <= 16, pad <= plain.count else {
            throw error("Incorrect number of padding bytes (\(pad)) found on decrypted data")
        }
        plain.removeLast(pad)
        return plain
    }
}
