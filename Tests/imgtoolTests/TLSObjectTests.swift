// --object with the nbd driver over TLS, the QEMU way: `imgtool info|convert|map|compare --object
// tls-creds-{psk,x509},...,endpoint=client --image-opts driver=nbd,...,tls-creds=ID` against our
// nbdserver and against qemu-nbd, each side by side with qemu-img on the same command line (human
// and JSON info, map, the converted bytes); and the mistakes (wrong id, a server endpoint on a
// client, missing files, bad --object strings) with qemu-img's messages and exit statuses; and
// QEMU's x509 sanity check, one flawed credential directory per message (openssl makes the few
// certificates certtool cannot). Credentials come from certtool/psktool (gnutls-bin), as in
// nbdserverTests' TLSTests.
import Foundation
import XCTest

final class TLSObjectTests: XCTestCase {
    /// An NBD server process on a unix socket (ours or qemu-nbd).
    final class Server {
        let process = Process()
        let socket: String

        init(_ program: String, _ args: [String], socket: String) throws {
            self.socket = socket
            process.executableURL = URL(fileURLWithPath: program.hasPrefix("/") ? program : "/usr/bin/env")
            process.arguments = (program.hasPrefix("/") ? [] : [program]) + ["-k", socket] + args
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let deadline = Date().addingTimeInterval(10)
            while !FileManager.default.fileExists(atPath: socket) {
                guard process.isRunning, Date() < deadline else {
                    stop()
                    throw NSError(domain: "Server", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(program) did not start"])
                }
                usleep(20_000)
            }
            usleep(50_000)
        }

        func stop() {
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
        }

        deinit { stop() }
    }

    func requireTools() throws {
        try requireQemuImg()
        for t in ["qemu-nbd", "certtool", "psktool"] {
            try XCTSkipUnless(which(t), "\(t) is not installed (qemu-utils, gnutls-bin)")
        }
    }

    /// A CA, a server certificate for localhost, a client certificate, and keys.psk with alice.
    func makePKI(_ dir: TempDir) throws -> String {
        try makeTestPKI(in: dir, pskUsers: ["alice"])
    }

    /// A 4 MiB raw image with data in a few places and holes between.
    func makeImage(_ path: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 4 << 20)
        for (off, len, seed) in [(0, 65536, 1), (1 << 20, 4096, 2), (3 << 20, 200_000, 3)] as [(Int, Int, UInt64)] {
            bytes.replaceSubrange(off..<(off + len), with: pseudoRandomBytes(len, seed: seed))
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return bytes
    }

    func image(_ socket: String, creds: String = "tls0", extra: String = "") -> String {
        "driver=nbd,server.type=unix,server.path=\(socket),export=,tls-creds=\(creds)" + extra
    }

    /// Our JSON without "children" (QEMU 8.0+), normalised, for the 7.2 oracle.
    func normalizedJSON(_ s: String, dropChildren: Bool) throws -> String {
        func strip(_ o: Any) -> Any {
            if var d = o as? [String: Any] { if dropChildren { d["children"] = nil }; return d.mapValues(strip) }
            if let a = o as? [Any] { return a.map(strip) }
            return o
        }
        let o = try JSONSerialization.jsonObject(with: Data(s.utf8))
        return String(decoding: try JSONSerialization.data(withJSONObject: strip(o), options: [.sortedKeys]), as: UTF8.self)
    }

