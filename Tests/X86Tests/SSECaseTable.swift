import Foundation
import XCTest
@testable import X86

/// One SSE instruction case of a table test: XMM0 and XMM1 are loaded, MXCSR set, `ins` runs
/// (`op xmm0, xmm1` unless it names its own operands; it may be several lines), and MXCSR, XMM0,
/// RCX and RFLAGS are printed (after an EXC line when it raised an exception).
struct SSECase {
    let ins: String
    let mx: UInt32
    let a: (UInt64, UInt64)
    let b: (UInt64, UInt64)
    /// Why QEMU 7.2 cannot be the reference for this case (nil: it can).
    let hostOnly: String?
    /// The host CPU's result is an approximation (RCPPS & co.): its XMM0 lanes are compared as
    /// singles within `SSECaseTable.approxBound` of ours, everything else exactly.
    var approx = false
}

/// Runs a table of `SSECase`s on our CPU, on the host CPU (a C program with inline asm, compiled
/// with the host's C compiler at test time; an unmasked exception arrives there as SIGFPE, whose
/// handler resumes after the instruction) and on QEMU's TCG, and compares the printed results.
enum SSECaseTable {
    /// The largest relative difference allowed between an approximating instruction's host result
    /// and ours: the SDM's bound for RCPPS/RSQRTPS (1.5 * 2^-12) plus our own rounding error.
    static let approxBound = 1.5 * 0x1p-12 + 0x1p-22
    /// Cases per guest image (each takes about 100 of the image's 64 KiB).
    static let perImage = 300

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    static func ps(_ l0: UInt64, _ l1: UInt64, _ l2: UInt64, _ l3: UInt64) -> (UInt64, UInt64) { (l0 | l1 << 32, l2 | l3 << 32) }
    /// A scalar single in lane 0; the other lanes keep a marker the scalar forms must not touch.
    static func ss(_ x: UInt64) -> (UInt64, UInt64) { (x | 0xDEAD_BEEF << 32, 0x0123_4567_89AB_CDEF) }
    static func sd(_ x: UInt64) -> (UInt64, UInt64) { (x, 0x0123_4567_89AB_CDEF) }

    /// The guest: every case, then `fpshow` (prints MXCSR, AND `mxMask`, with XMM0 low, then XMM0
    /// high with RCX, both with RFLAGS) and the case data.
    static func guest(_ cases: ArraySlice<SSECase>, mxMask: UInt32) -> String {
        var s = """
            mov rax, cr4
            or rax, 0x400
            mov cr4, rax

            """
        for (k, c) in zip(cases.indices, cases) {
            s += """
                movdqu xmm0, [rel fpa\(k)]
                movdqu xmm1, [rel fpb\(k)]
                lea rax, [rel fpr\(k)]
                mov [RECOVER], rax
                mov rcx, 0x5555555555555555
                ldmxcsr [rel fpm\(k)]
                xor eax, eax
                \(c.ins)
            fpr\(k):
                call fpshow

            """
        }
        s += """
            mov qword [RECOVER], 0
            jmp fpdone
        fpshow:
            stmxcsr [0x8300]
            mov eax, [0x8300]
            pushfq
            and eax, \(hex(UInt64(mxMask)))
            popfq
            movq rdx, xmm0
            call pf64
            movdqa xmm15, xmm0
            psrldq xmm15, 8
            movq rax, xmm15
            mov rdx, rcx
            call pf64
            mov dword [0x8300], 0x1F80
            ldmxcsr [0x8300]
            ret

        """
        for (k, c) in zip(cases.indices, cases) {
            s += "fpa\(k): dq \(hex(c.a.0)), \(hex(c.a.1))\nfpb\(k): dq \(hex(c.b.0)), \(hex(c.b.1))\nfpm\(k): dd \(hex(UInt64(c.mx)))\n"
        }
        return s + "fpdone:\n"
    }

