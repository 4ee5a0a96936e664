// Writes acknowledged with FUA, or followed by an acknowledged FLUSH, survive kill -9 of the server.
//
// A python3-libnbd client writes numbered blocks, some with FUA, some plain then flushed (one at a
// time, or 16 in flight), and keeps
// going with unflushed writes while the test kills the server with SIGKILL. Every block the client
// saw acknowledged as durable must be in the image; for formats with metadata, `qemu-img check`
// must find the image clean.
import Foundation
import ImageFormats
import XCTest

final class CrashConsistencyTests: XCTestCase {
    static let writer = #"""
import nbd, sys
uri, log = sys.argv[1], open(sys.argv[2], "w", buffering=1)
h = nbd.NBD()
h.connect_uri(uri)
bs = 65536
i = 0
prev = 0
try:
    while True:
        block = bytes([(i % 251) + 1]) * bs
        off = (i * bs) % (h.get_size() - bs)
        if i % 3 == 0:
            h.pwrite(block, off, nbd.CMD_FLAG_FUA)
            log.write("durable %d %d\n" % (i, off))
        else:
            h.pwrite(block, off)
            if i % 3 == 2:
                h.flush()
                log.write("durable %d %d\n" % (i - 1, prev))
                log.write("durable %d %d\n" % (i, off))
        prev = off
        i += 1
except nbd.Error:
    pass
"""#

    /// The same with 16 writes in flight (libnbd's aio calls): a write is durable when it had FUA
    /// and completed, or when it completed before a FLUSH was sent and that flush completed. The
    /// server runs those requests concurrently, so a flush must cover every write that completed
    /// before it, wherever it ran.
    static let pipelinedWriter = #"""
import nbd, sys
uri, log = sys.argv[1], open(sys.argv[2], "w", buffering=1)
h = nbd.NBD()
h.connect_uri(uri)
bs = 65536
blocks = h.get_size() // bs - 1
pending = {}
completed = []
flush = None
covers = []
i = 0
try:
    while True:
        while len(pending) < 16:
            fua = i % 97 == 0
            off = (i % blocks) * bs
            c = h.aio_pwrite(bytes([(i % 251) + 1]) * bs, off, flags=nbd.CMD_FLAG_FUA if fua else 0)
            pending[c] = (i, off, fua)
            i += 1
        h.poll(-1)
        for c in list(pending):
            if h.aio_command_completed(c):
                j, off, fua = pending.pop(c)
                if fua:
                    log.write("durable %d %d\n" % (j, off))
                else:
                    completed.append((j, off))
        if flush is not None and h.aio_command_completed(flush):
            for j, off in covers:
                log.write("durable %d %d\n" % (j, off))
            flush = None
        if flush is None and len(completed) >= 8:
            covers, completed = completed, []
            flush = h.aio_flush()
except nbd.Error:
    pass
"""#

    func crashAndCheck(format: String, cacheArgs: [String], writer: String = CrashConsistencyTests.writer,
                       size: Int = 64 << 20) throws {
        let py = try pythonWithLibnbd()
        let dir = TempDir()
        let image = dir.file("disk.\(format)")
        if format == "raw" {
            try makeRawImage(image, size: UInt64(size), data: [])
        } else {
            try require("qemu-img")
            XCTAssertEqual(try runTool("qemu-img", ["create", "-f", format, image, "\(size)"]).status, 0)
        }
        let server = try ServerProcess(nbdserverPath, ["-t", "-f", format, "-k", dir.file("s.sock")] + cacheArgs + [image],
                                       socket: dir.file("s.sock"))
        let client = Process()
        client.executableURL = URL(fileURLWithPath: py)
        client.arguments = ["-c", writer, server.uri, dir.file("log")]
        try client.run()
        usleep(700_000)
        server.kill9()
        client.waitUntilExit()

        let log = try String(contentsOfFile: dir.file("log"), encoding: .utf8)
        // The latest durable write to each offset decides its content.
        var latest: [Int: Int] = [:]
        for line in log.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count == 3, let i = Int(f[1]), let off = Int(f[2]) else { continue }
            if i >= (latest[off] ?? -1) { latest[off] = i }
        }
        XCTAssertGreaterThan(latest.count, 10, "the client did not get far enough before the kill")
        if format != "raw" {
            let check = try runTool("qemu-img", ["check", "-f", format, image])
            XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        }
        let node = try BlockGraph.open(filename: image, format: format, context: OpenContext())
        defer { try? node.close() }
        for (off, i) in latest {
            let got = try node.read(at: UInt64(off), count: 65536)
            // A later, unflushed write may also have landed; the durable one or a later one is fine.
            let expected = UInt8((i % 251) + 1)
            if got[0] != expected {
                XCTAssertTrue(got.allSatisfy { $0 == got[0] } && got[0] != 0,
                              "block at \(off): durable write \(i) lost (found \(got[0]))")
            } else {
                XCTAssertTrue(got.allSatisfy { $0 == expected }, "block at \(off) torn")
            }
        }
    }

    func testRawWriteback() throws { try crashAndCheck(format: "raw", cacheArgs: []) }
    func testQcow2Pipelined() throws {
        try crashAndCheck(format: "qcow2", cacheArgs: [], writer: CrashConsistencyTests.pipelinedWriter, size: 256 << 20)
    }
    func testRawCacheNonePipelined() throws {
        try crashAndCheck(format: "raw", cacheArgs: ["--cache=none"], writer: CrashConsistencyTests.pipelinedWriter,
                          size: 256 << 20)
    }
    func testRawCacheNone() throws { try crashAndCheck(format: "raw", cacheArgs: ["--cache=none"]) }
    func testQcow2() throws {
        try XCTSkipUnless(FormatRegistry.driver(named: "qcow2") != nil, "the qcow2 driver is not in this build yet")
        try crashAndCheck(format: "qcow2", cacheArgs: [])
    }
}
