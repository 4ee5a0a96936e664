import Foundation
import XCTest
@testable import X86

/// RCPPS, RCPSS, RSQRTPS and RSQRTSS. Our results are QEMU 7.2's (1/x, and 1 / sqrt(x), rounded to
/// nearest), so ordinary values are compared exactly with QEMU and, where the hardware approximates,
/// within the SDM's 1.5 * 2^-12 relative error of the host CPU's (`SSECase.approx`). The special
/// cases follow the SDM and are compared exactly with the host: ±0 and denormal sources give ±inf,
/// ±inf gives ±0, RCP results from 2^-126 down flush to ±0 (|x| >= 2^126, where the host CPU's
/// approximation is tiny; the SDM leaves that edge to the implementation), RSQRT of a negative number gives the QNaN
/// indefinite, NaNs come back quiet; MXCSR.RC, DAZ and FTZ change nothing, and no exception is
/// raised nor flag set, even with every exception unmasked. QEMU rounds in MXCSR.RC's mode, keeps
/// denormal sources and tiny results (so those cases are host-only).
final class ReciprocalGuestTests: GuestTestCase {
    typealias Case = SSECase

    static let f1: UInt64 = 0x3F80_0000, f2: UInt64 = 0x4000_0000, f3: UInt64 = 0x4040_0000, f01: UInt64 = 0x3DCC_CCCD
    static let f7: UInt64 = 0x40E0_0000, f1e10: UInt64 = 0x5015_02F9, f1em10: UInt64 = 0x2EDB_E6FF, f15: UInt64 = 0x3FC0_0000
    static let f2e100: UInt64 = 0x7180_0000, f2e125: UInt64 = 0x7E00_0000, f2e126: UInt64 = 0x7E80_0000
    static let f2e127: UInt64 = 0x7F00_0000, fmax: UInt64 = 0x7F7F_FFFF, fmin: UInt64 = 0x0080_0000
    static let fd: UInt64 = 0x0000_0001, fd2: UInt64 = 0x0040_0000, finf: UInt64 = 0x7F80_0000
    static let fqnan: UInt64 = 0x7FC0_1234, fsnan: UInt64 = 0x7F80_0001, fs: UInt64 = 0x8000_0000
    static let fodd: UInt64 = 0x3F9D_F3B6   // 1.2340000...

    static func ps(_ l0: UInt64, _ l1: UInt64, _ l2: UInt64, _ l3: UInt64) -> (UInt64, UInt64) { SSECaseTable.ps(l0, l1, l2, l3) }
    static func ss(_ x: UInt64) -> (UInt64, UInt64) { SSECaseTable.ss(x) }

    static let denormal = "QEMU reads a denormal source as a number, not as zero (without DAZ)"
    static let tiny = "QEMU returns RCP's tiny results as denormals, the CPU flushes them to zero"
    static let rounding = "QEMU rounds RCP/RSQRT in MXCSR.RC's mode, the CPU ignores RC"

