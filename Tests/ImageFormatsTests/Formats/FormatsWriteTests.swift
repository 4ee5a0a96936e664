// We create each format and subformat, write to it (allocating, in place, unaligned, zeroes, from
// several threads), and qemu-img agrees: `qemu-img compare` with the reference bytes and
// `qemu-img check` where QEMU has a check. Backing chains (qed, vmdk) fall through to the parent.
import Foundation
import XCTest
@testable import ImageFormats

final class FormatsWriteTests: XCTestCase {
    /// (format, -o options, checkable by qemu-img)
    static let targets: [(String, [(String, String)], Bool)] = [
        ("vdi", [], true), ("vdi", [("static", "on")], true),
        ("vpc", [], false), ("vpc", [("subformat", "fixed")], false), ("vpc", [("force_size", "on")], false),
        ("vhdx", [], true), ("vhdx", [("subformat", "fixed")], true), ("vhdx", [("block_size", "1M"), ("block_state_zero", "off")], true),
        ("qed", [], true), ("qed", [("cluster_size", "4k"), ("table_size", "2")], true),
        ("vmdk", [], true), ("vmdk", [("zeroed_grain", "on")], true), ("vmdk", [("subformat", "monolithicFlat")], true),
        ("vmdk", [("subformat", "twoGbMaxExtentSparse")], true), ("vmdk", [("subformat", "twoGbMaxExtentFlat")], true),
    ]

    func create(_ dir: TempDir, _ format: String, _ opts: [(String, String)], size: UInt64, name: String) throws -> String {
        let path = dir.file(name + "." + format)
        var co = CreateOptions(format: FormatRegistry.driver(named: format)!)
        for (k, v) in opts { try co.set(k, v) }
        try ImageCreator.create(filename: path, format: format, size: size, options: co, backingFile: nil, backingFormat: nil,
                                skipBackingCheck: false, announce: nil)
        return path
    }

    func qemuAgrees(_ path: String, _ format: String, reference: [UInt8], checkable: Bool, _ label: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let raw = dir + "/reference.raw"
        try Data(reference).write(to: URL(fileURLWithPath: raw))
        let c = try runProcess("qemu-img", ["compare", "-f", "raw", "-F", format, raw, path])
        XCTAssertEqual(c.status, 0, "\(label): \(c.stdout) \(c.stderr)")
        if checkable {
            let k = try runProcess("qemu-img", ["check", "-f", format, path])
            XCTAssertEqual(k.status, 0, "\(label): \(k.stdout) \(k.stderr)")
        }
    }

    func testRandomWritesEveryFormat() throws {
        try requireQemuImg()
        for (i, (format, opts, checkable)) in Self.targets.enumerated() {
            let dir = TempDir()
            let label = "\(format) \(opts)"
            let path = try create(dir, format, opts, size: 10 << 20, name: "t\(i)")
            let node = try openImage(path, format, writable: true)
            var ref = [UInt8](repeating: 0, count: Int(node.size))
            var rng = SplitMix(state: UInt64(i) + 1)
            for step in 0..<40 {
                let off = Int(rng.below(UInt64(ref.count - 1)))
                let len = min(Int(rng.below(step % 7 == 0 ? 2 << 20 : 70_000)) + 1, ref.count - off)
                if step % 9 == 4 {
                    try node.writeZeroes(at: UInt64(off), length: UInt64(len), flags: step % 2 == 0 ? .mayUnmap : [])
                    ref.fill(off, len, 0)
                } else {
                    let data = pseudoRandomBytes(len, seed: UInt64(step * 7 + i))
                    try node.write(at: UInt64(off), bytes: data)
                    ref.replaceSubrange(off..<off + len, with: data)
                }
            }
            // Whole blocks/grains and the very end.
            try node.write(at: 0, bytes: pseudoRandomBytes(2 << 20, seed: 99))
            ref.replaceSubrange(0..<(2 << 20), with: pseudoRandomBytes(2 << 20, seed: 99))
            try node.write(at: UInt64(ref.count - 10), bytes: [UInt8](repeating: 0xEE, count: 10))
            ref.fill(ref.count - 10, 10, 0xEE)
            assertBytesEqual(try readAll(node), ref, label + " before close")
            try node.close()
            let again = try openImage(path, format)
            assertBytesEqual(try readAll(again, chunk: 3 << 20), ref, label + " reopened")
            try again.close()
            try qemuAgrees(path, format, reference: ref, checkable: checkable, label)
        }
    }

    func testConcurrentWriters() throws {
        try requireQemuImg()
        for (format, opts) in [("vdi", [(String, String)]()), ("qed", []), ("vmdk", []), ("vhdx", [("block_size", "1M")]), ("vpc", [])] {
            let dir = TempDir()
            let path = try create(dir, format, opts, size: 16 << 20, name: "c")
            let node = try openImage(path, format, writable: true)
            let size = Int(node.size)
            let slice = size / 4
            runThreads(4) { t in
                var o = t * slice
                var k = 0
                while o + 100_000 <= (t + 1) * slice {
                    try! node.write(at: UInt64(o), bytes: [UInt8](repeating: UInt8(t * 16 + k % 16 + 1), count: 100_000))
                    o += 150_000
                    k += 1
                }
            }
            var ref = [UInt8](repeating: 0, count: size)
            for t in 0..<4 {
                var o = t * slice
                var k = 0
                while o + 100_000 <= (t + 1) * slice {
                    ref.fill(o, 100_000, UInt8(t * 16 + k % 16 + 1))
                    o += 150_000
                    k += 1
                }
            }
            assertBytesEqual(try readAll(node), ref, format)
            try node.close()
            try qemuAgrees(path, format, reference: ref, checkable: format != "vpc", "concurrent \(format)")
        }
    }

