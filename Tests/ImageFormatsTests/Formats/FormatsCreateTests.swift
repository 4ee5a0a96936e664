// Images we create are qemu-img's, byte for byte, once the fields QEMU fills at random or from
// the clock are masked: UUIDs/GUIDs, VHD timestamps and checksums, VMDK CIDs, VHDX header
// sequence numbers and the VHDX creator string (diagnostic text naming the program).
import Foundation
import XCTest
@testable import ImageFormats

final class FormatsCreateTests: XCTestCase {
    /// Byte ranges to mask, per format, given the file's bytes.
    static func masks(_ format: String, _ b: [UInt8]) -> [Range<Int>] {
        switch format {
        case "vdi": return [0x188..<0x1a8]
        case "vpc":
            // Footer(s): timestamp, checksum, UUID; at 0 (dynamic) and at the end.
            var r: [Range<Int>] = []
            for base in [0, b.count - 512] where base >= 0 && b.count >= base + 512 {
                r += [(base + 24)..<(base + 28), (base + 64)..<(base + 84)]
            }
            return r
        case "vhdx":
            var r: [Range<Int>] = [8..<520, 0x10004..<0x10030, 0x20004..<0x20030]
            let md = Int(b.le64(0x30000 + 64))
            r.append((md + 0x10010)..<(md + 0x10020))
            return r
        default: return []
        }
    }

    /// The CID value (random, of varying hex length) replaced by "X" and the extent names
    /// ("a-..." / "q-...") unified, in the text part; the zero padding after the text keeps the
    /// length of a monolithic sparse file.
    static func normalizedVMDK(_ b: [UInt8], ourName: String, theirName: String) -> [UInt8] {
        var out = b
        let limit = min(out.count, 64 << 10)
        let from = Array(ourName.utf8), to = Array(theirName.utf8)
        var i = 0
        while i + from.count <= limit {
            if Array(out[i..<i + from.count]) == from { out.replaceSubrange(i..<i + from.count, with: to) }
            i += 1
        }
        let key = Array("\nCID=".utf8)
        i = 0
        while i + key.count <= min(out.count, limit) {
            if Array(out[i..<i + key.count]) == key {
                let start = i + key.count
                var j = start
                while j < out.count && out[j] != 0x0a { j += 1 }
                out.replaceSubrange(start..<j, with: [0x58])
                if let nul = out[start...].firstIndex(of: 0), j - start > 1 {
                    out.insert(contentsOf: [UInt8](repeating: 0, count: j - start - 1), at: nul)
                }
                break
            }
            i += 1
        }
        return out
    }