    /// The same cases as a C program for the host CPU (Intel syntax, so the instruction text is the
    /// guest's), printing what `fpshow` prints, and an EXC line where the guest's #XM handler would.
    static func hostProgram(_ cases: [SSECase]) -> String {
        var s = """
            #define _GNU_SOURCE
            #include <signal.h>
            #include <stdint.h>
            #include <stdio.h>
            #include <ucontext.h>
            static volatile uint64_t resume;
            static volatile int fired;
            static const uint32_t dflt = 0x1F80;
            static void onfpe(int sig, siginfo_t *si, void *p) {
                (void)sig; (void)si;
                ((ucontext_t *)p)->uc_mcontext.gregs[REG_RIP] = (greg_t)resume;
                fired = 1;
            }
            static void show(uint32_t mo, const uint64_t *r, uint64_t rcx, uint64_t fl) {
                if (fired) printf("EXC 0000000000000013 ERR 0000000000000000\\n");
                printf("%016llX %016llX %016llX\\n", (unsigned long long)mo, (unsigned long long)r[0], (unsigned long long)(fl & 0x8D5));
                printf("%016llX %016llX %016llX\\n", (unsigned long long)r[1], (unsigned long long)rcx, (unsigned long long)(fl & 0x8D5));
                fired = 0;
            }
            #define CASE(INS, A0, A1, B0, B1, MX) { \\
                static const uint64_t a[2] = {A0, A1}, b[2] = {B0, B1}; static const uint32_t mx = MX; \\
                uint32_t mo; uint64_t r[2], rcx, fl; \\
                __asm__ volatile("movdqu xmm0, %[a]\\n\\tmovdqu xmm1, %[b]\\n\\tlea rax, .Lr%=[rip]\\n\\tmov %[res], rax\\n\\t" \\
                    "mov rcx, 0x5555555555555555\\n\\tldmxcsr %[mx]\\n\\txor eax, eax\\n\\t" INS "\\n.Lr%=:\\n\\t" \\
                    "stmxcsr %[mo]\\n\\tmovdqu %[r], xmm0\\n\\tpushfq\\n\\tpop %[fl]\\n\\tmov %[rcx], rcx\\n\\tldmxcsr %[d]" \\
                    : [mo] "=m"(mo), [r] "=m"(r), [fl] "=&r"(fl), [rcx] "=&r"(rcx), [res] "=m"(resume) \\
                    : [a] "m"(a), [b] "m"(b), [mx] "m"(mx), [d] "m"(dflt) \\
                    : "rax", "rcx", "xmm0", "xmm1", "mm0", "memory", "cc"); \\
                show(mo, r, rcx, fl); }
            int main(void) {
                struct sigaction sa = {0};
                sa.sa_sigaction = onfpe;
                sa.sa_flags = SA_SIGINFO | SA_NODEFER;
                sigaction(SIGFPE, &sa, 0);

            """
        for c in cases {
            let ins = c.ins.replacingOccurrences(of: "\n", with: "\\n\\t")
            s += "    CASE(\"\(ins)\", \(hex(c.a.0))ull, \(hex(c.a.1))ull, \(hex(c.b.0))ull, \(hex(c.b.1))ull, \(hex(UInt64(c.mx))))\n"
        }
        return s + "    return 0;\n}\n"
    }

    /// Splits printed output into one chunk per case (an EXC line belongs to the case after it).
    static func chunks(_ out: String) -> [String] {
        var res: [String] = [], cur: [Substring] = []
        for line in out.split(separator: "\n") {
            cur.append(line)
            if !line.hasPrefix("EXC") && cur.filter({ !$0.hasPrefix("EXC") }).count == 2 {
                res.append(cur.joined(separator: "\n"))
                cur = []
            }
        }
        if !cur.isEmpty { res.append(cur.joined(separator: "\n")) }
        return res
    }

    /// Whether a host chunk matches ours for an approximating instruction: the same lines and
    /// fields, with each single-precision lane of XMM0 (the second field of each line, except RCX)
    /// equal or within `approxBound` of ours.
    static func approxMatch(_ ours: String, _ host: String) -> Bool {
        let a = ours.split(separator: "\n"), b = host.split(separator: "\n")
        guard a.count == b.count else { return false }
        var row = 0
        for (la, lb) in zip(a, b) {
            let fa = la.split(separator: " "), fb = lb.split(separator: " ")
            guard fa.count == fb.count else { return false }
            let exc = la.hasPrefix("EXC")
            for (k, (x, y)) in zip(fa, fb).enumerated() where x != y {
                // XMM0's quadword: field 1 of the first line, field 0 of the second.
                let isXMM = !exc && k == (row == 0 ? 1 : 0)
                guard isXMM, let u = UInt64(x, radix: 16), let v = UInt64(y, radix: 16) else { return false }
                for sh in [UInt64(0), 32] {
                    let p = Float(bitPattern: UInt32(truncatingIfNeeded: u >> sh))
                    let q = Float(bitPattern: UInt32(truncatingIfNeeded: v >> sh))
                    if p.bitPattern == q.bitPattern { continue }
                    guard p.isNormal, q.isNormal, p.sign == q.sign,
                          abs(Double(q) - Double(p)) <= approxBound * abs(Double(p)) else { return false }
                }
            }
            if !exc { row += 1 }
        }
        return true
    }

