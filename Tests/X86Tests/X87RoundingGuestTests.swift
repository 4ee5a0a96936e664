import Foundation
import XCTest
@testable import X86

/// x87 rounding control for arithmetic, FSQRT and FST to memory (with FIST and FRNDINT, which
/// already honoured it), C1 as the rounding direction ("rounded up" in magnitude) after inexact
/// results and cleared after exact ones, and the flags of single/double memory operands: DE for
/// denormals (FLD, arithmetic, FCOM), IE for signaling NaNs (loaded quiet). Each case runs FINIT,
/// FLDCW, loads ST1 then ST0 (80-bit), points RDX at a 16-byte memory operand (in RAM), runs `ins`, and
/// prints the status word, ST0 (as 80 bits) and the memory operand's first 8 bytes. Checked
/// against the host CPU (a C program with inline asm, as `SSECaseTable` does) and against QEMU
/// 7.2's TCG with C1 and DE left out (it models neither here).
final class X87RoundingGuestTests: GuestTestCase {
    struct Case {
        let ins: String
        let cw: UInt16
        let a: Float80
        let b: Float80
        let m: (UInt64, UInt64)
        let hostOnly: String?
    }

    static let RN: UInt16 = 0x37F, RD: UInt16 = 0x77F, RU: UInt16 = 0xB7F, RZ: UInt16 = 0xF7F
    static let modes = [RN, RD, RU, RZ]

    static func bits(_ v: Float80) -> (UInt64, UInt64) {
        var v = v
        return withUnsafeBytes(of: &v) { ($0.load(as: UInt64.self), UInt64($0.load(fromByteOffset: 8, as: UInt16.self))) }
    }
    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    static let noDE = "QEMU 7.2 raises no x87 DE, so an unmasked one does not stop the instruction"

