// nbdserver's command line against qemu-nbd's: the same mistakes give the same message (with the
// program name swapped) and the same exit status; and the behaviours scripts rely on (exit after
// the last client, -t, --fork with --pid-file, socket activation, -L, -c without /dev/nbd).
import Foundation
import XCTest

final class CommandLineTests: XCTestCase {
    func normalized(_ s: String, _ dir: TempDir) -> String {
        s.replacingOccurrences(of: nbdserverPath, with: "PROG").replacingOccurrences(of: "qemu-nbd", with: "PROG")
            .replacingOccurrences(of: "nbdserver", with: "PROG").replacingOccurrences(of: dir.path, with: "DIR")
    }

    func testErrorsMatchQemuNbd() throws {
        try require("qemu-nbd")
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [])
        let a = dir.file("a.raw")
        let cases: [[String]] = [
            [],
            ["--bogus", a],
            ["-z", a],
            ["-p"],
            ["--read-only=yes", a],
            ["a", "b"],
            ["-e", "-1", a],
            ["-e", "x", a],
            ["--cache=foo", a],
            ["-n", "--cache=none", a],
            ["--aio=foo", a],
            ["--aio=native", "--aio=threads", a],
            ["--discard=foo", a],
            ["--discard=unmap", "--discard=unmap", a],
            ["--detect-zeroes=foo", a],
            ["--detect-zeroes=unmap", a],
            ["-o", "abc", a],
            ["-k", "relative.sock", a],
            ["-L", a],
            ["-L", "-x", "foo"],
            ["-L", "--fork"],
            ["--tls-authz=x", a],
            ["--tls-hostname=x", a],
            ["--tls-creds=nope", a],
            ["--object", "foo,id=x", a],
            ["--object", "tls-creds-x509,id=t,dir=/nonexistent,endpoint=server", "--tls-creds=t", a],
            ["--object", "tls-creds-psk,id=t,dir=/nonexistent,endpoint=server", "--tls-creds=t", a],
            ["--object", "tls-creds-x509,id=t,dir=/tmp,endpoint=server,bogus=1", a],
            ["--image-opts", "-f", "raw", a],
            ["-k", dir.file("s1.sock"), dir.file("missing.img")],
            ["-k", dir.file("s2.sock"), "--image-opts", "driver=raw,file.filename=\(dir.file("missing.img"))"],
            ["-k", "/nonexistent/dir/s.sock", a],
            ["-d"],
            ["-d", "/dev/nbd-none"],
            ["-L", "-k", dir.file("nobody.sock")],
            ["-k", dir.file("s3.sock"), "-f", "raw", "-l", "snap", a],
        ]
        for args in cases {
            let ours = try runTool(nbdserverPath, args, timeout: 10)
            let qemu = try runTool("qemu-nbd", args, timeout: 10)
            XCTAssertEqual(ours.status, qemu.status, "exit status differs for \(args): \(ours.stderr)")
            XCTAssertEqual(normalized(ours.stderr, dir), normalized(qemu.stderr, dir), "stderr differs for \(args)")
        }
    }

    func testHelpAndVersion() throws {
        let h = try runTool(nbdserverPath, ["--help"])
        XCTAssertEqual(h.status, 0)
        XCTAssertTrue(h.stdout.contains("--handshake-limit"))
        XCTAssertTrue(h.stdout.contains("-e, --shared=NUM"))
        let v = try runTool(nbdserverPath, ["-V"])
        XCTAssertEqual(v.status, 0)
        // Help wins even after a later bad option value, as in qemu-nbd.
        XCTAssertEqual(try runTool(nbdserverPath, ["--por", "1", "-h"]).status, 0)
    }

    func testExitsAfterLastClientUnlessPersistent() throws {
        try require("nbdinfo")
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [])
        let once = try ServerProcess(nbdserverPath, ["-f", "raw", "-k", dir.file("a.sock"), dir.file("a.raw")], socket: dir.file("a.sock"))
        XCTAssertEqual(try runTool("nbdinfo", ["--size", once.uri]).status, 0)
        XCTAssertTrue(once.waitForExit(), "server did not exit after its last client")
        XCTAssertEqual(once.process.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.file("a.sock")), "socket left behind")

        let persistent = try ServerProcess(nbdserverPath, ["-t", "-f", "raw", "-k", dir.file("b.sock"), dir.file("a.raw")],
                                           socket: dir.file("b.sock"))
        XCTAssertEqual(try runTool("nbdinfo", ["--size", persistent.uri]).status, 0)
        XCTAssertEqual(try runTool("nbdinfo", ["--size", persistent.uri]).status, 0)
        XCTAssertTrue(persistent.process.isRunning)
        persistent.stop()
        XCTAssertEqual(persistent.process.terminationReason, .exit, "SIGTERM ends the server cleanly")
        XCTAssertEqual(persistent.process.terminationStatus, 0)
    }

    func testForkAndPidFile() throws {
        try require("nbdinfo")
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [])
        // The daemon keeps the original stderr (as qemu-nbd does), so give it a file, not our pipe.
        let r = try runTool("sh", ["-c", "\(nbdserverPath) --fork --pid-file \(dir.file("pid")) -t -f raw -k \(dir.file("f.sock")) "
                                   + "\(dir.file("a.raw")) 2>\(dir.file("err"))"], timeout: 20)
        XCTAssertEqual(r.status, 0, (try? String(contentsOfFile: dir.file("err"), encoding: .utf8)) ?? "")
        // The parent returned only once the server was ready.
        XCTAssertTrue(canConnect(dir.file("f.sock")))
        let pid = Int32(try String(contentsOfFile: dir.file("pid"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))!
        XCTAssertEqual(try runTool("nbdinfo", ["--size", "nbd+unix:///?socket=\(dir.file("f.sock"))"]).stdout, "1048576\n")
        XCTAssertEqual(kill(pid, SIGTERM), 0)
        for _ in 0..<100 where kill(pid, 0) == 0 { usleep(20_000) }
        XCTAssertNotEqual(kill(pid, 0), 0, "forked server did not stop on SIGTERM")
        // A failing forked server reports through the parent, with status 1.
        let bad = try runTool(nbdserverPath, ["--fork", "-k", dir.file("g.sock"), dir.file("missing.img")], timeout: 20)
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("Could not open"), bad.stderr)
    }

    func testListMode() throws {
        try require("qemu-nbd")
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [])
        let server = try ServerProcess("qemu-nbd", ["-t", "-e", "0", "-A", "-x", "exp", "-D", "a disk", "-f", "raw",
                                                    "-k", dir.file("q.sock"), dir.file("a.raw")], socket: dir.file("q.sock"))
        let ours = try runTool(nbdserverPath, ["-L", "-k", server.socket])
        let qemu = try runTool("qemu-nbd", ["-L", "-k", server.socket])
        XCTAssertEqual(ours.status, 0, ours.stderr)
        XCTAssertEqual(ours.stdout, qemu.stdout)
        server.stop()
        // And qemu-nbd -L against our server.
        let ourServer = try ServerProcess(nbdserverPath, ["-t", "-e", "0", "-A", "-x", "exp", "-D", "a disk", "-f", "raw",
                                                          "-k", dir.file("o.sock"), dir.file("a.raw")], socket: dir.file("o.sock"))
        let q2 = try runTool("qemu-nbd", ["-L", "-k", ourServer.socket])
        XCTAssertEqual(q2.stdout, qemu.stdout)
        ourServer.stop()
    }

    func testSocketActivation() throws {
        try require("nbdinfo", "systemd-socket-activate")
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [])
        // Started through sh: Foundation's Process loses track of a child that execs (as
        // systemd-socket-activate does on the first connection) and would hang the test.
        let sock = dir.file("sa.sock")
        let start = try runTool("sh", ["-c", "systemd-socket-activate -l \(sock) \(nbdserverPath) -t -f raw \(dir.file("a.raw")) "
                                        + ">\(dir.file("out")) 2>&1 </dev/null & echo $!"])
        let pid = Int32(start.stdout.trimmingCharacters(in: .whitespacesAndNewlines))!
        defer { kill(pid, SIGTERM) }
        for _ in 0..<250 where !FileManager.default.fileExists(atPath: sock) { usleep(20_000) }
        XCTAssertEqual(try runTool("nbdinfo", ["--size", "nbd+unix:///?socket=\(sock)"]).stdout, "1048576\n")
        XCTAssertEqual(try runTool("nbdinfo", ["--size", "nbd+unix:///?socket=\(sock)"]).stdout, "1048576\n")
        // The activated server refuses listening options of its own, as qemu-nbd does.
        let conflict = try runTool(nbdserverPath, ["-k", dir.file("x.sock"), dir.file("a.raw")],
                                   env: ["LISTEN_FDS": "1", "LISTEN_PID": "0"])
        XCTAssertNotEqual(conflict.stderr, "")
    }

    func testKernelDeviceWithoutNbdModule() throws {
        try XCTSkipIf(FileManager.default.fileExists(atPath: "/dev/nbd0"), "/dev/nbd0 exists; this checks the error without it")
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [])
        let r = try runTool(nbdserverPath, ["-c", "/dev/nbd0", "-f", "raw", dir.file("a.raw")], timeout: 20)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "nbdserver: Failed to open /dev/nbd0: No such file or directory\n")
    }

    func testTraceEvents() throws {
        try require("nbdinfo")
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [])
        let s = try ServerProcess(nbdserverPath, ["-T", "nbd_negotiate_*", "-T", "nbd_co_receive_request_decode_type", "-f", "raw",
                                                  "-k", dir.file("t.sock"), dir.file("a.raw")], socket: dir.file("t.sock"))
        XCTAssertEqual(try runTool("nbdinfo", ["--size", s.uri]).status, 0)
        XCTAssertTrue(s.waitForExit())
        XCTAssertTrue(s.stderr.contains("nbd_negotiate_options_check_option Checking option 7 (go)"), s.stderr)
        XCTAssertTrue(s.stderr.contains("nbd_negotiate_success Negotiation succeeded"), s.stderr)
        XCTAssertTrue(s.stderr.contains("type = 2 (disconnect)"), s.stderr)
        let w = try runTool(nbdserverPath, ["-T", "no_such_event", "-V"])
        XCTAssertEqual(w.stderr, "nbdserver: warning: trace event 'no_such_event' does not exist\n")
    }
}
