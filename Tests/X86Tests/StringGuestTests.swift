import XCTest

final class StringGuestTests: GuestTestCase {
    /// Fills a buffer, copies it forward and backward with REP MOVS of each size, compares checksums.
    func testRepMovsStos() throws {
        try compare("""
            mov rdi, 0x200000
            mov rcx, 0x3000
            mov rax, 0x0102030405060708
        .fill:
            mov [rdi], rax
            add rax, 0x1111111111111111
            add rdi, 8
            loop .fill
            ; forward copies
            cld
            mov rsi, 0x200000
            mov rdi, 0x300000
            mov rcx, 0x3000
            rep movsq
            call dump64
            mov rsi, 0x200003
            mov rdi, 0x400001
            mov rcx, 0x5001
            rep movsb
            call dump64
            ; backward copy (overlapping, like the kernel's relocation)
            std
            mov rsi, 0x200000 + 0x3000*8 - 8
            mov rdi, 0x280000 + 0x3000*8 - 8
            mov ecx, 0x3000
            rep movsq
            cld
            call dump64
            ; checksum of the copies
            xor rax, rax
            mov rsi, 0x280000
            mov rcx, 0x3000
        .sum:
            add rax, [rsi]
            rol rax, 3
            add rsi, 8
            loop .sum
            call dump64
            xor rax, rax
            mov rsi, 0x400001
            mov rcx, 0x5001
        .sum2:
            movzx rbx, byte [rsi]
            add rax, rbx
            rol rax, 1
            inc rsi
            loop .sum2
            call dump64
            ; stos forward and backward, scas and cmps
            mov rdi, 0x500000
            mov eax, 0xABCD1234
            mov ecx, 1000
            rep stosd
            std
            mov rdi, 0x500000 + 999*2
            mov ax, 0x5555
            mov ecx, 10
            rep stosw
            cld
            mov rdi, 0x500000
            mov eax, 0xABCD1234
            mov ecx, 2000
            repe scasd
            call dump64
            mov rsi, 0x200000
            mov rdi, 0x300000
            mov ecx, 0x3000*8
            repe cmpsb
            call dump64
            mov byte [0x300100], 0
            mov rsi, 0x200000
            mov rdi, 0x300000
            mov ecx, 0x3000*8
            repe cmpsb
            call dump64
            mov rdi, 0x300000
            mov al, 0
            mov ecx, 0x1000
            repne scasb
            call dump64
        """)
    }
}
