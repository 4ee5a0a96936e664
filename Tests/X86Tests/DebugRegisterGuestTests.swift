import XCTest
@testable import X86

/// The debug registers around the breakpoints (BreakpointGuestTests has the #DB handler these
/// guests share): I/O breakpoints and CR4.DE, DR4/DR5, the reserved bits of DR6/DR7, general detect,
/// DR6's sticky and rewritten bits, TF single-step with breakpoints, and task switches clearing the
/// local enables. Compared with QEMU 7.2's TCG, or on our CPU against the SDM where QEMU departs.
final class DebugRegisterGuestTests: GuestTestCase {
    /// A task switch clears L0-L3 (and leaves G0-G3): a JMP to a TSS and back, DR7 read in each task.
    func testTaskSwitchClearsLocalEnables() throws {
        try compare(TaskGateGuestTests.setup32 + """
            mov dword [0xA100 + 0x20], .taskB
            mov dword [0xA100 + 0x24], 0x2
            mov dword [0xA100 + 0x38], 0x70000
            mov word [0xA100 + 0x48], 0x10
            mov word [0xA100 + 0x4C], 0x08
            mov word [0xA100 + 0x50], 0x10
            mov word [0xA100 + 0x54], 0x10
            mov word [0xA100 + 0x58], 0x10
            mov eax, 0x300000               ; addresses nothing touches
            mov dr0, eax
            mov dr1, eax
            mov dr2, eax
            mov dr3, eax
            mov eax, 0x400 | 0xFF | (1 << 16) | (1 << 20) | (1 << 24) | (1 << 28)
            mov dr7, eax
            jmp 0x50:0
            mov eax, dr7
            PRINT 'A'
            mov eax, 0x405
            mov dr7, eax
            jmp .done
        .taskB:
            mov eax, dr7
            PRINT 'B'
            jmp 0x48:0
        .done:
            mov eax, dr7
            PRINT 'C'
        """, mode: .pm32, expectContains: ["B=111104AA", "A=111104AA", "C=00000405"])
    }

    // MARK: I/O breakpoints, DR4/DR5, MOV DR checks

    /// With CR4.DE = 1, R/W = 10 breaks on port accesses overlapping DRn's range (a trap); DR4/DR5
    /// raise #UD; DR6/DR7 writes with bits 63:32 set raise #GP.
    func testIOBreakpointsAndDebugExtensions() throws {
        try compare(BreakpointGuestTests.body("""
            mov qword [DBX_RF], 0
            mov rax, cr4
            or eax, 8
            mov cr4, rax
            mov eax, 0x80
            mov dr0, rax
            mov eax, 0x84
            mov dr1, rax
            mov eax, 0x400 | 0x0A | (2 << 16) | (0 << 18) | (2 << 20) | (3 << 22)
            mov dr7, rax
            mov r12d, 1
            out 0x80, al
            mov r12d, 2
            in al, 0x81
            mov r12d, 3
            in ax, 0x83
            mov r12d, 4
            mov dx, 0x87
            out dx, al
            mov r12d, 5
            mov dx, 0x88
            in eax, dx
            mov r12d, 6
            mov dx, 0x7F
            out dx, ax
            mov r12d, 7
            mov eax, 0x400
            mov dr7, rax
            lea rax, [rel .u1]
            mov [RECOVER], rax
            mov rax, dr4                    ; #UD with CR4.DE = 1
        .u1:
            lea rax, [rel .u2]
            mov [RECOVER], rax
            mov dr5, rax                    ; #UD
        .u2:
            lea rax, [rel .u3]
            mov [RECOVER], rax
            mov rax, 0x100000000
            mov dr7, rax                    ; #GP: bits 63:32
        .u3:
            lea rax, [rel .u4]
            mov [RECOVER], rax
            mov rax, 0x100000000
            mov dr6, rax                    ; #GP
        .u4:
            mov qword [RECOVER], 0
            mov rax, cr4
            and eax, ~8
            mov cr4, rax
            mov eax, 0x4002                 ; DR4 is DR6 with CR4.DE = 0
            mov dr4, rax
            mov rax, dr6
            SHOW 'S'
            mov rax, dr5
            SHOW 'S'
            NL
            xor eax, eax
            mov dr6, rax
        """), expectContains: ["EXC 0000000000000006", "EXC 000000000000000D", "S=00000000FFFF4FF2 S=0000000000000400"])
    }

    /// With CR4.DE = 0, R/W = 10 is undefined (SDM 18.2.4): our CPU ignores it (QEMU 7.2 breaks on I/O
    /// regardless of CR4.DE).
    func testIOBreakpointNeedsDebugExtensions() throws {
        try BreakpointGuestTests.ours("""
            mov eax, 0x80
            mov dr0, rax
            mov eax, 0x400 | 0x02 | (2 << 16)
            mov dr7, rax
            mov r12d, 1
            out 0x80, al
            mov eax, 0x400
            mov dr7, rax
        """, "N=0000000000000000 \n")
    }