    func testInfoConvertMapOverTLSMatchQemuImg() throws {
        try requireTools()
        let dir = TempDir()
        let pki = try makePKI(dir)
        let bytes = try makeImage(dir.file("a.raw"))
        // x509 over a unix socket needs tls-hostname (QEMU checks the server's name; see the mistakes).
        let kinds: [(name: String, server: String, client: String, extra: String)] = [
            ("psk", "tls-creds-psk,id=tls0,dir=\(pki),endpoint=server", "tls-creds-psk,id=tls0,dir=\(pki),endpoint=client,username=alice", ""),
            ("x509", "tls-creds-x509,id=tls0,dir=\(pki),endpoint=server", "tls-creds-x509,id=tls0,dir=\(pki),endpoint=client",
             ",tls-hostname=localhost"),
        ]
        var infoBySocket: [String: String] = [:]
        for kind in kinds {
            for (tag, program) in [("ours", productsDirectory + "/nbdserver"), ("qemu", "qemu-nbd")] {
                let sock = dir.file("\(tag)-\(kind.name).sock")
                let server = try Server(program, ["-t", "-e", "0", "-f", "raw", "--object", kind.server, "--tls-creds=tls0",
                                                  dir.file("a.raw")], socket: sock)
                defer { server.stop() }
                let what = "\(kind.name) via \(tag)"
                let object = ["--object", kind.client]
                func image(_ s: String) -> String { self.image(s, extra: kind.extra) }

                let info = try imgtool(["info"] + object + ["--image-opts", image(sock)])
                let qinfo = try qemuImg(["info"] + object + ["--image-opts", image(sock)])
                XCTAssertEqual(info.status, 0, "\(what): \(info.stderr)")
                XCTAssertEqual(qinfo.status, 0, "\(what): \(qinfo.stderr)")
                XCTAssertEqual(withoutChildNodes(info.stdout), qinfo.stdout, what)
                XCTAssertTrue(info.stdout.contains("virtual size: 4 MiB (4194304 bytes)"), info.stdout)

                let json = try imgtool(["info", "--output=json"] + object + ["--image-opts", image(sock)])
                let qjson = try qemuImg(["info", "--output=json"] + object + ["--image-opts", image(sock)])
                XCTAssertEqual(json.status, 0, json.stderr)
                XCTAssertEqual(try normalizedJSON(json.stdout, dropChildren: true), try normalizedJSON(qjson.stdout, dropChildren: false), what)
                infoBySocket[what] = try normalizedJSON(json.stdout.replacingOccurrences(of: sock, with: "SOCK"), dropChildren: true)

                let map = try imgtool(["map"] + object + ["--image-opts", image(sock)])
                let qmap = try qemuImg(["map"] + object + ["--image-opts", image(sock)])
                XCTAssertEqual(map.status, 0, map.stderr)
                XCTAssertEqual(map.stdout, qmap.stdout, what)

                let out = dir.file("out-\(tag)-\(kind.name).raw"), qout = dir.file("qout-\(tag)-\(kind.name).raw")
                let conv = try imgtool(["convert"] + object + ["-O", "raw", "--image-opts", image(sock), out])
                let qconv = try qemuImg(["convert"] + object + ["-O", "raw", "--image-opts", image(sock), qout])
                XCTAssertEqual(conv.status, 0, "\(what): \(conv.stderr)")
                XCTAssertEqual(qconv.status, 0, "\(what): \(qconv.stderr)")
                let got = try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
                assertSameBytes(got, try [UInt8](Data(contentsOf: URL(fileURLWithPath: qout))), what)
                assertSameBytes(got, bytes, what)

                let cmp = try imgtool(["compare"] + object + ["--image-opts", image(sock), "driver=raw,file.filename=\(dir.file("a.raw"))"])
                XCTAssertEqual(cmp.status, 0, cmp.stderr)
                XCTAssertEqual(cmp.stdout, "Images are identical.\n")
            }
        }
        // The same export looks the same through either server.
        XCTAssertEqual(infoBySocket["psk via ours"], infoBySocket["psk via qemu"])
        XCTAssertEqual(infoBySocket["x509 via ours"], infoBySocket["x509 via qemu"])
    }

