import Foundation
import XCTest
import ImageFormats

/// qcow2 features beyond plain reads and writes, each checked with qemu-img/qemu-io.
final class Qcow2FeatureTests: XCTestCase {
    func testDirtyLazyRefcountsImageIsRepairedOnWritableOpen() throws {
        try requireQemuImg()
        let d = TempDir()
        let p = d.file("lazy.qcow2")
        try runProcess("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", p, "8M"])
        // qemu-io's abort leaves the dirty bit and un-updated refcounts behind.
        try runProcess("qemu-io", ["-c", "write -P 7 0 1M", "-c", "abort", p])
        let before = try runProcess("qemu-img", ["info", "--output=json", p]).stdout
        XCTAssertTrue(before.contains("\"dirty-flag\": true"), before)
        let n = try BlockGraph.open(filename: p, context: OpenContext(flags: .readWrite))
        XCTAssertEqual(try n.read(at: 0, count: 4), [7, 7, 7, 7])
        try n.close()
        XCTAssertEqual(try runProcess("qemu-img", ["check", p]).status, 0)
        XCTAssertTrue(try runProcess("qemu-img", ["info", "--output=json", p]).stdout.contains("\"dirty-flag\": false"))
    }

    func testWriterLocksAgainstQemuIo() throws {
        try requireQemuImg()
        let d = TempDir()
        let p = d.file("l.qcow2")
        try Qcow2Format.create(filename: p, size: 1 << 20, options: BlockOptions())
        let n = try BlockGraph.open(filename: p, context: OpenContext(flags: .readWrite))
        let r = try runProcess("qemu-io", ["-c", "read 0 512", p])
        XCTAssertTrue(r.stderr.contains("Failed to get \"write\" lock"), r.stderr)
        XCTAssertTrue(r.stderr.contains("Is another process using the image [\(p)]?"), r.stderr)
        // info of a qcow2 in use needs -U, as with QEMU.
        XCTAssertNotEqual(try runProcess("qemu-img", ["info", p]).status, 0)
        XCTAssertEqual(try runProcess("qemu-img", ["info", "-U", p]).status, 0)
        try n.close()
        XCTAssertEqual(try runProcess("qemu-io", ["-c", "read 0 512", p]).status, 0)
    }

    func testUnknownHeaderExtensionIsPreserved() throws {
        try requireQemuImg()
        let d = TempDir()
        let p = d.file("ext.qcow2")
        try Qcow2Format.create(filename: p, size: 1 << 20, options: BlockOptions())
        // Insert an unknown extension (magic 0x12345678, 5 bytes) before the end marker.
        var data = try Data(contentsOf: URL(fileURLWithPath: p))
        var pos = 112
        while data[pos..<pos + 4] != Data([0, 0, 0, 0]) {
            let len = Int(data[pos + 4]) << 24 | Int(data[pos + 5]) << 16 | Int(data[pos + 6]) << 8 | Int(data[pos + 7])
            pos += 8 + (len + 7) & ~7
        }
        let ext: [UInt8] = [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]
        data.replaceSubrange(pos..<pos + 16, with: ext)   // the end marker moves after it (zeros follow)
        try data.write(to: URL(fileURLWithPath: p))
        // A write that rewrites the header (a backing file change would too): growing the image.
        let n = try BlockGraph.open(filename: p, format: "qcow2", context: OpenContext(flags: .readWrite))
        try n.truncate(to: 2 << 20, preallocation: .off, exact: false)
        try n.write(at: 0, bytes: [1, 2, 3])
        try n.close()
        let after = try Data(contentsOf: URL(fileURLWithPath: p))
        XCTAssertNotNil(after.range(of: Data(ext[0..<13])), "unknown extension kept")
        XCTAssertEqual(try runProcess("qemu-img", ["check", p]).status, 0)
    }

    func testExternalDataFileWrites() throws {
        try requireQemuImg()
        let d = TempDir()
        for raw in [false, true] {
            let p = d.file("df\(raw).qcow2"), data = d.file("df\(raw).data")
            var o = BlockOptions()
            o.set("data_file", data)
            if raw { o.set("data_file_raw", "on") }
            try Qcow2Format.create(filename: p, size: 4 << 20, options: o)
            let n = try BlockGraph.open(filename: p, context: OpenContext(flags: .readWrite))
            let bytes = pseudoRandomBytes(300_000, seed: 5)
            try n.write(at: 70_000, bytes: bytes)
            try n.writeZeroes(at: 100_000, length: 65536 * 2, flags: .mayUnmap)
            try n.close()
            XCTAssertEqual(try runProcess("qemu-img", ["check", p]).status, 0)
            let out = d.file("out\(raw).raw")
            XCTAssertEqual(try runProcess("qemu-img", ["convert", "-O", "raw", p, out]).status, 0)
            var expected = [UInt8](repeating: 0, count: 4 << 20)
            expected.replaceSubrange(70_000..<370_000, with: bytes)
            for i in 100_000..<(100_000 + 131_072) { expected[i] = 0 }
            let got = [UInt8](try Data(contentsOf: URL(fileURLWithPath: out)))
            assertSameBytes(got, expected, "data file raw=\(raw)")
            if raw {
                // data_file_raw: the data file alone is the disk.
                let df = [UInt8](try Data(contentsOf: URL(fileURLWithPath: data)))
                assertSameBytes(Array(df.prefix(expected.count)) + [UInt8](repeating: 0, count: max(0, expected.count - df.count)), expected, "raw data file")
            }
        }
    }

    func testJSONFilenamesAndImageOpts() throws {
        let d = TempDir()
        let p = d.file("j.qcow2")
        try Qcow2Format.create(filename: p, size: 1 << 20, options: BlockOptions())
        let viaJSON = try BlockGraph.open(filename: "json:{\"driver\": \"qcow2\", \"file\": {\"driver\": \"file\", \"filename\": \"\(p)\"}}",
                                          context: OpenContext())
        XCTAssertEqual(viaJSON.driverName, "qcow2")
        XCTAssertEqual(viaJSON.size, 1 << 20)
        try viaJSON.close()
        let opts = try BlockOptions.parseKeyValue("driver=qcow2,file.driver=file,file.filename=\(p)")
        let viaOpts = try BlockGraph.open(filename: nil, options: opts, context: OpenContext())
        XCTAssertEqual(viaOpts.driverName, "qcow2")
        try viaOpts.close()
        // Options given twice: the later value wins (feature T5).
        var merged = try BlockOptions.parseKeyValue("cluster_size=4k,lazy_refcounts=on")
        merged = merged.merging(try BlockOptions.parseKeyValue("cluster_size=8k"))
        XCTAssertEqual(merged.string("cluster_size"), "8k")
        XCTAssertEqual(merged.string("lazy_refcounts"), "on")
        XCTAssertEqual(try BlockOptions.parseKeyValue("file=a,,b,x").string("file"), "a,b")
        XCTAssertThrowsError(try BlockGraph.open(filename: "json:{\"driver\": ", context: OpenContext())) {
            XCTAssertTrue(($0 as? BlockError)?.message.hasPrefix("Could not parse the JSON options") ?? false)
        }
    }
}