    /// General detect: with DR7.GD a MOV DR is a fault-class #DB before it runs (DR6.BD, RF = 1 in the
    /// image); the CPU clears GD on entering the handler, and BD stays set (SDM 18.2.4, as
    /// kvm-unit-tests' debug.c checks on hardware). QEMU 7.2 has no GD: our CPU against the SDM.
    func testGeneralDetect() throws {
        try BreakpointGuestTests.ours("""
            mov eax, 0x2400
            mov dr7, rax
            lea rax, [rel .gd]
            mov [DBX_BASE], rax
            mov qword [DBX_KEEP], 1
            mov r12d, 1
        .gd:
            mov rax, dr0
            mov rax, dr7
            SHOW 'G'
            mov rax, dr6
            SHOW 'S'
            NL
            ; BD is sticky: a data breakpoint hit keeps it and sets B1
            mov rax, 0x200800
            mov dr1, rax
            mov eax, 0x400 | 0x08 | (1 << 20)
            mov dr7, rax
            lea rax, [rel .w]
            mov [DBX_BASE], rax
            mov r12d, 2
            mov [0x200800], al
        .w:
            mov eax, 0x400
            mov dr7, rax
        """, BreakpointGuestTests.db(1, 0xFFFF_2FF0, f: 0x10000) + "G=0000000000000400 S=00000000FFFF2FF0 \n"
            + BreakpointGuestTests.db(2, 0xFFFF_2FF2) + "N=0000000000000002 \n")
    }

    // MARK: DR6 and single-step

    /// DR6's B0-B3 are rewritten on every #DB; BS, BD and BT are sticky (the handler leaves DR6
    /// alone here). A single-step trap over an instruction that hits a data breakpoint is one #DB
    /// with BS and B1. (QEMU 7.2 keeps reporting a data breakpoint's B bit in later single-step
    /// traps and raises a second #DB for the combined case: our CPU against the SDM and
    /// kvm-unit-tests' hardware expectations, DR6 = 0xFFFF4FF0 for a plain single-step trap.)
    func testDR6AccumulationAndSingleStep() throws {
        let image = try GuestHarness.assemble(BreakpointGuestTests.body("""
            mov qword [DBX_KEEP], 1
            lea rax, [rel .a]
            mov dr0, rax
            mov rax, 0x200800
            mov dr1, rax
            mov eax, 0x400 | 0x0A | (1 << 20) | (3 << 22)
            mov dr7, rax
            mov r12d, 1
        .a:
            nop                          ; B0
            mov r12d, 2
            mov [0x200800], eax          ; B1 (B0 cleared)
            mov r12d, 3
            pushfq
            or qword [rsp], 0x100
            popfq
            nop                          ; BS
            mov [0x200800], eax          ; BS and B1
            pushfq                       ; BS
            and qword [rsp], ~0x100      ; BS
            popfq                        ; BS (TF was set when it began)
            mov r12d, 4
            mov [0x200800], eax          ; B1, BS still set
            mov eax, 0x400
            mov dr7, rax
            xor eax, eax
            mov dr6, rax
            mov rax, dr6
            SHOW 'S'
            NL
        """), mode: .lm64)
        let (out, _, plat) = GuestHarness.runOurs(image)
        XCTAssertNotNil(plat.exitCode, "guest did not reach EXIT; output:\n\(out)")
        // Without the E column (code addresses).
        let got = out.split(separator: "\n").map { $0.split(separator: " ").filter { !$0.hasPrefix("E=") }.joined(separator: " ") }
        func l(_ k: UInt64, _ d: UInt64, _ f: UInt64) -> String { "K=\(BreakpointGuestTests.hex(k)) D=\(BreakpointGuestTests.hex(d)) F=\(BreakpointGuestTests.hex(f))" }
        XCTAssertEqual(got, [l(1, 0xFFFF_0FF1, 0), l(2, 0xFFFF_0FF2, 0), l(3, 0xFFFF_4FF0, 0x100), l(3, 0xFFFF_4FF2, 0x100),
                             l(3, 0xFFFF_4FF0, 0x100), l(3, 0xFFFF_4FF0, 0x100), l(3, 0xFFFF_4FF0, 0), l(4, 0xFFFF_4FF2, 0),
                             "S=00000000FFFF0FF0", "N=0000000000000008"])
    }

    /// TF single-step onto an instruction breakpoint: the single-step trap comes first and reports
    /// the breakpoint detected at the same boundary (BS and B0, as QEMU); a handler that sets RF
    /// (as this one does for B0) skips its fault, otherwise it would follow.
    func testSingleStepOntoInstructionBreakpoint() throws {
        try compare(BreakpointGuestTests.body("""
            mov qword [DBX_RF], 1
            lea rax, [rel .t]
            mov [DBX_BASE], rax
            mov dr0, rax
            mov eax, 0x402
            mov dr7, rax
            mov r12d, 1
            pushfq
            or qword [rsp], 0x100
            popfq
            nop
        .t:
            inc eax
            pushfq
            and qword [rsp], ~0x100
            popfq
            mov eax, 0x400
            mov dr7, rax
        """), expectContains: ["D=00000000FFFF4FF1"])
    }
}