    static var cases: [Case] {
        var c: [Case] = []
        func add(_ ins: String, _ a: Float80, _ b: Float80 = 0, m: (UInt64, UInt64) = (0, 0), cws: [UInt16] = modes,
                 host: String? = nil) {
            for cw in cws { c.append(Case(ins: ins, cw: cw, a: a, b: b, m: m, hostOnly: host)) }
        }
        let third: Float80 = 1 / 3, tenth: Float80 = 1 / 10
        let e65: Float80 = 0x1p-65
        // Arithmetic in each mode: inexact of both signs and both directions, exact, overflow.
        add("fdiv st0, st1", 1, 3)
        add("fdiv st0, st1", 2, 3)
        add("fdiv st0, st1", -1, 3)
        add("fdivr st0, st1", 3, 1)
        add("fadd st0, st1", 1, 3 * e65)
        add("fadd st0, st1", 1, e65)
        add("fadd st0, st1", -1, -3 * e65)
        add("fsub st0, st1", 1, 3 * e65 / 2)
        add("fsub st0, st1", 3, 3)
        add("fmul st0, st1", third, 3)
        add("fmul st0, st1", tenth, tenth)
        add("fmul st0, st1", -tenth, 3)
        add("fmul st0, st1", 2, 3)
        add("fmul st0, st1", Float80.greatestFiniteMagnitude, 2)
        add("fmul st0, st1", -Float80.greatestFiniteMagnitude, 2)
        add("fsqrt", 2)
        add("fsqrt", 3)
        add("fsqrt", 4)
        add("faddp st1, st0", third, tenth)
        add("fmulp st1, st0", third, 7)
        // Memory operands (single, double, integer).
        add("fadd qword [rdx]", 1, m: (0x3FB9_9999_9999_999A, 0))   // + 0.1
        add("fmul dword [rdx]", 3, m: (0x3DCC_CCCD, 0))             // * 0.1f
        add("fdiv dword [rdx]", 1, m: (0x4040_0000, 0))             // / 3.0f
        add("fiadd dword [rdx]", third, m: (3, 0))
        add("fidivr word [rdx]", 3, m: (1, 0))
        // FST/FSTP to memory round by RC and set C1; overflow gives infinity or the largest value.
        add("fst dword [rdx]", third)
        add("fst qword [rdx]", third)
        add("fstp dword [rdx]", -tenth)
        add("fst dword [rdx]", 1e300)
        add("fst qword [rdx]", -1e4000)
        add("fst dword [rdx]", 0.5)
        // FIST/FISTP and FRNDINT: C1 too.
        add("fist dword [rdx]", 2.5)
        add("fistp dword [rdx]", -2.5)
        add("fist word [rdx]", 1.25)
        add("fisttp dword [rdx]", -2.75)
        add("frndint", 2.5)
        add("frndint", -0.25)
        add("frndint", 7)
        // C1 cleared by an exact result, FLD, FCHS, FXCH after an inexact one (1/3 rounds up).
        add("fdiv st0, st1\nfsub st0, st0", 1, 3, cws: [RN])
        add("fdiv st0, st1\nfld1", 1, 3, cws: [RN])
        add("fdiv st0, st1\nfchs", 1, 3, cws: [RN])
        add("fdiv st0, st1\nfxch st1", 1, 3, cws: [RN])
        add("fdiv st0, st1\nfst qword [rdx]", 1, 3, cws: [RN])

        // Memory operands' exceptions: denormal singles and doubles raise DE (arithmetic, FCOM,
        // FLD), an 80-bit denormal loads without it; signaling NaNs raise IE and load quiet.
        add("fadd dword [rdx]", 1, m: (1, 0), cws: [RN])
        add("fadd qword [rdx]", 1, m: (1, 0), cws: [RN])
        add("fmul qword [rdx]", 2, m: (0x0008_0000_0000_0000, 0), cws: [RN])
        add("fcom dword [rdx]", 1, m: (0x8000_0001, 0), cws: [RN])
        add("fld dword [rdx]", 1, m: (0x0040_0000, 0), cws: [RN])
        add("fld qword [rdx]", 1, m: (0x8000_0000_0000_0001, 0), cws: [RN])
        add("fld tword [rdx]", 1, m: (1, 0), cws: [RN])
        add("fld dword [rdx]", 1, m: (0x7F80_0001, 0), cws: [RN])
        add("fld qword [rdx]", 1, m: (0x7FF0_0000_0000_0001, 0), cws: [RN])
        add("fadd dword [rdx]", 1, m: (0xFF80_0001, 0), cws: [RN])
        add("fild dword [rdx]", 1, m: (0x7FFF_FFFF, 0), cws: [RN])
        add("fst dword [rdx]", Float80.leastNormalMagnitude / 4, cws: [RN])   // no DE for FST's source
        // Unmasked DE: ES and B, and the destination (or the stack) is left alone.
        add("fadd qword [rdx]", 1, m: (1, 0), cws: [RN & ~2], host: noDE)
        add("fld dword [rdx]", 1, m: (1, 0), cws: [RN & ~2], host: noDE)
        add("fld qword [rdx]", 1, m: (1, 0), cws: [RN & ~2], host: noDE)
        add("fld dword [rdx]", 1, m: (0x7F80_0001, 0), cws: [RN & ~1], host: noDE)
        add("fadd dword [rdx]", 1, m: (0x7F80_0001, 0), cws: [RN & ~1], host: noDE)
        return c
    }

    static func nasmIns(_ ins: String) -> String { ins }
    /// GNU as (Intel syntax) spells x87 registers st(i) and memory operands with PTR.
    static func gasIns(_ ins: String) -> String {
        var s = ins
        for k in 0..<8 { s = s.replacingOccurrences(of: "st\(k)", with: "st(\(k))") }
        for (n, g) in [("tword", "tbyte ptr"), ("qword", "qword ptr"), ("dword", "dword ptr"), ("word", "word ptr")] {
            s = s.replacingOccurrences(of: n + " [", with: g + " [")
        }
        return s
    }

