// GnuTLS, loaded on first use: the programs do not link it (CGnuTLS explains the memory it saves).
//
// NBDTLSCredentials.init calls `GnuTLS.load()` before anything else, and every GnuTLS call goes
// through `GnuTLS.fn` after that; a TLSTransport needs credentials, so it never runs first. Without
// the library, TLS setup throws an NBDError naming the package instead of the program failing to
// start (or crashing) for everyone, TLS or not.
import CGnuTLS
import Glibc
import Synchronization

enum GnuTLS {
    /// The Debian package that ships CGNUTLS_SONAME.
    static let package = "libgnutls30"

    /// nil until the first load; then the outcome, kept for the life of the process.
    private static let state = Mutex<Result<Void, NBDError>?>(nil)

    /// Loads GnuTLS once (thread-safe); throws the same error every time if it is not there.
    static func load() throws(NBDError) {
        try state.withLock { s -> Result<Void, NBDError> in
            if let done = s { return done }
            let r = open(soname: CGNUTLS_SONAME)
            s = r
            return r
        }.get()
    }

    /// One attempt at `soname` (tests point it at a library that does not exist).
    static func open(soname: String) -> Result<Void, NBDError> {
        var message = [CChar](repeating: 0, count: 512)
        if cgnutls_load(soname, &message, message.count) == 0 { return .success(()) }
        let why = String(decoding: message.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return .failure(NBDError(.tls, "TLS is unavailable: cannot load GnuTLS (\(why)); install the \(package) package",
                                 errno: ELIBACC))
    }

    /// GnuTLS's entry points; only valid after `load()` succeeded.
    static var fn: cgnutls_api { unsafeAddress { cgnutls_table() } }

    /// A GnuTLS error code's text.
    static func strerror(_ rc: Int32) -> String {
        fn.gnutls_strerror(rc).map { String(cString: $0) } ?? "GnuTLS error \(rc)"
    }
}