    func testStreamOptimizedWritesWholeGrains() throws {
        try requireQemuImg()
        let dir = TempDir()
        let path = try create(dir, "vmdk", [("subformat", "streamOptimized")], size: (4 << 20) + 4096, name: "s")
        let node = try openImage(path, "vmdk", writable: true)
        var ref = [UInt8](repeating: 0, count: Int(node.size))
        let data = pseudoRandomBytes(1 << 20, seed: 5) + [UInt8](repeating: 0x3C, count: 1 << 20)
        try node.write(at: 1 << 20, bytes: data)
        ref.replaceSubrange((1 << 20)..<(3 << 20), with: data)
        // The final, shorter grain.
        try node.write(at: 4 << 20, bytes: [UInt8](repeating: 7, count: 4096))
        ref.replaceSubrange((4 << 20)..<((4 << 20) + 4096), with: [UInt8](repeating: 7, count: 4096))
        // Partial grains and rewrites are refused, as in QEMU.
        XCTAssertThrowsError(try node.write(at: 100, bytes: [1, 2, 3]))
        XCTAssertThrowsError(try node.write(at: 1 << 20, bytes: [UInt8](repeating: 1, count: 65536)))
        try node.close()
        let again = try openImage(path, "vmdk")
        XCTAssertEqual(again.formatSpecificInfo()?["data"]?["create-type"], .string("streamOptimized"))
        assertBytesEqual(try readAll(again), ref)
        try again.close()
        try qemuAgrees(path, "vmdk", reference: ref, checkable: true, "streamOptimized")
    }

    func testBackingChains() throws {
        try requireQemuImg()
        let dir = TempDir()
        let base = dir.file("base.qcow2")
        _ = try runProcess("qemu-img", ["create", "-q", "-f", "qcow2", base, "8M"])
        _ = try runProcess("qemu-io", ["-f", "qcow2", "-c", "write -P 0x61 0 8M", base])
        let vbase = dir.file("vbase.vmdk")
        _ = try runProcess("qemu-img", ["create", "-q", "-f", "vmdk", vbase, "8M"])
        _ = try runProcess("qemu-io", ["-f", "vmdk", "-c", "write -P 0x62 0 8M", vbase])
        for (format, backing, bfmt, fill) in [("qed", "base.qcow2", "qcow2", UInt8(0x61)), ("vmdk", "vbase.vmdk", "vmdk", UInt8(0x62))] {
            let path = dir.file("top." + format)
            var co = CreateOptions(format: FormatRegistry.driver(named: format)!)
            try ImageCreator.create(filename: path, format: format, size: nil, options: co, backingFile: backing, backingFormat: bfmt,
                                    skipBackingCheck: false, announce: nil)
            co = CreateOptions(format: FormatRegistry.driver(named: format)!)
            let node = try openImage(path, format, writable: true)
            XCTAssertEqual(node.size, 8 << 20)
            XCTAssertEqual(node.recordedBacking?.name, backing)
            var ref = [UInt8](repeating: fill, count: 8 << 20)
            // A partial cluster copies the rest of the cluster from the parent.
            try node.write(at: 70_000, bytes: [UInt8](repeating: 0x70, count: 1000))
            ref.fill(70_000, 1000, 0x70)
            try node.write(at: 3 << 20, bytes: [UInt8](repeating: 0x71, count: 200_000))
            ref.fill(3 << 20, 200_000, 0x71)
            assertBytesEqual(try readAll(node), ref, format)
            try node.close()
            try qemuAgrees(path, format, reference: ref, checkable: true, "backing \(format)")
            let q = try runProcess("qemu-img", ["convert", "-O", "raw", path, dir.file("q.raw")])
            XCTAssertEqual(q.status, 0, q.stderr)
            assertBytesEqual(try fileBytes(dir.file("q.raw")), ref, "qemu reads our \(format) chain")
        }
    }

    func testQedResizeAndZeroClusters() throws {
        try requireQemuImg()
        let dir = TempDir()
        let path = try create(dir, "qed", [], size: 4 << 20, name: "r")
        let node = try openImage(path, "qed", writable: true)
        try node.write(at: 0, bytes: [UInt8](repeating: 9, count: 1 << 20))
        try node.writeZeroes(at: 64 << 10, length: 128 << 10, flags: [])
        try node.truncate(to: 8 << 20, preallocation: .off, exact: false)
        XCTAssertThrowsError(try node.truncate(to: 1 << 20, preallocation: .off, exact: false))
        try node.close()
        var ref = [UInt8](repeating: 0, count: 8 << 20)
        ref.fill(0, 1 << 20, 9)
        ref.fill(64 << 10, 128 << 10, 0)
        try qemuAgrees(path, "qed", reference: ref, checkable: true, "qed resize")
    }
}