    func compare(_ format: String, _ opts: [(String, String)], size: String) throws {
        let dir = TempDir()
        let ours = dir.file("a.\(format)"), theirs = dir.file("q.\(format)")
        var co = CreateOptions(format: FormatRegistry.driver(named: format)!)
        for (k, v) in opts { try co.set(k, v) }
        var line = ""
        try ImageCreator.create(filename: ours, format: format, size: SizeParser.parse(size), options: co, backingFile: nil,
                                backingFormat: nil, skipBackingCheck: false, announce: { line = $0 })
        let o = opts.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        let q = try runProcess("qemu-img", ["create", "-f", format] + (o.isEmpty ? [] : ["-o", o]) + [theirs, size])
        XCTAssertEqual(q.status, 0, q.stderr)
        XCTAssertEqual(line.replacingOccurrences(of: "a.\(format)", with: "q.\(format)") + "\n", q.stdout, "\(format) \(o)")
        // Every file qemu-img made (extents too) against ours.
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("q") }
        XCTAssertFalse(files.isEmpty)
        for f in files {
            let sa = try FileManager.default.attributesOfItem(atPath: dir.file("a" + f.dropFirst()))[.size] as? Int ?? -1
            let sb = try FileManager.default.attributesOfItem(atPath: dir.file(f))[.size] as? Int ?? -2
            // (A VMDK descriptor file's length follows its random CID's.)
            if format != "vmdk" || sb > 1 << 20 { XCTAssertEqual(sa, sb, "\(format) \(o) \(f) size") }
            // Flat extents are only truncated: their length is all there is to compare.
            if sb > 32 << 20 { continue }
            var a = try fileBytes(dir.file("a" + f.dropFirst())), b = try fileBytes(dir.file(f))
            if format == "vmdk" {
                a = Self.normalizedVMDK(a, ourName: "\"a", theirName: "\"q")
                b = Self.normalizedVMDK(b, ourName: "\"a", theirName: "\"q")
            }
            XCTAssertEqual(a.count, b.count, "\(format) \(o) \(f) length")
            guard a.count == b.count else { continue }
            for r in Self.masks(format, b) where r.upperBound <= a.count {
                for i in r { a[i] = 0; b[i] = 0 }
            }
            assertBytesEqual(a, b, "\(format) \(o) \(f)")
        }
    }

    func testCreateMatchesQemuImg() throws {
        try requireQemuImg()
        let cases: [(String, [(String, String)], String)] = [
            ("vdi", [], "64M"), ("vdi", [("static", "on")], "5M"), ("vdi", [], "1000"),
            ("vpc", [], "64M"), ("vpc", [], "127G"), ("vpc", [("subformat", "fixed")], "10M"),
            ("vpc", [("force_size", "on")], "64M"), ("vpc", [("subformat", "fixed"), ("force_size", "on")], "3M"),
            ("vhdx", [], "64M"), ("vhdx", [], "3G"), ("vhdx", [("subformat", "fixed")], "16M"),
            ("vhdx", [("block_size", "1M"), ("log_size", "3M")], "100M"), ("vhdx", [("block_state_zero", "off")], "2G"),
            ("qed", [], "64M"), ("qed", [("cluster_size", "4k"), ("table_size", "2")], "10M"),
            ("vmdk", [], "64M"), ("vmdk", [("subformat", "streamOptimized")], "64M"),
            ("vmdk", [("subformat", "monolithicFlat")], "10M"), ("vmdk", [("subformat", "twoGbMaxExtentSparse")], "5G"),
            ("vmdk", [("subformat", "twoGbMaxExtentFlat")], "3G"),
            ("vmdk", [("adapter_type", "lsilogic"), ("hwversion", "7"), ("toolsversion", "42"), ("zeroed_grain", "on")], "1G"),
            ("vmdk", [("compat6", "on")], "100M"),
        ]
        for (f, o, s) in cases { try compare(f, o, size: s) }
    }

    func testCreateErrorsAreQemus() throws {
        try requireQemuImg()
        let cases: [(String, [(String, String)], String)] = [
            ("vmdk", [("adapter_type", "foo")], "1M"), ("vmdk", [("subformat", "foo")], "1M"),
            ("vmdk", [("compat6", "on"), ("hwversion", "7")], "1M"), ("vmdk", [("subformat", "monolithicFlat"), ("zeroed_grain", "on")], "1M"),
            ("qed", [("cluster_size", "1k")], "1M"), ("qed", [("table_size", "3")], "1M"), ("qed", [], "100T"),
            ("vpc", [("subformat", "foo")], "1M"), ("vpc", [], "3T"),
        ]
        for (format, opts, size) in cases {
            let dir = TempDir()
            var co = CreateOptions(format: FormatRegistry.driver(named: format)!)
            for (k, v) in opts { try co.set(k, v) }
            let o = opts.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
            let q = try runProcess("qemu-img", ["create", "-q", "-f", format] + (o.isEmpty ? [] : ["-o", o]) + [dir.file("x"), size])
            XCTAssertNotEqual(q.status, 0)
            do {
                try ImageCreator.create(filename: dir.file("x"), format: format, size: SizeParser.parse(size), options: co, backingFile: nil,
                                        backingFormat: nil, skipBackingCheck: false, announce: nil)
                XCTFail("\(format) \(o) created")
            } catch let e as BlockError {
                XCTAssertTrue(q.stderr.contains(e.message), "\(format) \(o): ours '\(e.message)' qemu '\(q.stderr)'")
            }
        }
    }
}
