// Bounded fuzzing of the parsers that face the network: the server's handshake and transmission
// loop (fed mutated and random client bytes in random-sized pieces), request validation, and the
// client's reply reader (fed mutated server replies). Runs for NBD_FUZZ_SECONDS (default 3) per
// target, from a seed printed at the start (NBD_FUZZ_SEED reproduces a run).
//
// What must hold: nothing traps, every run ends, every refusal of the server is a well-formed
// option reply or reply header, and the client never writes outside the caller's buffer.
import Foundation
import XCTest
@testable import NBD

/// A transport over fixed input bytes, delivered in pseudo-random piece sizes; output is parsed later.
final class MemoryTransport: NBDTransport {
    var input: [UInt8]
    var position = 0
    var output: [UInt8] = []
    var rng: SplitMix
    var deadline: Deadline?
    var fd: Int32 { -1 }

    init(_ input: [UInt8], seed: UInt64) {
        self.input = input
        rng = SplitMix(seed)
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if position >= input.count { return 0 }
        let n = min(buffer.count, input.count - position, Int(rng.next() % 97) + 1)
        for i in 0..<n { buffer[i] = input[position + i] }
        position += n
        return n
    }

    func send(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ c: UnsafeRawBufferPointer) throws {
        // Keep the output bounded: a run that answers forever must still end.
        if output.count > 4 << 20 { throw NBDError(.io, "output limit") }
        output += a
        output += b
        output += c
    }

    func shutdown() {}
    func close() {}
}

struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

final class FuzzTests: XCTestCase {
    var seconds: Double { Double(ProcessInfo.processInfo.environment["NBD_FUZZ_SECONDS"] ?? "") ?? 3 }
    var seed: UInt64 {
        UInt64(ProcessInfo.processInfo.environment["NBD_FUZZ_SEED"] ?? "") ?? UInt64(Date().timeIntervalSince1970 * 1000)
    }

    /// A plausible client: flags, some options (valid, broken or unknown), GO, then requests.
    func clientBytes(_ r: inout SplitMix) -> [UInt8] {
        var w = WireWriter()
        w.u32(r.below(8) == 0 ? UInt32(truncatingIfNeeded: r.next()) : UInt32(r.below(4)))
        let options = r.below(8)
        for _ in 0..<options {
            var payload = WireWriter()
            let code = r.below(6) == 0 ? UInt32(truncatingIfNeeded: r.next()) : UInt32(r.below(13))
            switch code {
            case 6, 7:
                payload.string32(r.below(4) == 0 ? String(repeating: "x", count: r.below(5000)) : "disk")
                let n = r.below(4)
                payload.u16(UInt16(n))
                for _ in 0..<n { payload.u16(UInt16(r.below(5))) }
            case 9, 10:
                payload.string32("disk")
                let n = r.below(4)
                payload.u32(UInt32(n))
                for _ in 0..<n {
                    payload.string32(["base:allocation", "qemu:", "base:", "qemu:allocation-depth", "qemu:dirty-bitmap:",
                                      "nope"][r.below(6)])
                }
            default:
                payload.raw(r.bytes(r.below(3) == 0 ? r.below(64) : 0))
            }
            var body = payload.bytes
            // Mutate: flip bytes, truncate, or lie about the length.
            if r.below(4) == 0, !body.isEmpty { body[r.below(body.count)] ^= UInt8(truncatingIfNeeded: r.next()) }
            var length = UInt32(body.count)
            if r.below(8) == 0 { length = UInt32(truncatingIfNeeded: r.next()) % (64 << 20) }
            if r.below(10) == 0 { body = Array(body.prefix(r.below(body.count + 1))) }
            w.u64(r.below(30) == 0 ? r.next() : NBDMagic.haveOptions)
            w.u32(code)
            w.u32(length)
            w.raw(body)
        }
        var go = WireWriter()
        go.string32("disk")
        go.u16(0)
        w.u64(NBDMagic.haveOptions); w.u32(7); w.u32(UInt32(go.bytes.count)); w.raw(go.bytes)
        let extended = r.below(3) == 0
        for _ in 0..<r.below(12) {
            var h = [UInt8](repeating: 0, count: 32)
            let len = r.below(3) == 0 ? r.next() % (1 << 26) : UInt64(r.below(70000))
            let req = NBDRequest(flags: NBDCommandFlags(rawValue: UInt16(r.below(64))), command: NBDCommand(rawValue: UInt16(r.below(10))),
                                 cookie: r.next(), offset: r.below(4) == 0 ? r.next() : UInt64(r.below(1 << 20)), length: len)
            let n = h.withUnsafeMutableBytes { req.encode(into: $0.baseAddress!, mode: extended ? .extended : .structured) }
            if r.below(20) == 0 { h[r.below(n)] ^= 0xff }
            w.raw(Array(h[0..<n]))
            if req.command == .write { w.raw(r.bytes(min(Int(len), r.below(5000)))) }
        }
        if r.below(3) == 0 { w.raw(r.bytes(r.below(100))) }
        return w.bytes
    }

    /// Checks that the server's output is a sequence of well-formed option replies after the greeting.
    func checkOptionReplies(_ out: [UInt8]) {
        guard out.count >= 18 else { return }
        var i = 18
        while i + 20 <= out.count {
            let magic = out.withUnsafeBytes { loadBE64($0, i) }
            if magic != NBDMagic.optionReply { return }   // transmission (or EXPORT_NAME reply) starts
            let len = Int(out.withUnsafeBytes { loadBE32($0, i + 16) })
            XCTAssertLessThanOrEqual(len, NBDLimits.maxString + 8, "oversized option reply")
            i += 20 + len
        }
    }

