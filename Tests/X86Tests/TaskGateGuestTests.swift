import XCTest
@testable import X86

/// Hardware task switches (JMP/CALL to a TSS and through task gates, INT and #DF through task
/// gates, IRET with NT), call gates with privilege changes and far RET to the outer level,
/// compared with QEMU's TCG.
final class TaskGateGuestTests: GuestTestCase {
    /// Shared protected-mode setup: a RAM copy of the GDT at 0xB000 (limit 0xFF) with
    ///   0x48 TSS A (32-bit, 0xA000, the running task)   0x50 TSS B (32-bit, 0xA100)
    ///   0x58 TSS C (16-bit, 0xA200)                      0x60 task gate -> 0x50 (DPL 3)
    ///   0x78 TSS D (32-bit, 0xA300, the #DF task)
    /// and macros DESC (descriptor) / PRINT (label + EAX in hex, from SingleStepGuestTests).
    static let setup32 = """
        %macro DESC 4
            mov dword [0xB000 + %1], ((%3) & 0xFFFF) | (((%2) & 0xFFFF) << 16)
            mov dword [0xB000 + %1 + 4], (((%2) >> 16) & 0xFF) | ((%4) << 8) | ((%3) & 0xF0000) | ((%2) & 0xFF000000)
        %endmacro

        """ + SingleStepGuestTests.print32 + """
            mov esi, gdt
            mov edi, 0xB000
            mov ecx, 0x48
            rep movsb
            mov edi, 0xB048
            xor eax, eax
            mov ecx, (0x100 - 0x48) / 4
            rep stosd
            mov edi, 0xA000
            mov ecx, 0x400 / 4
            rep stosd
            DESC 0x48, 0xA000, 0x67, 0x89
            DESC 0x50, 0xA100, 0x67, 0x89
            DESC 0x58, 0xA200, 0x2B, 0x81
            DESC 0x78, 0xA300, 0x67, 0x89
            mov dword [0xB060], 0x00500000
            mov dword [0xB064], 0x0000E500
            mov word [0xB100], 0xFF
            mov dword [0xB102], 0xB000
            lgdt [0xB100]
            mov ax, 0x48
            ltr ax

        """

