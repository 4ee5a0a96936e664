import Foundation
import XCTest

/// imgtool and qemu-img side by side: same output, same exit status, same files.
final class ImgtoolVsQemuImgTests: XCTestCase {
    func testCreateOutputErrorsAndFiles() throws {
        try requireQemuImg()
        let d = TempDir()
        let cases: [[String]] = [
            ["-f", "qcow2", "X", "64M"],
            ["-f", "qcow2", "-o", "cluster_size=4k", "-o", "lazy_refcounts=on,cluster_size=8k", "X", "1M"],
            ["-f", "qcow2", "-o", "compat=0.10,refcount_bits=16", "X", "3G"],
            ["-f", "qcow2", "-o", "extended_l2=on,preallocation=metadata", "X", "5M"],
            ["-f", "raw", "X", "1000"],
            ["-f", "raw", "-o", "preallocation=full", "X", "1M"],
            ["-f", "qcow2", "-o", "foo=bar", "X", "1M"],
            ["-f", "qcow2", "-o", "lazy_refcounts=maybe", "X", "1M"],
            ["-f", "qcow2", "-o", "cluster_size=1000", "X", "1M"],
            ["-f", "qcow2", "-o", "compat=0.10,refcount_bits=1", "X", "1M"],
            ["-f", "qcow2", "-o", "refcount_bits=abc", "X", "1M"],
            ["-f", "qcow2", "-o", "size=1M", "X", "1M"],
            ["-f", "qcow2", "X"],
            ["-f", "qcow2", "X", "1Q"],
            ["-f", "nonesuch", "X", "1M"],
            ["-f", "qcow2", "-o", "help"],
            ["-f", "raw", "-o", "help", "X"],
            ["-f", "qcow2", "-o", "help", "X"],
            ["-f", "qcow2", "-o", "", "X", "1M"],
            ["-f", "qcow2", "X", "1M", "extra"],
            ["-x"],
            [],
        ]
        for (i, c) in cases.enumerated() {
            let ours = c.map { $0 == "X" ? "ours\(i).img" : $0 }
            let theirs = c.map { $0 == "X" ? "ours\(i).img" : $0 }
            let a = try imgtool(["create"] + ours, cwd: d.path)
            let ourFile = d.file("ours\(i).img")
            let ourBytes = try? Data(contentsOf: URL(fileURLWithPath: ourFile))
            try? FileManager.default.removeItem(atPath: ourFile)
            let b = try qemuImg(["create"] + theirs, cwd: d.path)
            let theirBytes = try? Data(contentsOf: URL(fileURLWithPath: ourFile))
            try? FileManager.default.removeItem(atPath: ourFile)
            XCTAssertEqual(a.status, b.status, "status for \(c)")
            XCTAssertEqual(a.stdout, b.stdout, "stdout for \(c)")
            XCTAssertEqual(a.stderr, asOurs(b.stderr), "stderr for \(c)")
            XCTAssertEqual(ourBytes, theirBytes, "file for \(c)")
        }
    }

    func testInfoMatchesQemuImgOnEveryVariant() throws {
        let v = try Variants.shared()
        for name in v.names {
            let f = name + ".qcow2"
            let a = try imgtool(["info", f], cwd: v.dir.path)
            let b = try qemuImg(["info", f], cwd: v.dir.path)
            XCTAssertEqual(a.status, 0, a.stderr)
            XCTAssertEqual(withoutChildNodes(a.stdout), b.stdout, name)
            let aj = try imgtool(["info", "--output=json", "--backing-chain", f], cwd: v.dir.path)
            let bj = try qemuImg(["info", "--output=json", "--backing-chain", f], cwd: v.dir.path)
            XCTAssertEqual(try stripChildren(aj.stdout), try normalizeJSON(bj.stdout), name)
        }
    }

    /// Our JSON without "children" (QEMU 8.0+), for comparison with the 7.2 oracle.
    func stripChildren(_ s: String) throws -> String {
        func strip(_ o: Any) -> Any {
            if var d = o as? [String: Any] { d["children"] = nil; return d.mapValues(strip) }
            if let a = o as? [Any] { return a.map(strip) }
            return o
        }
        let o = try JSONSerialization.jsonObject(with: Data(s.utf8))
        return String(decoding: try JSONSerialization.data(withJSONObject: strip(o), options: [.sortedKeys]), as: UTF8.self)
    }