    static func guest(_ cases: [Case], swMask: UInt16) -> String {
        var s = "    mov qword [FLAGMASK], 0\n"
        for (k, c) in cases.enumerated() {
            s += """
                    finit
                    fldcw [rel xc\(k)]
                    fld tword [rel xb\(k)]
                    fld tword [rel xa\(k)]
                    mov rax, [rel xm\(k)]
                    mov [0x8500], rax
                    mov rax, [rel xm\(k) + 8]
                    mov [0x8508], rax
                    mov edx, 0x8500
                    \(nasmIns(c.ins).replacingOccurrences(of: "\n", with: "\n    "))
                    call x87show

                """
        }
        s += """
                jmp x87done
            x87show:
                fnstsw ax
                fnclex
                mov rcx, [rdx]
                fstp tword [0x8400]
                and eax, \(hex(UInt64(swMask)))
                mov rdx, [0x8400]
                call pf64
                movzx eax, word [0x8408]
                mov rdx, rcx
                call pf64
                ret

            """
        for (k, c) in cases.enumerated() {
            let a = bits(c.a), b = bits(c.b)
            s += "xa\(k): dq \(hex(a.0))\n dw \(hex(a.1))\nxb\(k): dq \(hex(b.0))\n dw \(hex(b.1))\n"
            s += "xm\(k): dq \(hex(c.m.0)), \(hex(c.m.1))\nxc\(k): dw \(hex(UInt64(c.cw)))\n"
        }
        return s + "x87done:\n"
    }

    static func hostProgram(_ cases: [Case]) -> String {
        var s = """
            #include <stdint.h>
            #include <stdio.h>
            #define CASE(INS, A0, A1, B0, B1, M0, M1, CW) { \\
                static const uint64_t a[2] = {A0, A1}, b[2] = {B0, B1}; static const uint16_t cw = CW; \\
                uint64_t m[2] = {M0, M1}, o[2] = {0, 0}; uint16_t sw; \\
                __asm__ volatile("finit\\n\\tfldcw %[cw]\\n\\tfld tbyte ptr %[b]\\n\\tfld tbyte ptr %[a]\\n\\tlea rdx, %[m]\\n\\t" \\
                    INS "\\n\\tfnstsw ax\\n\\tmov %[sw], ax\\n\\tfnclex\\n\\tfstp tbyte ptr %[o]\\n\\tfninit" \\
                    : [sw] "=m"(sw), [o] "=m"(o), [m] "+m"(m) : [a] "m"(a), [b] "m"(b), [cw] "m"(cw) \\
                    : "rax", "rdx", "memory", "cc", "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)"); \\
                printf("%016llX %016llX %016llX\\n", (unsigned long long)sw, (unsigned long long)o[0], 0ull); \\
                printf("%016llX %016llX %016llX\\n", (unsigned long long)(o[1] & 0xFFFF), (unsigned long long)m[0], 0ull); }
            int main(void) {

            """
        for c in cases {
            let a = bits(c.a), b = bits(c.b)
            let ins = gasIns(c.ins).replacingOccurrences(of: "\n", with: "\\n\\t")
            s += "    CASE(\"\(ins)\", \(hex(a.0))ull, \(hex(a.1))ull, \(hex(b.0))ull, \(hex(b.1))ull, \(hex(c.m.0))ull, \(hex(c.m.1))ull, \(hex(UInt64(c.cw))))\n"
        }
        return s + "    return 0;\n}\n"
    }

    static func caseName(_ c: Case) -> String {
        "\(c.ins.replacingOccurrences(of: "\n", with: "; ")) CW \(String(c.cw, radix: 16)) a \(c.a) b \(c.b) m \(hex(c.m.0))"
    }

    static func check(_ cases: [Case], ours: String, ref: String, refName: String) {
        let a = SSECaseTable.chunks(ours), b = SSECaseTable.chunks(ref)
        XCTAssertEqual(a.count, cases.count, "our output:\n\(ours)")
        XCTAssertEqual(b.count, cases.count, "\(refName) output:\n\(ref)")
        var failures = 0
        for (k, c) in cases.enumerated() where k < a.count && k < b.count && a[k] != b[k] {
            failures += 1
            if failures <= 40 { XCTFail("\(caseName(c)):\n  ours:\n\(a[k])\n  \(refName):\n\(b[k])") }
        }
        XCTAssertEqual(failures, 0, "\(failures) cases differ from \(refName)")
    }