    func testTaskSwitchJmpCallIretAndGates() throws {
        try compare(Self.setup32 + """
            ; task B: 32-bit, starts at .taskB with its own registers and stack
            mov dword [0xA100 + 0x20], .taskB
            mov dword [0xA100 + 0x24], 0x2 | 0x800 | 0x1
            mov dword [0xA100 + 0x28], 0x11111111
            mov dword [0xA100 + 0x2C], 0x22222222
            mov dword [0xA100 + 0x38], 0x70000
            mov dword [0xA100 + 0x3C], 0x33333333
            mov word [0xA100 + 0x48], 0x10
            mov word [0xA100 + 0x4C], 0x08
            mov word [0xA100 + 0x50], 0x10
            mov word [0xA100 + 0x54], 0x10
            mov word [0xA100 + 0x58], 0x10
            ; INT 0x40 through a task gate to B as well (IDT entry = task gate, selector 0x50)
            mov dword [IDT + 0x40*8], 0x00500000
            mov dword [IDT + 0x40*8 + 4], 0x0000E500
            mov eax, 0xAAAA0001
            mov ebx, 0xBBBB0001
            call 0x50:0
            ; back from B's IRET: A's registers come from A's TSS (EAX was saved there)
            call dump32
            mov eax, [0xB048 + 4]
            PRINT 'A'
            mov eax, [0xB050 + 4]
            PRINT 'B'
            str ax
            and eax, 0xFFFF
            PRINT 'T'
            pushfd
            pop eax
            and eax, 0x4000
            PRINT 'N'
            ; JMP through the task gate: B resumes after its IRET, then JMPs back to A
            mov eax, 0xAAAA0002
            jmp 0x60:0
            PRINT 'J'
            mov eax, [0xB048 + 4]
            PRINT 'A'
            mov eax, [0xB050 + 4]
            PRINT 'B'
            mov eax, [0xA000]
            PRINT 'L'
            ; INT 0x40 through the IDT task gate: B's third entry, IRET back
            mov eax, 0xAAAA0003
            int 0x40
            PRINT 'I'
            ; a 16-bit TSS: task C runs 16-bit code (CS 0x20, base 0xF0000) and JMPs back
            mov word [0xA200 + 0x0E], .taskC - 0xF0000
            mov word [0xA200 + 0x10], 0x0002
            mov word [0xA200 + 0x12], 0x1234
            mov word [0xA200 + 0x1A], 0x6000
            mov word [0xA200 + 0x22], 0x10
            mov word [0xA200 + 0x24], 0x20
            mov word [0xA200 + 0x26], 0x28
            mov word [0xA200 + 0x28], 0x10
            mov eax, 0xAAAA0004
            mov edx, 0xDDDD0004
            jmp 0x58:0
            call dump32
            movzx eax, word [0xA200 + 0x0E]
            PRINT 'P'
            movzx eax, word [0xA200 + 0x12]
            PRINT 'X'
            movzx eax, word [0xA200 + 0x16]
            PRINT 'D'
            mov eax, [0xB058 + 4]
            PRINT 'C'
            ; faults: JMP to the busy TSS A, to a not-present TSS, to a TSS with a short limit,
            ; CALL through a task gate whose DPL is below the RPL
            mov dword [RECOVER], .f1
            jmp 0x48:0
        .f1:
            DESC 0x80, 0xA300, 0x67, 0x09
            mov dword [RECOVER], .f2
            jmp 0x80:0
        .f2:
            DESC 0x88, 0xA300, 0x40, 0x89
            mov dword [RECOVER], .f3
            call 0x88:0
        .f3:
            mov dword [0xB064], 0x00008500
            mov dword [RECOVER], .f4
            call 0x63:0
        .f4:
            ; IRET with NT set and a back link to a TSS that is not busy: #TS(link)
            mov word [0xA000], 0x78
            pushfd
            or dword [esp], 0x4000
            popfd
            mov dword [RECOVER], .f5
            iretd
        .f5:
            pushfd
            and dword [esp], ~0x4000
            popfd
            mov eax, cr0
            and eax, 8
            PRINT 'S'
            jmp .done

        .taskB:
            call dump32
            pushfd
            pop eax
            and eax, 0x4000
            PRINT 'N'
            str ax
            and eax, 0xFFFF
            PRINT 'T'
            mov eax, [0xA100]
            PRINT 'L'
            mov eax, [0xB050 + 4]
            PRINT 'B'
            mov eax, cr0
            and eax, 8
            PRINT 'S'
            clts
            iretd
            ; resumed by the JMP through the gate: NT clear, A not busy
            PRINT 'b'
            pushfd
            pop eax
            and eax, 0x4000
            PRINT 'N'
            mov eax, [0xB048 + 4]
            PRINT 'A'
            jmp 0x48:0
            ; resumed by INT 0x40
            PRINT 'i'
            mov eax, [0xA100]
            PRINT 'L'
            iretd
            jmp .taskB

        bits 16
        .taskC:
            mov ax, 0x5678
            mov dx, 0x9ABC
            jmp 0x48:0
        bits 32
        .done:
        """, mode: .pm32, expectContains: ["EXC 0000000D ERR 00000048", "EXC 0000000B ERR 00000080",
                                           "EXC 0000000A ERR 00000088", "EXC 0000000D ERR 00000060",
                                           "EXC 0000000A ERR 00000078"])
    }

