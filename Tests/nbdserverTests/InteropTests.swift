// Real clients against nbdserver, each answer compared with qemu-nbd serving the same image with the
// same flags in the same test: nbdinfo (--json, --list, --map for base:allocation and
// qemu:allocation-depth), nbdcopy with several connections, qemu-img and qemu-io over NBD, and a
// python3-libnbd battery of targeted protocol cases (simple and structured replies).
import Foundation
import ImageFormats
import XCTest

final class InteropTests: XCTestCase {
    let mib: UInt64 = 1 << 20

    /// A 64 MiB sparse raw image with data in a few places (some not 4 KiB aligned).
    func makeImage(_ dir: TempDir, _ name: String = "disk.raw") throws -> String {
        let path = dir.file(name)
        try makeRawImage(path, size: 64 * mib, data: [(0, 4096, 1), (mib, 8192, 2), (3 * mib + 512, 70000, 3),
                                                      (40 * mib, 1 << 20, 4), (64 * mib - 4096, 4096, 5)])
        return path
    }

    func normalize(_ s: String, _ pair: ServerPair) -> String {
        s.replacingOccurrences(of: pair.ours.socket, with: "SOCK").replacingOccurrences(of: pair.qemu.socket, with: "SOCK")
    }

    func testNbdinfoJSONMatchesQemuNbd() throws {
        try require("qemu-nbd", "nbdinfo")
        let dir = TempDir()
        let image = try makeImage(dir)
        let cases: [[String]] = [
            ["-t", "-f", "raw"],
            ["-t", "-f", "raw", "-r"],
            ["-t", "-r"],                       // probed raw: 512-byte minimum block
            ["-t", "-f", "raw", "-e", "2"],     // multi-conn
            ["-t", "-f", "raw", "-e", "0", "-r", "-A", "-x", "foo", "-D", "a description"],
        ]
        for (i, args) in cases.enumerated() {
            let pair = try ServerPair(dir: dir, args: args, image: image, tag: "\(i)")
            let export = args.contains("-x") ? "foo" : ""
            let a = try runTool("nbdinfo", ["--json", pair.ours.uri(export: export)])
            let b = try runTool("nbdinfo", ["--json", pair.qemu.uri(export: export)])
            XCTAssertEqual(a.status, 0, a.stderr)
            XCTAssertEqual(normalize(a.stdout, pair), normalize(b.stdout, pair), "nbdinfo --json differs for \(args)")
            let la = try runTool("nbdinfo", ["--list", pair.ours.uri])
            let lb = try runTool("nbdinfo", ["--list", pair.qemu.uri])
            XCTAssertEqual(normalize(la.stdout, pair), normalize(lb.stdout, pair), "nbdinfo --list differs for \(args)")
            pair.ours.stop()
            pair.qemu.stop()
        }
    }

    func testNbdinfoMapMatchesQemuNbd() throws {
        try require("qemu-nbd", "nbdinfo")
        let dir = TempDir()
        let image = try makeImage(dir)
        let pair = try ServerPair(dir: dir, args: ["-t", "-f", "raw", "-A", "-e", "0"], image: image)
        for ctx in ["base:allocation", "qemu:allocation-depth"] {
            for extra in [[], ["--totals"]] {
                let a = try runTool("nbdinfo", ["--map=\(ctx)"] + extra + [pair.ours.uri])
                let b = try runTool("nbdinfo", ["--map=\(ctx)"] + extra + [pair.qemu.uri])
                XCTAssertEqual(a.status, 0, a.stderr)
                XCTAssertEqual(a.stdout, b.stdout, "nbdinfo --map=\(ctx) \(extra) differs")
            }
        }
        XCTAssertTrue(try runTool("nbdinfo", ["--map", pair.ours.uri]).stdout.contains("hole,zero"))
    }

