// Our client against our server over a socketpair, with an in-memory backend: every command in
// every reply mode (simple, structured, extended headers), concurrent callers on one connection,
// and the handshake fed one byte at a time.
import Glibc
import XCTest
@testable import NBD

/// A sparse in-memory disk: zero pages are holes.
final class MemoryBackend: NBDBackend, @unchecked Sendable {
    let lock = Monitor()
    var bytes: [UInt8]
    var flushes = 0
    /// Kept apart from `bytes` so that no thread touches the array outside the lock: an unlocked
    /// `bytes.count` retains the buffer and makes a concurrent writer copy it (a use-after-free).
    let size: Int

    init(size: Int) { self.size = size; bytes = [UInt8](repeating: 0, count: size) }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        lock.withLock { bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<Int(offset) + buffer.count])) } }
    }
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws {
        lock.withLock { for i in 0..<buffer.count { bytes[Int(offset) + i] = buffer[i] } }
    }
    func writeZeroes(at offset: UInt64, length: UInt64, fua: Bool, mayTrim: Bool, fast: Bool) throws {
        if fast { throw NBDBackendError(errno: ENOTSUP, "no fast zero here") }
        lock.withLock { for i in 0..<Int(length) { bytes[Int(offset) + i] = 0 } }
    }
    func trim(at offset: UInt64, length: UInt64, fua: Bool) throws {
        try writeZeroes(at: offset, length: length, fua: fua, mayTrim: true, fast: false)
    }
    func flush() throws { lock.withLock { flushes += 1 } }
    func cache(at offset: UInt64, length: UInt64) throws {}
    func pageIsZero(_ p: Int) -> Bool {
        lock.withLock { bytes[p * 4096..<min(size, (p + 1) * 4096)].allSatisfy { $0 == 0 } }
    }
    func zeroStatus(at offset: UInt64, length: UInt64) throws -> (zero: Bool, length: UInt64) {
        let p = Int(offset / 4096)
        let z = pageIsZero(p)
        var end = UInt64(p + 1) * 4096
        while end < offset + length && end < UInt64(size) && pageIsZero(Int(end / 4096)) == z { end += 4096 }
        return (z, min(end, offset + length) - offset)
    }
    func extents(_ context: NBDMetaContext, at offset: UInt64, length: UInt64, limit: Int, into out: inout [NBDExtent]) throws {
        var pos = offset
        while pos < offset + length && out.count < limit {
            let (z, n) = try zeroStatus(at: pos, length: offset + length - pos)
            switch context {
            case .baseAllocation: out.append(NBDExtent(length: n, flags: z ? 3 : 0))
            case .allocationDepth: out.append(NBDExtent(length: n, flags: z ? 0 : 1))
            case .dirtyBitmap: throw NBDBackendError(errno: EINVAL, "no bitmaps")
            }
            pos += n
        }
    }
}

/// Starts a server thread on one end of a socketpair; returns the client's descriptor.
func serveOnSocketpair(_ policy: NBDServerPolicy, log: @escaping @Sendable (String) -> Void = { _ in }) throws -> Int32 {
    var fds: [Int32] = [0, 0]
    XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
    let serverFD = fds[0]
    try Threads.spawn {
        let stream = NBDStream(transport: SocketTransport(fd: serverFD))
        do {
            if case .transmission(let s) = try NBDServerHandshake(stream: stream, policy: policy).run() {
                try NBDTransmission(stream: stream, session: s, log: log).run()
            }
        } catch {
            log("server: \(error)")
        }
        stream.transport.close()
    }
    return fds[1]
}

final class LoopbackTests: XCTestCase {
    func serve(_ policy: NBDServerPolicy, log: @escaping @Sendable (String) -> Void = { _ in }) throws -> Int32 {
        try serveOnSocketpair(policy, log: log)
    }

    func connect(_ policy: NBDServerPolicy, _ config: NBDClientConfig) throws -> NBDClient {
        let fd = try serve(policy)
        let stream = NBDStream(transport: SocketTransport(fd: fd))
        let d = try ClientHandshake(stream: stream, config: config).connect()
        return NBDClient(stream: stream, details: d)
    }

