// The QMP monitor over a unix socket, as a script would use it: greeting, negotiation, queries in
// QEMU's shapes, stop/cont with their events before the return, human-monitor-command, and quit
// ending vmrun with status 0 after SHUTDOWN.
import Foundation
import XCTest

/// A line-oriented QMP client (QEMU ends every message with CRLF).
final class QMPClient {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(path: String, timeout: TimeInterval = 10) throws {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while true {
            let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { p in
                for (i, b) in path.utf8.enumerated() { p[i] = b }
            }
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if r == 0 { fd = s; break }
            close(s)
            if Date() > deadline { throw NSError(domain: "qmp", code: 1, userInfo: [NSLocalizedDescriptionKey: "cannot connect to \(path)"]) }
            usleep(50_000)
        }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func line() -> String? {
        while true {
            if let i = buffer.firstIndex(of: 0x0A) {
                let l = String(decoding: buffer[..<i], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                buffer.removeFirst(i + 1)
                return l
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n <= 0 { return nil }
            buffer += chunk[0..<n]
        }
    }

    func json() -> [String: Any]? {
        guard let l = line(), let d = l.data(using: .utf8) else { return nil }
        return try? JSONSerialization.jsonObject(with: d) as? [String: Any]
    }

    func send(_ text: String) { _ = text.withCString { Glibc.send(fd, $0, strlen($0), 0) } }

    /// Sends a command; returns (events before the answer, the answer).
    func execute(_ cmd: String, _ args: String? = nil) -> ([String], [String: Any]?) {
        send("{\"execute\": \"\(cmd)\"" + (args.map { ", \"arguments\": \($0)" } ?? "") + "}\n")
        var events: [String] = []
        while let m = json() {
            if let e = m["event"] as? String { events.append(e); continue }
            return (events, m)
        }
        return (events, nil)
    }
}

final class QMPTests: XCTestCase {
    func testSessionQueriesAndLifecycle() throws {
        let dir = try VMRun.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bios = try VMRun.assemble("realmode", defines: ["HALT"], into: dir)
        let disk = dir.appendingPathComponent("disk.raw")
        try Data(count: 1 << 20).write(to: disk)
        let sock = dir.appendingPathComponent("qmp.sock").path
        let p = Process()
        p.executableURL = VMRun.binary
        p.arguments = ["-accel", "tcg", "-M", "pc", "-m", "32", "-display", "none", "-nodefaults", "-S", "-name", "testvm",
                       "-bios", bios.path, "-object", "iothread,id=io0",
                       "-drive", "file=\(disk.path),format=raw,if=none,id=drv0",
                       "-device", "virtio-blk-pci,drive=drv0,iothread=io0,id=vd0",
                       "-qmp", "unix:\(sock),server=on,wait=off"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        let c = try QMPClient(path: sock)
        let greeting = try XCTUnwrap(c.json())
        let qmp = try XCTUnwrap(greeting["QMP"] as? [String: Any])
        XCTAssertEqual((qmp["capabilities"] as? [String]), ["oob"])
        XCTAssertEqual(((qmp["version"] as? [String: Any])?["qemu"] as? [String: Any])?["major"] as? Int, 7)

        var (_, r) = c.execute("query-status")
        XCTAssertEqual((r?["error"] as? [String: Any])?["desc"] as? String, "Expecting capabilities negotiation with 'qmp_capabilities'")
        (_, r) = c.execute("qmp_capabilities")
        XCTAssertNotNil(r?["return"])
        (_, r) = c.execute("query-status")
        XCTAssertEqual((r?["return"] as? [String: Any])?["status"] as? String, "prelaunch")
        XCTAssertEqual((r?["return"] as? [String: Any])?["running"] as? Bool, false)
        (_, r) = c.execute("query-name")
        XCTAssertEqual((r?["return"] as? [String: Any])?["name"] as? String, "testvm")
        (_, r) = c.execute("query-block")
        let blocks = try XCTUnwrap(r?["return"] as? [[String: Any]])
        XCTAssertEqual(blocks.first?["device"] as? String, "drv0")
        XCTAssertEqual(blocks.first?["qdev"] as? String, "/machine/peripheral/vd0/virtio-backend")
        let inserted = try XCTUnwrap(blocks.first?["inserted"] as? [String: Any])
        XCTAssertEqual(inserted["drv"] as? String, "raw")
        XCTAssertEqual((inserted["image"] as? [String: Any])?["virtual-size"] as? Int, 1 << 20)
        (_, r) = c.execute("query-blockstats")
        XCTAssertEqual((r?["return"] as? [[String: Any]])?.first?["device"] as? String, "drv0")
        (_, r) = c.execute("query-iothreads")
        XCTAssertEqual((r?["return"] as? [[String: Any]])?.first?["id"] as? String, "io0")
        (_, r) = c.execute("nosuch")
        XCTAssertEqual((r?["error"] as? [String: Any])?["class"] as? String, "CommandNotFound")

        var events: [String]
        (events, r) = c.execute("cont")
        XCTAssertEqual(events, ["RESUME"])
        (_, r) = c.execute("human-monitor-command", "{\"command-line\": \"info status\"}")
        XCTAssertEqual(r?["return"] as? String, "VM status: running\r\n")
        (events, r) = c.execute("stop")
        XCTAssertEqual(events, ["STOP"])
        (_, r) = c.execute("query-status")
        XCTAssertEqual((r?["return"] as? [String: Any])?["status"] as? String, "paused")
        (events, r) = c.execute("system_reset")
        XCTAssertEqual(events, ["RESET"])
        (events, r) = c.execute("quit")
        XCTAssertEqual(events, ["SHUTDOWN"])
        XCTAssertNotNil(r?["return"])
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
    }
}
