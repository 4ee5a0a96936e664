import Foundation
import XCTest
@testable import X86

/// x87 precision control (CW.PC, bits 8-9: 00 single, 10 double, 11 extended): FADD/FSUB/FMUL/FDIV
/// (all forms) and FSQRT round the significand to 24, 53 or 64 bits in the mode RC selects, keeping
/// the extended exponent range, with PE, UE, OE and C1 from that rounding (SDM vol. 1 8.1.5.2).
/// A table of operands (ties at 24 and 53 bits, values just below a power of two, overflow past the
/// largest 24-bit value, tiny results whose grid is fixed at 2^(-16382-p+1)) in each precision and
/// rounding mode, and random operands, against the host CPU (C with inline asm); the table also
/// against QEMU 7.2's TCG (softfloat's floatx80 rounding precision) without C1 and DE.
final class X87PrecisionGuestTests: XCTestCase {
    typealias Case = X87RoundingGuestTests.Case

    static func cw(pc: UInt16, rc: UInt16) -> UInt16 { 0x7F | pc << 8 | rc << 10 }
    static let precisions: [UInt16] = [0, 2, 3]

    static var cases: [Case] {
        var c: [Case] = []
        func add(_ ins: String, _ a: Float80, _ b: Float80 = 0, m: (UInt64, UInt64) = (0, 0), pcs: [UInt16] = precisions) {
            for pc in pcs {
                for rc: UInt16 in 0...3 { c.append(Case(ins: ins, cw: cw(pc: pc, rc: rc), a: a, b: b, m: m, hostOnly: nil)) }
            }
        }
        let p24: Float80 = 0x1p-24, p53: Float80 = 0x1p-53, p60: Float80 = 0x1p-60
        let third: Float80 = 1 / 3
        // Quotients, sums and products that round in every precision, of both signs.
        add("fdiv st0, st1", 1, 3, pcs: [0, 1, 2, 3])      // PC = 01 (reserved) rounds as 11
        add("fdiv st0, st1", 2, 3)
        add("fdiv st0, st1", -1, 3)
        add("fdiv st0, st1", 1, 10)
        add("fdivr st0, st1", 3, -2)
        // Ties: exactly halfway at 24 bits (to even: down, then up), above halfway, at 53 bits.
        add("fadd st0, st1", 1, p24)
        add("fadd st0, st1", 1, 3 * p24)
        add("fadd st0, st1", 1, p24 + p60)
        add("fadd st0, st1", -1, -p24)
        add("fadd st0, st1", 1, p53)
        add("fadd st0, st1", 1, 3 * p53)
        add("fsub st0, st1", 1, p53 - 0x1p-63)
        // Just below a power of two: the grid below is twice as fine.
        add("fsub st0, st1", 1, p60)
        add("fmul st0, st1", third, 3)
        add("fsub st0, st1", -2, 0x1p-62)
        // Products and square roots.
        add("fmul st0, st1", 1 + 0x1p-23, 1 + 0x1p-23)
        add("fmul st0, st1", 1 + p53 * 2, 1 + p53 * 2)
        add("fmul st0, st1", 0.1, 0.1)
        add("fmul st0, st1", 3, 2)
        add("fsqrt", 2)
        add("fsqrt", 3)
        add("fsqrt", 1 + 0x1p-30)
        add("fsqrt", 16)
        // The extended exponent range stays: no overflow at the single/double limits; overflow above
        // the largest value of the precision (max80 rounds up past it at 24 and 53 bits).
        add("fmul st0, st1", 0x1p200, 0x1p900)
        add("fmul st0, st1", Float80.greatestFiniteMagnitude, 1)
        add("fmul st0, st1", -Float80.greatestFiniteMagnitude, 1)
        add("fmul st0, st1", Float80.greatestFiniteMagnitude, 2)
        add("fadd st0, st1", Float80(sign: .plus, exponent: 16383, significand: 2 - 0x1p-23), 0x1p16340)
        // Tiny results: the grid is 2^(-16382-p+1), so fewer bits survive; UE with PE.
        add("fmul st0, st1", Float80.leastNormalMagnitude, third)
        add("fmul st0, st1", Float80.leastNormalMagnitude, -0.75)
        add("fdiv st0, st1", Float80.leastNormalMagnitude, 3)
        add("fmul st0, st1", Float80.leastNormalMagnitude * 0x1p-30, 1 + p24)
        add("fadd st0, st1", Float80.leastNonzeroMagnitude * 3, Float80.leastNonzeroMagnitude * 0x1p40)
        add("fmul st0, st1", Float80.leastNormalMagnitude * (1 - p24 / 2), 1)
        // Memory and integer operands.
        add("fadd qword [rdx]", 1, m: (0x3FB9_9999_9999_999A, 0))   // + 0.1
        add("fmul dword [rdx]", 3, m: (0x3DCC_CCCD, 0))             // * 0.1f
        add("fiadd dword [rdx]", third, m: (3, 0))
        add("fidivr word [rdx]", 3, m: (1, 0))
        add("faddp st1, st0", third, 0.1)
        // Unmasked PE: the rounded result is still written, with ES and B.
        for (a, b) in [(1, 3), (Float80.leastNormalMagnitude, 3)] as [(Float80, Float80)] {
            for pc: UInt16 in [0, 2] {
                for rc: UInt16 in 0...3 {
                    c.append(Case(ins: "fdiv st0, st1", cw: cw(pc: pc, rc: rc) & ~0x20, a: a, b: b, m: (0, 0), hostOnly: nil))
                }
            }
        }
        // Exact results and operations precision control does not touch (FLD, FST, FRNDINT).
        add("fadd st0, st1", 0.5, 0.25)
        add("fld st1", 1, third)
        add("fst dword [rdx]", third)
        add("frndint", 2.5)
        return c
    }

