import Foundation
import XCTest
@testable import X86

/// PCMPESTRI/M and PCMPISTRI/M against the host CPU itself: guest/pcmpstr-host.c, compiled with the
/// host's C compiler at test time, runs the real instructions on 400 random operand pairs (edge
/// bytes, zeros for implicit lengths, substrings) with every imm8 and prints index, mask and
/// flags; our implementation must agree on every line. Skips without a C compiler or SSE4.2.
final class StringCompareHostTests: XCTestCase {
    func testAgainstHostCPU() throws {
        guard let cc = GuestHarness.which("cc") ?? GuestHarness.which("gcc") else { throw XCTSkip("no C compiler") }
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        try XCTSkipUnless(cpuinfo.contains(" sse4_2"), "the host CPU lacks SSE4.2")
        let dir = GuestHarness.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let exe = dir.appendingPathComponent("pcmpstr").path
        let (st, out) = try GuestHarness.run(cc, ["-O1", "-msse4.2", "-o", exe, GuestHarness.guestDir.appendingPathComponent("pcmpstr-host.c").path])
        try XCTSkipUnless(st == 0, "cannot compile the host reference: \(out)")
        // Through a file: the output (~9 MB) would fill a pipe that `run` only drains at the end.
        let outPath = dir.appendingPathComponent("host.txt").path
        let (rst, msg) = try GuestHarness.run("/bin/sh", ["-c", "'\(exe)' > '\(outPath)'"])
        XCTAssertEqual(rst, 0, msg)
        let text = try String(contentsOfFile: outPath, encoding: .utf8)
        var checked = 0, failures = 0
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count == 15 else { continue }
            let h = { (k: Int) in UInt64(f[k], radix: 16)! }
            let a = V128(h(0), h(1)), b = V128(h(2), h(3))
            let la = Int(f[4])!, lb = Int(f[5])!, imm = UInt8(f[6])!
            let n = imm & 1 != 0 ? 8 : 16
            let el = CPUCore.explicitLength(UInt64(bitPattern: Int64(la)), wide: false, n: n)
            let elb = CPUCore.explicitLength(UInt64(bitPattern: Int64(lb)), wide: false, n: n)
            let (re, fe) = CPUCore.stringCompareFlags(a, b, la: el, lb: elb, imm: imm)
            let (ri, fi) = CPUCore.stringCompareFlags(a, b, la: CPUCore.implicitLength(a, n: n), lb: CPUCore.implicitLength(b, n: n), imm: imm)
            func packed(_ fl: UInt64) -> Int {
                (fl & RFlag.cf != 0 ? 1 : 0) | (fl & RFlag.zf != 0 ? 2 : 0) | (fl & RFlag.sf != 0 ? 4 : 0) | (fl & RFlag.of != 0 ? 8 : 0)
            }
            let ours = [String(CPUCore.stringCompareIndex(re, imm: imm)), String(CPUCore.stringCompareIndex(ri, imm: imm)),
                        hex(CPUCore.stringCompareMask(re, imm: imm)[0]), hex(CPUCore.stringCompareMask(re, imm: imm)[1]),
                        hex(CPUCore.stringCompareMask(ri, imm: imm)[0]), hex(CPUCore.stringCompareMask(ri, imm: imm)[1]),
                        String(packed(fe)), String(packed(fi))]
            let host = f[7...14].map(String.init)
            if ours != host {
                failures += 1
                if failures <= 10 { XCTFail("\(line)\n  ours: \(ours.joined(separator: " "))") }
            }
            checked += 1
        }
        XCTAssertEqual(checked, 400 * 128)
        XCTAssertEqual(failures, 0)
    }

    private func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
