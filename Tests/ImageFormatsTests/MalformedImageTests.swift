import Foundation
import XCTest
import ImageFormats

/// Malformed qcow2 images (header fields patched) fail with a clear message, never a crash, hang
/// or giant allocation; random corruption of metadata never crashes open, read or check.
final class MalformedImageTests: XCTestCase {
    /// (offset, width in bytes, value, expected message or nil when the image must still open)
    static let cases: [(Int, Int, UInt64, String?)] = [
        (20, 4, 40, "Unsupported cluster size: 2^40"),
        (20, 4, 8, "Unsupported cluster size: 2^8"),
        (4, 4, 4, "Unsupported qcow2 version 4"),
        (0, 4, 0x1234_5678, "Image is not in qcow2 format"),
        (36, 4, 0xFFFF_FFFF, "Active L1 table too large"),
        (36, 4, 0, "L1 table is too small"),
        (40, 8, 0x1000_0000, "Active L1 table at offset 268435456 (8 bytes) exceeds the end of the image file"),
        (40, 8, 0x30001, "Active L1 table offset invalid"),
        (60, 4, 0xFFFF_FFFF, "Snapshot table too large"),
        (56, 4, 0xFFFF_FFFF, "Reference count table too large"),
        (48, 8, 0x70_0000_0000, "Reference count table at offset"),
        (72, 8, 0x100, "Unsupported qcow2 feature(s): Unknown incompatible feature: 100"),
        (96, 4, 7, "Reference count entry width too large; may not exceed 64 bits"),
        (100, 4, 0x20000, "qcow2 header exceeds cluster size"),
        (100, 4, 50, "qcow2 header too short"),
        (104, 1, 5, "qcow2: unknown compression type: 5"),
        (8, 8, 0x80, "Header extension too large"),
        (8, 8, 0x20000, "Invalid backing file offset"),
        (112, 4, 0xE279_2ACA, "ERROR: ext_backing_format: len=384 too large (>=16)"),
        (32, 4, 7, "Unsupported encryption method: 7"),
        (100, 4, 200, nil),   // longer header with unknown fields: fine
        (72, 8, 2, nil),      // corrupt bit: opens read-only
    ]

    func makeBase(_ dir: TempDir) throws -> String {
        let path = dir.file("base.qcow2")
        try Qcow2Format.create(filename: path, size: 16 << 20, options: BlockOptions())
        let n = try BlockGraph.open(filename: path, context: OpenContext(flags: .readWrite))
        try n.write(at: 0, bytes: pseudoRandomBytes(1 << 20, seed: 3))
        try n.close()
        return path
    }

    func patched(_ base: String, _ dir: TempDir, _ off: Int, _ width: Int, _ value: UInt64) throws -> String {
        var d = try Data(contentsOf: URL(fileURLWithPath: base))
        for i in 0..<width { d[off + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(width - 1 - i))) }
        let p = dir.file("m-\(off)-\(value).qcow2")
        try d.write(to: URL(fileURLWithPath: p))
        return p
    }

    func testHeaderFieldErrors() throws {
        let dir = TempDir()
        let base = try makeBase(dir)
        for (off, width, value, expected) in Self.cases {
            let p = try patched(base, dir, off, width, value)
            do {
                let n = try BlockGraph.open(filename: p, format: "qcow2", context: OpenContext())
                _ = try? n.read(at: 0, count: 65536)
                try n.close()
                XCTAssertNil(expected, "opened with \(off)=\(value)")
            } catch let e as BlockError {
                guard let expected else { XCTFail("\(off)=\(value): unexpected \(e.message)"); continue }
                XCTAssertTrue(e.message.hasPrefix(expected), "\(off)=\(value): \(e.message)")
            }
        }
        // The corrupt bit refuses writers with QEMU's message.
        let p = try patched(base, dir, 72, 8, 2)
        XCTAssertThrowsError(try BlockGraph.open(filename: p, format: "qcow2", context: OpenContext(flags: .readWrite))) {
            XCTAssertEqual(($0 as? BlockError)?.message, "qcow2: Image is corrupt; cannot be opened read/write")
        }
    }

    func testBackingLoopAndMissingBacking() throws {
        let dir = TempDir()
        var o = BlockOptions()
        o.set("backing_file", "b.qcow2")
        o.set("backing_fmt", "qcow2")
        try Qcow2Format.create(filename: dir.file("a.qcow2"), size: 1 << 20, options: BlockOptions())
        try Qcow2Format.create(filename: dir.file("b.qcow2"), size: 1 << 20, options: BlockOptions())
        // Point a at b and b at a by rewriting their headers through the library.
        for (img, target) in [("a.qcow2", "b.qcow2"), ("b.qcow2", "a.qcow2")] {
            var opts = BlockOptions()
            opts.set("backing_file", target)
            opts.set("backing_fmt", "qcow2")
            let tmp = dir.file("tmp.qcow2")
            try Qcow2Format.create(filename: tmp, size: 1 << 20, options: opts)
            try FileManager.default.removeItem(atPath: dir.file(img))
            try FileManager.default.moveItem(atPath: tmp, toPath: dir.file(img))
        }
        XCTAssertThrowsError(try BlockGraph.open(filename: dir.file("a.qcow2"), context: OpenContext())) { e in
            XCTAssertTrue((e as? BlockError)?.message.contains("creates an infinite loop") ?? false, "\(e)")
        }
        try FileManager.default.removeItem(atPath: dir.file("b.qcow2"))
        XCTAssertThrowsError(try BlockGraph.open(filename: dir.file("a.qcow2"), context: OpenContext())) { e in
            XCTAssertEqual((e as? BlockError)?.message, "Could not open backing file: Could not open '\(dir.file("b.qcow2"))': No such file or directory")
        }
    }

    /// Random bytes over the metadata clusters: every outcome is fine except a crash or a hang.
    func testRandomMetadataCorruptionNeverCrashes() throws {
        let dir = TempDir()
        let base = try makeBase(dir)
        let original = try Data(contentsOf: URL(fileURLWithPath: base))
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
        let iterations = ProcessInfo.processInfo.environment["FUZZ_ITERATIONS"].flatMap(Int.init) ?? 300
        for i in 0..<iterations {
            var d = original
            for _ in 0..<Int(1 + next() % 8) {
                // Mostly the header cluster and the first tables (clusters 0-4).
                let off = Int(next() % UInt64(min(d.count, 5 * 65536)))
                d[off] = UInt8(truncatingIfNeeded: next())
            }
            let p = dir.file("f\(i % 4).qcow2")
            try d.write(to: URL(fileURLWithPath: p))
            guard let n = try? BlockGraph.open(filename: p, format: "qcow2", context: OpenContext()) else { continue }
            var pos: UInt64 = 0
            while pos < min(n.size, 2 << 20) {
                _ = try? n.read(at: pos, count: 65536)
                pos += 65536
            }
            _ = try? n.blockStatus(at: 0, length: n.size)
            if let c = n as? any CheckableNode { _ = try? c.check(fix: [], log: { _ in }) }
            try? n.close()
        }
    }
}
