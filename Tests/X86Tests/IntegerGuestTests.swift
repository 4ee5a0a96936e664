import XCTest

/// Integer instruction groups, each run on our CPU and on QEMU TCG with results and flags printed.
final class IntegerGuestTests: GuestTestCase {
    /// Every ALU operation at every size over a table of edge-case operands.
    func testALUFlags() throws {
        var body = "mov qword [FLAGMASK], 0x8D5\n"
        let values: [UInt64] = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000,
                                0xFFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFFF, 0x1234_5678_9ABC_DEF0]
        let pairs = [(0, 1), (1, 0), (2, 1), (3, 3), (4, 2), (6, 7), (10, 12), (12, 13), (13, 13), (11, 8), (5, 9), (14, 1), (9, 10)]
        for op in ["add", "adc", "sub", "sbb", "and", "or", "xor", "cmp"] {
            for (reg, _) in [("al", 1), ("ax", 2), ("eax", 4), ("rax", 8)] {
                let src = ["al": "bl", "ax": "bx", "eax": "ebx", "rax": "rbx"][reg]!
                for (a, b) in pairs {
                    body += """
                    mov rax, \(values[a])
                    mov rbx, \(values[b])
                    mov rdx, \(values[(a + b) % values.count])
                    \(a % 2 == 0 ? "stc" : "clc")
                    \(op) \(reg), \(src)
                    call pf64

                    """
                }
            }
        }
        for op in ["inc", "dec", "neg", "not"] {
            for reg in ["al", "ax", "eax", "rax", "byte [0x8400]", "qword [0x8400]"] {
                for v in [0, 1, 3, 4, 7, 8, 12, 13] {
                    body += """
                    mov rax, \(values[v])
                    mov [0x8400], rax
                    stc
                    \(op) \(reg)
                    mov rdx, [0x8400]
                    call pf64

                    """
                }
            }
        }
        try compare(body)
    }

    func testShiftsAndRotates() throws {
        // OF is defined only for 1-bit counts and AF never: masked out for counts > 1.
        var body = ""
        for op in ["shl", "shr", "sar", "rol", "ror", "rcl", "rcr"] {
            for (reg, bits) in [("al", 8), ("ax", 16), ("eax", 32), ("rax", 64)] {
                for count in [0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63] {
                    let mask = count == 1 ? 0x8C5 : 0x0C5
                    body += """
                    mov qword [FLAGMASK], \(op.hasPrefix("r") ? (count == 1 ? 0x801 : 0x001) : mask)
                    mov rax, 0x8123456789ABCDEF
                    mov rdx, 0
                    mov cl, \(count)
                    \(count % 3 == 0 ? "stc" : "clc")
                    \(op) \(reg), cl
                    call pf64

                    """
                    _ = bits
                }
            }
        }
        for op in ["shld", "shrd"] {
            for (reg, src) in [("ax", "bx"), ("eax", "ebx"), ("rax", "rbx")] {
                for count in [0, 1, 4, 15, 16, 31, 63] {
                    body += """
                    mov qword [FLAGMASK], \(count == 1 ? 0x8C5 : 0x0C5)
                    mov rax, 0x8123456789ABCDEF
                    mov rbx, 0xF0E1D2C3B4A59687
                    mov rdx, 0
                    mov cl, \(count)
                    \(op) \(reg), \(src), cl
                    call pf64

                    """
                }
            }
        }
        try compare(body)
    }

    func testMultiplyDivide() throws {
        var body = "mov qword [FLAGMASK], 0x801\n"   // CF/OF only: the rest is undefined
        let vals = ["0", "1", "-1", "0x7F", "0x80", "0x7FFF", "0xFFFF", "0x7FFFFFFF", "0x80000000", "0x123456789", "-0x123456789ABCDEF"]
        for op in ["mul", "imul"] {
            for reg in ["bl", "bx", "ebx", "rbx"] {
                for a in vals.prefix(8) { for b in ["3", "-5", "0x100", "-0x80"] {
                    body += "mov rax, \(a)\nmov rbx, \(b)\nmov rdx, 0x5555\n\(op) \(reg)\ncall pf64\n"
                } }
            }
        }
        for reg in ["bx", "ebx", "rbx"] {
            for a in vals { for b in ["3", "-5", "0x1234", "-0x80"] {
                body += "mov rax, \(a)\nmov rbx, \(b)\nimul rax, rbx\nmov rdx, 0\ncall pf64\n"
                body += "mov rcx, \(a)\nimul \(reg.replacingOccurrences(of: "b", with: "c")), \(reg), 1000\nmov rax, rcx\ncall pf64\n"
            } }
        }
        body += "mov qword [FLAGMASK], 0\n"
        for op in ["div", "idiv"] {
            for reg in ["bl", "bx", "ebx", "rbx"] {
                for (a, d, b) in [("100", "0", "7"), ("-100", "-1", "7"), ("0x12345", "0", "0x100"), ("0xFFFF", "0", "-3"), ("12345678", "0", "-10")] {
                    body += "mov rax, \(a)\nmov rdx, \(d)\nmov rbx, \(b)\n"
                    if reg == "bl" { body += "and rax, 0xFFFF\n" }
                    body += "\(op) \(reg)\ncall pf64\n"
                }
            }
        }
        // Division errors raise #DE and resume.
        body += """
            lea rax, [rel .after1]
            mov [RECOVER], rax
            xor ebx, ebx
            div ebx
        .after1:
            lea rax, [rel .after2]
            mov [RECOVER], rax
            mov eax, 0
            mov edx, 1
            mov ebx, 1
            div ebx
        .after2:
            lea rax, [rel .after3]
            mov [RECOVER], rax
            mov rax, 0x8000000000000000
            cqo
            mov rbx, -1
            idiv rbx
        .after3:
            mov qword [RECOVER], 0
        """
        try compare(body, expectContains: ["EXC 0000000000000000"])
    }

    func testBitOperations() throws {
        var body = "mov qword [FLAGMASK], 0x041\n"
        for op in ["bt", "bts", "btr", "btc"] {
            for (reg, idx) in [("ax", "cx"), ("eax", "ecx"), ("rax", "rcx")] {
                for n in [0, 1, 5, 15, 31, 63, 64, 100] {
                    body += "mov rax, 0x8000000180000001\nmov rcx, \(n)\nmov rdx, 0\n\(op) \(reg), \(idx)\ncall pf64\n"
                    body += "mov rax, 0x5A5A5A5A5A5A5A5A\nmov [0x8400], rax\nmov [0x8408], rax\nmov rcx, \(n)\n\(op) qword [0x8400], rcx\nmov rdx, [0x8408]\nmov rax, [0x8400]\ncall pf64\n"
                }
                body += "mov rax, 0x1234\n\(op) \(reg), 3\ncall pf64\n"
            }
        }
        body += "mov qword [FLAGMASK], 0x040\n"
        for op in ["bsf", "bsr"] {
            for v in ["0", "1", "0x80000000", "0x8000000000000000", "0x00F0F000"] {
                body += "mov rbx, \(v)\nmov rax, 0x77\nmov rdx, 0\n\(op) rax, rbx\ncall pf64\n"
                body += "mov rbx, \(v)\nmov rax, 0x77\n\(op) eax, ebx\ncall pf64\n"
            }
        }
        body += "mov qword [FLAGMASK], 0x8D5\n"
        for v in ["0", "1", "0xFF", "-1", "0x8000000100000001"] {
            body += "mov rax, \(v)\nbswap rax\ncall pf64\nmov rax, \(v)\nbswap eax\ncall pf64\n"
        }
        try compare(body)
    }

    /// POPCNT is not in qemu64's CPUID: both CPUs raise #UD; with -cpu max it works.
    func testPopcntFollowsModel() throws {
        try compare("lea rax, [rel .r]\nmov [RECOVER], rax\npopcnt rax, rbx\n.r:\nmov qword [RECOVER], 0\n", expectContains: ["EXC 0000000000000006"])
    }

    func testConditionsAndExchange() throws {
        var body = "mov qword [FLAGMASK], 0x8D5\n"
        for (a, b) in [("0", "0"), ("1", "2"), ("2", "1"), ("-1", "1"), ("0x80", "0x7F"), ("0x8000000000000000", "1")] {
            body += "mov rbx, \(a)\nmov rcx, \(b)\nxor eax, eax\nxor edx, edx\n"
            for cc in ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"] {
                body += "cmp rbx, rcx\nset\(cc) dl\nshl rax, 1\nor al, dl\nmov r8, 0x1111\nmov r9, 0x2222\ncmp bl, cl\ncmov\(cc) r8, r9\nadd rax, r8\n"
            }
            body += "call pf64\n"
        }
        body += """
            mov rax, 5
            mov qword [0x8400], 5
            mov rbx, 9
            cmpxchg [0x8400], rbx
            mov rdx, [0x8400]
            call pf64
            lock cmpxchg [0x8400], rbx
            mov rdx, [0x8400]
            call pf64
            mov eax, 0x10
            lock xadd [0x8400], eax
            mov rdx, [0x8400]
            call pf64
            mov rcx, 0x77
            xchg [0x8400], rcx
            mov rax, rcx
            mov rdx, [0x8400]
            call pf64
            mov qword [0x8400], 0x11
            mov qword [0x8408], 0x22
            mov rax, 0x11
            mov rdx, 0x22
            mov rbx, 0x33
            mov rcx, 0x44
            lock cmpxchg16b [0x8400]
            call pf64
            mov rax, [0x8400]
            mov rdx, [0x8408]
            call pf64
            lock cmpxchg8b [0x8400]
            call pf64
            lock inc dword [0x8400]
            lock sub qword [0x8400], 3
            lock or byte [0x8400], 0x80
            mov qword [FLAGMASK], 1
            lock bts qword [0x8400], 40
            mov rax, [0x8400]
            call pf64
        """
        try compare(body)
    }

    /// SETcc, Jcc and CMOVcc read single flags straight from each kind of lazy flag writer (ADD, ADC,
    /// SBB, INC, DEC, NEG, shifts, IMUL, logic) without materializing RFLAGS: all 16 conditions
    /// after every writer, at 32 and 64 bits, over a table of operands with carry-in set and clear.
    /// Each writer is a subroutine (RET keeps its flags), so the guest stays within 64 KiB.
    func testConditionsAfterEveryFlagWriter() throws {
        let writers = ["add r10, r11", "adc r10, r11", "sbb r10, r11", "inc r10", "dec r10", "neg r10",
                       "shl r10, 1", "shr r10, 3", "sar r10, 1", "imul r10, r11", "and r10, r11", "sub r10, r11"]
        let operands: [(String, String, Int)] = [("0", "0", 1), ("1", "-1", 0), ("-1", "1", 1), ("0x7FFFFFFF", "1", 0),
                        ("0x80000000", "0x80000000", 1), ("0x7FFFFFFFFFFFFFFF", "1", 0), ("0x8000000000000000", "-1", 1),
                        ("3", "5", 0), ("0xFFFFFFFF", "0", 1), ("-2", "-3", 1)]
        var variants: [String] = []
        for w in writers {
            variants.append(w)
            variants.append(w.replacingOccurrences(of: "r10", with: "r10d").replacingOccurrences(of: "r11", with: "r11d"))
        }
        var body = """
            mov qword [FLAGMASK], 0
            lea r14, [rel .ops]
            mov r15d, \(operands.count)
        .next:

        """
        var label = 0
        for n in variants.indices {
            body += "xor eax, eax\nxor r12d, r12d\n"
            for cc in ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"] {
                label += 1
                body += """
                call .w\(n)
                set\(cc) dl
                mov r8d, 1
                mov r9d, 2
                call .w\(n)
                cmov\(cc) r8, r9
                call .w\(n)
                j\(cc) .c\(label)
                add r12, r8
                .c\(label):
                shl rax, 1
                or al, dl
                shl r12, 2
                add r12, r8

                """
            }
            body += "mov rdx, r12\ncall pf64\n"
        }
        body += "add r14, 24\ndec r15d\njnz .next\njmp .done\n"
        for (n, v) in variants.enumerated() {
            body += ".w\(n):\nmov r10, [r14]\nmov r11, [r14+8]\nbt dword [r14+16], 0\n\(v)\nret\n"
        }
        body += ".ops:\n"
        for (a, b, c) in operands { body += "dq \(a), \(b), \(c)\n" }
        body += ".done:\n"
        try compare(body)
    }

    func testStackAndCalls() throws {
        try compare("""
            mov rbp, 0x1234
            enter 0x20, 0
            mov rax, rsp
            mov rdx, rbp
            call pf64
            enter 0x10, 3
            mov rax, rsp
            mov rdx, rbp
            call pf64
            leave
            leave
            mov rax, rsp
            mov rdx, rbp
            call pf64
            push word 0x1234
            push qword -2
            pop rax
            pop dx
            call pf64
            pushfq
            pop rax
            and rax, 0xCD5
            call pf64
            lea rbx, [rel .target]
            call rbx
            mov rax, 0xAA
            call pf64
            push qword 0x1111
            push qword 0x2222
            call .ret16
            pop rax
            call pf64
            jmp .done
        .ret16:
            ret 8
        .target:
            mov rax, 0xBB
            call pf64
            ret
        .done:
            mov rcx, 3
            xor eax, eax
        .lp:
            add rax, rcx
            loop .lp
            call pf64
            movsx rax, byte [rel .bytes]
            movzx rdx, word [rel .bytes]
            call pf64
            movsxd rax, dword [rel .bytes]
            movsx edx, byte [rel .bytes+1]
            call pf64
            cbw
            cwde
            cdqe
            cqo
            call pf64
            jmp .out
        .bytes: db 0x85, 0x7F, 0x92, 0xF3
        .out:
        """)
    }
}