    func testMistakesMatchQemuImg() throws {
        try requireTools()
        let dir = TempDir()
        let pki = try makePKI(dir)
        _ = try makeImage(dir.file("a.raw"))
        let sock = dir.file("s.sock")
        let server = try Server(productsDirectory + "/nbdserver", ["-t", "-e", "0", "-f", "raw", "--object",
                                                                   "tls-creds-psk,id=tls0,dir=\(pki),endpoint=server",
                                                                   "--tls-creds=tls0", dir.file("a.raw")], socket: sock)
        defer { server.stop() }
        let sock509 = dir.file("x509.sock")
        let server509 = try Server(productsDirectory + "/nbdserver", ["-t", "-e", "0", "-f", "raw", "--object",
                                                                      "tls-creds-x509,id=tls0,dir=\(pki),endpoint=server",
                                                                      "--tls-creds=tls0", dir.file("a.raw")], socket: sock509)
        defer { server509.stop() }
        // A CA that did not sign the server's certificate (with a client certificate the server accepts).
        let other = dir.file("other")
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        XCTAssertEqual(try runProcess("certtool", ["--generate-privkey", "--outfile", "\(other)/ca-key.pem"]).status, 0)
        XCTAssertEqual(try runProcess("certtool", ["--generate-self-signed", "--load-privkey", "\(other)/ca-key.pem", "--template",
                                                   "\(pki)/ca.info", "--outfile", "\(other)/ca-cert.pem"]).status, 0)
        for f in ["client-cert.pem", "client-key.pem"] { try FileManager.default.copyItem(atPath: "\(pki)/\(f)", toPath: "\(other)/\(f)") }
        let psk = "tls-creds-psk,id=tls0,dir=\(pki),endpoint=client,username=alice"
        let x509 = "tls-creds-x509,id=tls0,dir=\(pki),endpoint=client"
        let a = dir.file("a.raw")
        let cases: [[String]] = [
            // The nbd driver's lookups.
            ["info", "--object", psk, "--image-opts", image(sock, creds: "nope")],
            ["info", "--object", "tls-creds-psk,id=tls0,dir=\(pki),endpoint=server", "--image-opts", image(sock)],
            ["info", "--object", "tls-creds-x509,id=tls0,dir=\(pki),endpoint=server", "--image-opts", image(sock)],
            ["info", "--object", "secret,id=tls0,data=x", "--image-opts", image(sock)],
            ["info", "--image-opts", "driver=nbd,server.type=unix,server.path=\(sock),export="],
            ["convert", "--object", psk, "-O", "raw", "--image-opts", image(sock, creds: "nope"), dir.file("o.raw")],
            ["map", "--object", "tls-creds-anon,id=tls0,endpoint=server", "--image-opts", image(sock)],
            ["compare", "--object", psk, "--image-opts", image(sock, creds: "nope"), image(sock)],
            // QEMU's check of the server's certificate: a host name is needed, and must match.
            ["info", "--object", x509, "--image-opts", image(sock509)],
            ["info", "--object", x509, "--image-opts", image(sock509, extra: ",tls-hostname=elsewhere")],
            ["info", "--object", "tls-creds-x509,id=tls0,dir=\(other),sanity-check=off", "--image-opts", image(sock509, extra: ",tls-hostname=localhost")],
            ["info", "--output=json", "--object", x509, "--image-opts", image(sock509, extra: ",tls-hostname=localhost")],
            // Credentials checked when the object is created.
            ["info", "--object", "tls-creds-psk,id=tls0,dir=\(dir.file("nowhere")),username=alice", "--image-opts", image(sock)],
            ["info", "--object", "tls-creds-x509,id=tls0,dir=\(dir.file("nowhere"))", "--image-opts", image(sock)],
            ["info", "--object", "tls-creds-x509,id=tls0,dir=\(dir.file("nowhere")),endpoint=server", a],
            ["info", "--object", "tls-creds-psk,id=tls0,username=alice", a],
            ["info", "--object", "tls-creds-psk,id=tls0,dir=\(pki),username=bob", a],
            ["info", "--object", "tls-creds-psk,id=tls0,dir=\(pki),endpoint=server,username=alice", a],
            ["info", "--object", "tls-creds-x509,id=tls0,dir=\(pki),passwordid=nosuch", a],
            ["convert", "--object", "tls-creds-psk,id=tls0,dir=\(dir.file("nowhere"))", "-O", "raw", a, dir.file("o2.raw")],
            ["check", "--object", "secret,id=s0,file=\(dir.file("nowhere"))", a],
            // Bad --object strings.
            ["info", "--object", "foo,id=x", a],
            ["info", "--object", "tls-creds-psk", a],
            ["info", "--object", "tls-creds-psk,id=x,bogus=1", a],
            ["info", "--object", "tls-creds-psk,id=1x", a],
            ["info", "--object", "tls-creds-anon,id=x,endpoint=both", a],
            ["info", "--object", "tls-creds-anon,id=x,verify-peer=maybe", a],
            ["info", "--object", "tls-creds-anon,id=x,loaded=on", a],
            ["info", "--object", "secret,id=x,data", a],
            ["info", "--object", "secret,id=x", a],
            ["info", "--object", "secret,id=x,data=1,file=/x", a],
            ["info", "--object", "secret,id=x,data=%%,format=base64", a],
            ["info", "--object", "secret,id=x,data=1", "--object", "tls-creds-anon,id=x", a],
            ["info", "--object", "iothread,id=x", a],
            ["info", "--object", "", a],
            ["info", "--object", "{\"qom-type\":\"secret\",\"id\":\"s\",\"data\":5}", a],
            ["create", "-f", "raw", "--object", "foo,id=x", dir.file("new.raw"), "1M"],
            // Help, and objects that are fine.
            ["info", "--object", "help", a],
            ["info", "--object", "secret,help", a],
            ["info", "--object", "tls-creds-x509,help", a],
            ["info", "-f", "raw", "--object", "tls-creds-anon,id=x", "--object", "secret,id=s,data=aGVsbG8=,format=base64",
             "--object", "authz-simple,id=z,identity=alice", a],
        ]
        for args in cases {
            let ours = try imgtool(args)
            let qemu = try qemuImg(args)
            XCTAssertEqual(ours.status, qemu.status, "exit status for \(args): \(ours.stderr)")
            XCTAssertEqual(ours.stderr, asOurs(qemu.stderr), "stderr for \(args)")
            if args.contains("help") {
                // Our list holds what we can create (fewer types than qemu-img's).
                XCTAssertTrue(ours.stdout.hasPrefix("List of user creatable objects:\n  authz-list\n"), ours.stdout)
            } else if args.contains(where: { $0.hasSuffix(",help") }) {
                XCTAssertEqual(ours.stdout, qemu.stdout, "\(args)")
            } else if ours.status == 0 && args.contains("--output=json") {
                XCTAssertEqual(try normalizedJSON(ours.stdout, dropChildren: true), try normalizedJSON(qemu.stdout, dropChildren: false))
            } else if ours.status == 0 {
                XCTAssertEqual(withoutChildNodes(ours.stdout), qemu.stdout, "\(args)")
            }
        }
    }
}

// QEMU's sanity check of an x509 object's own certificates (sanity-check=on, the default): one
// credential directory per flaw, each refused by qemu-img and by us with the same message, and
// accepted by both with sanity-check=off.
extension TLSObjectTests {
    /// Writes keys and certificates: certtool from templates, openssl for what certtool cannot
    /// make (a critical key purpose, a CA certificate without basic constraints).
    struct CertificateMaker {
        let root: String