    static func check(_ cases: [SSECase], ours: String, ref: String, refName: String,
                      file: StaticString = #filePath, line: UInt = #line) {
        let a = chunks(ours), b = chunks(ref)
        XCTAssertEqual(a.count, cases.count, "our output has \(a.count) cases, expected \(cases.count):\n\(ours)", file: file, line: line)
        XCTAssertEqual(b.count, cases.count, "\(refName) output has \(b.count) cases, expected \(cases.count):\n\(ref)", file: file, line: line)
        var failures = 0
        for (k, c) in cases.enumerated() where k < a.count && k < b.count && a[k] != b[k] {
            if c.approx && refName == "host" && approxMatch(a[k], b[k]) { continue }
            failures += 1
            if failures <= 40 {
                XCTFail("\(c.ins.replacingOccurrences(of: "\n", with: "; ")) MXCSR \(String(c.mx, radix: 16)) a \(hex(c.a.0)),\(hex(c.a.1)) b \(hex(c.b.0)),\(hex(c.b.1)):\n  ours:\n\(a[k])\n  \(refName):\n\(b[k])", file: file, line: line)
            }
        }
        XCTAssertEqual(failures, 0, "\(failures) cases differ from \(refName)", file: file, line: line)
    }

    /// Our output for every case, one guest image per `perImage` cases.
    static func runOurs(_ cases: [SSECase], mxMask: UInt32, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        var out = ""
        for start in stride(from: 0, to: cases.count, by: perImage) {
            let image = try GuestHarness.assemble(guest(cases[start..<min(start + perImage, cases.count)], mxMask: mxMask), mode: .lm64)
            let (text, _, plat) = GuestHarness.runOurs(image, model: .max)
            XCTAssertNotNil(plat.exitCode, "guest did not reach EXIT; output:\n\(text)", file: file, line: line)
            out += text
        }
        return out
    }

    /// QEMU's output for every case, or nil when QEMU is not installed.
    static func runQEMU(_ cases: [SSECase], mxMask: UInt32) throws -> String? {
        var out = ""
        for start in stride(from: 0, to: cases.count, by: perImage) {
            let image = try GuestHarness.assemble(guest(cases[start..<min(start + perImage, cases.count)], mxMask: mxMask), mode: .lm64)
            guard let text = try GuestHarness.runQEMU(image, cpu: "max") else { return nil }
            out += text
        }
        return out
    }

    /// The host CPU's output for every case (skips when there is no C compiler or SSE4.1).
    static func runHost(_ cases: [SSECase]) throws -> String {
        guard let cc = GuestHarness.which("cc") ?? GuestHarness.which("gcc") else { throw XCTSkip("no C compiler") }
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        try XCTSkipUnless(cpuinfo.contains(" sse4_1"), "the host CPU lacks SSE4.1")
        let dir = GuestHarness.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = dir.appendingPathComponent("fpmodes.c"), exe = dir.appendingPathComponent("fpmodes").path
        try hostProgram(cases).write(to: src, atomically: true, encoding: .utf8)
        let (st, msg) = try GuestHarness.run(cc, ["-O1", "-masm=intel", "-msse4.1", "-mno-red-zone", "-o", exe, src.path])
        try XCTSkipUnless(st == 0, "cannot compile the host reference: \(msg)")
        // Through a file: the output is larger than a pipe holds, and `run` drains it only at the end.
        let outPath = dir.appendingPathComponent("host.txt").path
        let (rst, msg2) = try GuestHarness.run("/bin/sh", ["-c", "'\(exe)' > '\(outPath)'"])
        XCTAssertEqual(rst, 0, msg2)
        let host = try String(contentsOfFile: outPath, encoding: .utf8)
        if ProcessInfo.processInfo.environment["X86_TEST_VERBOSE"] != nil { print("--- host ---\n\(host)") }
        return host
    }

    /// Every case against the host CPU.
    static func checkAgainstHost(_ cases: [SSECase], file: StaticString = #filePath, line: UInt = #line) throws {
        let host = try runHost(cases)
        let ours = try runOurs(cases, mxMask: 0xFFFF_FFFF, file: file, line: line)
        check(cases, ours: ours, ref: host, refName: "host", file: file, line: line)
    }

    /// The cases QEMU 7.2 models against QEMU's TCG (MXCSR.DE left out: QEMU never sets it).
    static func checkAgainstQEMU(_ cases: [SSECase], file: StaticString = #filePath, line: UInt = #line) throws {
        let cases = cases.filter { $0.hostOnly == nil }
        let ours = try runOurs(cases, mxMask: ~2, file: file, line: line)
        guard let ref = try runQEMU(cases, mxMask: ~2) else { throw XCTSkip("qemu-system-x86_64 not installed") }
        check(cases, ours: ours, ref: ref, refName: "QEMU", file: file, line: line)
    }
}
