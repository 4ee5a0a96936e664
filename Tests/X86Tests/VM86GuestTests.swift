import XCTest
@testable import X86

/// Virtual-8086 mode entered with IRETD: INT n through the protected-mode IDT to a ring-0 handler
/// (stack from TSS.SS0:ESP0, GS/FS/DS/ES pushed and nulled, IRETD back), the #GP cases (IOPL < 3,
/// gate DPL, non-ring-0 target) and IOPL-sensitive CLI/STI/PUSHF/POPF; compared with QEMU's TCG.
final class VM86GuestTests: GuestTestCase {
    func testVM86Interrupts() throws {
        try compare(TaskGateGuestTests.setup32 + """
            mov dword [0xA000 + 4], 0x50000          ; ESP0
            mov word [0xA000 + 8], 0x10              ; SS0
            mov eax, .svc
            mov [IDT + 0x30*8], ax
            mov word [IDT + 0x30*8 + 2], 0x08
            mov word [IDT + 0x30*8 + 4], 0xEE00
            shr eax, 16
            mov [IDT + 0x30*8 + 6], ax
            mov eax, [IDT + 0x30*8]
            mov edx, [IDT + 0x30*8 + 4]
            mov [IDT + 0x31*8], eax
            mov [IDT + 0x31*8 + 4], edx
            mov byte [IDT + 0x31*8 + 5], 0x8E        ; DPL 0
            mov [IDT + 0x32*8], eax
            mov [IDT + 0x32*8 + 4], edx
            mov word [IDT + 0x32*8 + 2], 0x30        ; ring-3 code segment
            mov eax, .gp
            mov [IDT + 13*8], ax
            shr eax, 16
            mov [IDT + 13*8 + 6], ax
            push dword 0                             ; GS
            push dword 0                             ; FS
            push dword 0                             ; DS
            push dword 0                             ; ES
            push dword 0                             ; SS
            push dword 0x6000                        ; ESP
            push dword 0x23002                       ; VM, IOPL 3
            push dword 0xF000
            push dword .v86 - 0xF0000
            iretd

        .svc:
            mov ebp, eax
            mov eax, ds
            PRINT 'd'
            mov eax, es
            PRINT 'e'
            mov eax, fs
            PRINT 'f'
            mov eax, gs
            PRINT 'g'
            mov eax, esp
            PRINT 'p'
            mov ax, 0x10
            mov ds, ax
            mov es, ax
            mov eax, [esp]
            PRINT 'I'
            mov eax, [esp + 4]
            PRINT 'C'
            mov eax, [esp + 8]
            and eax, 0x23AD5
            PRINT 'F'
            mov eax, [esp + 12]
            PRINT 'P'
            mov eax, [esp + 16]
            PRINT 'S'
            mov eax, [esp + 20]
            PRINT 'E'
            mov eax, [esp + 24]
            PRINT 'D'
            mov eax, [esp + 28]
            PRINT 'F'
            mov eax, [esp + 32]
            PRINT 'G'
            mov eax, ebp
            call dump32
            cmp ax, 0xDEAD
            jne .svcRet
            and dword [esp + 8], ~0x3000
        .svcRet:
            iretd

        .gp:
            mov eax, [esp]
            PRINT 'X'
            mov eax, [esp + 4]
            PRINT 'I'
            mov eax, [esp + 12]
            and eax, 0x23AD5
            PRINT 'F'
            mov ax, 0x10
            mov ds, ax
            mov eax, [RECOVER]
            test eax, eax
            jnz .gpRet
            EXIT
        .gpRet:
            mov [esp + 4], eax
            add esp, 4
            iretd

        bits 16
        .v86:
            mov ax, 0x40
            mov ds, ax
            mov ax, 0x50
            mov es, ax
            mov ax, 0x60
            mov fs, ax
            mov ax, 0x70
            mov gs, ax
            mov ax, 0x1111
            mov bx, 0x2222
            int 0x30
            xor ax, ax
            mov ds, ax
            mov word [RECOVER], .v1 - 0xF0000
            int 0x31                 ; gate DPL 0: #GP(0x18A)
        .v1:
            mov word [RECOVER], .v2 - 0xF0000
            int 0x32                 ; target code DPL 3: #GP(0x30)
        .v2:
            cli
            sti
            pushf
            pop dx
            mov ax, 0xDEAD
            int 0x30                 ; the handler drops IOPL to 0
            mov word [RECOVER], .v3 - 0xF0000
            int 0x30                 ; IOPL 0: #GP(0)
        .v3:
            mov word [RECOVER], .v4 - 0xF0000
            pushf
        .v4:
            mov word [RECOVER], .v5 - 0xF0000
            popf
        .v5:
            mov word [RECOVER], .v6 - 0xF0000
            sti
        .v6:
            mov dword [RECOVER], 0
            cli
        bits 32
        """, mode: .pm32, expectContains: ["X=0000018A", "X=00000030", "F=00023000"])
    }
}
