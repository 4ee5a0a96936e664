// qemu-img makes each variant of each format; we read it back byte for byte as
// `qemu-img convert -O raw` renders it, in large and in odd, unaligned requests, and our block
// status never claims zeroes where the image has data.
import Foundation
import XCTest
@testable import ImageFormats

final class FormatsReadTests: XCTestCase {
    func testEveryVariantReadsLikeQemu() throws {
        let v = try FormatVariants.shared()
        for variant in v.variants {
            let node = try openImage(v.path(variant.file), variant.format)
            defer { try? node.close() }
            let expected = try fileBytes(v.path(variant.name + ".raw"))
            XCTAssertEqual(node.driverName, variant.format, variant.name)
            assertBytesEqual(try readAll(node), expected, variant.name)
            // Unaligned requests crossing block, grain and extent boundaries.
            var rng = SplitMix(state: 42)
            for _ in 0..<15 {
                let off = Int(rng.below(UInt64(expected.count - 1)))
                let len = Int(rng.below(UInt64(min(300_000, expected.count - off)))) + 1
                let got = try node.read(at: UInt64(off), count: len)
                assertBytesEqual(got, Array(expected[off..<off + len]), "\(variant.name) @\(off)+\(len)")
            }
        }
    }

    func testBlockStatusAgreesWithData() throws {
        let v = try FormatVariants.shared()
        for variant in v.variants {
            let node = try openImage(v.path(variant.file), variant.format)
            defer { try? node.close() }
            let expected = try fileBytes(v.path(variant.name + ".raw"))
            var off: UInt64 = 0
            var extents = 0
            while off < node.size {
                let (e, _) = try node.blockStatusAbove(base: nil, at: off, length: node.size - off)
                XCTAssertGreaterThan(e.length, 0, variant.name)
                if e.flags.contains(.zero) {
                    XCTAssertTrue(expected.withUnsafeBytes { isZeroBuffer(UnsafeRawBufferPointer(rebasing: $0[Int(off)..<Int(off + e.length)])) }, "\(variant.name) zero at \(off)")
                }
                off += e.length
                extents += 1
                if extents > 100_000 { XCTFail("too many extents"); break }
            }
        }
    }

    func testProbing() throws {
        let v = try FormatVariants.shared()
        for variant in v.variants where variant.name != "vpc-fixed" {
            // A fixed VHD has its footer only at the end: QEMU does not probe it either.
            let node = try openImage(v.path(variant.file), nil)
            XCTAssertEqual(node.driverName, variant.format, variant.name)
            try node.close()
        }
        let fixed = try openImage(v.path("vpc-fixed.vpc"), nil)
        XCTAssertEqual(fixed.driverName, "raw")
        try fixed.close()
    }

    func testVpcSizeRules() throws {
        let dir = TempDir()
        var o = BlockOptions()
        try VPCFormat.create(filename: dir.file("a.vpc"), size: 64 << 20, options: o)
        var n = try openImage(dir.file("a.vpc"), "vpc")
        XCTAssertEqual(n.size, 67_125_248)
        try n.close()
        o.set("force_size", "on")
        try VPCFormat.create(filename: dir.file("b.vpc"), size: 64 << 20, options: o)
        n = try openImage(dir.file("b.vpc"), "vpc")
        XCTAssertEqual(n.size, 64 << 20)
        try n.close()
        // force_size_calc=chs does not apply to a geometry at its maximum (QEMU's rule).
        var oo = BlockOptions()
        oo.set("force_size_calc", "chs")
        n = try BlockGraph.open(filename: dir.file("b.vpc"), format: "vpc", options: oo, context: OpenContext())
        XCTAssertEqual(n.size, 64 << 20)
        try n.close()
    }
}
