import XCTest
@testable import X86

/// Exceptions, interrupts, privilege changes and paging, compared with QEMU.
final class SystemGuestTests: GuestTestCase {
    func testExceptionsInLongMode() throws {
        try compare("""
            ; #UD
            lea rax, [rel .r1]
            mov [RECOVER], rax
            ud2
        .r1:
            ; #GP: non-canonical address
            lea rax, [rel .r2]
            mov [RECOVER], rax
            mov rbx, 0x8000000000000000
            mov rax, [rbx]
        .r2:
            ; #PF on a not-present page (unmap 2 MiB page 3 of the identity map)
            lea rax, [rel .r3]
            mov [RECOVER], rax
            mov qword [0x12000 + 3*8], 0
            invlpg [0x600000]
            mov rax, [0x600010]
        .r3:
            ; #PF on a write to a read-only page
            lea rax, [rel .r4]
            mov [RECOVER], rax
            mov qword [0x12000 + 3*8], 0x600081
            invlpg [0x600000]
            mov rax, [0x600020]
            mov [0x600020], rax
        .r4:
            ; #BP and INT n through the IDT
            lea rax, [rel .r5]
            mov [RECOVER], rax
            int3
        .r5:
            mov rbx, 0x42
            int 0x80
            ; (WRMSR to an unknown MSR: hardware and we raise #GP, QEMU's TCG ignores it: not compared.)
            ; #DE
            lea rax, [rel .r7]
            mov [RECOVER], rax
            xor ecx, ecx
            div rcx
        .r7:
            ; #PF with the A/D bits: check the accessed/dirty bits set by the walks above
            mov qword [0x12000 + 3*8], 0x600083
            invlpg [0x600000]
            mov byte [0x600000], 1
            mov rax, [0x12000 + 3*8]
            mov rdx, [0x12000 + 4*8]
            call pf64
            mov qword [RECOVER], 0
        """, expectContains: ["EXC 0000000000000006", "EXC 000000000000000D", "EXC 000000000000000E", "SOFT"])
    }

    /// SYSCALL to ring 0 and SYSRET to ring 3, then an interrupt from ring 3 (stack switch via TSS).
    /// Linux reads the AMD SYSCFG MSR when it checks the fixed-range MTRRs of an AMD model (qemu64),
    /// and INT_PENDING_MSG for erratum 400 on family 0Fh: they read as 0 (SYSCFG also after a
    /// write), as under QEMU's TCG and KVM (a #GP would print an 'unchecked MSR access' trace).
    func testAMDSyscfgMSR() throws {
        try compare("""
            lea rax, [rel .r1]
            mov [RECOVER], rax
            mov ecx, 0xC0010010
            mov eax, 0x55
            mov edx, 0x66
            rdmsr
            call pf64
            wrmsr
            rdmsr
            call pf64
            mov ecx, 0xC0010055
            rdmsr
            call pf64
        .r1:
            mov qword [RECOVER], 0
            mov rax, 0x7777
            call pf64
        """, expectContains: ["0000000000007777"])
    }

    func testSyscallSysretAndRing3() throws {
        try compare("""
            ; user-accessible identity map (U bit on the first 2 MiB path)
            or qword [0x10000], 4
            or qword [0x11000], 4
            or qword [0x12000], 4
            mov rax, cr3
            mov cr3, rax
            ; TSS at 0xA000 with RSP0 = 0x80000; descriptor in a RAM copy of the GDT at 0xB000.
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
            mov word [0xB100], 0x57
            mov qword [0xB102], 0xB000
            lgdt [0xB100]
            mov ax, 0x48
            ltr ax
            ; STAR: kernel CS 0x18 (SS 0x20?) -> use 0x08-based layout: SYSCALL CS=0x18? keep simple:
            ; SYSCALL loads CS=STAR[47:32], SS=+8; SYSRET loads CS=STAR[63:48]+16, SS=+8.
            mov ecx, 0xC0000081
            xor eax, eax
            mov edx, 0x00280018          ; sysret base 0x28 -> CS 0x38|3? (0x28+16=0x38), SS 0x30|3
            wrmsr
            mov ecx, 0xC0000082
            lea rax, [rel .kentry]
            mov rdx, rax
            shr rdx, 32
            wrmsr
            mov ecx, 0xC0000084
            mov eax, 0x200
            xor edx, edx
            wrmsr
            ; go to ring 3 with SYSRET
            lea rcx, [rel .user]
            mov r11, 0x3202         ; IOPL 3 so ring 3 can print
            mov rsp, 0x70000
            o64 sysret
        .user:
            mov rax, 0x1111
            mov rdx, cs
            call pf64
            mov rax, 0x2222
            syscall
        .back:
            mov rax, 0x3333
            mov rdx, ss
            call pf64
            int 0x80
            mov rax, 0x4444
            call pf64
            ; back to ring 0 for EXIT: a #GP from HLT lands in the handler, which resumes at .k3
            lea rax, [rel .k3]
            mov [RECOVER], rax
            hlt
        .kentry:
            mov rdx, rcx
            call pf64
            mov rax, r11
            and rax, 0xCD5
            call pf64
            o64 sysret
        .k3:
            mov qword [RECOVER], 0
            mov rax, 0x5555
            mov rdx, cs
            call pf64
        """, expectContains: ["SOFT"])
    }