    func normalizeJSON(_ s: String) throws -> String {
        let o = try JSONSerialization.jsonObject(with: Data(s.utf8))
        return String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self)
    }

    func testJSONKeyOrderIsQemus() throws {
        let v = try Variants.shared()
        // With the children removed by text, the 7.2 oracle prints the same bytes (QDict order).
        let a = try imgtool(["info", "--output=json", "snap.qcow2"], cwd: v.dir.path).stdout
        let b = try qemuImg(["info", "--output=json", "snap.qcow2"], cwd: v.dir.path).stdout
        let lines = a.split(separator: "\n", omittingEmptySubsequences: false)
        guard let end = lines.firstIndex(where: { $0 == "    ]," }) else { return XCTFail("no children list") }
        XCTAssertEqual(([lines[0]] + lines[(end + 1)...]).joined(separator: "\n"), b)
    }

    func testCheckMapMeasureOnEveryVariant() throws {
        let v = try Variants.shared()
        for name in v.names {
            let f = name + ".qcow2"
            for args in [["check", f], ["check", "--output=json", f], ["map", f], ["measure", "-O", "qcow2", f],
                         ["measure", "--output=json", "-O", "raw", f]] {
                let a = try imgtool(args, cwd: v.dir.path)
                let b = try qemuImg(args, cwd: v.dir.path)
                XCTAssertEqual(a.status, b.status, "\(args)")
                XCTAssertEqual(a.stdout, b.stdout, "\(args)")
                XCTAssertEqual(a.stderr, asOurs(b.stderr), "\(args)")
            }
            let a = try imgtool(["map", "--output=json", f], cwd: v.dir.path)
            let b = try qemuImg(["map", "--output=json", f], cwd: v.dir.path)
            // QEMU 8.2+ adds "compressed"; the 7.2 oracle does not have it.
            XCTAssertEqual(a.stdout.replacingOccurrences(of: #", "compressed": (true|false)"#, with: "", options: .regularExpression), b.stdout, name)
        }
    }

    func testConvertIsByteIdenticalToQemuImg() throws {
        let v = try Variants.shared()
        let out = TempDir()
        for name in v.names {
            for fmt in ["raw", "qcow2"] {
                let ours = out.file("ours.\(fmt)"), theirs = out.file("theirs.\(fmt)")
                let a = try imgtool(["convert", "-O", fmt, name + ".qcow2", ours], cwd: v.dir.path)
                XCTAssertEqual(a.status, 0, a.stderr)
                XCTAssertEqual(try qemuImg(["convert", "-O", fmt, name + ".qcow2", theirs], cwd: v.dir.path).status, 0)
                XCTAssertTrue(FileManager.default.contentsEqual(atPath: ours, andPath: theirs), "\(name) -> \(fmt)")
                XCTAssertEqual(try qemuImg(["compare", "-f", "qcow2", "-F", fmt, v.dir.file(name + ".qcow2"), ours]).status, 0)
            }
        }
    }

    /// -C (copy offloading: copy_file_range between the host files) and -S 0 take the kernel-copy
    /// path wherever data sits verbatim in a file; the results are qemu-img's, byte for byte.
    func testCopyOffloadAndFullAllocationAreByteIdenticalToQemuImg() throws {
        let v = try Variants.shared()
        let out = TempDir()
        for name in v.names {
            for flags in [["-C"], ["-S", "0"], ["-C", "-W", "-m", "4"]] {
                for fmt in ["raw", "qcow2"] {
                    let ours = out.file("ours.\(fmt)"), theirs = out.file("theirs.\(fmt)")
                    let a = try imgtool(["convert"] + flags + ["-O", fmt, name + ".qcow2", ours], cwd: v.dir.path)
                    XCTAssertEqual(a.status, 0, a.stderr)
                    XCTAssertEqual(try qemuImg(["convert"] + flags + ["-O", fmt, name + ".qcow2", theirs], cwd: v.dir.path).status, 0)
                    if fmt == "qcow2" && !flags.contains("-W") {
                        XCTAssertTrue(FileManager.default.contentsEqual(atPath: ours, andPath: theirs), "\(name) \(flags) -> \(fmt)")
                        XCTAssertEqual(try qemuImg(["check", ours]).status, 0, "\(name) \(flags)")
                    }
                    XCTAssertEqual(try qemuImg(["compare", "-f", "qcow2", "-F", fmt, v.dir.file(name + ".qcow2"), ours]).status, 0,
                                   "\(name) \(flags) -> \(fmt)")
                }
            }
        }
    }

    /// A compressed cluster whose deflate stream is garbage: convert fails as qemu-img does, and
    /// --salvage warns per unreadable sector, copies zeroes there and succeeds, as qemu-img does.
    func testSalvageMatchesQemuImg() throws {
        let d = TempDir()
        let text = d.file("t.txt"), bad = d.file("bad.qcow2")
        XCTAssertEqual(try runProcess("sh", ["-c", "head -c 1M /dev/urandom | base64 > '\(text)'; truncate -s 4M '\(text)'"]).status, 0)
        XCTAssertEqual(try qemuImg(["convert", "-c", "-f", "raw", "-O", "qcow2", text, bad]).status, 0)
        // Garble cluster 3's compressed bytes (L1[0] -> L2 entry 3 -> host offset).
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: bad))
        func be64(_ at: UInt64) throws -> UInt64 {
            try h.seek(toOffset: at)
            return h.readData(ofLength: 8).reduce(0) { $0 << 8 | UInt64($1) }
        }
        let l1 = try be64(40)
        let l2 = try be64(l1) & 0x00ff_ffff_ffff_fe00
        let entry = try be64(l2 + 24)
        XCTAssertNotEqual(entry & (1 << 62), 0, "cluster 3 is not compressed")
        try h.seek(toOffset: entry & ((1 << 46) - 1))
        h.write(Data(repeating: 0xff, count: 64))
        try h.close()
        let ours = d.file("o.raw"), theirs = d.file("q.raw")
        for flags in [[], ["--salvage"], ["--salvage", "-q"]] {
            let a = try imgtool(["convert"] + flags + ["-O", "raw", bad, ours])
            let b = try qemuImg(["convert"] + flags + ["-O", "raw", bad, theirs])
            XCTAssertEqual(a.status, b.status, "\(flags)")
            XCTAssertEqual(a.stderr.replacingOccurrences(of: "imgtool:", with: "qemu-img:"), b.stderr, "\(flags)")
            if flags.contains("--salvage") {
                XCTAssertEqual(a.status, 0)
                XCTAssertTrue(FileManager.default.contentsEqual(atPath: ours, andPath: theirs))
            }
        }
        XCTAssertTrue(try imgtool(["convert", "--salvage", "-O", "raw", bad, ours]).stderr.contains("warning: error while reading offset 196608: Input/output error"))
    }

    func testConvertFeatures() throws {
        let v = try Variants.shared()
        let d = TempDir()
        let src = v.dir.file("default.qcow2")
        // Compression, zlib and zstd, parallel workers: valid images with the same content.
        for ct in ["zlib", "zstd"] {
            let out = d.file("c-\(ct).qcow2")
            XCTAssertEqual(try imgtool(["convert", "-c", "-m", "4", "-O", "qcow2", "-o", "compression_type=\(ct)", src, out]).status, 0)
            XCTAssertEqual(try qemuImg(["check", out]).status, 0)
            XCTAssertEqual(try qemuImg(["compare", src, out]).status, 0)
            XCTAssertTrue(try qemuImg(["check", out]).stdout.contains("compressed clusters"))
        }
        // T3: -S 0 allocates everything; T2: a raw target gets holes.
        let full = d.file("full.raw"), sparse = d.file("sparse.raw")
        XCTAssertEqual(try imgtool(["convert", "-S", "0", "-O", "raw", src, full]).status, 0)
        XCTAssertEqual(try imgtool(["convert", "-O", "raw", src, sparse]).status, 0)
        let st = { (p: String) -> Int in (try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0 }
        XCTAssertEqual(allocatedBytes(full), st(full))
        XCTAssertLessThan(allocatedBytes(sparse), st(sparse) / 2)
        // -n into an existing raw file full of data: zero areas are punched, not written.
        XCTAssertEqual(try runProcess("sh", ["-c", "head -c \(st(full)) /dev/urandom > '\(d.file("dirty.raw"))'"]).status, 0)
        XCTAssertEqual(try imgtool(["convert", "-n", "-O", "raw", src, d.file("dirty.raw")]).status, 0)
        XCTAssertEqual(try qemuImg(["compare", "-F", "raw", src, d.file("dirty.raw")]).status, 0)
        XCTAssertLessThan(allocatedBytes(d.file("dirty.raw")), st(full) / 2)
        // Out-of-order writes, one worker, snapshots, backing files.
        XCTAssertEqual(try imgtool(["convert", "-W", "-m", "3", "-O", "qcow2", src, d.file("w.qcow2")]).status, 0)
        XCTAssertEqual(try qemuImg(["compare", src, d.file("w.qcow2")]).status, 0)
        XCTAssertEqual(try imgtool(["convert", "-l", "first", "-O", "raw", v.dir.file("snap.qcow2"), d.file("snap.raw")]).status, 0)
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: d.file("snap.raw"), andPath: v.dir.file("snap-first.raw")))
        let b = try imgtool(["convert", "-O", "qcow2", "-b", v.dir.file("chain1.qcow2"), "-F", "qcow2", v.dir.file("chain2.qcow2"), d.file("top.qcow2")])
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertEqual(try qemuImg(["compare", v.dir.file("chain2.qcow2"), d.file("top.qcow2")]).status, 0)
        // Only the top layer was copied.
        XCTAssertLessThan(allocatedBytes(d.file("top.qcow2")), allocatedBytes(v.dir.file("chain2.qcow2")) + 300_000)
        // Errors in qemu-img's words.
        for args in [["convert", "-m", "0", src, d.file("x")], ["convert", "-c", "-O", "raw", src, d.file("x")],
                     ["convert", "--target-is-zero", src, d.file("x")], ["convert", src],
                     ["convert", "-S", "100", src, d.file("x")], ["convert", "-O", "qcow2", "-o", "foo=bar", src, d.file("x")]] {
            let a = try imgtool(args), q = try qemuImg(args)
            XCTAssertEqual(a.status, q.status, "\(args)")
            XCTAssertEqual(a.stderr, asOurs(q.stderr), "\(args)")
        }
    }

    /// Big writes allocate their blocks before writing (FileNode.allocatesBeforeWrite): exactly the
    /// data runs, so zero runs inside a 2 MiB chunk stay holes and the host allocation is
    /// qemu-img's, into a raw and into a qcow2 target, with and without -C.
    func testConvertAllocatesExactlyWhatQemuImgAllocates() throws {
        let d = TempDir()
        let src = d.file("src.raw")
        // 8 MiB: data with zero runs of 256 KiB and 64 KiB inside chunks, a 3 MiB zero gap.
        let script = """
            head -c 1M /dev/urandom > '\(src)'; head -c 256K /dev/zero >> '\(src)'; head -c 700K /dev/urandom >> '\(src)'
            head -c 64K /dev/zero >> '\(src)'; head -c 1M /dev/urandom >> '\(src)'; head -c 3M /dev/zero >> '\(src)'
            head -c 1000K /dev/urandom >> '\(src)'; truncate -s 8M '\(src)'
            """
        XCTAssertEqual(try runProcess("sh", ["-c", script]).status, 0)
        // Also with -C (kernel copies, no zero detection: the zero runs are copied as data).
        for fmt in ["raw", "qcow2"] {
            for extra in [[], ["-C"]] {
                let what = "\(fmt) \(extra)"
                let ours = d.file("ours.\(fmt)"), theirs = d.file("theirs.\(fmt)")
                try? FileManager.default.removeItem(atPath: ours)
                try? FileManager.default.removeItem(atPath: theirs)
                XCTAssertEqual(try imgtool(["convert"] + extra + ["-f", "raw", "-O", fmt, src, ours]).status, 0)
                XCTAssertEqual(try qemuImg(["convert"] + extra + ["-f", "raw", "-O", fmt, src, theirs]).status, 0)
                XCTAssertEqual(try runProcess("sync", []).status, 0)
                // (Within 16 KiB: ext4 may need an extent-tree block more or less for a file
                // whose extents came out less contiguous.)
                XCTAssertLessThanOrEqual(abs(allocatedBytes(ours) - allocatedBytes(theirs)), 16 << 10, what)
                XCTAssertEqual(try qemuImg(["map", "--output=json", "-f", fmt, ours]).stdout,
                               try qemuImg(["map", "--output=json", "-f", fmt, theirs]).stdout, what)
                XCTAssertEqual(try qemuImg(["compare", "-f", "raw", "-F", fmt, src, ours]).status, 0)
            }
        }
    }

    func testCompareExitCodes() throws {
        let v = try Variants.shared()
        let pairs: [[String]] = [["default.qcow2", "default.raw"], ["default.qcow2", "c512.raw"], ["-s", "default.qcow2", "default.raw"],
                                 ["chain2.qcow2", "chain1.qcow2"], ["default.qcow2", "missing"], ["-f", "raw", "-F", "raw", "default.raw", "v2.raw"]]
        for p in pairs {
            let a = try imgtool(["compare"] + p, cwd: v.dir.path), b = try qemuImg(["compare"] + p, cwd: v.dir.path)
            XCTAssertEqual(a.status, b.status, "\(p)")
            XCTAssertEqual(a.stdout, b.stdout, "\(p)")
            XCTAssertEqual(a.stderr, asOurs(b.stderr), "\(p)")
        }
    }

    func testCheckRepairsLikeQemuImg() throws {
        let v = try Variants.shared()
        let d = TempDir()
        // Leaks (refcounts past the end) and a refcount that is too high.
        for (i, fix) in [["check"], ["check", "-r", "leaks"], ["check", "-r", "all"], ["check", "--output=json", "-r", "all"]].enumerated() {
            let ours = d.file("l\(i)a.qcow2"), theirs = d.file("l\(i)b.qcow2")
            for p in [ours, theirs] {
                try FileManager.default.copyItem(atPath: v.dir.file("default.qcow2"), toPath: p)
                try corruptRefcounts(p)
            }
            let a = try imgtool(fix + [ours]), b = try qemuImg(fix + [theirs])
            XCTAssertEqual(a.status, b.status, "\(fix)")
            XCTAssertEqual(a.stdout.replacingOccurrences(of: ours, with: "F"), b.stdout.replacingOccurrences(of: theirs, with: "F"), "\(fix)")
            XCTAssertEqual(a.stderr, asOurs(b.stderr), "\(fix)")
            XCTAssertTrue(FileManager.default.contentsEqual(atPath: ours, andPath: theirs), "repaired files for \(fix)")
        }
        // raw cannot be checked.
        let r = try imgtool(["check", v.dir.file("default.raw")])
        XCTAssertEqual(r.status, 63)
        XCTAssertEqual(r.stderr, "imgtool: This image format does not support checks\n")
    }

    /// A refcount table entry pointing past any possible file offset (2^64 - 2^49, as a fuzzer
    /// found): check reports it as qemu-img does instead of trapping on the offset, and map and
    /// convert, which need no refcounts, still work, as in qemu-img.
    func testRefcountTableEntryBeyondAnyFileOffset() throws {
        let v = try Variants.shared()
        let d = TempDir()
        let ours = d.file("a.qcow2"), theirs = d.file("b.qcow2")
        for p in [ours, theirs] {
            try FileManager.default.copyItem(atPath: v.dir.file("default.qcow2"), toPath: p)
            let h = FileHandle(forUpdatingAtPath: p)!
            let header = try h.read(upToCount: 56) ?? Data()
            let rt = header[48..<56].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            try h.seek(toOffset: rt)
            h.write(Data([0xFF, 0xFE, 0, 0, 0, 0, 0, 0]))
            try h.close()
        }
        for args in [["check"], ["check", "--output=json"], ["map", "--output=json"]] {
            let a = try imgtool(args + [ours]), b = try qemuImg(args + [theirs])
            XCTAssertEqual(a.status, b.status, "\(args): \(a.stderr)")
            let outA = a.stdout.replacingOccurrences(of: ours, with: "F").replacingOccurrences(of: #", "compressed": (true|false)"#, with: "", options: .regularExpression)
            XCTAssertEqual(outA, b.stdout.replacingOccurrences(of: theirs, with: "F"), "\(args)")
            XCTAssertEqual(a.stderr, asOurs(b.stderr), "\(args)")
        }
        let a = try imgtool(["convert", "-O", "raw", ours, d.file("a.raw")])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(try qemuImg(["convert", "-O", "raw", theirs, d.file("b.raw")]).status, 0)
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: d.file("a.raw"), andPath: d.file("b.raw")))
    }

    /// A persistent bitmap whose table offset is past any file offset: like qemu-img, imgtool
    /// refuses to open the image, for info, check and convert alike, with QEMU's message.
    func testBitmapTableBeyondAnyFileOffset() throws {
        try requireQemuImg()
        let d = TempDir()
        let ours = d.file("a.qcow2"), theirs = d.file("b.qcow2")
        XCTAssertEqual(try qemuImg(["create", "-q", "-f", "qcow2", ours, "4M"]).status, 0)
        XCTAssertEqual(try qemuImg(["bitmap", "--add", ours, "b1"]).status, 0)
        // The bitmaps header extension (magic 0x23852875) names the directory; its first entry
        // starts with the bitmap table's offset.
        var data = try Data(contentsOf: URL(fileURLWithPath: ours))
        func be(_ o: Int, _ n: Int) -> UInt64 { data[o..<o + n].reduce(0) { $0 << 8 | UInt64($1) } }
        var ext = Int(be(100, 4))
        while be(ext, 4) != 0x2385_2875 && be(ext, 4) != 0 { ext += 8 + (Int(be(ext + 4, 4)) + 7) / 8 * 8 }
        XCTAssertEqual(be(ext, 4), 0x2385_2875, "no bitmaps extension")
        let directory = Int(be(ext + 8 + 16, 8))
        data[directory] = 0xFF; data[directory + 1] = 0xFF
        try data.write(to: URL(fileURLWithPath: ours))
        try data.write(to: URL(fileURLWithPath: theirs))
        for args in [["info"], ["check"], ["convert", "-O", "raw"]] {
            let out = args[0] == "convert" ? [d.file("out.raw")] : []
            let a = try imgtool(args + [ours] + out), b = try qemuImg(args + [theirs] + out)
            XCTAssertEqual(a.status, b.status, "\(args)")
            XCTAssertEqual(a.stderr.replacingOccurrences(of: ours, with: "F"), asOurs(b.stderr).replacingOccurrences(of: theirs, with: "F"), "\(args)")
        }
    }

    func testProgramNameFollowsArgv0() throws {
        let d = TempDir()
        let link = d.file("qemu-img")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: productsDirectory + "/imgtool")
        let r = try runProcess(link, ["info", d.file("nope")])
        XCTAssertEqual(r.stderr, "qemu-img: Could not open '\(d.file("nope"))': Could not open '\(d.file("nope"))': No such file or directory\n")
        XCTAssertEqual(r.status, 1)
    }
}

/// Raises one cluster's refcount and marks two clusters past the end as used.
func corruptRefcounts(_ path: String) throws {
    let h = FileHandle(forUpdatingAtPath: path)!
    defer { try? h.close() }
    let data = try h.readToEnd() ?? Data()
    func be64(_ o: Int) -> UInt64 { data[o..<o + 8].reduce(0) { $0 << 8 | UInt64($1) } }
    let rt = Int(be64(48)), rb = Int(be64(rt))
    let n = data.count / 65536
    for (cluster, value) in [(n, UInt16(1)), (n + 1, UInt16(1)), (3, UInt16(2))] {
        try h.seek(toOffset: UInt64(rb + 2 * cluster))
        h.write(Data([UInt8(value >> 8), UInt8(value & 0xFF)]))
    }
}

func allocatedBytes(_ path: String) -> Int {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_blocks) * 512 : -1
}
