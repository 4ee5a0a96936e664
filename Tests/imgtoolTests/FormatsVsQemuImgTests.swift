// imgtool against qemu-img on vmdk, vdi, vhdx, vpc and qed images qemu-img made: info (human and
// JSON, without the QEMU 8.0+ children the 7.2 oracle lacks), check, map (vhdx aside: QEMU has no
// block status for it and maps everything as data), and create's "Formatting" line and -o help.
import Foundation
import XCTest

final class FormatsVsQemuImgTests: XCTestCase {
    struct Variant { var name, format, file: String }

    nonisolated(unsafe) static let shared: (dir: TempDir, variants: [Variant])? = {
        guard which("qemu-img") else { return nil }
        let dir = TempDir()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("testimages/make-format-variants.sh").path
        guard let r = try? runProcess("bash", [script, dir.path]), r.status == 0 else { return nil }
        let v = r.stdout.split(separator: "\n").map { l -> Variant in
            let p = l.split(separator: " ").map(String.init)
            return Variant(name: p[0], format: p[1], file: p[2])
        }
        return (dir, v)
    }()

    func variants() throws -> (TempDir, [Variant]) {
        try requireQemuImg()
        guard let s = Self.shared else { throw XCTSkip("variant script failed") }
        return s
    }

    func sortedJSON(_ s: String, dropChildren: Bool) throws -> String {
        func strip(_ o: Any) -> Any {
            if var d = o as? [String: Any] { if dropChildren { d["children"] = nil }; return d.mapValues(strip) }
            if let a = o as? [Any] { return a.map(strip) }
            return o
        }
        let o = try JSONSerialization.jsonObject(with: Data(s.utf8))
        return String(decoding: try JSONSerialization.data(withJSONObject: strip(o), options: [.sortedKeys]), as: UTF8.self)
    }

    func testInfoMatches() throws {
        let (dir, vs) = try variants()
        for v in vs {
            let a = try imgtool(["info", "-f", v.format, v.file], cwd: dir.path)
            let b = try qemuImg(["info", "-f", v.format, v.file], cwd: dir.path)
            XCTAssertEqual(a.status, 0, a.stderr)
            XCTAssertEqual(withoutChildNodes(a.stdout), b.stdout, v.name)
            let aj = try imgtool(["info", "--output=json", "-f", v.format, v.file], cwd: dir.path)
            let bj = try qemuImg(["info", "--output=json", "-f", v.format, v.file], cwd: dir.path)
            XCTAssertEqual(try sortedJSON(aj.stdout, dropChildren: true), try sortedJSON(bj.stdout, dropChildren: false), v.name)
        }
        // A backing chain, followed.
        for f in ["qed-backing.qed", "vmdk-backing.vmdk"] {
            let a = try imgtool(["info", "--backing-chain", f], cwd: dir.path)
            let b = try qemuImg(["info", "--backing-chain", f], cwd: dir.path)
            XCTAssertEqual(withoutChildNodes(a.stdout), b.stdout, f)
        }
    }

    func testCheckAndMapMatch() throws {
        let (dir, vs) = try variants()
        for v in vs {
            var cmds = [["check", "-f", v.format, v.file], ["check", "--output=json", "-f", v.format, v.file]]
            if v.format != "vhdx" { cmds.append(["map", "-f", v.format, v.file]) }
            for args in cmds {
                let a = try imgtool(args, cwd: dir.path)
                let b = try qemuImg(args, cwd: dir.path)
                XCTAssertEqual(a.status, b.status, "\(args)")
                XCTAssertEqual(a.stdout, b.stdout, "\(args)")
                XCTAssertEqual(a.stderr, asOurs(b.stderr), "\(args)")
            }
        }
        // Formats whose check cannot repair (vdi, vmdk) or that have none (vpc): exit 63.
        for f in ["vdi-dynamic.vdi", "vmdk-sparse.vmdk", "vpc-dynamic.vpc"] {
            let a = try imgtool(["check", "-r", "all", f], cwd: dir.path)
            let b = try qemuImg(["check", "-r", "all", f], cwd: dir.path)
            XCTAssertEqual(a.status, b.status, f)
            XCTAssertEqual(a.stderr, asOurs(b.stderr), f)
        }
    }

    func testCreateLineAndOptionHelp() throws {
        try requireQemuImg()
        let dir = TempDir()
        let cases: [(String, String)] = [
            ("vmdk", ""), ("vmdk", "subformat=streamOptimized,adapter_type=lsilogic,hwversion=6,zeroed_grain=on,toolsversion=1"),
            ("vdi", ""), ("vdi", "static=on"), ("vhdx", ""), ("vhdx", "subformat=fixed,block_size=1M,log_size=2M,block_state_zero=off"),
            ("vpc", ""), ("vpc", "subformat=fixed,force_size=on"), ("qed", ""), ("qed", "cluster_size=4k,table_size=2"),
        ]
        for (f, o) in cases {
            let args = ["create", "-f", f] + (o.isEmpty ? [] : ["-o", o])
            let a = try imgtool(args + ["a.img", "10M"], cwd: dir.path)
            let b = try qemuImg(args + ["a.img", "10M"], cwd: dir.path)
            XCTAssertEqual(a.status, 0, a.stderr)
            XCTAssertEqual(a.stdout, b.stdout, "\(f) \(o)")
            let ha = try imgtool(["create", "-f", f, "-o", "help"], cwd: dir.path)
            let hb = try qemuImg(["create", "-f", f, "-o", "help"], cwd: dir.path)
            XCTAssertEqual(ha.stdout, hb.stdout, "\(f) -o help")
        }
        // Backing files: qed and vmdk.
        _ = try qemuImg(["create", "-q", "-f", "vmdk", "base.vmdk", "10M"], cwd: dir.path)
        for (f, b, bf) in [("qed", "base.vmdk", "vmdk"), ("vmdk", "base.vmdk", "vmdk")] {
            let args = ["create", "-f", f, "-b", b, "-F", bf, "top.\(f)"]
            let x = try imgtool(args, cwd: dir.path)
            let y = try qemuImg(args, cwd: dir.path)
            XCTAssertEqual(x.stdout, y.stdout, f)
            XCTAssertEqual(x.status, 0, x.stderr)
        }
    }
}