    /// #GP whose handler's IDT entry is not present: #NP during delivery, so #DF, which goes
    /// through a task gate to task D with the error code on D's stack.
    func testDoubleFaultThroughTaskGate() throws {
        try compare(Self.setup32 + """
            mov dword [0xA300 + 0x20], .dfTask
            mov dword [0xA300 + 0x24], 0x2
            mov dword [0xA300 + 0x38], 0x60000
            mov word [0xA300 + 0x48], 0x10
            mov word [0xA300 + 0x4C], 0x08
            mov word [0xA300 + 0x50], 0x10
            mov word [0xA300 + 0x54], 0x10
            mov dword [IDT + 8*8], 0x00780000
            mov dword [IDT + 8*8 + 4], 0x00008500
            and byte [IDT + 13*8 + 5], 0x7F
            mov ebx, 0x0B0B0B0B
            mov ax, 0x7777
        .fault:
            mov ds, ax
            jmp .done
        .dfTask:
            pop eax
            PRINT 'E'
            mov eax, esp
            PRINT 'P'
            mov eax, [0xA300]
            PRINT 'L'
            mov eax, [0xA000 + 0x20]
            sub eax, .fault
            PRINT 'I'
            mov eax, [0xA000 + 0x34]
            PRINT 'B'
            pushfd
            pop eax
            and eax, 0x4000
            PRINT 'N'
            mov eax, [0xB078 + 4]
            PRINT 'D'
            mov eax, [0xB048 + 4]
            PRINT 'A'
        .done:
        """, mode: .pm32, expectContains: ["E=00000000", "L=00000048", "N=00004000"])
    }

    /// Ring 3 calls ring 0 through a 32-bit call gate copying two parameters, then a 16-bit gate
    /// copying one; RETF n returns to ring 3. Then the fault cases.
    func testCallGates32() throws {
        try compare(Self.setup32 + """
            mov dword [0xA000 + 4], 0x50000          ; ESP0
            mov word [0xA000 + 8], 0x10              ; SS0
            ; 0x68: 32-bit call gate, DPL 3, 2 parameters -> 0x08:.gate32
            mov eax, .gate32
            mov [0xB068], ax
            mov word [0xB06A], 0x08
            mov word [0xB06C], 0xEC02
            shr eax, 16
            mov [0xB06E], ax
            ; 0x70: 16-bit call gate, DPL 3, 1 parameter -> 0x20:(.gate16 - 0xF0000)
            mov word [0xB070], .gate16 - 0xF0000
            mov word [0xB072], 0x20
            mov word [0xB074], 0xE401
            mov word [0xB076], 0
            ; 0x90: call gate with DPL 0; 0x98: not present; 0xA0: target is a data segment
            mov eax, [0xB068]
            mov edx, [0xB06C]
            mov [0xB090], eax
            mov [0xB094], edx
            and byte [0xB095], 0x9F
            mov [0xB098], eax
            mov [0xB09C], edx
            and byte [0xB09D], 0x7F
            mov [0xB0A0], eax
            mov [0xB0A4], edx
            mov word [0xB0A2], 0x10
            ; to ring 3 with IOPL 3
            push dword 0x3B
            push dword 0x7F00
            push dword 0x3202
            push dword 0x33
            push dword .user
            iretd
        .user:
            mov ax, 0x3B
            mov ds, ax
            mov es, ax
            push dword 0x11111111
            push dword 0x22222222
            mov eax, 0x55
            call 0x6B:0
            mov ecx, esp
            mov edx, ss
            mov ebx, cs
            mov esi, ds
            mov di, 0x3B
            mov ds, di
            call dump32
            push word 0x4444
            call 0x73:0
        .u16ret:
            mov ecx, esp
            call dump32
            ; faults from ring 3
            mov dword [RECOVER], .u1
            call 0x93:0
        .u1:
            mov dword [RECOVER], .u2
            call 0x9B:0
        .u2:
            mov dword [RECOVER], .u3
            call 0xA3:0
        .u3:
            mov dword [RECOVER], .u4
            jmp 0x6B:0                 ; JMP through a gate cannot change privilege
        .u4:
            mov dword [RECOVER], 0
            jmp .done

        .gate32:
            mov ebx, cs
            mov ecx, ss
            mov edx, esp
            call dump32
            mov eax, [esp + 8]
            PRINT '1'
            mov eax, [esp + 12]
            PRINT '2'
            mov eax, [esp + 16]
            PRINT 'e'
            mov eax, [esp + 20]
            PRINT 's'
            mov ax, 0x10
            mov ds, ax
            retf 8
        bits 16
        .gate16:
            mov ebp, esp
            movzx eax, word [ebp + 4]
            movzx ebx, word [ebp + 6]
            movzx ecx, word [ebp + 8]
            movzx edx, word [ebp + 2]
            mov si, cs
            mov di, ss
            ; the 16-bit frame holds only IP's low half: return through a 32-bit frame instead
            jmp dword 0x08:.g16done
        bits 32
        .g16done:
            movzx ebp, word [esp + 6]
            add ebp, 2
            add esp, 10
            push dword 0x3B
            push ebp
            push dword 0x33
            push dword .u16ret
            retf
        .done:
        """, mode: .pm32, expectContains: ["EXC 0000000D ERR 00000090", "EXC 0000000B ERR 00000098",
                                           "EXC 0000000D ERR 00000010", "EXC 0000000D ERR 00000008"])
    }

