// Edge cases of request validation, as a table: each row is a request and what qemu-nbd does with it.
import XCTest
@testable import NBD

final class RequestCheckTests: XCTestCase {
    struct Row {
        var name: String
        var command: NBDCommand
        var flags: NBDCommandFlags = []
        var offset: UInt64 = 0
        var length: UInt64 = 0
        var mode: NBDMode = .structured
        var readOnly = false
        var payload: RequestCheck.Payload
        var verdict: RequestCheck.Verdict
    }

    let size: UInt64 = 1 << 20

    func testTable() {
        let rows: [Row] = [
            Row(name: "read ok", command: .read, length: 4096, payload: .none, verdict: .proceed),
            Row(name: "read zero length at end", command: .read, offset: size, payload: .none, verdict: .proceed),
            Row(name: "read past end", command: .read, offset: size, length: 1, payload: .none,
                verdict: .refuse(22, "operation past EOF; From: 1048576, Len: 1, Size: 1048576")),
            Row(name: "read offset overflow", command: .read, offset: UInt64.max, length: 2, payload: .none,
                verdict: .refuse(22, "operation past EOF; From: 18446744073709551615, Len: 2, Size: 1048576")),
            Row(name: "read too big", command: .read, length: 33554433, payload: .none,
                verdict: .refuse(22, "len (33554433 ) is larger than max len (33554432)")),
            Row(name: "read DF structured", command: .read, flags: .dontFragment, length: 1, payload: .none, verdict: .proceed),
            Row(name: "read DF simple", command: .read, flags: .dontFragment, length: 1, mode: .simple, payload: .none,
                verdict: .refuse(22, "unsupported flags for command read (got 0x4)")),
            Row(name: "read FUA", command: .read, flags: .fua, length: 1, payload: .none, verdict: .proceed),
            Row(name: "write ok", command: .write, length: 512, payload: .read(512), verdict: .proceed),
            Row(name: "write read-only drops payload", command: .write, length: 512, readOnly: true, payload: .drop(512),
                verdict: .refuse(22, "Export is read-only")),
            Row(name: "write past end drops payload", command: .write, offset: size - 100, length: 512, payload: .drop(512),
                verdict: .refuse(22, "operation past EOF; From: 1048476, Len: 512, Size: 1048576")),
            Row(name: "write too big is unreadable", command: .write, length: 64 << 20, payload: .unreadable,
                verdict: .refuse(22, "len (67108864 ) is larger than max len (33554432)")),
            Row(name: "write bad flag", command: .write, flags: .reqOne, length: 1, payload: .drop(1),
                verdict: .refuse(22, "unsupported flags for command write (got 0x8)")),
            Row(name: "extended write", command: .write, flags: .payloadLength, length: 8, mode: .extended, payload: .read(8),
                verdict: .proceed),
            Row(name: "extended trim with payload", command: .trim, flags: .payloadLength, length: 16, mode: .extended,
                payload: .drop(16), verdict: .refuse(22, "unsupported flags for command trim (got 0x20)")),
            Row(name: "extended 64-bit zero", command: .writeZeroes, offset: 0, length: 1 << 40, mode: .extended, payload: .none,
                verdict: .refuse(22, "operation past EOF; From: 0, Len: 1099511627776, Size: 1048576")),
            Row(name: "trim read-only", command: .trim, length: 1, readOnly: true, payload: .none,
                verdict: .refuse(22, "Export is read-only")),
            Row(name: "zero flags", command: .writeZeroes, flags: [.noHole, .fastZero, .fua], length: 1, payload: .none,
                verdict: .proceed),
            Row(name: "zero DF", command: .writeZeroes, flags: .dontFragment, length: 1, payload: .none,
                verdict: .refuse(22, "unsupported flags for command write zeroes (got 0x4)")),
            Row(name: "cache too big", command: .cache, length: 33554433, payload: .none,
                verdict: .refuse(22, "len (33554433 ) is larger than max len (33554432)")),
            Row(name: "block status req one", command: .blockStatus, flags: .reqOne, length: 4096, payload: .none,
                verdict: .proceed),
            Row(name: "block status whole disk", command: .blockStatus, length: size, payload: .none, verdict: .proceed),
            Row(name: "flush", command: .flush, payload: .none, verdict: .proceed),
            Row(name: "disconnect", command: .disconnect, flags: .reqOne, offset: UInt64.max, length: 9, payload: .none,
                verdict: .disconnect),
            Row(name: "unknown command checked for bounds only", command: NBDCommand(rawValue: 99), length: 1, payload: .none,
                verdict: .proceed),
        ]
        for row in rows {
            let r = NBDRequest(flags: row.flags, command: row.command, cookie: 7, offset: row.offset, length: row.length)
            let c = RequestCheck.check(r, mode: row.mode, exportSize: size, readOnly: row.readOnly)
            XCTAssertEqual(c.payload, row.payload, row.name)
            XCTAssertEqual(c.verdict, row.verdict, row.name)
        }
    }

    func testHeaderRoundTrip() {
        for mode in [NBDMode.simple, .structured, .extended] {
            var buf = [UInt8](repeating: 0, count: 32)
            let r = NBDRequest(flags: [.fua, .noHole], command: .writeZeroes, cookie: 0x0102_0304_0506_0708,
                               offset: 0xdead_beef_0000, length: mode == .extended ? 1 << 40 : 123_456)
            let n = buf.withUnsafeMutableBytes { r.encode(into: $0.baseAddress!, mode: mode) }
            XCTAssertEqual(n, mode.requestHeaderSize)
            let back = buf.withUnsafeBytes { NBDRequest.parse($0, mode: mode) }
            XCTAssertEqual(try back.get(), r)
            // Truncated and corrupted headers are refused, not trapped on.
            let short = buf.withUnsafeBytes { NBDRequest.parse(UnsafeRawBufferPointer(rebasing: $0[0..<(n - 1)]), mode: mode) }
            XCTAssertEqual(short, .failure(.short))
            buf[0] ^= 0xff
            if case .success = buf.withUnsafeBytes({ NBDRequest.parse($0, mode: mode) }) { XCTFail("bad magic accepted") }
        }
    }

    func testErrnoMapping() {
        XCTAssertEqual(NBDErrno.from(errno: EROFS), NBDErrno.eperm)
        XCTAssertEqual(NBDErrno.from(errno: EDQUOT), NBDErrno.enospc)
        XCTAssertEqual(NBDErrno.from(errno: EFBIG), NBDErrno.enospc)
        XCTAssertEqual(NBDErrno.from(errno: ENOTSUP), NBDErrno.enotsup)
        XCTAssertEqual(NBDErrno.from(errno: EBADF), NBDErrno.einval)
        XCTAssertEqual(NBDErrno.toErrno(12345), EINVAL)
    }
}