    func testNbdcopyWithSeveralConnections() throws {
        try require("nbdcopy")
        let dir = TempDir()
        let image = try makeImage(dir)
        let server = try ServerProcess(nbdserverPath, ["-k", dir.file("s.sock"), "-t", "-e", "0", "-f", "raw", image],
                                       socket: dir.file("s.sock"))
        // Out of the server, four connections.
        let copy = dir.file("copy.raw")
        var r = try runTool("nbdcopy", ["--connections=4", server.uri, copy])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: image, andPath: copy))
        r = try runTool("nbdcopy", ["--connections=4", "--no-extents", server.uri, dir.file("copy2.raw")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: image, andPath: dir.file("copy2.raw")))

        // Into the server: a different image, then compare the served file with it.
        let other = dir.file("other.raw")
        try makeRawImage(other, size: 64 * mib, data: [(12345, 100_000, 9), (20 * mib, 3 << 20, 10)])
        r = try runTool("nbdcopy", ["--connections=4", other, server.uri])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try runTool("nbdcopy", ["--connections=2", server.uri, dir.file("back.raw")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: other, andPath: dir.file("back.raw")))
        server.stop()
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: other, andPath: image))
    }

    func testQemuImgOverNBD() throws {
        try require("qemu-nbd", "qemu-img")
        let dir = TempDir()
        let image = try makeImage(dir)
        let pair = try ServerPair(dir: dir, args: ["-t", "-f", "raw", "-e", "0"], image: image)
        let ia = try runTool("qemu-img", ["info", pair.ours.qemuFilename])
        let ib = try runTool("qemu-img", ["info", pair.qemu.qemuFilename])
        XCTAssertEqual(ia.status, 0, ia.stderr)
        XCTAssertEqual(normalize(ia.stdout, pair), normalize(ib.stdout, pair))
        let ja = try runTool("qemu-img", ["map", "--output=json", "-f", "raw", pair.ours.qemuFilename])
        let jb = try runTool("qemu-img", ["map", "--output=json", "-f", "raw", pair.qemu.qemuFilename])
        XCTAssertEqual(ja.stdout, jb.stdout)

        let out = dir.file("conv.qcow2")
        let c = try runTool("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", pair.ours.qemuFilename, out])
        XCTAssertEqual(c.status, 0, c.stderr)
        let cmp = try runTool("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", image, out])
        XCTAssertEqual(cmp.status, 0, cmp.stdout + cmp.stderr)
        let cmp2 = try runTool("qemu-img", ["compare", "-f", "raw", "-F", "raw", pair.ours.qemuFilename, image])
        XCTAssertEqual(cmp2.status, 0, cmp2.stdout + cmp2.stderr)
        // Sparse: the converted image is far smaller than the virtual disk.
        let info = try runTool("qemu-img", ["info", "--output=json", out]).stdout
        XCTAssertTrue(info.contains("\"actual-size\""))
    }

    func testQemuIoWritesThroughServer() throws {
        try require("qemu-io")
        let dir = TempDir()
        let image = try makeImage(dir)
        let server = try ServerProcess(nbdserverPath, ["-k", dir.file("s.sock"), "-t", "-f", "raw", image],
                                       socket: dir.file("s.sock"))
        let cmds = ["write -P 0xa5 0 64k", "write -P 0x5a 1000 3000", "write -z 128k 64k", "write -z -u 2M 1M",
                    "discard 8M 1M", "write -P 0x11 -f 10M 4k", "flush",
                    "read -P 0xa5 0 1000", "read -P 0x5a 1000 3000", "read -P 0 128k 64k", "read -P 0x11 10M 4k"]
        let r = try runTool("qemu-io", ["-f", "raw"] + cmds.flatMap { ["-c", $0] } + [server.qemuFilename])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdout.contains("Pattern verification failed"), r.stdout)
        XCTAssertFalse(r.stdout.lowercased().contains("error"), r.stdout)
        server.stop()
        // The file itself has the bytes.
        let fh = FileHandle(forReadingAtPath: image)!
        try fh.seek(toOffset: 10 * mib)
        XCTAssertEqual(Array(fh.readData(ofLength: 4096)), [UInt8](repeating: 0x11, count: 4096))
    }

    func testPythonBatteryMatchesQemuNbd() throws {
        try require("qemu-nbd")
        let py = try pythonWithLibnbd()
        for mode in ["structured", "simple"] {
            for writable in [false, true] {
                let dir = TempDir()
                let a = try makeImage(dir, "a.raw")
                let b = try makeImage(dir, "b.raw")
                var args = ["-t", "-f", "raw", "-A"]
                if !writable { args.append("-r") }
                let ours = try ServerProcess(nbdserverPath, ["-k", dir.file("o.sock")] + args + [a], socket: dir.file("o.sock"))
                let qemu = try ServerProcess("qemu-nbd", ["-k", dir.file("q.sock")] + args + [b], socket: dir.file("q.sock"))
                let ra = try runTool(py, ["-", ours.uri, mode] + (writable ? ["rw"] : []), stdin: pythonBattery)
                let rb = try runTool(py, ["-", qemu.uri, mode] + (writable ? ["rw"] : []), stdin: pythonBattery)
                XCTAssertEqual(ra.status, 0, ra.stderr)
                XCTAssertEqual(rb.status, 0, rb.stderr)
                let la = ra.stdout.split(separator: "\n"), lb = rb.stdout.split(separator: "\n")
                XCTAssertEqual(la.count, lb.count, "transcripts differ in length (\(mode), rw=\(writable))")
                for (x, y) in zip(la, lb) where x != y {
                    XCTFail("\(mode) rw=\(writable):\n  ours: \(x)\n  qemu: \(y)")
                }
                ours.stop()
                qemu.stop()
                if writable {
                    XCTAssertTrue(FileManager.default.contentsEqual(atPath: a, andPath: b), "images differ after the same writes")
                }
            }
        }
    }

    /// A qcow2 overlay on a qcow2 base, written by qemu-io (data, zeroes, discards in both layers).
    func makeChain(_ dir: TempDir) throws -> String {
        let base = dir.file("base.qcow2"), top = dir.file("top.qcow2")
        XCTAssertEqual(try runTool("qemu-img", ["create", "-q", "-f", "qcow2", base, "64M"]).status, 0)
        XCTAssertEqual(try runTool("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 2 8M 2M",
                                              "-c", "write -z 20M 1M", base]).status, 0)
        XCTAssertEqual(try runTool("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top]).status, 0)
        XCTAssertEqual(try runTool("qemu-io", ["-f", "qcow2", "-c", "write -P 3 512k 1M", "-c", "write -z 8M 512k",
                                              "-c", "discard 30M 1M", "-c", "write -P 4 63M 4k", top]).status, 0)
        return top
    }

    func testQcow2BackingChainMatchesQemuNbd() throws {
        try require("qemu-nbd", "qemu-img", "qemu-io", "nbdinfo")
        try XCTSkipUnless(FormatRegistry.driver(named: "qcow2") != nil, "the qcow2 driver is not in this build")
        let dir = TempDir()
        let top = try makeChain(dir)
        let pair = try ServerPair(dir: dir, args: ["-t", "-e", "0", "-A", "-r"], image: top)
        for ctx in ["base:allocation", "qemu:allocation-depth"] {
            let a = try runTool("nbdinfo", ["--map=\(ctx)", pair.ours.uri])
            let b = try runTool("nbdinfo", ["--map=\(ctx)", pair.qemu.uri])
            XCTAssertEqual(a.status, 0, a.stderr)
            XCTAssertEqual(a.stdout, b.stdout, ctx)
        }
        XCTAssertEqual(normalize(try runTool("nbdinfo", ["--json", pair.ours.uri]).stdout, pair),
                       normalize(try runTool("nbdinfo", ["--json", pair.qemu.uri]).stdout, pair))
        let ma = try runTool("qemu-img", ["map", "--output=json", "-f", "raw", pair.ours.qemuFilename])
        let mb = try runTool("qemu-img", ["map", "--output=json", "-f", "raw", pair.qemu.qemuFilename])
        XCTAssertEqual(ma.stdout, mb.stdout)
        let cmp = try runTool("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", pair.ours.qemuFilename, top])
        XCTAssertEqual(cmp.status, 0, cmp.stdout + cmp.stderr)
    }

    /// The OFD lock bytes on every image file, per inode, while a server holds the image.
    func lockBytes(_ paths: [String]) -> [String] {
        let inodes = Dictionary(uniqueKeysWithValues: paths.map { p -> (String, String) in
            var st = stat()
            stat(p, &st)
            return (String(st.st_ino), (p as NSString).lastPathComponent)
        })
        let text = (try? String(contentsOfFile: "/proc/locks", encoding: .utf8)) ?? ""
        var out: [String] = []
        for line in text.split(separator: "\n") where line.contains("OFDLCK") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 8 else { continue }
            let ino = String(f[5].split(separator: ":").last ?? "")
            if let name = inodes[ino] { out.append("\(name) \(f[4]) \(f[6])-\(f[7])") }
        }
        return out.sorted()
    }

    func testImageLocksMatchQemuNbd() throws {
        try require("qemu-nbd", "qemu-img", "qemu-io")
        let dir = TempDir()
        let raw = try makeImage(dir)
        var cases: [([String], String, [String])] = [(["-f", "raw"], raw, [raw]), (["-f", "raw", "-r"], raw, [raw]), ([], raw, [raw])]
        if FormatRegistry.driver(named: "qcow2") != nil {
            let top = try makeChain(dir)
            cases.append(([], top, [top, dir.file("base.qcow2")]))
            cases.append((["-r"], top, [top, dir.file("base.qcow2")]))
        }
        for (args, image, files) in cases {
            var seen: [[String]] = []
            for program in [nbdserverPath, "qemu-nbd"] {
                let sock = dir.file("l.sock")
                let s = try ServerProcess(program, ["-t", "-k", sock] + args + [image], socket: sock)
                seen.append(lockBytes(files))
                s.stop()
            }
            XCTAssertEqual(seen[0], seen[1], "locks differ for \(args)")
            XCTAssertFalse(seen[0].isEmpty)
        }
    }

    func testSnapshotModeLeavesImageUntouched() throws {
        try require("qemu-io")
        try XCTSkipUnless(FormatRegistry.driver(named: "qcow2") != nil, "the qcow2 driver is not in this build")
        let dir = TempDir()
        let image = try makeImage(dir)
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        let s = try ServerProcess(nbdserverPath, ["-s", "-t", "-f", "raw", "-k", dir.file("s.sock"), image], socket: dir.file("s.sock"))
        let r = try runTool("qemu-io", ["-f", "raw", "-c", "write -P 0x42 0 1M", "-c", "read -P 0x42 0 1M", s.qemuFilename])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdout.contains("fail"), r.stdout)
        s.stop()
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: image)), before, "-s wrote to the image")
    }

    func testDirtyBitmapsMatchQemuNbd() throws {
        try require("qemu-nbd", "qemu-img", "qemu-io", "nbdinfo")
        try XCTSkipUnless(FormatRegistry.driver(named: "qcow2") != nil, "the qcow2 driver is not in this build")
        let dir = TempDir()
        let img = dir.file("bm.qcow2")
        for args in [["create", "-q", "-f", "qcow2", img, "64M"], ["bitmap", "--add", img, "b0"],
                     ["bitmap", "--add", "-g", "512k", img, "b1"]] {
            XCTAssertEqual(try runTool("qemu-img", args).status, 0)
        }
        XCTAssertEqual(try runTool("qemu-io", ["-f", "qcow2", "-c", "write 100k 3M", "-c", "write 40M 65k", img]).status, 0)
        XCTAssertEqual(try runTool("qemu-img", ["bitmap", "--disable", img, "b1"]).status, 0)
        XCTAssertEqual(try runTool("qemu-io", ["-f", "qcow2", "-c", "write 20M 1M", img]).status, 0)
        let pair = try ServerPair(dir: dir, args: ["-t", "-e", "0", "-r", "-B", "b0", "-B", "b1"], image: img)
        for ctx in ["qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1"] {
            let a = try runTool("nbdinfo", ["--map=\(ctx)", pair.ours.uri])
            XCTAssertEqual(a.status, 0, a.stderr)
            XCTAssertEqual(a.stdout, try runTool("nbdinfo", ["--map=\(ctx)", pair.qemu.uri]).stdout, ctx)
            XCTAssertTrue(a.stdout.contains("dirty"))
        }
        XCTAssertEqual(normalize(try runTool("nbdinfo", ["--json", pair.ours.uri]).stdout, pair),
                       normalize(try runTool("nbdinfo", ["--json", pair.qemu.uri]).stdout, pair))
        pair.ours.stop()
        pair.qemu.stop()
        let a = try runTool(nbdserverPath, ["-r", "-B", "nope", img])
        let b = try runTool("qemu-nbd", ["-r", "-B", "nope", img])
        XCTAssertEqual(a.status, b.status)
        XCTAssertEqual(a.stderr.replacingOccurrences(of: "nbdserver", with: "qemu-nbd"), b.stderr)
    }

    /// A writable export with -B: writes through NBD show up in the exported dirty bitmap at once,
    /// as with qemu-nbd, and are in the bitmap stored in the image after the server exits.
    func testWritableExportTracksDirtyBitmapLikeQemuNbd() throws {
        try require("qemu-nbd", "qemu-img", "qemu-io", "nbdinfo")
        try XCTSkipUnless(FormatRegistry.driver(named: "qcow2") != nil, "the qcow2 driver is not in this build")
        let dir = TempDir()
        var images: [String] = []
        for name in ["ours.qcow2", "qemu.qcow2"] {
            let img = dir.file(name)
            for args in [["create", "-q", "-f", "qcow2", img, "64M"], ["bitmap", "--add", "-g", "128k", img, "b0"]] {
                XCTAssertEqual(try runTool("qemu-img", args).status, 0)
            }
            XCTAssertEqual(try runTool("qemu-io", ["-f", "qcow2", "-c", "write 1M 64k", img]).status, 0)
            images.append(img)
        }
        let ours = try ServerProcess(nbdserverPath, ["-t", "-f", "qcow2", "-B", "b0", "-k", dir.file("o.sock"), images[0]], socket: dir.file("o.sock"))
        let qemu = try ServerProcess("qemu-nbd", ["-t", "-f", "qcow2", "-B", "b0", "-k", dir.file("q.sock"), images[1]], socket: dir.file("q.sock"))
        for s in [ours, qemu] {
            let r = try runTool("qemu-io", ["-f", "raw", "-c", "write -P 7 20M 300k", "-c", "write -z 50M 4k", s.qemuFilename])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let a = try runTool("nbdinfo", ["--map=qemu:dirty-bitmap:b0", ours.uri])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(a.stdout, try runTool("nbdinfo", ["--map=qemu:dirty-bitmap:b0", qemu.uri]).stdout)
        XCTAssertTrue(a.stdout.contains("20971520"), a.stdout)   // the live write at 20M is dirty
        ours.stop()
        qemu.stop()
        let ia = try runTool("qemu-img", ["info", "--output=json", images[0]])
        let ib = try runTool("qemu-img", ["info", "--output=json", images[1]])
        XCTAssertEqual(ia.stdout.replacingOccurrences(of: images[0], with: "X").components(separatedBy: "\n").filter { !$0.contains("actual-size") },
                       ib.stdout.replacingOccurrences(of: images[1], with: "X").components(separatedBy: "\n").filter { !$0.contains("actual-size") })
        XCTAssertEqual(try runTool("qemu-img", ["check", images[0]]).status, 0)
        let ca = try runTool("qemu-img", ["compare", images[0], images[1]])
        XCTAssertEqual(ca.status, 0, ca.stdout)
    }

    /// -l exports an internal snapshot read-only, like qemu-nbd -l, whatever was written since.
    func testLoadSnapshotExportsItReadOnly() throws {
        try require("qemu-nbd", "qemu-img", "qemu-io", "nbdinfo", "nbdcopy")
        try XCTSkipUnless(FormatRegistry.driver(named: "qcow2") != nil, "the qcow2 driver is not in this build")
        let dir = TempDir()
        let img = dir.file("snap.qcow2")
        XCTAssertEqual(try runTool("qemu-img", ["create", "-q", "-f", "qcow2", img, "32M"]).status, 0)
        XCTAssertEqual(try runTool("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 1M", img]).status, 0)
        XCTAssertEqual(try runTool("qemu-img", ["snapshot", "-c", "s1", img]).status, 0)
        XCTAssertEqual(try runTool("qemu-io", ["-f", "qcow2", "-c", "write -P 2 0 2M", img]).status, 0)
        for sn in ["s1", "snapshot.name=s1", "1"] {
            let pair = try ServerPair(dir: dir, args: ["-t", "-f", "qcow2", "-l", sn], image: img, tag: sn.filter(\.isLetter))
            let a = try runTool("nbdinfo", ["--json", pair.ours.uri]), b = try runTool("nbdinfo", ["--json", pair.qemu.uri])
            XCTAssertEqual(a.status, 0, a.stderr)
            XCTAssertEqual(normalize(a.stdout, pair), normalize(b.stdout, pair), "-l \(sn)")
            XCTAssertTrue(a.stdout.contains("\"is_read_only\": true"), a.stdout)
            for (s, out) in [(pair.ours, "o.raw"), (pair.qemu, "q.raw")] {
                XCTAssertEqual(try runTool("nbdcopy", [s.uri, dir.file(out)]).status, 0)
            }
            XCTAssertTrue(FileManager.default.contentsEqual(atPath: dir.file("o.raw"), andPath: dir.file("q.raw")), "-l \(sn)")
            pair.ours.stop()
            pair.qemu.stop()
        }
        let a = try runTool(nbdserverPath, ["-f", "qcow2", "-l", "nope", img])
        let b = try runTool("qemu-nbd", ["-f", "qcow2", "-l", "nope", img])
        XCTAssertEqual(a.status, b.status)
        XCTAssertEqual(a.stderr.replacingOccurrences(of: "nbdserver", with: "qemu-nbd"), b.stderr)
    }

    /// --discard and --detect-zeroes change what trims and zero writes do to the file; the
    /// allocation afterwards must be qemu-nbd's.
    func testDiscardAndDetectZeroesMatchQemuNbd() throws {
        try require("qemu-nbd", "nbdinfo")
        let py = try pythonWithLibnbd()
        let script = """
        import nbd, sys
        h = nbd.NBD(); h.connect_uri(sys.argv[1])
        h.pwrite(bytes(1 << 20), 0)
        h.pwrite(bytes(65536), 40 << 20)
        h.trim(1 << 20, 1 << 20)
        h.zero(65536, (40 << 20) + 512 * 1024)
        h.flush()
        """
        for flags in [[], ["--discard=unmap"], ["--discard=unmap", "--detect-zeroes=unmap"], ["--detect-zeroes=on"]] {
            let dir = TempDir()
            let a = try makeImage(dir, "a.raw"), b = try makeImage(dir, "b.raw")
            let ours = try ServerProcess(nbdserverPath, ["-t", "-f", "raw", "-k", dir.file("o.sock")] + flags + [a], socket: dir.file("o.sock"))
            let qemu = try ServerProcess("qemu-nbd", ["-t", "-f", "raw", "-k", dir.file("q.sock")] + flags + [b], socket: dir.file("q.sock"))
            XCTAssertEqual(try runTool(py, ["-c", script, ours.uri]).status, 0)
            XCTAssertEqual(try runTool(py, ["-c", script, qemu.uri]).status, 0)
            let ma = try runTool("nbdinfo", ["--map", ours.uri]).stdout
            let mb = try runTool("nbdinfo", ["--map", qemu.uri]).stdout
            XCTAssertEqual(ma, mb, "allocation differs with \(flags)")
            ours.stop()
            qemu.stop()
            XCTAssertTrue(FileManager.default.contentsEqual(atPath: a, andPath: b))
        }
    }

    func testImageOptsMatchesQemuNbd() throws {
        try require("qemu-nbd", "nbdinfo")
        let dir = TempDir()
        let image = try makeImage(dir)
        let opts = "driver=raw,offset=1048576,size=16777216,file.driver=file,file.filename=\(image)"
        let pair = try ServerPair(dir: dir, args: ["-t", "--image-opts"], image: opts)
        let a = try runTool("nbdinfo", ["--json", pair.ours.uri]), b = try runTool("nbdinfo", ["--json", pair.qemu.uri])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(normalize(a.stdout, pair), normalize(b.stdout, pair))
        XCTAssertEqual(try runTool("nbdinfo", ["--map", pair.ours.uri]).stdout, try runTool("nbdinfo", ["--map", pair.qemu.uri]).stdout)
    }

    /// An image whose size is not a multiple of 512: exported rounded up, the tail reads as zeroes.
    func testOddSizedImageMatchesQemuNbd() throws {
        try require("qemu-nbd", "nbdinfo", "nbdcopy")
        let dir = TempDir()
        let image = dir.file("odd.raw")
        try makeRawImage(image, size: 1000, data: [(0, 1000, 7)])
        let pair = try ServerPair(dir: dir, args: ["-t", "-f", "raw", "-r"], image: image)
        XCTAssertEqual(normalize(try runTool("nbdinfo", ["--json", pair.ours.uri]).stdout, pair),
                       normalize(try runTool("nbdinfo", ["--json", pair.qemu.uri]).stdout, pair))
        XCTAssertEqual(try runTool("nbdcopy", [pair.ours.uri, dir.file("a.out")]).status, 0)
        XCTAssertEqual(try runTool("nbdcopy", [pair.qemu.uri, dir.file("b.out")]).status, 0)
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: dir.file("a.out"), andPath: dir.file("b.out")))
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: dir.file("a.out"))[.size] as? Int, 1024)
    }
}
