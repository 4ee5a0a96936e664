// A VHDX left with an unreplayed log (a crash between the log write and the metadata update):
// read-only opens refuse with QEMU's message and hint, as qemu-img does on the same file; a
// read-write open replays the log, after which the data is there and qemu-img finds the image
// clean.
import Foundation
import XCTest
@testable import ImageFormats

final class VHDXLogTests: XCTestCase {
    /// An image whose log rewrites the first 4 KiB of block 0 with 0xAB (not yet applied).
    func makeDirty(_ dir: TempDir) throws -> String {
        let path = dir.file("dirty.vhdx")
        try VHDXFormat.create(filename: path, size: 16 << 20, options: BlockOptions())
        let n = try openImage(path, "vhdx", writable: true)
        try n.write(at: 0, bytes: [UInt8](repeating: 0x11, count: 1 << 20))
        try n.close()
        var b = try fileBytes(path)
        let batOffset = Int(b.le64(0x30000 + 32))
        let host = b.le64(batOffset) & VHDX.offsetMask
        XCTAssertEqual(b.le64(batOffset) & VHDX.stateMask, VHDX.fullyPresent)
        // The current header (higher sequence) gets a log GUID.
        let h1 = VHDXHeader(raw: Array(b[0x10000..<0x11000])), h2 = VHDXHeader(raw: Array(b[0x20000..<0x21000]))
        let cur = h1.sequence > h2.sequence ? 0x10000 : 0x20000
        var h = VHDXHeader(raw: Array(b[cur..<cur + 4096]))
        let guid = VHDX.randomGUID()
        h.logGUID = guid
        b.replaceSubrange(cur..<cur + 4096, with: h.sealed)
        let entry = VHDXLog.makeEntry(sequence: 7, logGUID: guid, fileOffset: host,
                                      sectors: [UInt8](repeating: 0xAB, count: 4096), fileLength: UInt64(b.count))
        let logOffset = Int(h.logOffset)
        b.replaceSubrange(logOffset..<logOffset + entry.count, with: entry)
        try Data(b).write(to: URL(fileURLWithPath: path))
        return path
    }

    func testDirtyLogIsReplayedOnlyReadWrite() throws {
        try requireQemuImg()
        let dir = TempDir()
        let path = try makeDirty(dir)
        // Read-only: refused, with QEMU's words; qemu-img refuses the same file the same way.
        XCTAssertThrowsError(try openImage(path, "vhdx")) { e in
            let b = e as? BlockError
            XCTAssertEqual(b?.message, "VHDX image file '\(path)' opened read-only, but contains a log that needs to be replayed")
            XCTAssertEqual(b?.hint, "To replay the log, run:\nqemu-img check -r all '\(path)'")
            XCTAssertEqual(b?.errno, EPERM)
        }
        let q = try runProcess("qemu-img", ["info", path])
        XCTAssertNotEqual(q.status, 0)
        XCTAssertTrue(q.stderr.contains("opened read-only, but contains a log that needs to be replayed"), q.stderr)
        // Read-write: replayed.
        let n = try openImage(path, "vhdx", writable: true)
        var expected = [UInt8](repeating: 0x11, count: 1 << 20)
        expected.fill(0, 4096, 0xAB)
        assertBytesEqual(try n.read(at: 0, count: 1 << 20), expected)
        let r = try (n as! VHDXNode).check(fix: [], log: { _ in })
        XCTAssertEqual(r.corruptionsFixed, 1)
        try n.close()
        let c = try runProcess("qemu-img", ["check", path])
        XCTAssertEqual(c.status, 0, c.stdout + c.stderr)
        try Data(expected + [UInt8](repeating: 0, count: 15 << 20)).write(to: URL(fileURLWithPath: dir.file("ref.raw")))
        let cmp = try runProcess("qemu-img", ["compare", "-f", "raw", "-F", "vhdx", dir.file("ref.raw"), path])
        XCTAssertEqual(cmp.status, 0, cmp.stdout + cmp.stderr)
        // And read-only opens work again.
        try openImage(path, "vhdx").close()
    }

    func testQemuReplaysOurDirtyLogToo() throws {
        try requireQemuImg()
        let dir = TempDir()
        let path = try makeDirty(dir)
        let r = try runProcess("qemu-img", ["check", "-r", "all", path])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("1 corruptions"), r.stdout)
        let n = try openImage(path, "vhdx")
        XCTAssertEqual(try n.read(at: 0, count: 8), [UInt8](repeating: 0xAB, count: 8))
        XCTAssertEqual(try n.read(at: 4096, count: 8), [UInt8](repeating: 0x11, count: 8))
        try n.close()
    }
}

extension VHDXLogTests {
    /// `imgtool check -r all` on a dirty image prints what `qemu-img check -r all` prints.
    func testCheckRepairOutputMatchesQemu() throws {
        try requireQemuImg()
        let bundle = ProcessInfo.processInfo.arguments.first { $0.hasSuffix(".xctest") } ?? CommandLine.arguments[0]
        let tool = URL(fileURLWithPath: bundle).deletingLastPathComponent().appendingPathComponent("imgtool").path
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: tool), "imgtool is not built next to the tests")
        let dir = TempDir()
        let path = try makeDirty(dir)
        let copy = dir.file("copy.vhdx")
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        let a = try runProcess(tool, ["check", "-r", "all", "dirty.vhdx"], cwd: dir.path)
        let b = try runProcess("qemu-img", ["check", "-r", "all", "copy.vhdx"], cwd: dir.path)
        XCTAssertEqual(a.status, b.status)
        XCTAssertEqual(a.stdout, b.stdout)
        let ra = try runProcess(tool, ["info", "dirty.vhdx"], cwd: dir.path)
        XCTAssertEqual(ra.status, 0, ra.stderr)
    }
}
