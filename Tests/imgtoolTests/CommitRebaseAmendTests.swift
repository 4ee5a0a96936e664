import Foundation
import XCTest

/// commit, rebase and amend against qemu-img: same messages and statuses, images that check clean
/// and show the guest the same bytes as qemu-img's results.
final class CommitRebaseAmendTests: XCTestCase {
    /// base (4M) <- mid (6M) <- top (8M): the top is larger than its bases (feature B2).
    func makeChain(_ d: TempDir, _ p: String) throws {
        let q = { (a: [String]) in _ = try runProcess("qemu-img", a) }
        let io = { (a: [String]) in _ = try runProcess("qemu-io", a) }
        try q(["create", "-q", "-f", "qcow2", d.file("\(p)base.qcow2"), "4M"])
        try io(["-c", "write -P 1 0 4M", d.file("\(p)base.qcow2")])
        try q(["create", "-q", "-f", "qcow2", "-b", "\(p)base.qcow2", "-F", "qcow2", d.file("\(p)mid.qcow2"), "6M"])
        try io(["-c", "write -P 5 2M 1M", d.file("\(p)mid.qcow2")])
        try q(["create", "-q", "-f", "qcow2", "-b", "\(p)mid.qcow2", "-F", "qcow2", d.file("\(p)top.qcow2"), "8M"])
        try io(["-c", "write -P 2 1M 1M", "-c", "write -P 3 6M 1M", "-c", "write -z 3M 64k", d.file("\(p)top.qcow2")])
        try q(["create", "-q", "-f", "qcow2", d.file("\(p)other.qcow2"), "2M"])
        try io(["-c", "write -P 9 0 1M", d.file("\(p)other.qcow2")])
    }

    func sideBySide(_ tool: String, _ args: [String], check: [String]) throws {
        try requireQemuImg()
        let d = TempDir()
        try makeChain(d, "a-")
        try makeChain(d, "b-")
        let view = try runProcess("qemu-img", ["convert", "-O", "raw", d.file("a-top.qcow2"), d.file("before.raw")])
        XCTAssertEqual(view.status, 0)
        let a = try imgtool([tool] + args.map { $0.replacingOccurrences(of: "X-", with: "a-") } + ["a-top.qcow2"], cwd: d.path)
        let b = try qemuImg([tool] + args.map { $0.replacingOccurrences(of: "X-", with: "b-") } + ["b-top.qcow2"], cwd: d.path)
        XCTAssertEqual(a.status, b.status, "\(tool) \(args)")
        XCTAssertEqual(a.stdout, b.stdout, "\(tool) \(args)")
        XCTAssertEqual(a.stderr, asOurs(b.stderr).replacingOccurrences(of: "b-", with: "a-"), "\(tool) \(args)")
        for f in check {
            XCTAssertEqual(try qemuImg(["check", d.file("a-\(f).qcow2")]).status, 0, "\(f) after \(tool) \(args)")
            let cmp = try qemuImg(["compare", d.file("a-\(f).qcow2"), d.file("b-\(f).qcow2")])
            XCTAssertEqual(cmp.status, 0, "\(f) after \(tool) \(args): \(cmp.stdout)")
        }
        // The guest view of the top never changes through rebase.
        if tool == "rebase" && a.status == 0 && !args.contains("-u") {
            XCTAssertEqual(try qemuImg(["compare", "-F", "raw", d.file("a-top.qcow2"), d.file("before.raw")]).status, 0)
        }
    }

    func testCommit() throws {
        for args in [[], ["-d"], ["-b", "X-base.qcow2"], ["-b", "nope"], ["-q", "-b", "X-mid.qcow2"]] {
            try sideBySide("commit", args, check: ["base", "mid", "top"])
        }
    }

    func testRebase() throws {
        for args in [["-b", "X-base.qcow2", "-F", "qcow2"], ["-b", ""], ["-b", "X-other.qcow2", "-F", "qcow2"],
                     ["-u", "-b", "X-other.qcow2", "-F", "qcow2"], ["-u", "-b", ""], ["-b", "X-base.qcow2"],
                     ["-b", "nonexist", "-F", "qcow2"], ["-F", "qcow2"]] {
            try sideBySide("rebase", args, check: ["top"])
        }
    }

    func testAmend() throws {
        for o in ["compat=foo", "refcount_bits=3", "data_file=x", "lazy_refcounts=on", "cluster_size=4k", "size=16M",
                  "compat=0.10", "refcount_bits=8", "refcount_bits=64", "refcount_bits=1", "foo=bar", "compat=1.1"] {
            try sideBySide("amend", ["-o", o], check: ["top"])
        }
    }
}
