import Foundation
import XCTest
@testable import X86

/// MXCSR.DAZ (denormal sources read as signed zeros, no DE) and MXCSR.FTZ (with UM masked, a tiny
/// result becomes a signed zero with UE and PE), and the MXCSR flags of DPPS/DPPD, over one table
/// of cases (run by `SSECaseTable`): each loads XMM0 and XMM1, sets MXCSR, runs one instruction and prints MXCSR, XMM0, RCX
/// and RFLAGS (after an EXC line when it raised an exception). Every case is checked twice:
///  - against the host CPU: the same table as a C program with inline asm, compiled with the host's
///    C compiler at test time, runs each instruction natively; an unmasked exception arrives there
///    as SIGFPE, whose handler resumes after the instruction.
///  - against QEMU 7.2's TCG (softfloat honours DAZ and FTZ), except the cases marked host-only,
///    where QEMU deviates from the hardware: it raises no #XM for unmasked SSE exceptions, and its
///    MIN/MAX under DAZ return the unflushed denormal operand where the CPU returns the zero it
///    compared. QEMU never sets DE, so DE is left out of that comparison.
final class DAZFTZGuestTests: GuestTestCase {
    typealias Case = SSECase

    // MXCSR values: everything masked (N), with DAZ, with FTZ, with both.
    static let N: UInt32 = 0x1F80, DAZ: UInt32 = 0x1FC0, FTZ: UInt32 = 0x9F80, BOTH: UInt32 = 0x9FC0
    static let rcUp: UInt32 = 0x4000, rcDown: UInt32 = 0x2000

    // Single-precision bit patterns.
    static let f1: UInt64 = 0x3F80_0000, fh: UInt64 = 0x3F00_0000, f2: UInt64 = 0x4000_0000, f3: UInt64 = 0x4040_0000
    static let fd: UInt64 = 0x0000_0001, fd2: UInt64 = 0x0040_0000, fnd: UInt64 = 0x8040_0000   // denormals
    static let fmin: UInt64 = 0x0080_0000, fnmin: UInt64 = 0x8080_0000, fn15min: UInt64 = 0x80C0_0000
    static let fe20: UInt64 = 0x1E3C_E508, fe30: UInt64 = 0x0DA2_4260, finf: UInt64 = 0x7F80_0000
    static let fsnan: UInt64 = 0x7F80_0001, fbig: UInt64 = 0x7F00_0000
    // Double-precision bit patterns.
    static let d1: UInt64 = 0x3FF0_0000_0000_0000, dh: UInt64 = 0x3FE0_0000_0000_0000, d2: UInt64 = 0x4000_0000_0000_0000
    static let dd: UInt64 = 1, dd2: UInt64 = 0x0008_0000_0000_0000, dnd: UInt64 = 0x8008_0000_0000_0000
    static let dmin: UInt64 = 0x0010_0000_0000_0000, de160: UInt64 = 0x1EB6_7E9C_127B_6E74
    static let d2m127: UInt64 = 0x3800_0000_0000_0000, d1em40: UInt64 = 0x37A1_6C26_2777_579C

    static func ps(_ l0: UInt64, _ l1: UInt64, _ l2: UInt64, _ l3: UInt64) -> (UInt64, UInt64) { SSECaseTable.ps(l0, l1, l2, l3) }
    static func ss(_ x: UInt64) -> (UInt64, UInt64) { SSECaseTable.ss(x) }
    static func sd(_ x: UInt64) -> (UInt64, UInt64) { SSECaseTable.sd(x) }

    static let minMaxDAZ = "QEMU's MIN/MAX return the unflushed operand under DAZ"
    static let noXM = "QEMU raises no #XM for an unmasked SSE exception"

