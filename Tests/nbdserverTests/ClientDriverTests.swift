// The block library's nbd driver against real servers: qemu-nbd, nbdkit and nbdserver, opened
// through BlockGraph.open with every way of naming an export (nbd://, nbd+unix://, the legacy
// nbd:unix: form, and driver=nbd,server.*= options). Reads, writes, zeroes and block status are
// checked against the image file underneath.
import Foundation
import ImageFormats
import NBD
import XCTest

final class ClientDriverTests: XCTestCase {
    let mib: UInt64 = 1 << 20

    func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        sa.sin_port = 0
        _ = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: sa.sin_port))
    }

    func waitForPort(_ port: Int) {
        for _ in 0..<200 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_addr.s_addr = inet_addr("127.0.0.1")
            sa.sin_port = UInt16(port).bigEndian
            let ok = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
            close(fd)
            if ok { return }
            usleep(20_000)
        }
    }

    /// Reads the whole node and the file and compares; checks block status agrees with the data.
    func verify(_ node: any BlockNode, against path: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(node.size, UInt64(expected.count), file: file, line: line)
        var got = [UInt8](repeating: 0, count: expected.count)
        try got.withUnsafeMutableBytes { try node.read(at: 0, into: $0) }
        XCTAssertTrue(got == Array(expected), "content differs", file: file, line: line)
        var off: UInt64 = 0
        var dataRuns = 0
        while off < node.size {
            let e = try node.blockStatus(at: off, length: node.size - off)
            XCTAssertGreaterThan(e.length, 0)
            if e.flags.contains(.zero) {
                XCTAssertTrue(got[Int(off)..<Int(off + e.length)].allSatisfy { $0 == 0 }, "zero extent with data at \(off)",
                              file: file, line: line)
            }
            if e.flags.contains(.data) { dataRuns += 1 }
            off += e.length
        }
        XCTAssertGreaterThan(dataRuns, 0, "no data extents: status is not sparse-aware", file: file, line: line)
    }

    func exercise(_ node: any BlockNode) throws {
        let pattern = [UInt8](repeating: 0x5c, count: 70000)
        try node.write(at: 3 * mib + 17, bytes: pattern, flags: [.fua])
        try node.writeZeroes(at: 5 * mib, length: mib, flags: [.mayUnmap])
        try node.writeZeroes(at: 7 * mib, length: 4096, flags: [])
        try node.discard(at: 9 * mib, length: mib)
        try node.flush()
        XCTAssertEqual(try node.read(at: 3 * mib + 17, count: 70000), pattern)
        XCTAssertEqual(try node.read(at: 5 * mib, count: 4096), [UInt8](repeating: 0, count: 4096))
    }

    func makeImage(_ dir: TempDir) throws -> String {
        let path = dir.file("disk.raw")
        try makeRawImage(path, size: 16 * mib, data: [(0, 65536, 1), (5 * mib, 12345, 2), (12 * mib, 2 << 20, 3)])
        return path
    }

    func testAgainstQemuNbdOverUnixSocket() throws {
        try require("qemu-nbd")
        let dir = TempDir()
        let image = try makeImage(dir)
        let server = try ServerProcess("qemu-nbd", ["-t", "-f", "raw", "-x", "exp", "-k", dir.file("q.sock"), image],
                                       socket: dir.file("q.sock"))
        let node = try BlockGraph.open(filename: "nbd+unix:///exp?socket=\(dir.file("q.sock"))", format: "raw",
                                       context: OpenContext(flags: [.readWrite]))
        try verify(node, against: image)
        try exercise(node)
        try node.close()
        let legacy = try BlockGraph.open(filename: "nbd:unix:\(dir.file("q.sock")):exportname=exp", format: "raw",
                                         context: OpenContext())
        try verify(legacy, against: image)
        try legacy.close()
        server.stop()
    }

    func testAgainstQemuNbdOverTCPWithOptions() throws {
        try require("qemu-nbd")
        let dir = TempDir()
        let image = try makeImage(dir)
        let port = freePort()
        let server = try ServerProcess("qemu-nbd", ["-t", "-e", "0", "-f", "raw", "-r", "-x", "foo", "-b", "127.0.0.1", "-p", "\(port)", image],
                                       socket: "", waitForSocket: false)
        waitForPort(port)
        let uriNode = try BlockGraph.open(filename: "nbd://127.0.0.1:\(port)/foo", context: OpenContext())
        XCTAssertEqual(uriNode.filename, "nbd://127.0.0.1:\(port)/foo")
        try verify(uriNode, against: image)
        try uriNode.close()
        let opts = try BlockOptions.parseKeyValue("driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=\(port),export=foo")
        let optNode = try BlockGraph.open(filename: nil, options: opts, context: OpenContext())
        try verify(optNode, against: image)
        // Writing to a read-only export is refused at open.
        XCTAssertThrowsError(try BlockGraph.open(filename: "nbd://127.0.0.1:\(port)/foo", format: "raw",
                                                 context: OpenContext(flags: [.readWrite]))) {
            XCTAssertEqual(($0 as? BlockError)?.message, "NBD export is read-only")
        }
        try optNode.close()
        server.stop()
    }

    func testAgainstNbdkit() throws {
        try require("nbdkit")
        let dir = TempDir()
        let image = try makeImage(dir)
        let server = try ServerProcess("nbdkit", ["-f", "-U", dir.file("k.sock"), "file", image], socket: dir.file("k.sock"))
        let node = try BlockGraph.open(filename: "nbd+unix:///?socket=\(dir.file("k.sock"))", format: "raw",
                                       context: OpenContext(flags: [.readWrite]))
        try verify(node, against: image)
        try exercise(node)
        try node.close()
        server.stop()
        // nbdkit's memory plugin: sparse, writable, multi-conn.
        let mem = try ServerProcess("nbdkit", ["-f", "-U", dir.file("m.sock"), "memory", "16M"], socket: dir.file("m.sock"))
        let m = try BlockGraph.open(filename: "nbd+unix:///?socket=\(dir.file("m.sock"))", format: "raw",
                                    context: OpenContext(flags: [.readWrite]))
        try exercise(m)
        let e = try m.blockStatus(at: 0, length: mib)
        XCTAssertTrue(e.flags.contains(.zero), "memory plugin reports holes")
        try m.close()
        mem.stop()
    }

    func testAgainstOurServerWithExtendedHeaders() throws {
        let dir = TempDir()
        let image = try makeImage(dir)
        let server = try ServerProcess(nbdserverPath, ["-t", "-f", "raw", "-k", dir.file("o.sock"), image], socket: dir.file("o.sock"))
        let node = try BlockGraph.open(filename: "nbd+unix:///?socket=\(dir.file("o.sock"))", format: "raw",
                                       context: OpenContext(flags: [.readWrite]))
        let nbd = try XCTUnwrap(node.fileChild as? NBDClientNode)
        XCTAssertEqual(nbd.client.mode, .extended)
        XCTAssertEqual(node.fileChild?.filename, "nbd+unix://?socket=\(dir.file("o.sock"))")
        try verify(node, against: image)
        try exercise(node)
        // Many threads on one connection.
        let group = DispatchGroup()
        final class Count: @unchecked Sendable { let lock = NSLock(); var n = 0; func bump() { lock.lock(); n += 1; lock.unlock() } }
        let failures = Count()
        for t in 0..<8 {
            group.enter()
            DispatchQueue.global().async {
                defer { group.leave() }
                do {
                    for i in 0..<20 {
                        let off = UInt64(t * 20 + i) * 65536
                        let block = [UInt8](repeating: UInt8(t + 1), count: 65536)
                        try node.write(at: off, bytes: block)
                        if try node.read(at: off, count: 65536) != block { failures.bump() }
                    }
                } catch {
                    failures.bump()
                }
            }
        }
        group.wait()
        XCTAssertEqual(failures.n, 0)
        try node.flush()
        try node.close()
        server.stop()
        let final = try Data(contentsOf: URL(fileURLWithPath: image))
        XCTAssertEqual(Array(final[65536 * 21..<65536 * 22]), [UInt8](repeating: 2, count: 65536))
    }

    func testFilenameParsing() throws {
        let cases: [(String, [String: String])] = [
            ("nbd://example.com/disk", ["server.type": "inet", "server.host": "example.com", "server.port": "10809", "export": "disk"]),
            ("nbd://[::1]:1234/a%20b", ["server.type": "inet", "server.host": "::1", "server.port": "1234", "export": "a b"]),
            ("nbd+unix:///e?socket=/run/s", ["server.type": "unix", "server.path": "/run/s", "export": "e"]),
            ("nbd+unix://?socket=/run/s", ["server.type": "unix", "server.path": "/run/s"]),
            ("nbd:localhost:10810", ["server.type": "inet", "server.host": "localhost", "server.port": "10810"]),
            ("nbd:unix:/tmp/x:exportname=foo", ["server.type": "unix", "server.path": "/tmp/x", "export": "foo"]),
        ]
        for (name, want) in cases {
            let o = try NBDProtocol.parseFilename(name)
            for (k, v) in want { XCTAssertEqual(o.string(k), v, "\(name): \(k)") }
        }
        XCTAssertThrowsError(try NBDProtocol.parseFilename("nbd+unix:///e"))
        XCTAssertThrowsError(try NBDProtocol.parseFilename("nbd://h/e?socket=/x"))
    }

    /// The library's convert engine reading from NBD keeps the copy sparse (block status works).
    func testConvertFromNBDStaysSparse() throws {
        try require("qemu-nbd")
        let dir = TempDir()
        let image = dir.file("big.raw")
        try makeRawImage(image, size: 256 * mib, data: [(0, 65536, 1), (100 * mib, 3 << 20, 2)])
        for program in [nbdserverPath, "qemu-nbd"] {
            let sock = dir.file("c.sock")
            let server = try ServerProcess(program, ["-t", "-r", "-f", "raw", "-k", sock, image], socket: sock)
            let source = try BlockGraph.open(filename: "nbd+unix:///?socket=\(sock)", format: "raw", context: OpenContext())
            let out = dir.file("out.raw")
            try FileProtocol.create(filename: out, size: source.size, preallocation: .off)
            let target = try BlockGraph.open(filename: out, format: "raw", context: OpenContext(flags: [.readWrite]))
            var o = ConvertOptions()
            o.targetIsZero = true
            try Converter(sources: [source], target: target, options: o).run()
            try target.close()
            try source.close()
            server.stop()
            XCTAssertTrue(FileManager.default.contentsEqual(atPath: image, andPath: out), program)
            var st = stat()
            stat(out, &st)
            XCTAssertLessThan(Int(st.st_blocks) * 512, 16 << 20, "copy from \(program) is not sparse")
            unlink(out)
        }
    }
}