    /// Long mode: ring 3 calls ring 0 through a 64-bit call gate (16-byte descriptor), then RETF
    /// with REX.W returns to ring 3; a 32-bit gate type in long mode is #GP.
    func testCallGate64() throws {
        try compare("""
            or qword [0x10000], 4
            or qword [0x11000], 4
            or qword [0x12000], 4
            mov rax, cr3
            mov cr3, rax
            mov rdi, 0xA000
            xor eax, eax
            mov ecx, 104/4
            rep stosd
            mov qword [0xA004], 0x80000
            mov rsi, gdt
            mov rdi, 0xB000
            mov ecx, 0x58
            rep movsb
            mov rax, 0x0000890000000067 | (0xA000 << 16)
            mov [0xB048], rax
            mov qword [0xB050], 0
            ; 0x58: 64-bit call gate, DPL 3 -> 0x18:.kernel
            lea rax, [rel .kernel]
            mov [0xB058], ax
            mov word [0xB05A], 0x18
            mov word [0xB05C], 0xEC00
            shr rax, 16
            mov [0xB05E], ax
            shr rax, 16
            mov [0xB060], eax
            mov dword [0xB064], 0
            mov word [0xB100], 0x67
            mov qword [0xB102], 0xB000
            lgdt [0xB100]
            mov ax, 0x48
            ltr ax
            push 0x3B
            push 0x70000
            push 0x3202
            push 0x43
            lea rax, [rel .user]
            push rax
            iretq
        .user:
            mov rax, 0x1111
            mov rdx, cs
            call pf64
            mov rbx, rsp
            call dword far [rel .gateptr]
            mov rax, rsp
            mov rdx, ss
            call pf64
            ; back to ring 0: #GP from HLT resumes at .k3 with CS 0x18
            lea rax, [rel .k3]
            mov [RECOVER], rax
            hlt
        .gateptr:
            dd 0
            dw 0x5B
        .kernel:
            mov rax, rsp
            mov rdx, ss
            call pf64
            mov rax, [rsp]
            lea rdx, [rel .user]
            sub rax, rdx
            mov rdx, [rsp + 8]
            call pf64
            mov rax, [rsp + 16]
            mov rdx, [rsp + 24]
            call pf64
            o64 retf
        .k3:
            mov qword [RECOVER], 0
            mov rax, cs
            call pf64
        """)
    }

    /// A fault while loading the new task's segments is delivered in the new task: the switch
    /// has happened (TR, busy bits, back link) and the handler returns into the new task.
    func testTaskSwitchFaultInNewTask() throws {
        try compare(Self.setup32 + """
            mov dword [0xA100 + 0x20], .taskB
            mov dword [0xA100 + 0x24], 0x2
            mov dword [0xA100 + 0x38], 0x70000
            mov word [0xA100 + 0x48], 0x10
            mov word [0xA100 + 0x4C], 0x08
            mov word [0xA100 + 0x50], 0x10
            mov word [0xA100 + 0x54], 0x10
            mov word [0xA100 + 0x58], 0x10
            mov word [0xA100 + 0x5C], 0x7770       ; GS beyond the GDT limit: #TS(0x7770)
            mov dword [RECOVER], .inB
            call 0x50:0
        .taskB:
            PRINT 'x'                              ; not reached: the fault hits before B's first instruction
        .inB:
            str ax
            and eax, 0xFFFF
            PRINT 'T'
            mov eax, gs
            PRINT 'G'
            mov eax, [0xA100]
            PRINT 'L'
            mov eax, [0xB048 + 4]
            PRINT 'A'
            mov eax, [0xB050 + 4]
            PRINT 'B'
            pushfd
            pop eax
            and eax, 0x4000
            PRINT 'N'
            mov dword [RECOVER], 0
        """, mode: .pm32, expectContains: ["EXC 0000000A ERR 00007770", "T=00000050"])
    }

