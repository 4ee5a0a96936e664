// Malformed vmdk/vdi/vhdx/vpc/qed images: each bad header field gets a clear error in QEMU's words
// (or ours where QEMU would read on), and random corruption of metadata never crashes, hangs or
// allocates without bound on open, read, block status or check.
import Foundation
import XCTest
@testable import ImageFormats

final class FormatsMalformedTests: XCTestCase {
    struct Patch {
        var offset: Int
        var width: Int
        var value: UInt64
        var bigEndian = false
    }

    /// A small image with data, made by qemu-img.
    func base(_ dir: TempDir, _ format: String, _ opts: [String] = []) throws -> [UInt8] {
        let p = dir.file("base.\(format)")
        var r = try runProcess("qemu-img", ["create", "-q", "-f", format] + opts + [p, "4M"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try runProcess("qemu-io", ["-f", format, "-c", "write -P 0x5c 0 3M", p])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try fileBytes(p)
    }

    func patched(_ b: [UInt8], _ patches: [Patch]) -> [UInt8] {
        var d = b
        for p in patches {
            for i in 0..<p.width {
                let shift = UInt64(8 * (p.bigEndian ? p.width - 1 - i : i))
                d[p.offset + i] = UInt8(truncatingIfNeeded: p.value >> shift)
            }
        }
        return d
    }

    func expectOpen(_ dir: TempDir, _ format: String, _ bytes: [UInt8], _ expected: String?, _ label: String) throws {
        let p = dir.file("m.\(format)")
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        do {
            let n = try openImage(p, format)
            _ = try? n.read(at: 0, count: Int(min(n.size, 1 << 20)))
            try n.close()
            XCTAssertNil(expected, "\(label): opened")
        } catch let e as BlockError {
            guard let expected else { return XCTFail("\(label): unexpected \(e.message)") }
            XCTAssertTrue(e.message.hasPrefix(expected), "\(label): \(e.message)")
        }
    }

    func testHeaderFieldErrors() throws {
        try requireQemuImg()
        let dir = TempDir()
        let vdi = try base(dir, "vdi")
        for (p, msg) in [
            (Patch(offset: 0x40, width: 4, value: 0x1234_5678), "Image not in VDI format (bad signature 12345678)"),
            (Patch(offset: 0x44, width: 4, value: 0x0002_0000), "unsupported VDI image (version 2.0)"),
            (Patch(offset: 0x154, width: 4, value: 0x201), "unsupported VDI image (unaligned block map offset 0x201)"),
            (Patch(offset: 0x158, width: 4, value: 0x401), "unsupported VDI image (unaligned data offset 0x401)"),
            (Patch(offset: 0x168, width: 4, value: 4096), "unsupported VDI image (sector size 4096 is not 512)"),
            (Patch(offset: 0x178, width: 4, value: 4096), "unsupported VDI image (block size 4096 is not 1048576)"),
            (Patch(offset: 0x170, width: 8, value: 1 << 60), "Unsupported VDI image size"),
            (Patch(offset: 0x180, width: 4, value: 1), "unsupported VDI image (disk size 4194304, image bitmap has room for 1048576)"),
            (Patch(offset: 0x180, width: 4, value: 0x3fff_ffff), "VDI block map"),
            (Patch(offset: 0x1a8, width: 1, value: 1), "unsupported VDI image (non-NULL link UUID)"),
            (Patch(offset: 0x1b8, width: 1, value: 1), "unsupported VDI image (non-NULL parent UUID)"),
        ] { try expectOpen(dir, "vdi", patched(vdi, [p]), msg, "vdi \(p.offset)") }

        let vpc = try base(dir, "vpc")
        for (p, msg) in [
            (Patch(offset: 64, width: 4, value: 0, bigEndian: true), "Incorrect header checksum"),
            (Patch(offset: 512, width: 8, value: 0, bigEndian: true), "Invalid argument"),
            (Patch(offset: 512 + 32, width: 4, value: 1000, bigEndian: true), "Invalid block size 1000"),
            (Patch(offset: 512 + 28, width: 4, value: 1, bigEndian: true), "Page table too small"),
            (Patch(offset: 512 + 28, width: 4, value: 0x7fff_0000, bigEndian: true), "Max Table Entries too large"),
            (Patch(offset: 512 + 16, width: 8, value: 1 << 40, bigEndian: true), "block-vpc: free_data_block_offset points after the end of file"),
            (Patch(offset: 1536, width: 4, value: 0x10_0000, bigEndian: true), "block-vpc: free_data_block_offset points after the end of file"),
        ] { try expectOpen(dir, "vpc", patched(vpc, [p]), msg, "vpc \(p.offset)") }

        let qed = try base(dir, "qed")
        for (p, msg) in [
            (Patch(offset: 0, width: 4, value: 0), "Image not in QED format"),
            (Patch(offset: 16, width: 8, value: 0x10), "Unsupported QED features: 10"),
            (Patch(offset: 4, width: 4, value: 1000), "QED cluster size is invalid"),
            (Patch(offset: 8, width: 4, value: 3), "QED table size is invalid"),
            (Patch(offset: 48, width: 8, value: 1 << 60), "QED image size is invalid"),
            (Patch(offset: 40, width: 8, value: 0x12345), "QED table offset is invalid"),
            (Patch(offset: 40, width: 8, value: 1 << 40), "QED table offset is invalid"),
        ] { try expectOpen(dir, "qed", patched(qed, [p]), msg, "qed \(p.offset)") }
        try expectOpen(dir, "qed", patched(qed, [Patch(offset: 16, width: 8, value: 1), Patch(offset: 56, width: 4, value: 0x20000)]),
                       "QED backing filename offset is invalid", "qed backing offset")
        try expectOpen(dir, "qed", patched(qed, [Patch(offset: 16, width: 8, value: 1)]), nil, "qed empty backing name")

        let vmdk = try base(dir, "vmdk")
        for (p, msg) in [
            (Patch(offset: 0, width: 4, value: 0x5858_5858), "invalid VMDK image descriptor"),
            (Patch(offset: 4, width: 4, value: 4), "Unsupported VMDK version 4"),
            (Patch(offset: 44, width: 4, value: 1024), "L2 table size too big"),
            (Patch(offset: 20, width: 8, value: 0), "L1 entry size is invalid"),
            (Patch(offset: 64, width: 8, value: 1 << 40), "File truncated, expecting at least"),
            (Patch(offset: 20, width: 8, value: 0x40_0000), "Invalid granularity, image may be corrupt"),
            (Patch(offset: 12, width: 8, value: 1 << 50), "L1 size too big"),
            (Patch(offset: 56, width: 8, value: 1 << 30), "Could not read l1 table from extent"),
        ] { try expectOpen(dir, "vmdk", patched(vmdk, [p]), msg, "vmdk \(p.offset)") }

        let vhdx = try base(dir, "vhdx")
        let md = Int(vhdx.le64(0x30000 + 64))
        let bat = Int(vhdx.le64(0x30000 + 32))
        for (ps, msg) in [
            ([Patch(offset: 0, width: 8, value: 0)], "Invalid argument"),
            ([Patch(offset: 0x10004, width: 4, value: 0), Patch(offset: 0x20004, width: 4, value: 0)], "No valid VHDX header found"),
            ([Patch(offset: 0x30004, width: 4, value: 0)], "Invalid argument"),
            ([Patch(offset: md + 0x10000, width: 4, value: 12345)], "Invalid argument"),
            ([Patch(offset: md + 0x10020, width: 4, value: 1024)], "Invalid argument"),
            ([Patch(offset: md + 0x10008, width: 8, value: 1 << 60)], "Invalid argument"),
            ([Patch(offset: md + 10, width: 2, value: 0xffff)], "Invalid argument"),
            ([Patch(offset: bat, width: 8, value: (1 << 40) | 6)], "VHDX BAT entry 0 start offset"),
        ] as [([Patch], String)] { try expectOpen(dir, "vhdx", patched(vhdx, ps), msg, "vhdx \(ps[0].offset)") }
    }

    /// Random bytes over the metadata never crash, hang or allocate without bound.
    func testRandomCorruption() throws {
        try requireQemuImg()
        let dir = TempDir()
        let images: [(String, [String])] = [("vdi", []), ("vpc", []), ("qed", []), ("vmdk", []), ("vmdk", ["-o", "subformat=streamOptimized"]), ("vhdx", [])]
        for (format, opts) in images {
            let b = try base(dir, format, opts)
            var rng = SplitMix(state: 7)
            // Where the metadata lives: headers, tables, maps.
            var areas: [Range<Int>] = [0..<min(b.count, 8192)]
            if format == "vhdx" {
                let md = Int(b.le64(0x30000 + 64)), bat = Int(b.le64(0x30000 + 32))
                areas += [bat..<(bat + 256), md..<(md + 256), (md + 0x10000)..<(md + 0x10040)]
            }
            if format == "vpc" { areas.append((b.count - 512)..<b.count) }
            for _ in 0..<60 {
                var d = b
                for _ in 0..<4 {
                    let a = areas[Int(rng.below(UInt64(areas.count)))]
                    let i = a.lowerBound + Int(rng.below(UInt64(a.count)))
                    d[i] = UInt8(truncatingIfNeeded: rng.next())
                }
                let p = dir.file("r.\(format)")
                try Data(d).write(to: URL(fileURLWithPath: p))
                guard let n = try? BlockGraph.open(filename: p, format: format, context: OpenContext(flags: .checkRepair)) else { continue }
                _ = try? n.read(at: 0, count: Int(min(n.size, 4 << 20)))
                var off: UInt64 = 0
                var steps = 0
                while off < n.size && steps < 200, let e = try? n.blockStatusAbove(base: nil, at: off, length: n.size - off) {
                    off += max(e.extent.length, 1)
                    steps += 1
                }
                if let c = n as? any CheckableNode { _ = try? c.check(fix: [], log: { _ in }) }
                try? n.close()
            }
        }
    }
}

extension FormatsMalformedTests {
    /// Descriptors naming missing files, bad lines or themselves get errors, not crashes or loops.
    func testVmdkDescriptorTraps() throws {
        let dir = TempDir()
        func desc(_ extents: String) -> String {
            "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n\(extents)\n"
        }
        let cases: [(String, String)] = [
            ("RW 100 FLAT \"missing.img\" 0", "Could not open"),
            ("RW 100 FLAT \"x.img\"", "Invalid extent line: RW 100 FLAT \"x.img\""),
            ("RW 100 VMFS \"x.img\" 5", "Invalid extent line"),
            ("RW 100 SPARSE \"d.vmdk\"", "Image not in VMDK format"),
            ("RW 100 SESPARSE \"d.vmdk\"", "Unsupported extent type 'SESPARSE'"),
        ]
        for (line, expected) in cases {
            try Data(desc(line).utf8).write(to: URL(fileURLWithPath: dir.file("d.vmdk")))
            XCTAssertThrowsError(try openImage(dir.file("d.vmdk"), "vmdk"), line) { e in
                XCTAssertTrue((e as? BlockError)?.message.contains(expected) == true, "\(line): \(e)")
            }
        }
        try Data(desc("").replacingOccurrences(of: "monolithicFlat", with: "fancy").utf8).write(to: URL(fileURLWithPath: dir.file("d.vmdk")))
        XCTAssertThrowsError(try openImage(dir.file("d.vmdk"), "vmdk")) {
            XCTAssertEqual(($0 as? BlockError)?.message, "Unsupported image type 'fancy'")
        }
        // A sparse header with capacity 0 whose embedded descriptor names the file itself.
        var h = VMDK4Header()
        h.capacity = 0
        h.descOffset = 1
        var file = h.bytes + [UInt8](repeating: 0, count: 512 - VMDK.headerStructSize)
        file += Array(desc("RW 100 SPARSE \"self.vmdk\"").utf8)
        file += [UInt8](repeating: 0, count: 4096)
        try Data(file).write(to: URL(fileURLWithPath: dir.file("self.vmdk")))
        XCTAssertThrowsError(try openImage(dir.file("self.vmdk"), "vmdk")) {
            XCTAssertTrue(($0 as? BlockError)?.message.contains("nested descriptor") == true, "\($0)")
        }
    }
}
