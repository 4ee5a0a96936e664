import Foundation
import XCTest

/// Persistent dirty bitmaps: qemu-img bitmap's operations side by side, and the bits themselves
/// checked through qemu-nbd's qemu:dirty-bitmap export (nbdinfo --map) as the oracle.
final class BitmapTests: XCTestCase {
    func dirtyMap(_ image: String, _ bitmap: String) throws -> String {
        try XCTSkipUnless(which("qemu-nbd") && which("nbdinfo"), "qemu-nbd and nbdinfo (qemu-utils, libnbd-bin) are needed")
        let sock = image + ".sock"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["qemu-nbd", "-r", "-f", "qcow2", "-B", bitmap, "-t", "-k", sock, image]
        try p.run()
        defer { p.terminate(); p.waitUntilExit() }
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: sock) { usleep(20_000) }
        return try runProcess("nbdinfo", ["--map=qemu:dirty-bitmap:\(bitmap)", "nbd+unix:///?socket=\(sock)"]).stdout
    }

    func testBitmapOperationsMatchQemuImg() throws {
        try requireQemuImg()
        let d = TempDir()
        for w in ["a", "b"] { try runProcess("qemu-img", ["create", "-q", "-f", "qcow2", d.file("\(w).qcow2"), "64M"]) }
        let steps: [([String], String)] = [
            (["--add"], "b1"), (["--add"], "b1"), (["--add", "-g", "4k"], "b2"), (["--disable"], "b2"),
            (["--remove", "-g", "4k"], "b1"), (["--remove"], "nope"), (["--add", "-g", "1000"], "b3"),
            (["--merge", "b1"], "b2"), (["--merge", "nope"], "b2"), (["--add", "--disable"], "b4"), ([], "b1"),
        ]
        for (args, name) in steps {
            let a = try imgtool(["bitmap"] + args + [d.file("a.qcow2"), name])
            let b = try qemuImg(["bitmap"] + args + [d.file("b.qcow2"), name])
            XCTAssertEqual(a.status, b.status, "\(args)")
            XCTAssertEqual(a.stderr, asOurs(b.stderr), "\(args)")
        }
        // QEMU tracks writes into our bitmaps; resize and merge keep the bits as QEMU's do.
        for w in ["a", "b"] {
            try runProcess("qemu-io", ["-c", "write -P 1 1M 64k", "-c", "write -P 2 10M 8k", d.file("\(w).qcow2")])
        }
        XCTAssertEqual(try imgtool(["resize", d.file("a.qcow2"), "128M"]).status, 0)
        XCTAssertEqual(try qemuImg(["resize", d.file("b.qcow2"), "128M"]).status, 0)
        XCTAssertEqual(try imgtool(["bitmap", "--merge", "b1", d.file("a.qcow2"), "b2"]).status, 0)
        XCTAssertEqual(try qemuImg(["bitmap", "--merge", "b1", d.file("b.qcow2"), "b2"]).status, 0)
        XCTAssertEqual(try qemuImg(["check", d.file("a.qcow2")]).status, 0)
        for bm in ["b1", "b2", "b4"] {
            XCTAssertEqual(try dirtyMap(d.file("a.qcow2"), bm), try dirtyMap(d.file("b.qcow2"), bm), bm)
        }
        let strip = { (s: String) in s.split(separator: "\n").filter { !$0.contains("disk size") && !$0.contains("file length") && !$0.contains(".qcow2") }.joined(separator: "\n") }
        XCTAssertEqual(strip(try imgtool(["info", d.file("a.qcow2")]).stdout), strip(try qemuImg(["info", d.file("b.qcow2")]).stdout + "Child node '/file':\n    protocol type: file"))
    }

    func testOurWritesAreTrackedAndBitmapsSurviveConvert() throws {
        try requireQemuImg()
        let d = TempDir()
        let base = d.file("base.qcow2"), top = d.file("top.qcow2"), copy = d.file("copy.qcow2")
        try runProcess("qemu-img", ["create", "-q", "-f", "qcow2", base, "8M"])
        try runProcess("qemu-img", ["bitmap", "--add", base, "tb"])
        try runProcess("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top])
        try runProcess("qemu-io", ["-c", "write -P 7 2M 128k", top])
        XCTAssertEqual(try imgtool(["commit", top]).status, 0)   // our writes into the base
        let map = try dirtyMap(base, "tb")
        XCTAssertTrue(map.contains("2097152      131072    1  dirty"), map)
        XCTAssertEqual(try imgtool(["convert", "--bitmaps", "-O", "qcow2", base, copy]).status, 0)
        XCTAssertEqual(try dirtyMap(copy, "tb"), map)
        XCTAssertEqual(try qemuImg(["check", copy]).status, 0)
        // The required size counts the bitmaps as qemu-img counts them.
        XCTAssertEqual(try imgtool(["measure", "-O", "qcow2", base]).stdout, try qemuImg(["measure", "-O", "qcow2", base]).stdout)
    }
}