    /// The cases in groups that fit one 64 KiB guest image.
    static func chunked(_ cases: [Case]) -> [[Case]] {
        stride(from: 0, to: cases.count, by: 200).map { Array(cases[$0..<min($0 + 200, cases.count)]) }
    }

    func testTableAgainstHostCPU() throws {
        for part in Self.chunked(Self.cases) { try X87RoundingGuestTests.checkHost(part) }
    }

    /// Pseudo-random operands (a fixed seed; X86_TEST_SEED picks another) in single and double
    /// precision and every rounding mode, against the host CPU.
    func testRandomAgainstHostCPU() throws {
        var seed: UInt64 = ProcessInfo.processInfo.environment["X86_TEST_SEED"].flatMap { UInt64($0) } ?? 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return seed >> 11 | (seed << 53)
        }
        func ext() -> Float80 {
            let e: UInt16
            switch next() % 6 {
            case 0: e = UInt16(next() % 80)                   // tiny
            case 1: e = UInt16(32_700 + next() % 67)          // huge
            default: e = UInt16(16_353 + next() % 60)
            }
            var m = next()
            switch next() % 4 {
            case 0: m &= ~UInt64(0xFF_FFFF_FFFF)              // few bits below the 24-bit cut
            case 1: m &= ~UInt64(0x7FF)                       // few bits below the 53-bit cut
            default: break
            }
            m = e == 0 ? m & ~(1 << 63) : m | 1 << 63
            return Float80(sign: next() & 1 == 0 ? .plus : .minus, exponentBitPattern: UInt(e), significandBitPattern: m & ~(1 << 63))
        }
        let ops = ["fadd st0, st1", "fsub st0, st1", "fmul st0, st1", "fdiv st0, st1", "fsqrt", "fdivr st0, st1"]
        var cases: [Case] = []
        for _ in 0..<600 {
            var a = ext()
            let ins = ops[Int(next() % UInt64(ops.count))]
            if ins == "fsqrt" { a = abs(a) }
            let pc: UInt16 = next() % 2 == 0 ? 0 : 2
            cases.append(Case(ins: ins, cw: Self.cw(pc: pc, rc: UInt16(next() % 4)), a: a, b: ext(), m: (0, 0), hostOnly: nil))
        }
        for part in Self.chunked(cases) { try X87RoundingGuestTests.checkHost(part) }
    }

    func testTableAgainstQEMU() throws {
        for cases in Self.chunked(Self.cases) {
            let image = try GuestHarness.assemble(X87RoundingGuestTests.guest(cases, swMask: ~0x202), mode: .lm64)
            let (ours, _, plat) = GuestHarness.runOurs(image, model: .max)
            XCTAssertNotNil(plat.exitCode, "guest did not reach EXIT; output:\n\(ours)")
            guard let ref = try GuestHarness.runQEMU(image, cpu: "max") else { throw XCTSkip("qemu-system-x86_64 not installed") }
            X87RoundingGuestTests.check(cases, ours: ours, ref: ref, refName: "QEMU")
        }
    }
}
