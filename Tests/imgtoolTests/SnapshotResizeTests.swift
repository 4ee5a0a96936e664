import Foundation
import XCTest

/// snapshot and resize, side by side with qemu-img: same output, same files (snapshot dates masked).
final class SnapshotResizeTests: XCTestCase {
    /// Zeroes the date fields of every snapshot table entry, so images made at different times compare.
    func maskSnapshotDates(_ path: String) throws -> Data {
        var d = try Data(contentsOf: URL(fileURLWithPath: path))
        func be(_ o: Int, _ n: Int) -> Int { d[o..<o + n].reduce(0) { $0 << 8 | Int($1) } }
        guard d.count > 72, be(0, 4) == 0x514649FB else { return d }
        let count = be(60, 4)
        var off = be(64, 8)
        for _ in 0..<count {
            off = (off + 7) & ~7
            for i in 16..<24 { d[off + i] = 0 }
            let extra = be(off + 36, 4), idLen = be(off + 12, 2), nameLen = be(off + 14, 2)
            off += 40 + extra + idLen + nameLen
        }
        return d
    }

    func testSnapshotSequencesMatchQemuImg() throws {
        try requireQemuImg()
        let d = TempDir()
        let ops: [[String]] = [["-c", "one"], ["-c", "two"], ["-l"], ["-a", "one"], ["-d", "two"], ["-c", "one"], ["-l"],
                               ["-a", "nope"], ["-d", "nope"], ["-d", "1"], ["-c", "x", "-d", "y"], ["-d", "one"], ["-l"]]
        for who in ["ours", "theirs"] {
            let p = d.file("\(who).qcow2")
            try runProcess("qemu-img", ["create", "-q", "-f", "qcow2", p, "8M"])
            try runProcess("qemu-io", ["-c", "write -P 1 0 2M", p])
        }
        for (i, op) in ops.enumerated() {
            let a = try imgtool(["snapshot"] + op + [d.file("ours.qcow2")])
            let b = try qemuImg(["snapshot"] + op + [d.file("theirs.qcow2")])
            XCTAssertEqual(a.status, b.status, "\(op)")
            let mask = { (s: String) in s.replacingOccurrences(of: #"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"#, with: "DATE", options: .regularExpression) }
            XCTAssertEqual(mask(a.stdout), mask(b.stdout), "\(op)")
            XCTAssertEqual(a.stderr, asOurs(b.stderr), "\(op)")
            // Write between steps so the snapshots differ.
            for who in ["ours", "theirs"] {
                try runProcess("qemu-io", ["-c", "write -P \(i + 2) \(i * 300)k 200k", d.file("\(who).qcow2")])
            }
            XCTAssertEqual(try maskSnapshotDates(d.file("ours.qcow2")), try maskSnapshotDates(d.file("theirs.qcow2")), "after \(op)")
            XCTAssertEqual(try qemuImg(["check", d.file("ours.qcow2")]).status, 0, "after \(op)")
        }
        // Raw images have no snapshots.
        let raw = d.file("r.raw")
        try runProcess("qemu-img", ["create", "-q", "-f", "raw", raw, "1M"])
        let a = try imgtool(["snapshot", "-c", "x", raw]), b = try qemuImg(["snapshot", "-c", "x", raw])
        XCTAssertEqual(a.stderr, asOurs(b.stderr))
        XCTAssertEqual(a.status, b.status)
    }

    func testResizeMatchesQemuImg() throws {
        try requireQemuImg()
        let d = TempDir()
        let cases: [(opts: [String], size: String, fmt: String)] = [
            ([], "+1M", "qcow2"), ([], "4M", "qcow2"), (["--shrink"], "4M", "qcow2"), ([], "-1M", "qcow2"), (["--shrink"], "-1M", "qcow2"),
            (["--preallocation=full"], "10M", "qcow2"), (["--preallocation=falloc"], "9M", "qcow2"), (["--preallocation=metadata"], "40M", "qcow2"),
            (["--preallocation=bad"], "12M", "qcow2"), (["--shrink"], "1000", "qcow2"), ([], "abc", "qcow2"), (["-q"], "20M", "qcow2"),
            (["--shrink"], "1M", "qcow2"), ([], "+3M", "raw"), (["--shrink"], "1M", "raw"), (["--preallocation=full"], "12M", "raw"),
        ]
        for (i, c) in cases.enumerated() {
            var paths: [String] = []
            for who in ["a", "b"] {
                let p = d.file("\(i)\(who).\(c.fmt)")
                try runProcess("qemu-img", ["create", "-q", "-f", c.fmt, p, "8M"])
                try runProcess("qemu-io", ["-f", c.fmt, "-c", "write -P 3 0 8M", p])
                if c.fmt == "qcow2" { try runProcess("qemu-img", ["snapshot", "-c", "s", p]) }
                paths.append(p)
            }
            let a = try imgtool(["resize", "-f", c.fmt] + c.opts + [paths[0], c.size])
            let b = try qemuImg(["resize", "-f", c.fmt] + c.opts + [paths[1], c.size])
            XCTAssertEqual(a.status, b.status, "\(c)")
            XCTAssertEqual(a.stdout, b.stdout, "\(c)")
            XCTAssertEqual(a.stderr, asOurs(b.stderr), "\(c)")
            XCTAssertEqual(try maskSnapshotDates(paths[0]), try maskSnapshotDates(paths[1]), "\(c)")
        }
    }
}
