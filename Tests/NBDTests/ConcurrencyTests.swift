// Requests on one connection run concurrently, as qemu-nbd runs them: up to 16 at a time, never
// more; NBD_CMD_DISC still waits for the requests in flight.
//
// No test here measures time. The backend observes overlap directly: its reads wait at a barrier
// until enough of them are inside the backend together. A server that runs one request at a time
// never fills the barrier; the wait then gives up after `patience` seconds (so the test fails
// instead of hanging) and the test sees how many were ever inside at once.
import Glibc
import XCTest
@testable import NBD

/// A MemoryBackend whose reads wait until `barrier` of them are in the backend at once.
final class BarrierBackend: NBDBackend, @unchecked Sendable {
    let memory: MemoryBackend
    let barrier: Int
    let patience = 10.0
    private let lock = Monitor()
    private var inside = 0
    private(set) var maxInside = 0
    private(set) var started = 0
    private var open = false
    private(set) var gaveUp = false

    init(size: Int, barrier: Int) {
        memory = MemoryBackend(size: size)
        self.barrier = barrier
    }

    var observed: (maxInside: Int, gaveUp: Bool) { lock.withLock { (maxInside, gaveUp) } }

    /// Waits until `n` reads have entered the backend (they stay there until the barrier opens).
    func waitForStarted(_ n: Int) -> Bool {
        let deadline = Deadline(secondsFromNow: patience)
        return lock.withLock {
            while started < n {
                if !lock.wait(until: deadline) && started < n { return false }
            }
            return true
        }
    }

    /// Closes the barrier again (after a warm-up with it open): the next reads wait for
    /// `barrier` of them to be inside.
    func arm() {
        lock.withLock {
            open = false
            maxInside = inside
            started = 0
        }
    }

    /// Opens the barrier from outside (for the disconnect test).
    func release() {
        lock.withLock {
            open = true
            lock.broadcast()
        }
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let deadline = Deadline(secondsFromNow: patience)
        lock.withLock {
            inside += 1
            started += 1
            maxInside = max(maxInside, inside)
            if inside >= barrier { open = true }
            lock.broadcast()
            while !open {
                if !lock.wait(until: deadline) && !open {
                    gaveUp = true
                    open = true
                    lock.broadcast()
                }
            }
        }
        try memory.read(at: offset, into: buffer)
        lock.withLock { inside -= 1 }
    }
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws {
        try memory.write(at: offset, from: buffer, fua: fua)
    }
    func writeZeroes(at offset: UInt64, length: UInt64, fua: Bool, mayTrim: Bool, fast: Bool) throws {
        try memory.writeZeroes(at: offset, length: length, fua: fua, mayTrim: mayTrim, fast: fast)
    }
    func trim(at offset: UInt64, length: UInt64, fua: Bool) throws { try memory.trim(at: offset, length: length, fua: fua) }
    func flush() throws { try memory.flush() }
    func cache(at offset: UInt64, length: UInt64) throws {}
    func zeroStatus(at offset: UInt64, length: UInt64) throws -> (zero: Bool, length: UInt64) {
        // Data everywhere, so that structured reads go through read().
        (false, length)
    }
    func extents(_ context: NBDMetaContext, at offset: UInt64, length: UInt64, limit: Int, into out: inout [NBDExtent]) throws {
        try memory.extents(context, at: offset, length: length, limit: limit, into: &out)
    }
}

final class ConcurrencyTests: XCTestCase {
    func policy(_ backend: BarrierBackend) -> NBDServerPolicy {
        let e = NBDExport(name: "disk", description: nil, backend: backend, size: UInt64(backend.memory.bytes.count),
                          flags: [.sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes])
        return NBDServerPolicy(exports: [e])
    }

    func connect(_ backend: BarrierBackend) throws -> NBDClient {
        let fd = try serveOnSocketpair(policy(backend))
        let stream = NBDStream(transport: SocketTransport(fd: fd))
        let d = try ClientHandshake(stream: stream, config: NBDClientConfig(exportName: "disk")).connect()
        return NBDClient(stream: stream, details: d)
    }