    func testAgainstHostCPU() throws { try Self.checkHost(Self.cases) }

    static func checkHost(_ cases: [Case]) throws {
        guard let cc = GuestHarness.which("cc") ?? GuestHarness.which("gcc") else { throw XCTSkip("no C compiler") }
        let dir = GuestHarness.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = dir.appendingPathComponent("x87.c"), exe = dir.appendingPathComponent("x87").path
        try hostProgram(cases).write(to: src, atomically: true, encoding: .utf8)
        let (st, msg) = try GuestHarness.run(cc, ["-O1", "-masm=intel", "-o", exe, src.path])
        try XCTSkipUnless(st == 0, "cannot compile the host reference: \(msg)")
        let outPath = dir.appendingPathComponent("host.txt").path
        let (rst, msg2) = try GuestHarness.run("/bin/sh", ["-c", "'\(exe)' > '\(outPath)'"])
        XCTAssertEqual(rst, 0, msg2)
        let host = try String(contentsOfFile: outPath, encoding: .utf8)
        let image = try GuestHarness.assemble(guest(cases, swMask: 0xFFFF), mode: .lm64)
        let (ours, _, plat) = GuestHarness.runOurs(image, model: .max)
        XCTAssertNotNil(plat.exitCode, "guest did not reach EXIT; output:\n\(ours)")
        check(cases, ours: ours, ref: host, refName: "host")
    }

    /// Pseudo-random extended operands (a fixed seed; X86_TEST_SEED picks another) biased towards
    /// the edges (denormal, huge, near 1, short significands), in random rounding modes, against
    /// the host CPU.
    func testRandomAgainstHostCPU() throws {
        var seed: UInt64 = ProcessInfo.processInfo.environment["X86_TEST_SEED"].flatMap { UInt64($0) } ?? 0x2545_F491_4F6C_DD1D
        func next() -> UInt64 {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return seed >> 11 | (seed << 53)
        }
        func ext() -> Float80 {
            let e: UInt16
            switch next() % 5 {
            case 0: e = UInt16(next() % 70)
            case 1: e = UInt16(32_700 + next() % 67)
            case 2: e = UInt16(16_383 - 1_100 + next() % 60)   // where doubles and singles get tiny
            default: e = UInt16(16_353 + next() % 60)
            }
            var m = next()
            if next() % 3 == 0 { m &= ~UInt64(0xFFFF_FFFF) }
            m = e == 0 ? m & ~(1 << 63) : m | 1 << 63
            return Float80(sign: next() & 1 == 0 ? .plus : .minus, exponentBitPattern: UInt(e), significandBitPattern: m & ~(1 << 63))
        }
        let ops = ["fadd st0, st1", "fsub st0, st1", "fmul st0, st1", "fdiv st0, st1", "fsqrt", "fst dword [rdx]",
                   "fst qword [rdx]", "fdivr st0, st1", "frndint", "fist dword [rdx]"]
        var cases: [Case] = []
        for _ in 0..<400 {
            var a = ext()
            let ins = ops[Int(next() % UInt64(ops.count))]
            if ins == "fsqrt" { a = abs(a) }
            cases.append(Case(ins: ins, cw: Self.modes[Int(next() % 4)], a: a, b: ext(), m: (0, 0), hostOnly: nil))
        }
        try Self.checkHost(cases)
    }

    func testAgainstQEMU() throws {
        let cases = Self.cases.filter { $0.hostOnly == nil }
        let image = try GuestHarness.assemble(Self.guest(cases, swMask: ~0x202), mode: .lm64)
        let (ours, _, plat) = GuestHarness.runOurs(image, model: .max)
        XCTAssertNotNil(plat.exitCode, "guest did not reach EXIT; output:\n\(ours)")
        guard let ref = try GuestHarness.runQEMU(image, cpu: "max") else { throw XCTSkip("qemu-system-x86_64 not installed") }
        Self.check(cases, ours: ours, ref: ref, refName: "QEMU")
    }
}
