import Foundation
import XCTest
import ImageFormats

/// Images made by qemu-img/qemu-io read back exactly as qemu-img renders them.
final class Qcow2ReadTests: XCTestCase {
    func testEveryVariantReadsLikeQemu() throws {
        let v = try QemuVariants.shared()
        XCTAssertGreaterThan(v.names.count, 10)
        for name in v.names {
            let node = try BlockGraph.open(filename: v.image(name), context: OpenContext())
            defer { try? node.close() }
            XCTAssertEqual(node.driverName, "qcow2", name)
            let expected = try Data(contentsOf: URL(fileURLWithPath: v.raw(name)))
            XCTAssertEqual(node.size, UInt64(expected.count), name)
            // Odd-sized reads that straddle clusters and subclusters.
            var got = Data()
            var pos: UInt64 = 0
            var step: UInt64 = 12345
            while pos < node.size {
                let n = min(step, node.size - pos)
                got.append(contentsOf: try node.read(at: pos, count: Int(n)))
                pos += n
                step = step * 7 % 300_001 + 512
            }
            XCTAssertTrue(got == expected, "contents of \(name)")
        }
    }

    func testSnapshotView() throws {
        let v = try QemuVariants.shared()
        var o = BlockOptions()
        o.set("load-snapshot", "first")
        let node = try BlockGraph.open(filename: v.image("snap"), options: o, context: OpenContext())
        defer { try? node.close() }
        let expected = try Data(contentsOf: URL(fileURLWithPath: v.dir.file("snap-first.raw")))
        XCTAssertTrue(Data(try node.read(at: 0, count: Int(node.size))) == expected)
    }
}