    func policy(_ backend: MemoryBackend, readOnly: Bool = false) -> NBDServerPolicy {
        var flags: NBDTransmissionFlags = [.sendFlush, .sendFUA, .sendCache]
        flags.formUnion(readOnly ? [.readOnly] : [.sendTrim, .sendWriteZeroes, .sendFastZero])
        let e = NBDExport(name: "disk", description: "in memory", backend: backend, size: UInt64(backend.bytes.count),
                          flags: flags, extraContexts: [.allocationDepth])
        return NBDServerPolicy(exports: [e])
    }

    func configs() -> [(String, NBDClientConfig)] {
        var simple = NBDClientConfig(exportName: "disk")
        simple.extendedHeaders = false
        simple.structuredReplies = false
        var structured = NBDClientConfig(exportName: "disk")
        structured.extendedHeaders = false
        var extended = NBDClientConfig(exportName: "disk")
        extended.metaContexts = ["base:allocation", "qemu:allocation-depth"]
        return [("simple", simple), ("structured", structured), ("extended", extended)]
    }

    func testEveryCommandInEveryMode() throws {
        for (name, config) in configs() {
            let backend = MemoryBackend(size: 1 << 20)
            let c = try connect(policy(backend), config)
            XCTAssertEqual(c.mode, name == "simple" ? .simple : name == "structured" ? .structured : .extended, name)
            XCTAssertEqual(c.details.size, 1 << 20)
            let data = (0..<10000).map { UInt8(truncatingIfNeeded: $0 * 31 + 7) }
            try data.withUnsafeBytes { try c.write(at: 5000, from: $0, fua: true) }
            var back = [UInt8](repeating: 0xee, count: 20000)
            try back.withUnsafeMutableBytes { try c.read(at: 0, into: $0) }
            XCTAssertEqual(Array(back[5000..<15000]), data, name)
            XCTAssertTrue(back[0..<5000].allSatisfy { $0 == 0 }, name)
            try c.writeZeroes(at: 6000, length: 1000)
            try c.trim(at: 0, length: 4096)
            try c.flush()
            try c.cache(at: 0, length: 4096)
            try back.withUnsafeMutableBytes { try c.read(at: 0, into: $0) }
            XCTAssertTrue(back[6000..<7000].allSatisfy { $0 == 0 }, name)
            XCTAssertEqual(Array(back[7000..<15000]), Array(data[2000...]), name)
            // Errors come back with the server's errno.
            XCTAssertThrowsError(try c.writeZeroes(at: 0, length: 4096, fast: true), name) {
                XCTAssertEqual(($0 as? NBDError)?.errno, ENOTSUP)
            }
            XCTAssertThrowsError(try back.withUnsafeMutableBytes { try c.read(at: (1 << 20) - 100, into: $0) }, name) {
                XCTAssertEqual(($0 as? NBDError)?.errno, EINVAL)
            }
            if name != "simple" {
                let st = try c.blockStatus(at: 0, length: 1 << 20)
                let base = st[0] ?? []
                XCTAssertEqual(base.reduce(0) { $0 + $1.length }, 1 << 20, name)
                // Page 0 was trimmed, the data starts in page 1, the rest is a hole.
                XCTAssertEqual(base.map(\.flags), [3, 0, 3], name)
                XCTAssertEqual(base.first?.length, 4096, name)
                if name == "extended" { XCTAssertEqual(st[1]?.map(\.flags), [0, 1, 0]) }
                let one = try c.blockStatus(at: 0, length: 1 << 20, reqOne: true)
                XCTAssertEqual(one[0]?.count, 1, name)
            }
            XCTAssertGreaterThan(backend.flushes, 0)
            c.disconnect()
        }
    }

    func testConcurrentCallersShareOneConnection() throws {
        let backend = MemoryBackend(size: 8 << 20)
        let c = try connect(policy(backend), configs()[1].1)
        let threads = 8
        let done = Monitor()
        var finished = 0
        var failures: [String] = []
        for t in 0..<threads {
            try Threads.spawn {
                do {
                    for i in 0..<50 {
                        let off = UInt64((t * 50 + i) * 8192)
                        let block = [UInt8](repeating: UInt8(truncatingIfNeeded: t * 50 + i) | 1, count: 8192)
                        try block.withUnsafeBytes { try c.write(at: off, from: $0) }
                        var got = [UInt8](repeating: 0, count: 8192)
                        try got.withUnsafeMutableBytes { try c.read(at: off, into: $0) }
                        if got != block { done.withLock { failures.append("thread \(t) block \(i)") } }
                    }
                } catch {
                    done.withLock { failures.append("\(error)") }
                }
                done.withLock { finished += 1; done.broadcast() }
            }
        }
        done.withLock { while finished < threads { done.wait() } }
        XCTAssertEqual(failures, [])
        c.disconnect()
    }

