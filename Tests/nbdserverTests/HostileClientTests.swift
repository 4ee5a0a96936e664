// Hostile and broken clients: raw byte sequences sent to nbdserver and to qemu-nbd, whose answers
// must be byte for byte the same; oversize lengths that must not become allocations; thousands of
// idle connections that must cost little and not stop others from being served; handshakes that
// never finish and must be dropped after --handshake-limit.
import Foundation
import XCTest
@testable import NBD

final class HostileClientTests: XCTestCase {
    /// A raw client: connect, send, read until the server closes or stays silent.
    final class RawClient {
        let fd: Int32
        init(_ path: String) throws {
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var sa = sockaddr_un()
            sa.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            withUnsafeMutableBytes(of: &sa.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
            let r = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if r != 0 { throw NSError(domain: "connect", code: Int(errno)) }
        }
        deinit { close(fd) }

        func send(_ b: [UInt8]) {
            var off = 0
            while off < b.count {
                let n = b.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                off += n
            }
        }

        /// Reads until EOF, or until nothing arrived for `idle` seconds. Returns (bytes, closed).
        func receive(idle: Double = 0.5, max: Int = 1 << 20) -> (bytes: [UInt8], closed: Bool) {
            var out: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 65536)
            while out.count < max {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, Int32(idle * 1000)) <= 0 { return (out, false) }
                let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
                if n <= 0 { return (out, true) }
                out += buf[0..<n]
            }
            return (out, false)
        }
    }

    static func option(_ o: UInt32, _ payload: [UInt8] = [], length: UInt32? = nil) -> [UInt8] {
        var w = WireWriter()
        w.u64(NBDMagic.haveOptions)
        w.u32(o)
        w.u32(length ?? UInt32(payload.count))
        w.raw(payload)
        return w.bytes
    }

    static func u32(_ v: UInt32) -> [UInt8] { var w = WireWriter(); w.u32(v); return w.bytes }
    static func name(_ s: String) -> [UInt8] { var w = WireWriter(); w.string32(s); return w.bytes }
    static func go(_ export: String, _ infos: [UInt16] = []) -> [UInt8] {
        var w = WireWriter()
        w.string32(export)
        w.u16(UInt16(infos.count))
        for i in infos { w.u16(i) }
        return option(7, w.bytes)
    }
    static func request(_ cmd: UInt16, flags: UInt16 = 0, offset: UInt64, length: UInt32, cookie: UInt64 = 0x1122) -> [UInt8] {
        var w = WireWriter()
        w.u32(NBDMagic.request)
        w.u16(flags)
        w.u16(cmd)
        w.u64(cookie)
        w.u64(offset)
        w.u32(length)
        return w.bytes
    }

    /// Byte sequences whose answers must match qemu-nbd's exactly.
    static let scripts: [(String, [[UInt8]])] = [
        ("garbage instead of flags", [Array("GARBAGE!GARBAGE!".utf8)]),
        ("unknown client flags", [u32(0x80)]),
        ("bad option magic", [u32(3), Array("NOTMAGIC".utf8) + u32(1) + u32(0)]),
        ("huge option length", [u32(3), option(99, length: 0xFFFF_FFFF)]),
        ("option errors", [u32(3), option(99, [1, 2, 3, 4, 5]), option(3, [1]), option(3), option(5),
                           option(8, [0]), option(8), option(8), option(10, name("") + u32(0)),
                           option(6, u32(5000)), option(6, name("nope") + [0, 0]), option(6, name("") + [0]),
                           option(6, u32(4) + [0x61, 0, 0x62, 0x63] + [0, 0]),
                           option(9, name("") + u32(0)), option(9, name("") + u32(2) + name("qemu:") + name("base:")),
                           option(9, name("nope") + u32(0)), option(10, name("") + u32(1) + name("base:allocation")),
                           option(2)]),
        ("not fixed newstyle", [u32(0), option(3)]),
        ("export name without no-zeroes", [u32(1), option(1, Array("".utf8)), request(0, offset: 0, length: 512)]),
        ("export name unknown", [u32(3), option(1, Array("nope".utf8))]),
        ("go then bad request magic", [u32(3), go(""), Array("BADMAGICBADMAGICBADMAGICBADM".utf8)]),
        ("go then requests", [u32(3), go("", [3, 1]),
                              request(0, offset: 0, length: 4096), request(0, offset: 1 << 40, length: 1),
                              request(1, offset: 0, length: 4) + [1, 2, 3, 4], request(99, offset: 0, length: 0),
                              request(7, offset: 0, length: 4096), request(3, flags: 8, offset: 0, length: 0),
                              request(4, offset: 0, length: 0), request(2, offset: 0, length: 0)]),
        ("oversize write then more", [u32(3), option(8), go(""), request(1, offset: 0, length: 64 << 20),
                                      request(0, offset: 0, length: 512)]),
        ("oversize read", [u32(3), option(8), go(""), request(0, offset: 0, length: 64 << 20), request(3, offset: 0, length: 0)]),
    ]

    func testRawSequencesMatchQemuNbd() throws {
        try require("qemu-nbd")
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [(0, 8192, 1)])
        try makeRawImage(dir.file("b.raw"), size: 1 << 20, data: [(0, 8192, 1)])
        let ours = try ServerProcess(nbdserverPath, ["-t", "-e", "0", "-f", "raw", "-k", dir.file("o.sock"), dir.file("a.raw")],
                                     socket: dir.file("o.sock"))
        let qemu = try ServerProcess("qemu-nbd", ["-t", "-e", "0", "-f", "raw", "-k", dir.file("q.sock"), dir.file("b.raw")],
                                     socket: dir.file("q.sock"))
        for (name, parts) in HostileClientTests.scripts {
            var answers: [[UInt8]] = []
            var closed: [Bool] = []
            for sock in [ours.socket, qemu.socket] {
                let c = try RawClient(sock)
                var all: [UInt8] = []
                var wasClosed = false
                for part in parts {
                    c.send(part)
                    let (b, cl) = c.receive(idle: 0.12)
                    all += b
                    if cl { wasClosed = true; break }
                }
                if !wasClosed {
                    let (b, cl) = c.receive(idle: 0.12)
                    all += b
                    wasClosed = cl
                }
                answers.append(all)
                closed.append(wasClosed)
            }
            XCTAssertEqual(answers[0], answers[1], "answers differ for '\(name)'")
            XCTAssertEqual(closed[0], closed[1], "disconnect differs for '\(name)'")
        }
        // Both are still serving.
        XCTAssertEqual(try runTool("nbdinfo", ["--size", ours.uri]).stdout, "1048576\n")
        ours.stop()
        qemu.stop()
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: dir.file("a.raw"), andPath: dir.file("b.raw")))
    }

    func rssKiB(_ pid: Int32) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
        return 0
    }

    func testOversizeLengthsAreNotAllocated() throws {
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [])
        let server = try ServerProcess(nbdserverPath, ["-t", "-e", "0", "-f", "raw", "-k", dir.file("o.sock"), dir.file("a.raw")],
                                       socket: dir.file("o.sock"))
        let before = rssKiB(server.pid)
        // 50 clients each announce a 32 MiB option / name and then stall.
        var clients: [RawClient] = []
        for i in 0..<50 {
            let c = try RawClient(server.socket)
            _ = c.receive(idle: 0.05)
            c.send(HostileClientTests.u32(3))
            if i % 2 == 0 {
                c.send(HostileClientTests.option(99, [0, 0, 0, 0], length: 32 << 20))
            } else {
                c.send(HostileClientTests.option(7, HostileClientTests.u32(0xFFFF_FFF0), length: 32 << 20))
            }
            clients.append(c)
        }
        usleep(300_000)
        let after = rssKiB(server.pid)
        XCTAssertLessThan(after - before, 16 * 1024, "server grew by \(after - before) KiB for 50 stalled 32 MiB options")
        XCTAssertEqual(try runTool("nbdinfo", ["--size", server.uri]).stdout, "1048576\n")
        clients.removeAll()
        server.stop()
    }

    /// Thousands of idle clients after the handshake: each costs little, and others are still served.
    func testManyIdleConnections() throws {
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [(0, 4096, 1)])
        let server = try ServerProcess(nbdserverPath, ["-t", "-e", "0", "-f", "raw", "-k", dir.file("o.sock"), dir.file("a.raw")],
                                       socket: dir.file("o.sock"))
        // Warm up: one full client, so one-time allocations are not counted per connection.
        XCTAssertEqual(try runTool("nbdinfo", ["--size", server.uri]).status, 0)
        usleep(100_000)
        let before = rssKiB(server.pid)
        let count = Int(ProcessInfo.processInfo.environment["NBD_IDLE_CONNECTIONS"] ?? "") ?? 10_000
        var clients: [RawClient] = []
        clients.reserveCapacity(count)
        let hello = HostileClientTests.u32(3) + HostileClientTests.go("")
        for _ in 0..<count {
            guard let c = try? RawClient(server.socket) else { break }
            c.send(hello)
            clients.append(c)
        }
        // Every handshake is answered (the GO reply ends with an ACK).
        // greeting 18 + INFO block size 34 + INFO export 32 + ACK 20
        for c in clients { XCTAssertEqual(c.receive(idle: 5, max: 104).bytes.count, 104) }
        usleep(300_000)
        let after = rssKiB(server.pid)
        let perConnection = Double(after - before) * 1024 / Double(clients.count)
        print("idle connections: \(clients.count), RSS \(before) KiB -> \(after) KiB, \(Int(perConnection)) bytes each")
        XCTAssertGreaterThan(clients.count, count / 2, "could not open enough connections")
        XCTAssertLessThan(perConnection, 100 * 1024, "more than 100 KiB per idle connection")
        // Others are still served promptly.
        let t0 = Date()
        let r = try runTool("nbdinfo", ["--map", server.uri])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 5)
        clients.removeAll()
        server.stop()
    }

    func testHandshakeLimitDropsSilentClients() throws {
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 1 << 20, data: [])
        let server = try ServerProcess(nbdserverPath, ["-t", "-e", "0", "--handshake-limit=1", "-f", "raw",
                                                       "-k", dir.file("o.sock"), dir.file("a.raw")], socket: dir.file("o.sock"))
        var clients: [RawClient] = []
        for _ in 0..<20 { clients.append(try RawClient(server.socket)) }
        let t0 = Date()
        for c in clients {
            var closed = false
            while !closed && Date().timeIntervalSince(t0) < 5 {
                closed = c.receive(idle: 0.2).closed
            }
            XCTAssertTrue(closed, "a silent client was not dropped")
        }
        XCTAssertGreaterThan(Date().timeIntervalSince(t0), 0.8)
        XCTAssertEqual(try runTool("nbdinfo", ["--size", server.uri]).stdout, "1048576\n")
        server.stop()
        XCTAssertTrue(server.stderr.contains("handshake"), server.stderr)
    }
}
