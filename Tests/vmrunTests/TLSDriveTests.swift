// An NBD disk over TLS, the QEMU way: -object tls-creds-psk,...,endpoint=client and a -drive /
// -blockdev driver=nbd,...,tls-creds=ID (the object may come after the drive, as QEMU creates its
// objects first), served by our nbdserver with PSK; the guest's disk seen through QMP query-block.
// The mistakes (unknown id, a server endpoint, bad -object strings, an x509 certificate QEMU's
// sanity check refuses) compared with QEMU's own messages and statuses where qemu-system-x86_64
// is installed.
import Foundation
import XCTest

final class TLSDriveTests: XCTestCase {
    func tool(_ name: String) -> Bool {
        ["/usr/bin/", "/bin/"].contains { FileManager.default.isExecutableFile(atPath: $0 + name) }
    }

    /// keys.psk with alice, and our nbdserver exporting a 2 MiB image over PSK TLS on `sock`.
    func startServer(_ dir: URL) throws -> (Process, sock: String, pki: String) {
        try XCTSkipUnless(tool("psktool"), "psktool (gnutls-bin) is not installed")
        let pki = dir.appendingPathComponent("pki").path
        try FileManager.default.createDirectory(atPath: pki, withIntermediateDirectories: true)
        XCTAssertEqual(try VMRun.run(["-u", "alice", "-p", "\(pki)/keys.psk"], executable: URL(fileURLWithPath: "/usr/bin/psktool")).status, 0)
        let image = dir.appendingPathComponent("disk.raw")
        try Data(count: 2 << 20).write(to: image)
        let sock = dir.appendingPathComponent("nbd.sock").path
        let p = Process()
        p.executableURL = VMRun.binary.deletingLastPathComponent().appendingPathComponent("nbdserver")
        p.arguments = ["-t", "-e", "2", "-f", "raw", "-k", sock, "--object", "tls-creds-psk,id=tls0,dir=\(pki),endpoint=server",
                       "--tls-creds=tls0", image.path]
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date(timeIntervalSinceNow: 10)
        while !FileManager.default.fileExists(atPath: sock) && p.isRunning && Date() < deadline { usleep(20_000) }
        return (p, sock, pki)
    }

    func testNBDDiskOverTLS() throws {
        let dir = try VMRun.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (server, sock, pki) = try startServer(dir)
        defer { server.terminate(); server.waitUntilExit() }
        let bios = try VMRun.assemble("realmode", defines: ["HALT"], into: dir)
        let qmpSock = dir.appendingPathComponent("qmp.sock").path
        let p = Process()
        p.executableURL = VMRun.binary
        p.arguments = ["-accel", "tcg", "-M", "pc", "-m", "32", "-display", "none", "-nodefaults", "-S", "-bios", bios.path,
                       "-drive", "driver=nbd,server.type=unix,server.path=\(sock),export=,tls-creds=tls0,if=none,id=drv0",
                       "-blockdev", "driver=nbd,node-name=n1,server.type=unix,server.path=\(sock),export=,tls-creds=tls0",
                       "-object", "tls-creds-psk,id=tls0,dir=\(pki),endpoint=client,username=alice",
                       "-device", "virtio-blk-pci,drive=drv0,id=vd0", "-device", "virtio-blk-pci,drive=n1,id=vd1",
                       "-qmp", "unix:\(qmpSock),server=on,wait=off"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        let c = try QMPClient(path: qmpSock)
        _ = c.json()
        _ = c.execute("qmp_capabilities")
        let (_, r) = c.execute("query-block")
        let blocks = try XCTUnwrap(r?["return"] as? [[String: Any]], "\(String(describing: r))")
        XCTAssertEqual(blocks.count, 2)
        for b in blocks {
            let inserted = try XCTUnwrap(b["inserted"] as? [String: Any])
            XCTAssertEqual(inserted["drv"] as? String, "nbd")
            XCTAssertEqual((inserted["image"] as? [String: Any])?["virtual-size"] as? Int, 2 << 20)
            XCTAssertEqual(inserted["file"] as? String, "nbd+unix:///?socket=\(sock)")
        }
        _ = c.execute("quit")
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    func testMistakesMatchQEMU() throws {
        try XCTSkipUnless(VMRun.qemuInstalled, "qemu-system-x86_64 is not installed")
        let dir = try VMRun.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (server, sock, pki) = try startServer(dir)
        defer { server.terminate(); server.waitUntilExit() }
        let drive = "driver=nbd,server.type=unix,server.path=\(sock),export=,tls-creds=tls0,if=none"
        let cases: [[String]] = [
            ["-drive", drive],
            ["-drive", drive, "-object", "tls-creds-psk,id=tls0,dir=\(pki),endpoint=server"],
            ["-object", "secret,id=tls0,data=x", "-drive", drive],
            ["-drive", "driver=nbd,server.type=unix,server.path=\(sock),export=,if=none"],
            ["-object", "tls-creds-psk,id=tls0,dir=\(pki),username=bob", "-drive", drive],
            ["-object", "tls-creds-psk,id=tls0,dir=\(dir.path)/nowhere"],
            ["-object", "tls-creds-psk,id=tls0"],
            ["-object", "tls-creds-psk,dir=\(pki)"],
            ["-object", "tls-creds-psk,id=tls0,dir=\(pki),bogus=1"],
            ["-object", "tls-creds-anon,id=tls0,verify"],
            ["-object", "tls-creds-anon,id=tls0,endpoint=both"],
            ["-object", "iothread,id=x", "-object", "secret,id=x,data=1"],
            ["-object", "secret,id=x,data=1,format=base64x"],
        ]
        var all = cases
        if tool("certtool") {
            // QEMU's sanity check of -object tls-creds-x509's own certificate: a CA's used as a client's.
            let creds = dir.appendingPathComponent("ca-as-client").path
            try FileManager.default.createDirectory(atPath: creds, withIntermediateDirectories: true)
            let certtool = URL(fileURLWithPath: "/usr/bin/certtool")
            try "cn = Test CA\nca\ncert_signing_key\nexpiration_days = 3650\n".write(toFile: "\(creds)/ca.info", atomically: true, encoding: .utf8)
            XCTAssertEqual(try VMRun.run(["--generate-privkey", "--outfile", "\(creds)/client-key.pem"], executable: certtool).status, 0)
            XCTAssertEqual(try VMRun.run(["--generate-self-signed", "--load-privkey", "\(creds)/client-key.pem", "--template",
                                          "\(creds)/ca.info", "--outfile", "\(creds)/ca-cert.pem"], executable: certtool).status, 0)
            try FileManager.default.copyItem(atPath: "\(creds)/ca-cert.pem", toPath: "\(creds)/client-cert.pem")
            all.append(["-object", "tls-creds-x509,id=tls0,dir=\(creds),endpoint=client"])
        }
        for args in all {
            let base = ["-display", "none", "-nodefaults", "-machine", "accel=tcg"]
            let ours = try VMRun.run(base + args)
            let qemu = try VMRun.run(base + args, executable: URL(fileURLWithPath: VMRun.qemu), timeout: 10)
            XCTAssertEqual(ours.status, qemu.status, "\(args): \(ours.stderr)")
            XCTAssertEqual(ours.stderr.replacingOccurrences(of: "vmrun:", with: "qemu-system-x86_64:"), qemu.stderr, "\(args)")
        }
    }
}