    /// The table. `op` runs as `op xmm0, xmm1` unless it names its own operands.
    static var cases: [Case] {
        var c: [Case] = []
        func add(_ ins: String, _ mxs: [UInt32], _ a: (UInt64, UInt64), _ b: (UInt64, UInt64), host: String? = nil,
                 hostWhen: ((UInt32) -> Bool)? = nil) {
            let full = ins.contains(",") ? ins : "\(ins) xmm0, xmm1"
            for m in mxs { c.append(Case(ins: full, mx: m, a: a, b: b, hostOnly: hostWhen.map { $0(m) ? host : nil } ?? host)) }
        }
        let nd: [UInt32] = [N, DAZ], all: [UInt32] = [N, DAZ, FTZ, BOTH]
        let dazOnly: (UInt32) -> Bool = { $0 & 0x40 != 0 }

        // DAZ: scalar single arithmetic.
        add("addss", nd, ss(fd2), ss(f1))
        add("addss", nd, ss(fd2), ss(fnd))
        add("addss", nd, ss(fmin), ss(fnd))
        add("subss", nd, ss(fnd), ss(fd2))
        add("mulss", nd, ss(fd2), ss(f2))
        add("mulss", nd, ss(fnd), ss(finf))
        add("divss", nd, ss(f1), ss(fd2))
        add("divss", nd, ss(fd2), ss(fd2))
        add("divss", nd, ss(fnd), ss(f2))
        add("sqrtss", nd, ss(0), ss(fd2))
        add("sqrtss", nd, ss(0), ss(fnd))
        add("minss", nd, ss(fd2), ss(f1), host: minMaxDAZ, hostWhen: dazOnly)
        add("minss", nd, ss(f1), ss(fnd), host: minMaxDAZ, hostWhen: dazOnly)
        add("minss", nd, ss(fd2), ss(fnd), host: minMaxDAZ, hostWhen: dazOnly)
        add("maxss", nd, ss(fnd), ss(fd2), host: minMaxDAZ, hostWhen: dazOnly)
        add("maxss", nd, ss(fd2), ss(0), host: minMaxDAZ, hostWhen: dazOnly)
        add("maxss", nd, ss(fd2), ss(f1))
        // DAZ: scalar double arithmetic.
        add("addsd", nd, sd(dd), sd(d1))
        add("subsd", nd, sd(dnd), sd(dd2))
        add("mulsd", nd, sd(dd2), sd(d2))
        add("divsd", nd, sd(d1), sd(dd))
        add("divsd", nd, sd(0), sd(dnd))
        add("sqrtsd", nd, sd(0), sd(dd2))
        add("minsd", nd, sd(dd), sd(0), host: minMaxDAZ, hostWhen: dazOnly)
        add("maxsd", nd, sd(dnd), sd(dd), host: minMaxDAZ, hostWhen: dazOnly)
        // DAZ: packed, denormal and normal lanes mixed.
        let pa = ps(fd2, f1, fnd, fmin), pb = ps(f1, fd2, fnd, fnd)
        for op in ["addps", "subps", "mulps", "divps", "sqrtps"] { add(op, nd, pa, pb) }
        for op in ["minps", "maxps"] { add(op, nd, pa, pb, host: minMaxDAZ, hostWhen: dazOnly) }
        let qa = (dd2, d1), qb = (d2, dnd)
        for op in ["addpd", "subpd", "mulpd", "divpd", "sqrtpd"] { add(op, nd, qa, qb) }
        for op in ["minpd", "maxpd"] { add(op, nd, qa, qb, host: minMaxDAZ, hostWhen: dazOnly) }
        // DAZ: SSE3 ADDSUB and horizontal adds.
        for op in ["addsubps", "haddps", "hsubps"] { add(op, nd, ps(fd2, fmin, fnd, f1), ps(fd, fnd, fmin, fd2)) }
        for op in ["addsubpd", "haddpd", "hsubpd"] { add(op, nd, (dd2, dmin), (dnd, d1)) }
        // DAZ: compares (a denormal equals zero) and COMIS/UCOMIS (ZF/PF/CF).
        for p in 0..<8 {
            add("cmpps xmm0, xmm1, \(p)", nd, ps(fd2, fnd, fd, f1), ps(0, 0x8000_0000, fd2, fd))
            add("cmppd xmm0, xmm1, \(p)", nd, (dd, dnd), (0, dd2))
        }
        add("cmpltss", nd, ss(fnd), ss(0))
        add("cmpeqsd", nd, sd(dd2), sd(0x8000_0000_0000_0000))
        for op in ["comiss", "ucomiss"] {
            add(op, nd, ss(fd2), ss(0))
            add(op, nd, ss(fnd), ss(fd2))
        }
        for op in ["comisd", "ucomisd"] {
            add(op, nd, sd(dd), sd(0))
            add(op, nd, sd(dnd), sd(dd2))
        }
        // DAZ: conversions from floating point (to double, to single, to integers: a denormal
        // becomes an exact zero, so no PE, and rounding up no longer gives 1).
        add("cvtss2sd", nd, sd(0), ss(fd2))
        add("cvtss2sd", nd, sd(0), ss(fnd))
        add("cvtps2pd", nd, (0, 0), ps(fd2, fnd, 0, 0))
        add("cvtsd2ss", nd, ss(0), sd(dd))
        add("cvtsd2ss", nd, ss(0), sd(dnd))
        add("cvtpd2ps", nd, (0, 0), (dd, dnd))
        add("cvtss2si rcx, xmm1", nd.map { $0 | rcUp }, (0, 0), ss(fd2))
        add("cvttss2si ecx, xmm1", nd, (0, 0), ss(fnd))
        add("cvtsd2si rcx, xmm1", nd.map { $0 | rcUp }, (0, 0), sd(dd))
        add("cvttsd2si rcx, xmm1", nd, (0, 0), sd(dnd))
        add("cvtps2dq", nd.map { $0 | rcUp } + nd.map { $0 | rcDown }, (0, 0), ps(fd2, fnd, f1, fd))
        add("cvttps2dq", nd, (0, 0), ps(fd2, fnd, f1, fd))
        add("cvtpd2dq", nd.map { $0 | rcUp } + nd.map { $0 | rcDown }, (0, 0), (dd, dnd))
        add("cvttpd2dq", nd, (0, 0), (dd, dnd))
        add("cvtps2pi mm0, xmm1\nmovq rcx, mm0\nemms", nd.map { $0 | rcUp }, (0, 0), ps(fd2, fnd, 0, 0))
        // DAZ leaves integer sources, moves, logic and shuffles alone.
        add("cvtdq2ps", nd, (0, 0), ps(1, 0x8000_0001, 3, 0x40))
        add("cvtsi2ss xmm0, rcx", nd, ss(fd2), (0, 0))
        add("movss", nd, ss(0), ss(fd2))
        add("movaps", nd, (0, 0), ps(fd2, fnd, fd, fmin))
        add("andps", nd, ps(fd2, fnd, fd, fmin), ps(0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF))
        add("shufps xmm0, xmm1, 0x1B", nd, ps(fd2, fnd, fd, fmin), ps(fnd, fd2, fmin, fd))
        add("unpcklpd", nd, (dd, dnd), (dd2, dmin))
        add("blendps xmm0, xmm1, 5", nd, ps(fd2, fnd, fd, fmin), ps(fnd, fd2, fmin, fd))
        add("movmskps ecx, xmm1", nd, (0, 0), ps(fd2, fnd, fd, fnd))
        // DAZ: ROUND* (up: a positive denormal would round to 1; down: a negative one to -1).
        add("roundss xmm0, xmm1, 2", nd, ss(0), ss(fd2))
        add("roundps xmm0, xmm1, 1", nd, (0, 0), ps(fd2, fnd, f1, fd))
        add("roundsd xmm0, xmm1, 1", nd, sd(0), sd(dnd))
        add("roundpd xmm0, xmm1, 2", nd, (0, 0), (dd, dnd))
        // DAZ with DM unmasked: no denormal exception (without DAZ: #XM, destination kept).
        add("addss", [N & ~0x100], ss(fd2), ss(f1), host: noXM)
        add("addss", [DAZ & ~0x100], ss(fd2), ss(f1))
        add("mulpd", [DAZ & ~0x100], qa, qb)

        // FTZ: tiny results, inexact and exact, of each sign; a denormal operand without DAZ.
        add("mulss", all, ss(fe20), ss(fe20))
        add("mulss", all, ss(fmin), ss(fh))
        add("mulss", all, ss(fnmin), ss(fh))
        add("mulss", all, ss(fe30), ss(fe30))
        add("subss", all, ss(0x0080_0001), ss(fmin))
        add("divss", all, ss(fmin), ss(f3))
        add("addss", all, ss(fd), ss(0))
        add("mulss", all, ss(fd), ss(f1))
        add("addss", all, ss(fd), ss(fmin))
        add("minss", [FTZ], ss(fd), ss(f1))
        add("maxss", [FTZ], ss(fnd), ss(fd2))
        add("mulsd", all, sd(dmin), sd(dh))
        add("mulsd", all, sd(de160), sd(de160))
        add("divsd", all, sd(0x8010_0000_0000_0000), sd(d2))
        add("subsd", all, sd(0x0010_0000_0000_0001), sd(dmin))
        add("mulps", all, ps(fe20, fmin, f1, fnmin), ps(fe20, fh, f1, fh))
        add("divps", all, ps(fmin, f1, fnmin, fd2), ps(f2, f2, f3, f1))
        add("mulpd", all, (dmin, 0x8010_0000_0000_0000), (dh, dh))
        add("haddps", all, ps(fmin, fn15min, f1, f1), ps(fnmin, 0x0060_0000, fd2, 0))
        add("hsubpd", all, (dmin, 0x0018_0000_0000_0000), (d1, dh))
        add("addsubps", all, ps(fmin, fmin, fn15min, f1), ps(0x00C0_0000, fnmin, fmin, f1))
        add("addsubpd", all, (dmin, 0x0010_0000_0000_0001), (0x0018_0000_0000_0000, 0x8010_0000_0000_0000))
        add("cvtsd2ss", all, ss(0), sd(d2m127))
        add("cvtsd2ss", all, ss(0), sd(d1em40))
        add("cvtpd2ps", all, (0, 0), (d2m127, d1em40 | 1 << 63))
        add("sqrtss", [FTZ], ss(0), ss(fd2))
        // FTZ has no effect when UM is unmasked: the underflow is raised (#XM, destination kept).
        add("mulss", [FTZ & ~0x800, N & ~0x800], ss(fe20), ss(fe20), host: noXM)
        add("mulss", [FTZ & ~0x800], ss(fmin), ss(fh), host: noXM)
        // FTZ with UM masked and PM unmasked: the flush is inexact, so #XM (destination kept).
        add("mulss", [FTZ & ~0x1000], ss(fmin), ss(fh), host: noXM)

        // DPPS: products (unselected lanes are +0.0 and raise nothing), two pairwise sums, the final
        // sum; each step rounds, raises its own flags and sees DAZ/FTZ (a denormal product is a
        // denormal operand of the add).
        let dp: [(UInt64, (UInt64, UInt64), (UInt64, UInt64))] = [
            (0xF1, ps(fd, f1, f1, f1), ps(f1, f1, f1, f1)),          // denormal input
            (0xF1, ps(fmin, 0, 0, 0), ps(fh, 0, 0, 0)),              // exact tiny product
            (0xF1, ps(fmin, f1, 0, 0), ps(fh, f1, 0, 0)),            // tiny product + 1
            (0xF1, ps(fmin, fmin, 0, 0), ps(fh, f1, 0, 0)),          // tiny product + min normal
            (0xF1, ps(fe20, 0, 0, 0), ps(fe20, 0, 0, 0)),            // inexact tiny product
            (0xF1, ps(fmin, fn15min, 0, 0), ps(f1, fh, 0, 0)),       // tiny sum
            (0xFF, ps(fbig, 0, 0, 0), ps(fbig, 0, 0, 0)),            // overflowing product
            (0xF3, ps(fbig, fbig, fbig, fbig), ps(0x3FC0_0000, 0x3FC0_0000, 0x3FC0_0000, 0x3FC0_0000)), // overflowing sum
            (0xF1, ps(finf, 0, 0, 0), ps(0, 0, 0, 0)),               // inf * 0
            (0xF1, ps(finf, 0xFF80_0000, 0, 0), ps(f1, f1, 0, 0)),   // inf - inf
            (0x31, ps(f1, f1, fsnan, fd), ps(f1, f1, f1, f1)),       // SNaN and denormal in unselected lanes
            (0xF1, ps(f1, f1, fsnan, 0), ps(f1, f1, f1, 0)),         // SNaN selected
            (0x32, ps(0x4CBE_BC20, f1, 0, 0), ps(f1, f1, 0, 0)),     // inexact sum (1e8 + 1)
            (0x11, ps(fd, 0, 0, 0), ps(f1, 0, 0, 0)),                // denormal product only
            (0x11, ps(fd, 0, 0, 0), ps(f2, 0, 0, 0)),
            (0xD5, ps(f3, fh, 0x3DCC_CCCD, f2), ps(0x3EAA_AAAB, f3, f3, 0x3E4C_CCCD)),  // inexact products
        ]
        for (imm, a, b) in dp { add("dpps xmm0, xmm1, \(imm)", all, a, b) }
        let dq: [(UInt64, (UInt64, UInt64), (UInt64, UInt64))] = [
            (0x33, (dd, d1), (d1, d1)),
            (0x31, (dmin, 0), (dh, 0)),
            (0x32, (dmin, d1), (dh, d1)),
            (0x33, (de160, dmin), (de160, d1)),
            (0x33, (0x7FE0_0000_0000_0000, 0x7FE0_0000_0000_0000), (d2, d2)),
            (0x13, (0x7FF0_0000_0000_0001, 0), (d1, 0x7FF0_0000_0000_0000)),
            (0x33, (0x7FF0_0000_0000_0000, 0xFFF0_0000_0000_0000), (d1, d1)),
            (0x23, (0x3FB9_9999_9999_999A, d1), (0x3FD5_5555_5555_5555, 0x3CB0_0000_0000_0000)),
        ]
        for (imm, a, b) in dq { add("dppd xmm0, xmm1, \(imm)", all, a, b) }
        // DPPS with an unmasked exception: nothing is written.
        add("dpps xmm0, xmm1, 0xF1", [N & ~0x100], ps(fd, f1, f1, f1), ps(f1, f1, f1, f1), host: noXM)
        add("dpps xmm0, xmm1, 0xF1", [N & ~0x1000], ps(fe20, 0, 0, 0), ps(fe20, 0, 0, 0), host: noXM)
        // Normal products, an exact tiny pairwise sum (1.5 - 1.25 times the least normal) and an
        // inexact one (1e8 + 1), then the final add sees a denormal: with PE unmasked the pairwise
        // stage faults first (PE, no DE); with everything masked, DE and PE.
        let stages = (ps(0x00C0_0000, 0x80A0_0000, 0x4CBE_BC20, f1), ps(f1, f1, f1, f1))
        add("dpps xmm0, xmm1, 0xF1", [N & ~0x1000], stages.0, stages.1, host: noXM)
        add("dpps xmm0, xmm1, 0xF1", [N, DAZ, FTZ], stages.0, stages.1)
        add("dppd xmm0, xmm1, 0x31", [N & ~0x1000], (dmin, 0), (dh, 0), host: noXM)
        return c
    }