    /// Long mode: JMP through a 64-bit call gate at the same privilege; a 16-bit call gate type
    /// and a gate to a 32-bit code segment are #GP.
    func testCallGate64JumpAndFaults() throws {
        try compare("""
            mov rsi, gdt
            mov rdi, 0xB000
            mov ecx, 0x48
            rep movsb
            lea rax, [rel .target]
            mov [0xB058], ax
            mov word [0xB05A], 0x18
            mov word [0xB05C], 0x8C00
            shr rax, 16
            mov [0xB05E], ax
            shr rax, 16
            mov [0xB060], eax
            mov dword [0xB064], 0
            mov rax, [0xB058]
            mov rdx, [0xB060]
            mov [0xB068], rax                   ; 0x68: the same gate aimed at 32-bit code (0x08)
            mov [0xB070], rdx
            mov word [0xB06A], 0x08
            mov [0xB078], rax                   ; 0x78: type 4 (16-bit call gate): invalid in long mode
            mov [0xB080], rdx
            mov byte [0xB07D], 0x84
            mov word [0xB100], 0x87
            mov qword [0xB102], 0xB000
            lgdt [0xB100]
            mov rbx, 0x1234
            jmp dword far [rel .p58]
        .target:
            mov rax, cs
            mov rdx, rbx
            call pf64
            lea rax, [rel .r1]
            mov [RECOVER], rax
            jmp dword far [rel .p68]
        .r1:
            lea rax, [rel .r2]
            mov [RECOVER], rax
            call dword far [rel .p78]
        .r2:
            mov qword [RECOVER], 0
            jmp .done
        .p58: dd 0
              dw 0x58
        .p68: dd 0
              dw 0x68
        .p78: dd 0
              dw 0x78
        .done:
        """, expectContains: ["EXC 000000000000000D ERR 0000000000000008", "EXC 000000000000000D ERR 0000000000000078"])
    }

    /// The 32-bit TSS T bit: a #DB trap (DR6.BT) in the new task before its first instruction.
    /// QEMU 7.2's TCG ignores the bit, so this runs on our CPU only, against the SDM.
    func testTSSDebugTrapBit() throws {
        let image = try GuestHarness.assemble(Self.setup32 + """
            mov dword [0xA100 + 0x20], .taskB
            mov dword [0xA100 + 0x24], 0x2
            mov dword [0xA100 + 0x38], 0x70000
            mov word [0xA100 + 0x48], 0x10
            mov word [0xA100 + 0x4C], 0x08
            mov word [0xA100 + 0x50], 0x10
            mov word [0xA100 + 0x54], 0x10
            mov word [0xA100 + 0x64], 1            ; T
            mov eax, .db
            mov [IDT + 8], ax
            shr eax, 16
            mov [IDT + 8 + 6], ax
            xor eax, eax
            mov dr6, eax
            call 0x50:0
            mov eax, 0xA
            PRINT 'A'
            jmp .done
        .db:
            mov eax, [esp]
            sub eax, .taskB
            PRINT 'E'
            mov eax, dr6
            and eax, 0xC000
            PRINT 'D'
            str ax
            and eax, 0xFFFF
            PRINT 'T'
            iretd
        .taskB:
            mov eax, 0xB
            PRINT 'B'
            iretd
        .done:
        """, mode: .pm32)
        let (out, _, plat) = GuestHarness.runOurs(image)
        XCTAssertNotNil(plat.exitCode, "guest did not reach EXIT; output:\n\(out)")
        XCTAssertEqual(out, """
            E=00000000
            D=00008000
            T=00000050
            B=0000000B
            A=0000000A

            """)
    }
}