    func testListAndInfo() throws {
        let backend = MemoryBackend(size: 65536)
        let fd = try serve(policy(backend, readOnly: true))
        let stream = NBDStream(transport: SocketTransport(fd: fd))
        let hs = ClientHandshake(stream: stream, config: NBDClientConfig())
        XCTAssertNil(try hs.greet())
        try hs.negotiateReplies()
        let list = try hs.listExports()
        XCTAssertEqual(list.map(\.name), ["disk"])
        XCTAssertEqual(list.map(\.description), ["in memory"])
        let d = try hs.infoOrGo(.info, export: "disk")
        XCTAssertEqual(d?.flags.contains(.readOnly), true)
        XCTAssertThrowsError(try hs.infoOrGo(.info, export: "nope")) {
            XCTAssertEqual(($0 as? NBDError)?.kind, .optionRefused(.errUnknown))
        }
        let ctx = try hs.metaContexts(.listMetaContext, export: "disk", queries: [])
        XCTAssertEqual(ctx.map(\.name), ["base:allocation", "qemu:allocation-depth"])
        let q = try hs.metaContexts(.listMetaContext, export: "disk", queries: ["qemu:", "nope:x", "base:allocation"])
        XCTAssertEqual(q.map(\.name), ["base:allocation", "qemu:allocation-depth"])
        hs.abort()
        stream.transport.close()
    }

    /// The handshake and a request, fed a byte at a time, get the same answers as fed all at once.
    /// The read goes out after the write's reply: requests in flight together may run in any order.
    func testHandshakeByteAtATime() throws {
        let backend = MemoryBackend(size: 65536)
        var transcripts: [[UInt8]] = []
        func request(_ r: NBDRequest) -> [UInt8] {
            var req = [UInt8](repeating: 0, count: 28)
            _ = req.withUnsafeMutableBytes { r.encode(into: $0.baseAddress!, mode: .structured) }
            return req
        }
        for chunked in [false, true] {
            let fd = try serve(policy(backend))
            var w = WireWriter()
            w.u32(3)                                     // fixed newstyle + no zeroes
            w.u64(NBDMagic.haveOptions); w.u32(NBDOption.structuredReply.rawValue); w.u32(0)
            var go = WireWriter()
            go.string32("disk"); go.u16(1); go.u16(NBDInfo.name)
            w.u64(NBDMagic.haveOptions); w.u32(NBDOption.go.rawValue); w.u32(UInt32(go.bytes.count)); w.raw(go.bytes)
            w.raw(request(NBDRequest(command: .write, cookie: 41, offset: 100, length: 4)))
            w.raw([1, 2, 3, 4])
            let second = request(NBDRequest(command: .read, cookie: 42, offset: 98, length: 8))
                + request(NBDRequest(command: .disconnect, cookie: 43, offset: 0, length: 0))
            func send(_ bytes: [UInt8]) {
                if chunked {
                    for b in bytes { var x = b; XCTAssertEqual(Glibc.write(fd, &x, 1), 1) }
                } else {
                    _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                }
            }
            var writeReply = WireWriter()
            writeReply.u32(NBDMagic.simpleReply); writeReply.u32(0); writeReply.u64(41)
            var got: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            send(w.bytes)
            var sentSecond = false
            while true {
                if !sentSecond && got.count >= 16 && Array(got.suffix(16)) == writeReply.bytes {
                    send(second)
                    sentSecond = true
                }
                let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 4096, 0) }
                if n <= 0 { break }
                got += buf[0..<n]
            }
            close(fd)
            XCTAssertTrue(sentSecond, "no reply to the write")
            transcripts.append(got)
        }
        XCTAssertEqual(transcripts[0], transcripts[1])
        let t = transcripts[0]
        XCTAssertTrue(t.starts(with: Array("NBDMAGIC".utf8)))
        // The read's OFFSET_DATA chunk carries the written bytes.
        XCTAssertTrue(t.suffix(8) == [0, 0, 1, 2, 3, 4, 0, 0], "\(t.suffix(16))")
    }
}
