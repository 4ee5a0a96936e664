import XCTest
@testable import X86

final class BasicGuestTests: GuestTestCase {
    func testLongModeALU() throws {
        try compare("""
            mov rax, 0x123456789ABCDEF0
            mov rbx, 0x0FEDCBA987654321
            add rax, rbx
            call dump64
            sub rbx, rax
            call dump64
            mov ecx, 0xFFFFFFFF
            inc ecx
            call dump64
            xor edx, edx
            mov eax, 1000
            mov r8d, 7
            div r8d
            call dump64
        """, expectContains: ["RAX="])
    }
}
