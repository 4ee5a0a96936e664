import XCTest

/// SSE/SSE2/SSE3 and x87, compared with QEMU. XMM registers are printed as two 64-bit halves.
final class FloatGuestTests: GuestTestCase {
    /// Prints xmm\(n) as RAX (low) and RDX (high) with flags.
    func px(_ n: Int) -> String {
        "movq rax, xmm\(n)\nmovdqa xmm15, xmm\(n)\npsrldq xmm15, 8\nmovq rdx, xmm15\ncall pf64\n"
    }

    func testSSEIntegerAndMoves() throws {
        var body = """
            mov qword [FLAGMASK], 0x8D5
            mov rax, 0x8899AABBCCDDEEFF
            mov [0x8400], rax
            mov rax, 0x0011223344556677
            mov [0x8408], rax
            mov rax, 0x7F80017FFF0080FF
            mov [0x8410], rax
            mov rax, 0x0102030405060708
            mov [0x8418], rax
            movdqu xmm0, [0x8400]
            movdqa xmm1, [0x8410]
            movups xmm2, [0x8401]

        """
        body += px(0) + px(1) + px(2)
        for op in ["paddb", "paddw", "paddd", "paddq", "psubb", "psubw", "psubd", "psubq", "pcmpeqb", "pcmpeqw",
                   "pcmpeqd", "pcmpgtb", "pcmpgtw", "pcmpgtd", "pminub", "pmaxub", "pminsw", "pmaxsw", "pand", "pandn",
                   "por", "pxor", "punpcklbw", "punpckhbw", "punpcklwd", "punpckhwd", "punpckldq", "punpckhdq",
                   "punpcklqdq", "punpckhqdq", "packsswb", "packuswb", "packssdw", "pmullw", "pmulhw", "pmulhuw",
                   "pmuludq", "pmaddwd", "psadbw", "pavgb", "pavgw", "paddusb", "paddusw", "psubusb", "psubusw",
                   "paddsb", "paddsw", "psubsb", "psubsw"] {
            body += "movdqa xmm3, xmm0\n\(op) xmm3, xmm1\n" + px(3)
        }
        for (op, n) in [("psrlw", 3), ("psrld", 5), ("psrlq", 33), ("psraw", 15), ("psrad", 7), ("psllw", 1),
                        ("pslld", 9), ("psllq", 63), ("psrldq", 3), ("pslldq", 5)] {
            body += "movdqa xmm3, xmm0\n\(op) xmm3, \(n)\n" + px(3)
        }
        body += """
            pshufd xmm3, xmm0, 0x1B
        \(px(3))
            pshuflw xmm3, xmm0, 0x1B
        \(px(3))
            pmovmskb eax, xmm1
            movmskps edx, xmm0
            call pf64
            pextrw eax, xmm0, 5
            pinsrw xmm3, eax, 1
        \(px(3))
            movd xmm4, [0x8404]
            movq xmm5, [0x8408]
        \(px(4))\(px(5))
            movhps xmm4, [0x8410]
            movlps xmm5, [0x8418]
        \(px(4))\(px(5))
            shufps xmm4, xmm5, 0x4E
        \(px(4))
        """
        try compare(body)
    }

