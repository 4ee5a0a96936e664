import Foundation
import XCTest
import ImageFormats

/// Writes through our qcow2 driver leave images that qemu-img checks clean and that read like the
/// same writes applied to a raw copy.
final class Qcow2WriteTests: XCTestCase {
    /// Deterministic write/zero/discard operations over an 8 MiB disk.
    static func operations(seed: UInt64, count: Int, size: UInt64) -> [(kind: Int, offset: UInt64, length: UInt64)] {
        var x = seed
        func next() -> UInt64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
        var ops: [(Int, UInt64, UInt64)] = []
        for _ in 0..<count {
            let kind = Int(next() % 10)   // 0-6 write, 7-8 zero, 9 discard
            let align: UInt64 = [1, 512, 4096, 65536][Int(next() % 4)]
            let off = (next() % size) / align * align
            let len = max(1, min(size - off, (next() % (300 << 10)) / align * align + (align == 1 ? 1 : 0)))
            ops.append((kind, off, len))
        }
        return ops
    }

    func testRandomWritesOnEveryVariant() throws {
        let v = try QemuVariants.shared()
        let work = TempDir()
        _ = try runProcess("sh", ["-c", "cp -a '\(v.dir.path)/.' '\(work.path)/'"])
        // The data file paths inside the images point at the original directory; use copies there.
        for name in v.names where !name.hasPrefix("datafile") {
            let path = work.file(name + ".qcow2")
            let rawPath = work.file(name + ".raw")
            let node = try BlockGraph.open(filename: path, context: OpenContext(flags: .readWrite))
            let raw = try BlockGraph.open(filename: rawPath, format: "raw", context: OpenContext(flags: .readWrite))
            for (i, op) in Self.operations(seed: UInt64(name.hashValue & 0xFFFF) | 1, count: 60, size: node.size).enumerated() {
                switch op.kind {
                case 0...6:
                    let data = pseudoRandomBytes(Int(op.length), seed: UInt64(i + 1))
                    try node.write(at: op.offset, bytes: data)
                    try raw.write(at: op.offset, bytes: data)
                case 7, 8:
                    try node.writeZeroes(at: op.offset, length: op.length, flags: op.kind == 8 ? .mayUnmap : [])
                    try raw.writeZeroes(at: op.offset, length: op.length, flags: [])
                default:
                    // Discard makes whole clusters read as zero; mirror that on the raw side.
                    try node.discard(at: op.offset, length: op.length)
                    let after = try node.read(at: op.offset, count: Int(op.length))
                    try raw.write(at: op.offset, bytes: after)
                }
            }
            try node.close()
            try raw.close()
            let check = try runProcess("qemu-img", ["check", path])
            XCTAssertEqual(check.status, 0, "\(name): \(check.stdout)\(check.stderr)")
            let cmp = try runProcess("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", path, rawPath])
            XCTAssertEqual(cmp.status, 0, "\(name): \(cmp.stdout)\(cmp.stderr)")
        }
    }

    func testCompressedWritesReadByQemu() throws {
        try requireQemuImg()
        let dir = TempDir()
        for ct in ["zlib", "zstd"] {
            let path = dir.file("c-\(ct).qcow2")
            var o = BlockOptions()
            o.set("compression_type", ct)
            try Qcow2Format.create(filename: path, size: 4 << 20, options: o)
            let node = try BlockGraph.open(filename: path, format: "qcow2", context: OpenContext(flags: .readWrite)) as! Qcow2Node
            var expected = [UInt8](repeating: 0, count: 4 << 20)
            for c in 0..<40 {
                var data = [UInt8](repeating: UInt8(c), count: 65536)
                if c % 3 == 0 { data = pseudoRandomBytes(65536, seed: UInt64(c + 9)) }    // incompressible
                if c % 5 == 0 { for j in stride(from: 0, to: 65536, by: 7) { data[j] = UInt8(j & 0xFF) } }
                try data.withUnsafeBytes { try node.writeCompressed(at: UInt64(c) * 65536, from: $0) }
                expected.replaceSubrange(c * 65536..<(c + 1) * 65536, with: data)
            }
            // Partial overwrite of a compressed cluster (copy-on-write from compressed data).
            let patch = [UInt8](repeating: 0xEE, count: 1000)
            try node.write(at: 65536 * 2 + 100, bytes: patch)
            expected.replaceSubrange(131172..<(131172 + 1000), with: patch)
            assertSameBytes(try node.read(at: 0, count: expected.count), expected, ct)
            try node.close()
            let raw = dir.file("c-\(ct).raw")
            try Data(expected).write(to: URL(fileURLWithPath: raw))
            XCTAssertEqual(try runProcess("qemu-img", ["check", path]).status, 0)
            let cmp = try runProcess("qemu-img", ["compare", "-F", "raw", path, raw])
            XCTAssertEqual(cmp.status, 0, cmp.stdout + cmp.stderr)
        }
    }
}