    /// 20 reads on one connection: 16 are inside the backend together (the barrier opens only
    /// then), and never more than 16.
    func testSixteenRequestsRunAtOnce() throws {
        let backend = BarrierBackend(size: 1 << 20, barrier: 16)
        try (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) }.withUnsafeBytes {
            for i in 0..<20 { try backend.memory.write(at: UInt64(i * 4096), from: $0, fua: false) }
        }
        let c = try connect(backend)
        let done = Monitor()
        var finished = 0
        var failures: [String] = []
        for i in 0..<20 {
            try Threads.spawn {
                var got = [UInt8](repeating: 0, count: 4096)
                do {
                    try got.withUnsafeMutableBytes { try c.read(at: UInt64(i * 4096), into: $0) }
                    if got != (0..<4096).map({ UInt8(truncatingIfNeeded: $0 * 7 + 1) }) {
                        done.withLock { failures.append("read \(i): wrong data") }
                    }
                } catch {
                    done.withLock { failures.append("read \(i): \(error)") }
                }
                done.withLock { finished += 1; done.broadcast() }
            }
        }
        done.withLock { while finished < 20 { done.wait() } }
        XCTAssertEqual(failures, [])
        let seen = backend.observed
        XCTAssertFalse(seen.gaveUp, "requests ran one after another (at most \(seen.maxInside) at once)")
        XCTAssertEqual(seen.maxInside, 16, "requests in the backend at once")
        c.disconnect()
    }

    /// A connection whose requests have been quick runs them on its reader thread; when one
    /// then blocks, another thread takes over the reading, so the requests behind it still reach
    /// the backend (four reads must be inside together before any returns).
    func testReaderStuckInAQuickConnectionIsReplaced() throws {
        let backend = BarrierBackend(size: 1 << 20, barrier: 4)
        backend.release()
        let c = try connect(backend)
        var got = [UInt8](repeating: 0, count: 512)
        for i in 0..<300 {
            try got.withUnsafeMutableBytes { try c.read(at: UInt64(i % 64) * 4096, into: $0) }
        }
        backend.arm()
        let done = Monitor()
        var finished = 0
        for i in 0..<4 {
            try Threads.spawn {
                var buf = [UInt8](repeating: 0, count: 512)
                _ = try? buf.withUnsafeMutableBytes { try c.read(at: UInt64(i) * 4096, into: $0) }
                done.withLock { finished += 1; done.broadcast() }
            }
        }
        done.withLock { while finished < 4 { done.wait() } }
        let seen = backend.observed
        XCTAssertFalse(seen.gaveUp, "the reads behind a stuck one did not reach the backend (at most \(seen.maxInside) at once)")
        c.disconnect()
    }

    /// A write and a flush are answered while a read is still stuck in the backend.
    func testQuickRequestsOvertakeASlowOne() throws {
        let backend = BarrierBackend(size: 1 << 20, barrier: 2)
        let c = try connect(backend)
        let done = Monitor()
        var readDone = false
        try Threads.spawn {
            var got = [UInt8](repeating: 0, count: 512)
            _ = try? got.withUnsafeMutableBytes { try c.read(at: 0, into: $0) }
            done.withLock { readDone = true; done.broadcast() }
        }
        XCTAssertTrue(backend.waitForStarted(1))
        try [UInt8](repeating: 9, count: 512).withUnsafeBytes { try c.write(at: 4096, from: $0) }
        try c.flush()
        XCTAssertFalse(done.withLock { readDone }, "the read finished before the write overtook it")
        backend.release()
        done.withLock { while !readDone { done.wait() } }
        XCTAssertFalse(backend.observed.gaveUp)
        c.disconnect()
    }

    /// NBD_CMD_DISC right behind a read that is stuck in the backend: the read's reply still comes
    /// before the server hangs up.
    func testDisconnectWaitsForRequestsInFlight() throws {
        let backend = BarrierBackend(size: 1 << 20, barrier: 99)
        let fd = try serveOnSocketpair(policy(backend))
        let stream = NBDStream(transport: SocketTransport(fd: fd))
        var config = NBDClientConfig(exportName: "disk")
        config.structuredReplies = false
        config.extendedHeaders = false
        _ = try ClientHandshake(stream: stream, config: config).connect()
        var bytes = [UInt8](repeating: 0, count: 56)
        bytes.withUnsafeMutableBytes { raw in
            _ = NBDRequest(command: .read, cookie: 7, offset: 0, length: 512).encode(into: raw.baseAddress!, mode: .simple)
            _ = NBDRequest(command: .disconnect, cookie: 8, offset: 0, length: 0).encode(into: raw.baseAddress! + 28, mode: .simple)
        }
        XCTAssertEqual(bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, 56) }, 56)
        XCTAssertTrue(backend.waitForStarted(1))
        // The server has the DISC by now or soon; it must not hang up before the read replies.
        usleep(50_000)
        backend.release()
        var got: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 4096, 0) }
            if n <= 0 { break }
            got += buf[0..<n]
        }
        close(fd)
        var reply = WireWriter()
        reply.u32(NBDMagic.simpleReply); reply.u32(0); reply.u64(7)
        XCTAssertEqual(got.count, 16 + 512)
        XCTAssertEqual(Array(got.prefix(16)), reply.bytes)
        XCTAssertFalse(backend.observed.gaveUp)
    }
}