    /// Every case against the host CPU.
    func testAgainstHostCPU() throws { try SSECaseTable.checkAgainstHost(Self.cases) }

    /// The cases QEMU 7.2 models, against QEMU's TCG (MXCSR.DE left out: QEMU never sets it).
    func testAgainstQEMU() throws { try SSECaseTable.checkAgainstQEMU(Self.cases) }

    /// FXSAVE's MXCSR_MASK offers DAZ (0xFFFF, as in QEMU); LDMXCSR and FXRSTOR load DAZ and FTZ.
    func testMXCSRMask() throws {
        try compare("""
            mov qword [FLAGMASK], 0
            fxsave [0xA000]
            mov eax, [0xA000 + 28]
            xor edx, edx
            call pf64
            mov dword [0x8300], 0x9FC0
            ldmxcsr [0x8300]
            stmxcsr [0x8304]
            mov eax, [0x8304]
            call pf64
            mov dword [0xA000 + 24], 0x1FC0
            fxrstor [0xA000]
            stmxcsr [0x8304]
            mov eax, [0x8304]
            call pf64
        """, expectContains: ["000000000000FFFF"])
    }

    /// LDMXCSR and FXRSTOR raise #GP(0) for MXCSR bits 16-31 and leave MXCSR alone (SDM vol. 1
    /// 10.2.3; host-confirmed). QEMU 7.2 loads such values instead, so this runs on our CPU only.
    func testMXCSRReservedBits() throws {
        let image = try GuestHarness.assemble("""
            mov qword [FLAGMASK], 0
            mov dword [0x8300], 0x9FC0
            ldmxcsr [0x8300]
            lea rax, [rel .r1]
            mov [RECOVER], rax
            mov dword [0x8300], 0x11F80
            ldmxcsr [0x8300]
        .r1:
            stmxcsr [0x8304]
            mov eax, [0x8304]
            xor edx, edx
            call pf64
            lea rax, [rel .r2]
            mov [RECOVER], rax
            fxsave [0xA000]
            mov dword [0xA000 + 24], 0x80001F80
            fxrstor [0xA000]
        .r2:
            mov qword [RECOVER], 0
            stmxcsr [0x8304]
            mov eax, [0x8304]
            call pf64
        """, mode: .lm64)
        let (out, _, plat) = GuestHarness.runOurs(image)
        XCTAssertNotNil(plat.exitCode, out)
        XCTAssertEqual(out, """
            EXC 000000000000000D ERR 0000000000000000
            0000000000009FC0 0000000000000000 0000000000000000
            EXC 000000000000000D ERR 0000000000000000
            0000000000009FC0 0000000000000000 0000000000000000

            """)
    }
}
