// The object model's parsing corners, each as QEMU 7.2 behaves (checked with qemu-img, qemu-nbd and
// qemu-system-x86_64): keyval nesting and lists, QemuOpts flags and ids, the QAPI checks' order,
// glib's base64 decoder, the container's duplicate ids and the nbd driver's lookups.
@testable import ImageFormats
import XCTest

final class UserObjectsTests: XCTestCase {
    func message(_ body: () throws -> Void) -> String? {
        do { try body() } catch let e as BlockError { return e.message } catch { return "\(error)" }
        return nil
    }

    func testKeyval() throws {
        let p = try Keyval.parseKeyval("authz-list,id=a,rules.0.match=x,,y,rules.0.policy=allow,rules.1.match=z,rules.1.policy=deny",
                                       impliedKey: "qom-type")
        XCTAssertEqual(p.tree["qom-type"], .string("authz-list"))
        XCTAssertEqual(p.tree["rules"]?.arrayValue?.count, 2)
        XCTAssertEqual(p.tree["rules"]?.arrayValue?[0]["match"], .string("x,y"))
        XCTAssertFalse(p.help)
        XCTAssertTrue(try Keyval.parseKeyval("secret,help", impliedKey: "qom-type").help)
        XCTAssertEqual(message { _ = try Keyval.parseKeyval("secret,id=x,data", impliedKey: "qom-type") },
                       "Expected '=' after parameter 'data'")
        XCTAssertEqual(message { _ = try Keyval.parseKeyval("secret,,x,id=x", impliedKey: "qom-type") }, "Invalid parameter ''")
        XCTAssertEqual(message { _ = try Keyval.parseKeyval("a,dir=1,dir.b=2", impliedKey: "qom-type") },
                       "Parameters 'dir.*' used inconsistently")
        XCTAssertEqual(message { _ = try Keyval.parseKeyval("a,r.1.m=1", impliedKey: "qom-type") }, "Parameter 'r.0' missing")
        XCTAssertEqual(message { _ = try Keyval.parseKeyval("a,r.0=1,r.x=2", impliedKey: "qom-type") },
                       "Parameters 'r.*' used inconsistently")
    }

    func testQemuOpts() throws {
        let p = try Keyval.parseQemuOpts("iothread,id=a,id=b,noflag,x=1,x=2", impliedKey: "qom-type")
        XCTAssertEqual(p.id, "a")
        XCTAssertEqual(p.tree["flag"], .string("off"))
        XCTAssertEqual(p.tree["x"], .string("2"))
        XCTAssertEqual(p.warnings, ["short-form boolean option 'noflag' deprecated\nPlease use flag=off instead"])
    }

    func testSchemaOrderAndCatalogs() {
        func parse(_ s: String, _ c: ObjectCatalog = .qemuImg, _ d: UserObjects.Dialect = .keyval) -> String? {
            message { _ = try UserObjects.parse(s, catalog: c, dialect: d) }
        }
        XCTAssertEqual(parse("foo"), "Parameter 'qom-type' does not accept value 'foo'")
        XCTAssertEqual(parse("id=x"), "Parameter 'qom-type' is missing")
        XCTAssertEqual(parse("secret"), "Parameter 'id' is missing")
        XCTAssertEqual(parse("tls-creds-anon,id=x,zzz=1,endpoint=bad"), "Parameter 'endpoint' does not accept value 'bad'")
        XCTAssertEqual(parse("tls-creds-anon,id=x,zzz=1"), "Parameter 'zzz' is unexpected")
        XCTAssertEqual(parse("tls-creds-anon,id=x,zzz=1", .qemuSystem, .qemuOpts), "Invalid parameter 'zzz'")
        XCTAssertEqual(parse("authz-list,id=x,rules.0.match=a"), "Parameter 'rules.0.policy' is missing")
        XCTAssertEqual(parse("iothread,id=x,poll-max-ns=q"), "Parameter 'poll-max-ns' expects integer")
        XCTAssertEqual(parse("iothread,id=x,poll-max-ns=q", .qemuSystem, .qemuOpts), "Parameter 'poll-max-ns' expects an int64 value")
        XCTAssertEqual(parse("iothread,id=x"), "invalid object type: iothread")
        XCTAssertNil(parse("iothread,id=x", .qemuNbd))
        XCTAssertEqual(parse("memory-backend-ram,id=m", .qemuSystem), "invalid object type: memory-backend-ram")
        XCTAssertEqual(parse("secret,id=1x"), "Parameter 'id' expects an identifier")
        XCTAssertEqual(parse("{\"qom-type\":\"secret\",\"id\":\"s\",\"data\":5}"), "Invalid parameter type for 'data', expected: string")
        XCTAssertEqual(message { _ = try UserObjects.parse("iothread,id=a", catalog: .qemuSystem, dialect: .qemuOpts, takenIDs: ["a"]) },
                       "Duplicate ID 'a' for object")
        XCTAssertEqual(try UserObjects.parse("secret,help", catalog: .qemuImg).help,
                       "secret options:\n  data=<string>\n  file=<string>\n  format=<QCryptoSecretFormat>\n  iv=<string>\n  keyid=<string>")
    }

    func testGlibBase64() throws {
        XCTAssertEqual(try ObjectSecrets.decodeBase64(Array("aGVsbG8=".utf8)), Array("hello".utf8))
        XCTAssertEqual(try ObjectSecrets.decodeBase64(Array("aGVs\nbG8=".utf8)), Array("hello".utf8))
        XCTAssertEqual(try ObjectSecrets.decodeBase64(Array("aGVsbG8".utf8)), Array("hel".utf8))   // glib drops a partial group
        XCTAssertEqual(message { _ = try ObjectSecrets.decodeBase64(Array("aGVs bG8=".utf8)) }, "Base64 data contains invalid characters")
    }

    func testContainer() throws {
        let objects = UserObjects()
        try objects.create("secret,id=s0,data=aGk=,format=base64", catalog: .qemuImg)
        XCTAssertEqual(try objects.secretText(id: "s0"), "hi")
        XCTAssertEqual(message { try objects.create("secret,id=s0,data=x", catalog: .qemuImg) },
                       "attempt to add duplicate property 's0' to object (type 'container')")
        XCTAssertEqual(message { try objects.create("tls-creds-anon,id=t,loaded=off", catalog: .qemuImg) },
                       "Property 'tls-creds-anon.loaded' is not writable")
        XCTAssertEqual(message { _ = try objects.clientCredentials(id: "nope") }, "No TLS credentials with id 'nope'")
        XCTAssertEqual(message { _ = try objects.clientCredentials(id: "s0") }, "Object with id 's0' is not TLS credentials")
        XCTAssertEqual(message { _ = try objects.secret(id: "nope") }, "No secret with id 'nope'")
        try objects.create("authz-list,id=z,policy=deny,rules.0.match=a*,rules.0.policy=allow,rules.0.format=glob", catalog: .qemuImg)
        let check = try XCTUnwrap(objects.object(id: "z")?.authorization)
        XCTAssertTrue(check("alice"))
        XCTAssertFalse(check("bob"))
        XCTAssertEqual(objects.all.map(\.id), ["s0", "z"])
    }
}