    func testProtectedMode32() throws {
        try compare("""
            mov dword [FLAGMASK], 0x8D5
            mov eax, 0x12345678
            mov ebx, 0x9ABCDEF0
            add eax, ebx
            call dump32
            push eax
            push word 0x55
            pop cx
            pop edx
            call dump32
            ; a #GP recovered through the 32-bit IDT
            mov dword [RECOVER], .r1
            mov ax, 0x7777
            mov ds, ax
        .r1:
            mov ax, 0x10
            mov ds, ax
            ; 32-bit paging with a 4 MiB page and a 4 KiB page table, then #PF
            mov edi, 0x20000
            xor eax, eax
            mov ecx, 2048
            rep stosd
            mov dword [0x20000], 0x83          ; 0-4 MiB, 4 MiB page
            mov dword [0x20004], 0x21003       ; 4-8 MiB through a page table
            mov dword [0x21000 + 4], 0x5003    ; 0x401000 -> 0x5000
            mov eax, cr4
            or eax, 0x10
            mov cr4, eax
            mov eax, 0x20000
            mov cr3, eax
            mov eax, cr0
            or eax, 0x80000000
            mov cr0, eax
            mov dword [0x5008], 0xCAFEBABE
            mov eax, [0x401008]
            call dump32
            mov dword [RECOVER], .r2
            mov eax, [0x402000]
        .r2:
            mov eax, [0x20004]
            call dump32
            mov eax, cr0
            and eax, 0x7FFFFFFF
            mov cr0, eax
            ; far call and far return through the GDT, then back
            call 0x08:.far
            mov eax, 0x1234
            call dump32
            jmp .end
        .far:
            mov ebx, 0xFA
            retf
        .end:
        """, mode: .pm32)
    }

    func testRealMode() throws {
        try compare("""
            mov eax, 0x1234
            mov ebx, 0xFFFF
            add ax, bx
            call dump16
            mov ax, 0x1000
            mov es, ax
            mov word [es:0x10], 0xBEEF
            mov cx, [es:0x10]
            ; a software interrupt through the IVT
            mov word [0x80*4], .int80 - 0xF0000
            mov word [0x80*4+2], 0xF000
            int 0x80
            call dump16
            jmp .done
        .int80:
            mov dx, 0x4242
            iret
        .done:
        """, mode: .real)
    }

    /// `-cpu max` carries QEMU TCG's identity: vendor, family/model/stepping and brand string (Linux
    /// decides from these which speculation bugs to report).
    func testMaxModelIdentity() throws {
        try compare("""
            mov qword [FLAGMASK], 0
            xor eax, eax
            cpuid
            mov eax, ebx
            mov edx, ecx
            call pf64
            mov eax, 1
            cpuid
            xor edx, edx
            call pf64
            mov esi, 0x80000002
        .brand:
            mov eax, esi
            cpuid
            shl rbx, 32
            or rax, rbx
            shl rdx, 32
            or rdx, rcx
            call pf64
            inc esi
            cmp esi, 0x80000005
            jne .brand
        """, cpu: "max")
    }

    func testCPUIDLeaves() throws {
        // Leaves whose values we mirror from QEMU's qemu64 model exactly.
        try compare("""
            mov qword [FLAGMASK], 0
            xor eax, eax
            cpuid
            mov eax, ebx
            mov edx, ecx
            call pf64
            mov eax, 1
            cpuid
            mov eax, edx
            mov edx, ecx
            and edx, ~(1 << 27) & ~(1 << 24) & ~(1 << 21)   ; OSXSAVE / TSC-deadline / x2apic vary with the APIC
            call pf64
            mov eax, 0x80000001
            cpuid
            mov eax, edx
            mov edx, ecx
            and edx, ~(1 << 2)                ; svm: QEMU advertises it, we do not implement it
            call pf64
            mov eax, 0x80000000
            cpuid
            xor edx, edx
            call pf64
        """)
    }
}