    func testServerHandshakeAndRequests() throws {
        let s = seed
        print("fuzz seed (server): \(s)")
        var r = SplitMix(s)
        let backend = MemoryBackend(size: 1 << 20)
        let export = NBDExport(name: "disk", description: "d", backend: backend, size: 1 << 20,
                               flags: [.sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .sendCache], extraContexts: [.allocationDepth])
        let policy = NBDServerPolicy(exports: [export])
        let end = Date().addingTimeInterval(seconds)
        var runs = 0
        while Date() < end {
            let input = r.below(10) == 0 ? r.bytes(r.below(400)) : clientBytes(&r)
            let t = MemoryTransport(input, seed: r.next())
            let stream = NBDStream(transport: t)
            do {
                if case .transmission(let session) = try NBDServerHandshake(stream: stream, policy: policy).run() {
                    try NBDTransmission(stream: stream, session: session, log: { _ in }).run()
                }
            } catch {}
            try? stream.flush()
            checkOptionReplies(t.output)
            runs += 1
        }
        print("fuzz: \(runs) server runs")
        XCTAssertGreaterThan(runs, 10)
    }

    func testRequestValidationInvariants() {
        let s = seed
        print("fuzz seed (requests): \(s)")
        var r = SplitMix(s)
        let end = Date().addingTimeInterval(min(seconds, 1))
        var count = 0
        while Date() < end {
            var bytes = r.bytes(32)
            let mode: NBDMode = [.simple, .structured, .extended][r.below(3)]
            if r.below(2) == 0 {
                bytes.withUnsafeMutableBytes { storeBE32($0.baseAddress!, 0, mode == .extended ? NBDMagic.extendedRequest : NBDMagic.request) }
                bytes[6] = 0
                bytes[7] = UInt8(r.below(10))
            }
            let size = UInt64(r.below(1 << 30))
            guard case .success(let req) = bytes.withUnsafeBytes({ NBDRequest.parse($0, mode: mode) }) else { continue }
            let c = RequestCheck.check(req, mode: mode, exportSize: size, readOnly: r.below(2) == 0)
            if c.verdict == .proceed {
                XCTAssertLessThanOrEqual(req.offset, size)
                XCTAssertLessThanOrEqual(c.effectLength, size - req.offset)
            }
            if case .read(let n) = c.payload { XCTAssertLessThanOrEqual(n, NBDLimits.maxBuffer) }
            count += 1
        }
        XCTAssertGreaterThan(count, 100)
    }

    /// The client reads mutated replies into a guarded buffer: no write outside it, no trap.
    func testClientReplyReader() throws {
        let s = seed
        print("fuzz seed (client): \(s)")
        var r = SplitMix(s)
        let end = Date().addingTimeInterval(seconds)
        var runs = 0
        while Date() < end {
            let mode: NBDMode = [.simple, .structured, .extended][r.below(3)]
            var w = WireWriter()
            for _ in 0..<(1 + r.below(4)) {
                var h = [UInt8](repeating: 0, count: 32)
                let type: NBDReplyType = [.none, .offsetData, .offsetHole, .blockStatus, .blockStatusExt, .error,
                                          NBDReplyType(rawValue: UInt16(r.below(0x9000)))][r.below(7)]
                let payload = r.bytes(r.below(200))
                let n = h.withUnsafeMutableBytes { raw -> Int in
                    if mode == .simple || r.below(5) == 0 {
                        return NBDReplyEncoder.simple(into: raw.baseAddress!, error: UInt32(r.below(3)), cookie: 1)
                    }
                    return NBDReplyEncoder.chunk(into: raw.baseAddress!, mode: mode, flags: UInt16(r.below(2)), type: type,
                                                 cookie: r.below(8) == 0 ? r.next() : 1, offset: 0,
                                                 payloadLength: r.below(6) == 0 ? r.next() % (1 << 30) : UInt64(payload.count))
                }
                if r.below(15) == 0 { h[r.below(n)] ^= 0xff }
                w.raw(Array(h[0..<n]))
                w.raw(payload)
            }
            let t = MemoryTransport(w.bytes, seed: r.next())
            let details = NBDExportDetails(name: "", description: nil, size: 1 << 20, flags: [.sendFlush], contexts: [(0, "base:allocation")],
                                           mode: mode)
            let client = NBDClient(stream: NBDStream(transport: t), details: details)
            // A guard zone on both sides of the caller's buffer.
            var buffer = [UInt8](repeating: 0xA5, count: 64 + 512 + 64)
            let cmd = r.below(2)
            buffer.withUnsafeMutableBytes { raw in
                let inner = UnsafeMutableRawBufferPointer(rebasing: raw[64..<(64 + 512)])
                if cmd == 0 {
                    _ = try? client.read(at: 4096, into: inner)
                } else {
                    _ = try? client.blockStatus(at: 0, length: 4096)
                }
            }
            XCTAssertTrue(buffer[0..<64].allSatisfy { $0 == 0xA5 } && buffer[(64 + 512)...].allSatisfy { $0 == 0xA5 },
                          "client wrote outside the caller's buffer (seed \(s))")
            runs += 1
        }
        print("fuzz: \(runs) client runs")
        XCTAssertGreaterThan(runs, 10)
    }
}