    static var cases: [Case] {
        var c: [Case] = []
        func add(_ ins: String, _ b: (UInt64, UInt64), mxs: [UInt32] = [0x1F80], host: String? = nil, approx: Bool = false) {
            let a = ins.hasSuffix("ss") ? ss(0x1234_5678) : (UInt64(0x1111_1111_2222_2222), UInt64(0x3333_3333_4444_4444))
            for m in mxs { c.append(Case(ins: "\(ins) xmm0, xmm1", mx: m, a: a, b: b, hostOnly: host, approx: approx)) }
        }
        // Ordinary values: the host approximates.
        for op in ["rcpps", "rsqrtps"] {
            add(op, ps(f1, f2, f3, f01), approx: true)
            add(op, ps(f7, f1e10, f1em10, f15), approx: true)
            add(op, ps(f2e100, f2e125, fmin, fodd), approx: true)
        }
        add("rcpps", ps(f1 | fs, f3 | fs, f01 | fs, f2e125 | fs), approx: true)
        for op in ["rcpss", "rsqrtss"] {
            add(op, ss(f3), approx: true)
            add(op, ss(fodd), approx: true)
        }
        // In the other rounding modes and with DAZ/FTZ: the same results (QEMU rounds by RC).
        for op in ["rcpps", "rsqrtps"] {
            add(op, ps(f3, f01, f7, fodd), mxs: [0x3F80, 0x5F80, 0x7F80], host: rounding, approx: true)
            add(op, ps(f3, f01, f7, fodd), mxs: [0x9FC0], approx: true)
        }
        // Special values.
        add("rcpps", ps(0, fs, finf, finf | fs))
        add("rsqrtps", ps(0, fs, finf, f1 | fs))
        add("rcpps", ps(fqnan, fsnan, fqnan | fs, fsnan | fs))
        add("rsqrtps", ps(fqnan, fsnan, fqnan | fs, finf | fs))
        add("rcpss", ss(0))
        add("rsqrtss", ss(fs))
        add("rsqrtss", ss(fsnan))
        add("rsqrtss", ss(fmax | fs))
        // Denormal sources are zeros; tiny RCP results are zeros.
        add("rcpps", ps(fd, fd2 | fs, fd2, fd | fs), host: denormal)
        add("rsqrtps", ps(fd, fd2 | fs, fd2, fd | fs), host: denormal)
        add("rcpps", ps(fd, fd2 | fs, fd2, fd | fs), mxs: [0x1FC0])
        add("rcpps", ps(f2e127, fmax | fs, fmax, f2e127 | fs), host: tiny)
        add("rcpps", ps(f2e126, f2e126 | fs, 0x7E7F_FFFF, 0x7E80_0001), host: tiny, approx: true)
        add("rcpps", ps(f2e127, fmax | fs, fmax, f2e127 | fs), mxs: [0x9F80])
        add("rcpss", ss(fd2), host: denormal)
        // No exception and no flag, with every exception unmasked (and with all flags set).
        for op in ["rcpps", "rsqrtps"] {
            add(op, ps(fsnan, 0, fd, fmax), mxs: [0x0000], host: denormal, approx: true)
            add(op, ps(fsnan, 0, f1 | fs, f3), mxs: [0x0000, 0x1FBF], approx: true)
        }
        return c
    }

    /// Every case against the host CPU (approximations within the SDM's bound).
    func testAgainstHostCPU() throws { try SSECaseTable.checkAgainstHost(Self.cases) }

    /// The cases QEMU 7.2 models, against QEMU's TCG (MXCSR.DE left out: QEMU never sets it).
    func testAgainstQEMU() throws { try SSECaseTable.checkAgainstQEMU(Self.cases) }

    /// Memory operands: RCPPS/RSQRTPS need 16-byte alignment (#GP(0)), the scalar forms read 4 bytes
    /// anywhere; 66 0F 53 and F2 0F 52 are undefined (#UD).
    func testMemoryFormsAndEncodings() throws {
        try compare("""
            lea rax, [rel .after]
            mov [RECOVER], rax
            mov dword [0x8400], 0x40400000
            mov dword [0x8404], 0x3F800000
            mov dword [0x8408], 0x40E00000
            mov dword [0x840C], 0x41000000
            mov dword [0x8410], 0x40800000
            rcpps xmm2, [0x8400]
            rsqrtps xmm3, [0x8400]
            movq rax, xmm2
            movq rdx, xmm3
            call pf64
            pshufd xmm2, xmm2, 0x4E
            pshufd xmm3, xmm3, 0x4E
            movq rax, xmm2
            movq rdx, xmm3
            call pf64
            rcpss xmm4, [0x8404]
            rsqrtss xmm5, [0x840C]
            movd eax, xmm4
            movd edx, xmm5
            call pf64
            rcpps xmm2, [0x8404]
        .after:
            lea rax, [rel .after2]
            mov [RECOVER], rax
            db 0x66, 0x0F, 0x53, 0xC1
        .after2:
            lea rax, [rel .after3]
            mov [RECOVER], rax
            db 0xF2, 0x0F, 0x52, 0xC1
        .after3:
            mov qword [RECOVER], 0
        """, cpu: "max")
    }
}
