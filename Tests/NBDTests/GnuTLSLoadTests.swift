// GnuTLS is loaded on first TLS use (NBD/TLS/GnuTLS.swift): loading works here (the test machines
// have libgnutls30), and a library that is not there gives an error naming the package, not a crash.
import Glibc
import XCTest
@testable import NBD

final class GnuTLSLoadTests: XCTestCase {
    func testLoadsAndCallsThroughTheTable() throws {
        try GnuTLS.load()
        try GnuTLS.load()  // idempotent
        XCTAssertEqual(GnuTLS.strerror(-28), "Resource temporarily unavailable, try again.")  // GNUTLS_E_AGAIN
    }

    func testMissingLibraryNamesThePackage() {
        guard case .failure(let e) = GnuTLS.open(soname: "libgnutls-absent.so.99") else {
            return XCTFail("loading a library that does not exist succeeded")
        }
        XCTAssertEqual(e.kind, .tls)
        XCTAssertEqual(e.errno, ELIBACC)
        XCTAssertTrue(e.message.contains("libgnutls30"), e.message)
        XCTAssertTrue(e.message.contains("libgnutls-absent.so.99"), e.message)
        // The real table is untouched by the failed attempt.
        XCTAssertNoThrow(try GnuTLS.load())
        XCTAssertEqual(GnuTLS.strerror(0), "Success.")
    }
}