    func testSSEFloatingPoint() throws {
        var body = """
            mov qword [FLAGMASK], 0x8D5
            mov rax, 0x400921FB54442D18    ; pi
            mov [0x8400], rax
            mov rax, 0xC005BF0A8B145769    ; -e
            mov [0x8408], rax
            mov rax, 0x3FC000003F800000    ; 1.5f, 1.0f
            mov [0x8410], rax
            mov rax, 0xC0400000BF000000    ; -3.0f, -0.5f
            mov [0x8418], rax
            movupd xmm0, [0x8400]
            movups xmm1, [0x8410]

        """
        for op in ["addpd", "subpd", "mulpd", "divpd", "minpd", "maxpd", "sqrtpd", "addsd", "mulsd", "divsd", "sqrtsd"] {
            body += "movapd xmm2, xmm0\n\(op) xmm2, xmm0\n" + px(2)
            body += "movapd xmm2, xmm0\nshufpd xmm3, xmm0, 1\n\(op) xmm2, xmm3\n" + px(2)
        }
        for op in ["addps", "subps", "mulps", "divps", "minps", "maxps", "addss", "mulss", "divss", "sqrtps", "andps", "xorps"] {
            body += "movaps xmm2, xmm1\nshufps xmm3, xmm1, 0x1B\n\(op) xmm2, xmm3\n" + px(2)
        }
        for pred in 0..<8 {
            body += "movapd xmm2, xmm0\ncmppd xmm2, xmm3, \(pred)\n" + px(2)
            body += "movaps xmm2, xmm1\ncmpps xmm2, xmm3, \(pred)\n" + px(2)
        }
        body += """
            ucomisd xmm0, xmm3
            call pf64
            comiss xmm1, xmm3
            call pf64
            cvttsd2si rax, xmm0
            cvtsd2si edx, xmm3
            call pf64
            mov rax, -12345
            cvtsi2sd xmm4, rax
            cvtsi2ss xmm5, eax
        \(px(4))\(px(5))
            cvtps2pd xmm6, xmm1
            cvtpd2ps xmm7, xmm0
            cvtdq2ps xmm8, xmm1
            cvttps2dq xmm9, xmm1
            cvtss2sd xmm10, xmm1
            cvtsd2ss xmm11, xmm0
        \(px(6))\(px(7))\(px(8))\(px(9))\(px(10))\(px(11))
            haddpd xmm0, xmm0
            addsubps xmm1, xmm1
            movddup xmm12, xmm0
        \(px(0))\(px(1))\(px(12))
            stmxcsr [0x8420]
            mov eax, [0x8420]
            and eax, ~0x3F        ; exception status flags are not tracked yet
            xor edx, edx
            call pf64
        """
        try compare(body)
    }

    func testX87() throws {
        try compare("""
            mov qword [FLAGMASK], 0x8D5
            fninit
            fld1
            fldpi
            faddp st1, st0
            fld st0
            fmul st0, st0
            fsqrt
            fstp qword [0x8400]
            mov rax, [0x8400]
            fnstsw ax
            mov rdx, rax
            and rdx, ~0x3F        ; exception status flags are not tracked yet
            mov rax, [0x8400]
            call pf64
            mov dword [0x8410], 1234567
            fild dword [0x8410]
            fidiv dword [rel .seven]
            fistp dword [0x8414]
            mov eax, [0x8414]
            xor edx, edx
            call pf64
            fld qword [0x8400]
            fchs
            fabs
            fld1
            fcomip st0, st1
            call pf64
            fstp tword [0x8420]
            mov rax, [0x8420]
            movzx rdx, word [0x8428]
            call pf64
            ; rounding control: truncate
            fnstcw [0x8430]
            mov ax, [0x8430]
            or ax, 0x0C00
            mov [0x8432], ax
            fldcw [0x8432]
            fld qword [rel .twohalf]
            fistp qword [0x8438]
            fldcw [0x8430]
            fld qword [rel .twohalf]
            fistp qword [0x8440]
            mov rax, [0x8438]
            mov rdx, [0x8440]
            call pf64
            ; FXSAVE / FXRSTOR round trip of x87 and SSE state
            fldpi
            mov rax, 0x123456789
            movq xmm3, rax
            fxsave [0x9800 & ~15 + 0x400]
            fninit
            pxor xmm3, xmm3
            fxrstor [0x9800 & ~15 + 0x400]
            fstp qword [0x8448]
            movq rdx, xmm3
            mov rax, [0x8448]
            call pf64
            jmp .out
        .seven: dd 7
        .twohalf: dq 2.5
        .out:
        """)
    }
}
