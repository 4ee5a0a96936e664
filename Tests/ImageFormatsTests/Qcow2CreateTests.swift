import XCTest
import ImageFormats

/// Images we create must be the images qemu-img creates: byte for byte where the layout is fixed.
final class Qcow2CreateTests: XCTestCase {
    static let variants: [[String: String]] = [
        [:],
        ["cluster_size": "512"],
        ["cluster_size": "2M"],
        ["compat": "0.10"],
        ["refcount_bits": "1"],
        ["refcount_bits": "64"],
        ["lazy_refcounts": "on"],
        ["extended_l2": "on"],
        ["compression_type": "zstd"],
        ["preallocation": "metadata"],
        ["preallocation": "falloc", "cluster_size": "1M"],
        ["preallocation": "full", "cluster_size": "256k"],
    ]

    func testCreateIsByteIdenticalToQemuImg() throws {
        try requireQemuImg()
        let dir = TempDir()
        for (i, v) in Self.variants.enumerated() {
            let ours = dir.file("ours\(i).qcow2"), theirs = dir.file("theirs\(i).qcow2")
            var o = BlockOptions()
            for (k, val) in v { o.set(k, val) }
            try Qcow2Format.create(filename: ours, size: 10 << 20, options: o)
            let opt = v.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: ",")
            var args = ["create", "-q", "-f", "qcow2"]
            if !opt.isEmpty { args += ["-o", opt] }
            try runProcess("qemu-img", args + [theirs, "10M"])
            let a = try Data(contentsOf: URL(fileURLWithPath: ours)), b = try Data(contentsOf: URL(fileURLWithPath: theirs))
            XCTAssertEqual(a.count, b.count, "file length for \(v)")
            XCTAssertTrue(a == b, "contents differ for \(v)")
            let check = try runProcess("qemu-img", ["check", ours])
            XCTAssertEqual(check.status, 0, "qemu-img check for \(v): \(check.stdout)\(check.stderr)")
        }
    }

    func testBackingAndDataFileCreation() throws {
        try requireQemuImg()
        let dir = TempDir()
        try Qcow2Format.create(filename: dir.file("base.qcow2"), size: 4 << 20, options: BlockOptions())
        var o = BlockOptions()
        o.set("backing_file", "base.qcow2")
        o.set("backing_fmt", "qcow2")
        try Qcow2Format.create(filename: dir.file("top.qcow2"), size: 4 << 20, options: o)
        try runProcess("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", dir.file("qtop.qcow2"), "4M"])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir.file("top.qcow2"))),
                       try Data(contentsOf: URL(fileURLWithPath: dir.file("qtop.qcow2"))))
        var d = BlockOptions()
        d.set("data_file", dir.file("data.raw"))
        d.set("data_file_raw", "on")
        try Qcow2Format.create(filename: dir.file("df.qcow2"), size: 4 << 20, options: d)
        let r = try runProcess("qemu-img", ["check", dir.file("df.qcow2")])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    }
}