        func run(_ program: String, _ args: [String]) throws {
            let r = try runProcess(program, args)
            XCTAssertEqual(r.status, 0, "\(program) \(args): \(r.stderr)")
        }

        func key(_ name: String) throws -> String {
            let path = "\(root)/\(name)"
            try run("certtool", ["--generate-privkey", "--outfile", path])
            return path
        }

        /// A certtool certificate from `template`, self-signed unless `signer` is given.
        func certtool(_ name: String, key: String, template: String, signer: (cert: String, key: String)? = nil) throws -> String {
            let path = "\(root)/\(name)", info = "\(root)/\(name).info"
            try template.write(toFile: info, atomically: true, encoding: .utf8)
            if let signer {
                try run("certtool", ["--generate-certificate", "--load-privkey", key, "--load-ca-certificate", signer.cert,
                                     "--load-ca-privkey", signer.key, "--template", info, "--outfile", path])
            } else {
                try run("certtool", ["--generate-self-signed", "--load-privkey", key, "--template", info, "--outfile", path])
            }
            return path
        }

        /// An openssl certificate with exactly the extensions in `extensions` (config lines).
        func openssl(_ name: String, key: String, subject: String, extensions: String,
                     signer: (cert: String, key: String)? = nil) throws -> String {
            let path = "\(root)/\(name)", config = "\(root)/\(name).cnf"
            try "[req]\ndistinguished_name = dn\n[dn]\n[ext]\n\(extensions)\n".write(toFile: config, atomically: true, encoding: .utf8)
            if let signer {
                let csr = "\(root)/\(name).csr"
                try run("openssl", ["req", "-new", "-key", key, "-subj", subject, "-config", config, "-out", csr])
                try run("openssl", ["x509", "-req", "-in", csr, "-CA", signer.cert, "-CAkey", signer.key, "-set_serial", "2",
                                    "-days", "3650", "-extfile", config, "-extensions", "ext", "-out", path])
            } else {
                try run("openssl", ["req", "-x509", "-new", "-key", key, "-subj", subject, "-days", "3650", "-config", config,
                                    "-extensions", "ext", "-out", path])
            }
            return path
        }

