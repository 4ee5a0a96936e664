// Requests of one connection run at once (up to 16): the block graph under them must stay
// consistent, and a client cannot make the server hold more than a bounded number of payloads.
//
// - 16 client threads on one connection write interleaved 4 KiB blocks (at each step all of them
//   write their block of the same 64 KiB qcow2 cluster, so they allocate it at once), partial blocks (copy-on-write of
//   the rest of a cluster), write-zeroes and flushes, while reading each other's blocks. The image
//   must then read back exactly as the reference, `qemu-img check` must find it clean, and
//   `qemu-img compare` must find it equal to a raw file holding the reference.
// - A client pipelines 16 writes of 32 MiB without reading a reply: the server reads payloads only
//   into free request slots, so its peak memory grows by a few payloads, not 512 MiB.
import Foundation
import Glibc
@testable import NBD
import XCTest

final class ConcurrentRequestTests: XCTestCase {
    func connect(_ socket: String) throws -> NBDClient {
        try NBDClient.connect(.unix(path: socket), config: NBDClientConfig(exportName: ""))
    }

    func testConcurrentWritesKeepQcow2Consistent() throws {
        try require("qemu-img")
        let dir = TempDir()
        let image = dir.file("disk.qcow2")
        let size = 8 << 20
        let block = 4096
        let threads = 16
        XCTAssertEqual(try runTool("qemu-img", ["create", "-q", "-f", "qcow2", image, "\(size)"]).status, 0)
        let server = try ServerProcess(nbdserverPath, ["-t", "-f", "qcow2", "-k", dir.file("s.sock"), image],
                                       socket: dir.file("s.sock"))
        let client = try connect(server.socket)
        // Each thread owns the blocks whose index is its number modulo 16, and keeps its own part
        // of the reference (nobody else writes those bytes).
        final class Reference: @unchecked Sendable {
            var bytes: UnsafeMutableRawBufferPointer
            init(_ n: Int) {
                bytes = .allocate(byteCount: n, alignment: 4096)
                bytes.initializeMemory(as: UInt8.self, repeating: 0)
            }
            deinit { bytes.deallocate() }
        }
        let ref = Reference(size)
        let done = Monitor()
        var finished = 0
        var failures: [String] = []
        let blocks = size / block
        for t in 0..<threads {
            try Threads.spawn {
                var rng = SystemRandomNumberGenerator()
                var buf = [UInt8](repeating: 0, count: 3 * block)
                do {
                    for i in 0..<160 {
                        // At step i every thread writes its block of the same cluster, so that
                        // they all allocate it at once.
                        let b = t + threads * ((i * 7) % (blocks / threads))
                        let offset = b * block
                        let value = UInt8(truncatingIfNeeded: t * 16 + i % 13 + 1)
                        switch i % 8 {
                        case 0:
                            // A partial block: the rest of the cluster is copied on allocation.
                            let start = Int.random(in: 0..<block / 2, using: &rng)
                            let count = Int.random(in: 1...(block - start), using: &rng)
                            for k in 0..<count { buf[k] = value &+ UInt8(truncatingIfNeeded: k) }
                            try buf.withUnsafeBytes {
                                try client.write(at: UInt64(offset + start), from: UnsafeRawBufferPointer(rebasing: $0[0..<count]))
                            }
                            for k in 0..<count { ref.bytes[offset + start + k] = value &+ UInt8(truncatingIfNeeded: k) }
                        case 1:
                            try client.writeZeroes(at: UInt64(offset), length: UInt64(block))
                            for k in 0..<block { ref.bytes[offset + k] = 0 }
                        case 2:
                            try client.flush()
                        case 3:
                            // Another thread's block: any content is fine, the read must just work.
                            try buf.withUnsafeMutableBytes {
                                try client.read(at: UInt64(((b + 1) % blocks) * block), into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<block]))
                            }
                        default:
                            for k in 0..<block { buf[k] = value ^ UInt8(truncatingIfNeeded: k >> 4) }
                            try buf.withUnsafeBytes {
                                try client.write(at: UInt64(offset), from: UnsafeRawBufferPointer(rebasing: $0[0..<block]), fua: i % 16 == 7)
                            }
                            for k in 0..<block { ref.bytes[offset + k] = buf[k] }
                        }
                    }
                } catch {
                    done.withLock { failures.append("thread \(t): \(error)") }
                }
                done.withLock { finished += 1; done.broadcast() }
            }
        }
        done.withLock { while finished < threads { done.wait() } }
        XCTAssertEqual(failures, [])
        // Read back through the server, then from the file after the server is gone.
        var got = [UInt8](repeating: 0, count: size)
        try got.withUnsafeMutableBytes { raw in
            for o in stride(from: 0, to: size, by: 1 << 20) {
                try client.read(at: UInt64(o), into: UnsafeMutableRawBufferPointer(rebasing: raw[o..<o + (1 << 20)]))
            }
        }
        let mismatch = (0..<size).first { got[$0] != ref.bytes[$0] }
        XCTAssertNil(mismatch, "first difference at \(mismatch ?? 0)")
        client.disconnect()
        server.stop()
        let check = try runTool("qemu-img", ["check", image])
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        let raw = dir.file("ref.raw")
        XCTAssertTrue(FileManager.default.createFile(atPath: raw, contents: Data(UnsafeRawBufferPointer(ref.bytes))))
        let cmp = try runTool("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", image, raw])
        XCTAssertEqual(cmp.status, 0, cmp.stdout + cmp.stderr)
    }

    func peakRSSKiB(_ pid: Int32) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
        return 0
    }

    func testPipelinedBigWritesAreNotAllBuffered() throws {
        let dir = TempDir()
        try makeRawImage(dir.file("a.raw"), size: 64 << 20, data: [])
        // writethrough: every write waits for the disk, so the requests go to workers and the
        // reader would run ahead of them if nothing stopped it.
        let server = try ServerProcess(nbdserverPath, ["-t", "-f", "raw", "--cache=writethrough", "-k", dir.file("s.sock"),
                                                       dir.file("a.raw")], socket: dir.file("s.sock"))
        XCTAssertEqual(try runTool("nbdinfo", ["--size", server.uri]).status, 0)
        let before = peakRSSKiB(server.pid)
        // Simple replies, then 16 x 32 MiB writes, no reply read.
        let fd = try Sockets.connect(.unix(path: server.socket))
        defer { close(fd) }
        let stream = NBDStream(transport: SocketTransport(fd: fd))
        var config = NBDClientConfig(exportName: "")
        config.structuredReplies = false
        config.extendedHeaders = false
        _ = try ClientHandshake(stream: stream, config: config).connect()
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: 32 << 20, alignment: 4096)
        defer { payload.deallocate() }
        payload.initializeMemory(as: UInt8.self, repeating: 0x5a)
        let count = 16
        for i in 0..<count {
            var header = [UInt8](repeating: 0, count: 28)
            header.withUnsafeMutableBytes { raw in
                _ = NBDRequest(command: .write, cookie: UInt64(i), offset: UInt64(i % 2) << 25, length: 32 << 20)
                    .encode(into: raw.baseAddress!, mode: .simple)
            }
            try stream.write(header)
            try stream.sendDirect(.empty, UnsafeRawBufferPointer(payload))
        }
        // Every write is answered.
        var replies = 0
        var reply = [UInt8](repeating: 0, count: 16)
        while replies < count {
            try reply.withUnsafeMutableBytes { try stream.readExactly(into: $0) }
            XCTAssertEqual(Array(reply[4..<8]), [0, 0, 0, 0], "write \(replies) failed")
            replies += 1
        }
        let grew = peakRSSKiB(server.pid) - before
        // The cap is 64 MiB of payloads in flight plus what free slots keep; 16 x 32 MiB is 512 MiB.
        XCTAssertLessThan(grew, 160 * 1024, "peak memory grew by \(grew) KiB")
        server.stop()
    }
}
