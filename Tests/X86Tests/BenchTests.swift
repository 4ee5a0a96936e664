// Speed measurement (bench/x86-speed.sh runs it): a compute-loop guest (a sieve plus a CRC-style
// byte loop, ~2 G instructions) on our CPU, reported in MIPS, and the same image under QEMU TCG.
// Skipped unless X86_BENCH=1: it is a benchmark, not a test.

import Foundation
import XCTest
@testable import X86

final class BenchTests: XCTestCase {
    static let computeLoop = """
        mov r12, 40                 ; outer repetitions
    .outer:
        ; sieve of Eratosthenes over 1 MiB of bytes at 0x200000
        mov rdi, 0x200000
        mov rcx, 0x100000 / 8
        mov rax, 0x0101010101010101
        rep stosq
        mov rbx, 2
    .sieve:
        cmp byte [0x200000 + rbx], 0
        je .next
        mov rdx, rbx
        imul rdx, rbx
        cmp rdx, 0x100000
        jae .count
    .mark:
        mov byte [0x200000 + rdx], 0
        add rdx, rbx
        cmp rdx, 0x100000
        jb .mark
    .next:
        inc rbx
        jmp .sieve
    .count:
        xor eax, eax
        xor esi, esi
    .cnt:
        movzx ecx, byte [0x200000 + rsi]
        add eax, ecx
        inc rsi
        cmp rsi, 0x100000
        jb .cnt
        ; CRC-like byte loop
        mov ecx, 0xFFFFFFFF
        xor esi, esi
    .crc:
        movzx r8d, byte [0x200000 + rsi]
        xor r8d, ecx
        shr ecx, 8
        and r8d, 0xFF
        imul r8d, r8d, 0x01000193
        xor ecx, r8d
        add rsi, 1
        cmp rsi, 0x100000
        jb .crc
        dec r12
        jnz .outer
        mov rdx, rcx
        call pf64
    """

    func testComputeLoopMIPS() throws {
        guard ProcessInfo.processInfo.environment["X86_BENCH"] != nil else {
            throw XCTSkip("benchmark: set X86_BENCH=1 (bench/x86-speed.sh)")
        }
        let image = try GuestHarness.assemble(Self.computeLoop, mode: .lm64)
        let t0 = monotonicNanos()
        let (out, cpu, _) = GuestHarness.runOurs(image, seconds: 300)
        let dt = Double(monotonicNanos() - t0) / 1e9
        let n = Double(cpu.instructionsRetired)
        print(String(format: "x86-speed: compute loop: %.0f M instructions in %.2f s = %.1f MIPS (result %@)",
                     n / 1e6, dt, n / dt / 1e6, out.trimmingCharacters(in: .whitespacesAndNewlines)))
        if GuestHarness.qemu != nil {
            let q0 = monotonicNanos()
            let ref = try GuestHarness.runQEMU(image) ?? ""
            let qdt = Double(monotonicNanos() - q0) / 1e9
            print(String(format: "x86-speed: qemu-system-x86_64 -accel tcg: %.2f s wall (same guest, incl. startup) = %.1f MIPS-equivalent; ratio %.2fx",
                         qdt, n / qdt / 1e6, dt / qdt))
            XCTAssertEqual(out, ref)
        }
    }

    /// Guest loops for counting host instructions per guest instruction under callgrind (see
    /// bench/x86-callgrind.sh): X86_CALLGRIND_LOOP picks one (compute, x87, string, call), and
    /// X86_CALLGRIND_REPS its repetitions; two runs with different repetitions give the per-guest-
    /// instruction cost without the harness's fixed cost. Skipped otherwise.
    static let callgrindLoops: [String: String] = [
        "compute": """
            mov rcx, 0x10000 / 8
            mov rdi, 0x200000
            mov rax, 0x0101010101010101
            rep stosq
            xor esi, esi
            mov ecx, 0xFFFFFFFF
        .crc:
            movzx r8d, byte [0x200000 + rsi]
            xor r8d, ecx
            shr ecx, 8
            and r8d, 0xFF
            imul r8d, r8d, 0x01000193
            xor ecx, r8d
            add [0x300000 + rsi*4], r8d
            add rsi, 1
            cmp rsi, 0x10000
            jb .crc
        """,
        "x87": """
            fninit
            fldpi
            fld1
            mov ecx, 0x4000
        .f:
            fadd st0, st1
            fmul st0, st1
            fdiv st0, st1
            fsub st0, st1
            fsqrt
            dec ecx
            jnz .f
            fstp st0
            fstp st0
        """,
        "string": """
            mov rsi, 0x200000
            mov rdi, 0x280000
            mov rcx, 0x10000
            rep movsb
            mov rdi, 0x200000
            mov rcx, 0x10000
            mov al, 1
            repne scasb
            std
            mov rsi, 0x20FFFF
            mov rdi, 0x28FFFF
            mov rcx, 0x10000
            rep movsb
            cld
        """,
        "call": """
            mov ecx, 0x8000
        .c:
            call .fn
            push rcx
            pop rdx
            dec ecx
            jnz .c
            jmp .out
        .fn:
            mov rax, [rsp]
            ret
        .out:
        """,
    ]

    func testCallgrindLoop() throws {
        let env = ProcessInfo.processInfo.environment
        guard let name = env["X86_CALLGRIND_LOOP"], let loop = Self.callgrindLoops[name] else {
            throw XCTSkip("callgrind measurement: set X86_CALLGRIND_LOOP (bench/x86-callgrind.sh)")
        }
        let reps = Int(env["X86_CALLGRIND_REPS"] ?? "1") ?? 1
        // Under valgrind, Foundation cannot start nasm: the script assembles the image in a first run
        // without valgrind (X86_CALLGRIND_IMAGE names the file) and the measured runs load it.
        let path = env["X86_CALLGRIND_IMAGE"]
        let image: [UInt8]
        if let path, let data = FileManager.default.contents(atPath: path) {
            image = [UInt8](data)
        } else {
            image = try GuestHarness.assemble("""
                    mov r15, [0x8300]
                .rep:
                \(loop)
                    dec r15
                    jnz .rep
                """, mode: .lm64)
            if let path { try Data(image).write(to: URL(fileURLWithPath: path)); return }
        }
        let plat = TestPlatform(bios: image, seconds: 600)
        plat.ram.storeBytes(of: UInt64(reps), toByteOffset: 0x8300, as: UInt64.self)
        let cpu = X86VCPU(index: 0, platform: plat, model: .qemu64)
        _ = cpu.run()
        XCTAssertNotNil(plat.exitCode)
        print("x86-callgrind: \(name) reps \(reps): \(cpu.instructionsRetired) guest instructions")
    }
}