        /// A credential directory holding `files` (name in the directory: source path).
        func directory(_ name: String, _ files: [String: String]) throws -> String {
            let dir = "\(root)/\(name)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for (file, source) in files { try FileManager.default.copyItem(atPath: source, toPath: "\(dir)/\(file)") }
            return dir
        }
    }

    func testSanityCheckMatchesQemuImg() throws {
        try requireQemuImg()
        for t in ["certtool", "openssl"] { try XCTSkipUnless(which(t), "\(t) is not installed (gnutls-bin, openssl)") }
        let dir = TempDir()
        let a = dir.file("a.raw")
        try Data(count: 1 << 20).write(to: URL(fileURLWithPath: a))
        let make = CertificateMaker(root: dir.path)

        let caKey = try make.key("ca-key.pem"), leafKey = try make.key("leaf-key.pem"), otherKey = try make.key("other-key.pem")
        let ca = try make.certtool("ca.pem", key: caKey, template: "cn = Test CA\nca\ncert_signing_key\nexpiration_days = 3650\n")
        let signer = (cert: ca, key: caKey)
        let serverUse = "tls_www_server\nencryption_key\nsigning_key\n", clientUse = "tls_www_client\nencryption_key\nsigning_key\n"
        let past = "activation_date = \"2001-01-01 00:00:00\"\nexpiration_date = \"2002-01-01 00:00:00\"\n"
        let future = "activation_date = \"2090-01-01 00:00:00\"\nexpiration_date = \"2091-01-01 00:00:00\"\n"
        func leaf(_ name: String, _ template: String, signer: (cert: String, key: String)? = signer) throws -> String {
            try make.certtool(name, key: leafKey, template: "cn = localhost\n" + template, signer: signer)
        }
        let server = try leaf("server.pem", serverUse + "expiration_days = 3650\n")
        let client = try leaf("client.pem", clientUse + "expiration_days = 3650\n")
        func serverDir(_ name: String, ca: String = ca, cert: String) throws -> String {
            try make.directory(name, ["ca-cert.pem": ca, "server-cert.pem": cert, "server-key.pem": leafKey])
        }
        func clientDir(_ name: String, ca: String = ca, cert: String?) throws -> String {
            var files = ["ca-cert.pem": ca]
            if let cert { files["client-cert.pem"] = cert; files["client-key.pem"] = leafKey }
            return try make.directory(name, files)
        }
        let pathExtensions = "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n"
        let clientOnly = try make.openssl("client-only.pem", key: leafKey, subject: "/CN=localhost",
                                          extensions: pathExtensions + "extendedKeyUsage = critical, clientAuth", signer: signer)
        let serverOnly = try make.openssl("server-only.pem", key: leafKey, subject: "/CN=client",
                                          extensions: pathExtensions + "extendedKeyUsage = critical, serverAuth", signer: signer)
        let expiredCA = try make.certtool("expired-ca.pem", key: caKey, template: "cn = Test CA\nca\ncert_signing_key\n" + past)
        let notCA = try make.certtool("not-ca.pem", key: caKey, template: "cn = Test CA\nexpiration_days = 3650\n")
        let noConstraintsCA = try make.openssl("no-constraints-ca.pem", key: caKey, subject: "/CN=Test CA",
                                               extensions: "subjectKeyIdentifier = hash")
        let noSigningCA = try make.certtool("no-signing-ca.pem", key: caKey, template: "cn = Test CA\nca\ncrl_signing_key\nexpiration_days = 3650\n")
        let otherCA = try make.certtool("other-ca.pem", key: otherKey, template: "cn = Other CA\nca\ncert_signing_key\nexpiration_days = 3650\n")
        let empty = dir.file("empty.pem"), garbage = dir.file("garbage.pem")
        try "".write(toFile: empty, atomically: true, encoding: .utf8)
        try "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        let caDirectory = try make.directory("ca-is-a-directory", [:])
        try FileManager.default.createDirectory(atPath: "\(caDirectory)/ca-cert.pem", withIntermediateDirectories: false)

        // (directory, endpoint, what qemu-img says about it; nil: accepted). Certificates only the
        // sanity check refuses, then files that GnuTLS refuses to load anyway.
        let flawed: [(String, String, String?)] = [
            (try serverDir("good-server", cert: server), "server", nil),
            (try clientDir("good-client", cert: client), "client", nil),
            (try clientDir("ca-only", cert: nil), "client", nil),
            (try serverDir("expired-server", cert: try leaf("expired.pem", serverUse + past)), "server", "has expired"),
            (try clientDir("expired-client", cert: try leaf("expired-client.pem", clientUse + past)), "client", "has expired"),
            (try clientDir("future-client", cert: try leaf("future.pem", clientUse + future)), "client", "is not yet active"),
            (try serverDir("future-server", cert: try leaf("future-server.pem", serverUse + future)), "server", "is not yet active"),
            (try clientDir("expired-ca", ca: expiredCA, cert: nil), "client", "The CA certificate"),
            (try clientDir("not-ca", ca: notCA, cert: nil), "client", "basic constraints do not show a CA"),
            (try clientDir("no-constraints-ca", ca: noConstraintsCA, cert: nil), "client", "missing basic constraints for a CA"),
            (try clientDir("no-signing-ca", ca: noSigningCA, cert: nil), "client", "does not permit certificate signing"),
            (try serverDir("server-is-ca", cert: try leaf("server-ca.pem", "ca\n" + serverUse + "expiration_days = 3650\n")),
             "server", "show a CA, but we need one for a server"),
            (try clientDir("client-is-ca", cert: try leaf("client-ca.pem", "ca\n" + clientUse + "expiration_days = 3650\n")),
             "client", "show a CA, but we need one for a client"),
            (try serverDir("no-signature", cert: try leaf("no-signature.pem", "tls_www_server\nencryption_key\nexpiration_days = 3650\n")),
             "server", "does not permit digital signature"),
            // certtool's key purposes are not critical: QEMU lets a wrong one pass.
            (try serverDir("client-purpose-not-critical", cert: client), "server", nil),
            (try serverDir("client-purpose", cert: clientOnly), "server", "does not allow use with a TLS server"),
            (try clientDir("server-purpose", cert: serverOnly), "client", "does not allow use with a TLS client"),
            (try serverDir("other-ca", ca: otherCA, cert: server), "server", "failed validation against"),
            (try clientDir("other-ca-client", ca: otherCA, cert: client), "client", "failed validation against"),
            // QEMU's order: the own certificate is checked before the CAs.
            (try serverDir("expired-server-and-ca", ca: expiredCA, cert: try leaf("expired2.pem", serverUse + past)),
             "server", "The server certificate"),
        ]
        let unloadable: [(String, String, String?)] = [
            // The own certificate is read before the CA list.
            (try serverDir("garbage-server-empty-ca", ca: empty, cert: garbage), "server", "Unable to import server certificate"),
            (try clientDir("empty-ca", ca: empty, cert: client), "client", "Unable to import CA certificate list"),
            (try clientDir("garbage-client", cert: garbage), "client", "Unable to import client certificate"),
            (caDirectory, "client", "Cannot load CA cert list"),
        ]
        for (credentials, endpoint, problem) in flawed + unloadable {
            let object = "tls-creds-x509,id=tls0,dir=\(credentials),endpoint=\(endpoint)"
            for sanity in ["", ",sanity-check=off"] {
                let args = ["info", "--object", object + sanity, a]
                let ours = try imgtool(args)
                let qemu = try qemuImg(args)
                let name = "\((credentials as NSString).lastPathComponent) \(endpoint)\(sanity)"
                XCTAssertEqual(ours.status, qemu.status, "exit status for \(name): \(ours.stderr)")
                XCTAssertEqual(ours.stderr, asOurs(qemu.stderr), name)
                if qemu.status == 0 { XCTAssertEqual(withoutChildNodes(ours.stdout), qemu.stdout, name) }
                // The case makes the flaw it means to; a flawed certificate passes without the check.
                if sanity.isEmpty, let problem {
                    XCTAssertTrue(qemu.stderr.contains(problem), "\(name): \(qemu.stderr)")
                } else if !unloadable.contains(where: { $0.0 == credentials }) {
                    XCTAssertEqual(qemu.status, 0, "\(name): \(qemu.stderr)")
                }
            }
        }
    }
}
