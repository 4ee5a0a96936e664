import XCTest

/// The operations the fast tier (Sources/CX86Fast) runs, in every form it has a handler for:
/// register and memory operands, 8/16/32/64-bit sizes (high-byte registers too), immediates,
/// counts of 0, 1 and more than the operand size, 32-bit addressing, FS-relative operands. Each
/// result and the flags are printed and compared with QEMU TCG.
final class FastTierGuestTests: GuestTestCase {
    /// Loads fresh operands: RAX/RBX/RCX/RDX patterns and memory at 0x8400 (a qword) and 0x8408.
    private func setup(_ k: Int) -> String {
        let a = ["0x8000000000000001", "0x00000000FFFFFFFF", "0x123456789ABCDEF0", "0x7F7F7F7F80808080"][k % 4]
        let b = ["0x0000000000000003", "0xFFFFFFFFFFFFFFFF", "0x0F0F0F0F0F0F0F0F", "0x8000000080008080"][k % 4]
        return """
        mov rax, \(a)
        mov rbx, \(b)
        mov rcx, 0x5A5A5A5A5A5A5A5A
        mov rdx, 0x1122334455667788
        mov [0x8400], rbx
        mov [0x8408], rax

        """
    }

    /// Prints RAX, RDX (here: the memory qword) and the arithmetic flags.
    private let dump = "mov rdx, [0x8400]\ncall pf64\nmov rax, rbx\nmov rdx, rcx\ncall pf64\n"

    func testMovesAndExtensions() throws {
        var body = "mov qword [FLAGMASK], 0x8D5\n"
        let forms = [
            "mov eax, ebx", "mov rax, rbx", "mov ebx, [0x8408]", "mov rbx, [0x8408]", "mov [0x8400], eax",
            "mov [0x8400], rax", "mov ax, bx", "mov al, bh", "mov ah, bl", "mov bh, ah", "mov [0x8401], ah",
            "mov cx, [0x8406]", "mov [0x8402], bx", "mov sil, al", "mov ebx, 0xFFFFFFFF", "mov rbx, -2",
            "mov dword [0x8400], 0x80000000", "mov qword [0x8400], -3", "mov word [0x8400], 0x1234",
            "mov byte [0x8403], 0x99", "mov bx, 0x7777", "mov bl, 0x88", "mov bh, 0x66",
            "movzx eax, bl", "movzx eax, bh", "movzx eax, bx", "movzx rax, bl", "movzx rax, bx",
            "movzx ecx, byte [0x8407]", "movzx ecx, word [0x8406]", "movzx rcx, byte [0x8407]", "movzx rcx, word [0x8406]",
            "movzx ax, bl", "movsxd rax, ebx", "movsxd rax, dword [0x8404]", "movsx eax, bl", "movsx rax, word [0x8406]",
            "movsx ax, bh", "movsx eax, ah", "movsx rcx, byte [0x8407]", "movsx ecx, byte [0x8400]", "movsx ebx, sil",
            "movsx ecx, word [0x8406]", "movsx rbx, bx", "movsx bx, byte [0x8407]", "movsx eax, word [0x8404]",
            "lea eax, [rbx + rcx*4 + 0x10]", "lea rax, [rbx + rcx*8 - 1]", "lea eax, [ebx + ecx]", "lea rax, [ebx - 1]",
            "mov eax, [rel .data]", "mov rax, [fs:0x10]",
        ]
        for (k, f) in forms.enumerated() { body += setup(k) + f + "\n" + dump }
        body += "jmp .done\n.data: dq 0xCAFEBABEDEADBEEF\n.done:\n"
        try compare(body)
    }

    func testALUForms() throws {
        var body = "mov qword [FLAGMASK], 0x8D5\n"
        var k = 0
        for op in ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"] {
            for form in ["\(op) eax, ebx", "\(op) rax, rbx", "\(op) ax, bx", "\(op) al, bh", "\(op) ah, bl",
                         "\(op) [0x8400], eax", "\(op) [0x8400], rax", "\(op) [0x8400], ax", "\(op) [0x8401], al",
                         "\(op) eax, [0x8404]", "\(op) rax, [0x8400]", "\(op) ax, [0x8406]", "\(op) bh, [0x8407]",
                         "\(op) eax, 0x7FFFFFFF", "\(op) rax, -1", "\(op) ax, 0x8000", "\(op) bl, 0x81", "\(op) rbx, 5",
                         "\(op) dword [0x8400], -1", "\(op) qword [0x8400], 0x7F", "\(op) word [0x8402], 1", "\(op) byte [0x8400], 0x80"] {
                body += setup(k) + (k % 2 == 0 ? "stc\n" : "clc\n") + form + "\n" + dump
                k += 1
            }
        }
        try compare(body)
    }

    func testUnaryTestIncDecImul() throws {
        var body = "mov qword [FLAGMASK], 0x8D5\n"
        let forms = [
            "test eax, ebx", "test rax, rbx", "test ax, bx", "test al, bh", "test [0x8400], eax", "test [0x8400], rax",
            "test eax, 0x80000000", "test rax, -1", "test bl, 0x81", "test word [0x8400], 0x8000", "test byte [0x8401], 1",
            "inc eax", "inc rax", "inc ax", "inc bh", "inc dword [0x8400]", "inc qword [0x8400]", "inc byte [0x8407]",
            "dec eax", "dec rbx", "dec bx", "dec al", "dec dword [0x8404]", "dec qword [0x8400]", "dec word [0x8406]",
            "not eax", "not rbx", "not bx", "not ah", "not qword [0x8400]", "not byte [0x8402]",
            "neg eax", "neg rbx", "neg cx", "neg bl", "neg dword [0x8400]", "neg qword [0x8400]", "neg word [0x8406]",
        ]
        for (k, f) in forms.enumerated() { body += setup(k) + (k % 2 == 0 ? "stc\n" : "clc\n") + f + "\n" + dump }
        body += "mov qword [FLAGMASK], 0x801\n"   // IMUL: only CF and OF are defined
        for (k, f) in ["imul eax, ebx", "imul rax, rbx", "imul ecx, [0x8404]", "imul rcx, [0x8400]", "imul ebx, eax", "imul rdx, rcx",
                                   "imul eax, ebx, 0x01000193", "imul rax, [0x8400], -3", "imul ecx, [0x8404], 0x7FFFFFFF",
                                   "imul rdx, rcx, 100", "imul ebx, ebx, -1", "imul rbx, rax, 0x40000000", "imul ax, bx, 7"].enumerated() {
            body += setup(k) + f + "\n" + dump
        }
        try compare(body)
    }

    func testShiftsAndRotatesEveryForm() throws {
        var body = "mov qword [FLAGMASK], 0\n"
        var k = 0
        for op in ["rol", "ror", "shl", "sal", "shr", "sar"] {
            for target in ["eax", "rax", "ax", "bl", "bh", "dword [0x8400]", "qword [0x8400]", "word [0x8402]", "byte [0x8403]"] {
                for count in ["1", "7", "31", "cl0", "cl33", "cl200"] {
                    let setCount: String
                    let operand: String
                    if count.hasPrefix("cl") {
                        setCount = "mov ecx, \(count.dropFirst(2))\n"
                        operand = "cl"
                    } else {
                        setCount = ""
                        operand = count
                    }
                    // OF is defined for counts of 1 only; the rest of the flags for non-zero counts.
                    let mask = count == "1" ? "0x8D5" : (count == "cl0" ? "0x8D5" : "0x0C5")
                    let rot = op == "rol" || op == "ror"
                    body += setup(k) + "mov qword [FLAGMASK], \(rot ? (count == "1" || count == "cl0" ? "0x801" : "0x1") : mask)\n"
                        + setCount + "\(op) \(target), \(operand)\n" + dump
                    k += 1
                }
            }
        }
        try compare(body)
    }

    /// Register-to-register forms assemblers do not emit (the reg <- r/m opcodes with a register
    /// r/m, SAL as /6): raw bytes, each commented with what it is.
    func testAlternateEncodings() throws {
        var body = "mov qword [FLAGMASK], 0x8D5\n"
        var forms = [
            ("db 0x8B, 0xC3", "mov eax, ebx via 8B"), ("db 0x48, 0x8B, 0xC3", "mov rax, rbx via 8B"),
            ("db 0x66, 0x8B, 0xC3", "mov ax, bx via 8B"), ("db 0x8A, 0xC7", "mov al, bh via 8A"),
            ("db 0xD1, 0xF0", "sal eax, 1 (/6)"), ("db 0x48, 0xC1, 0xF0, 0x05", "sal rax, 5 (/6)"),
            ("db 0xC0, 0xF3, 0x03", "sal bl, 3 (/6)"), ("db 0x66, 0xD3, 0xF0", "sal ax, cl (/6)"),
        ]
        for (n, op) in ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"].enumerated() {
            let opcode = n * 8 + 3, byteOpcode = n * 8 + 2
            forms.append(("db 0x\(String(opcode, radix: 16)), 0xC3", "\(op) eax, ebx via r <- r/m"))
            forms.append(("db 0x48, 0x\(String(opcode, radix: 16)), 0xC3", "\(op) rax, rbx via r <- r/m"))
            forms.append(("db 0x66, 0x\(String(opcode, radix: 16)), 0xC3", "\(op) ax, bx via r <- r/m"))
            forms.append(("db 0x\(String(byteOpcode, radix: 16)), 0xE3", "\(op) ah, bl via r <- r/m"))
        }
        for (k, (bytes, what)) in forms.enumerated() {
            body += setup(k) + (k % 2 == 0 ? "stc\n" : "clc\n") + "\(bytes)   ; \(what)\n" + dump
        }
        try compare(body)
    }

    /// Calls and returns between pages, many times over, so that the fast tier chains them through
    /// its per-block cache of the last successor on another page: halfway through each loop the
    /// cached callee must be given up, because its code is rewritten, or its page is remapped to
    /// other code (INVLPG); and one return instruction goes back to two callers in turn.
    func testCrossPageSuccessorsFollowRewrittenAndRemappedCode() throws {
        let callee = Self.callee, loop = { Self.callLoop($0, $1, event: $2) }
        let body = "mov qword [FLAGMASK], 0\n"
            // Rewritten in place: the page's generation changes.
            + callee(0x40000, 1) + loop("a", 0x40000, "mov dword [0x40001], 7")
            // The 2 MiB page at 0x400000 remapped to the code at 0x600000.
            + callee(0x400000, 3) + callee(0x600000, 5)
            + loop("b", 0x400000, "mov rax, [0x12000 + 3 * 8]\nmov [0x12000 + 2 * 8], rax\ninvlpg [0x400000]")
            + """
                mov rax, 0x400083
                mov [0x12000 + 2 * 8], rax
                invlpg [0x400000]
                xor ebx, ebx
                mov ecx, 200
            .c:
                call 0x40000
                add ebx, eax
                call 0x40000
                shl eax, 4
                add ebx, eax
                dec ecx
                jnz .c
                mov rax, rbx
                xor edx, edx
                call pf64

            """
        try compare(body)
    }

    /// 64-bit blocks run on past conditional branches, and a taken one leaves its block in the
    /// middle: the retired-instruction count must still be exact. A loop whose inner branch is taken
    /// on every other pass (5 and 6 instructions) retires 5.5 instructions per pass more for each
    /// extra pass, with the fast tier and without it.
    /// Instructions retired by `loop` (which counts ECX down from `passes` and increments RBX on
    /// every other pass) and the code around it, on our CPU.
    private func retired(_ loop: String, passes: Int) throws -> UInt64 {
        let image = try GuestHarness.assemble("mov ecx, \(passes)\n" + loop + "mov rax, rbx\nxor edx, edx\ncall pf64\n",
                                              mode: .lm64)
        let (out, cpu, plat) = GuestHarness.runOurs(image)
        XCTAssertNotNil(plat.exitCode, out)
        XCTAssertTrue(out.contains(String(format: "%016X", passes / 2)), out)
        return cpu.instructionsRetired
    }

    func testRetiredCountWithBranchesTakenMidBlock() throws {
        func retired(_ passes: Int) throws -> UInt64 {
            try self.retired("""
            .l:
                inc eax
                test ecx, 1
                jnz .skip
                inc ebx
            .skip:
                dec ecx
                jnz .l

            """, passes: passes)
        }
        // (Pass counts whose halves print with the same number of hex letters: pf64 takes an
        // extra instruction for each digit above 9.)
        XCTAssertEqual(try retired(2000) - retired(1000), 5500)
        XCTAssertEqual(try retired(4000) - retired(1000), 16500)
    }

    /// Loads, stores and pushes that cross from one page into the next, where the next virtual page
    /// maps a physical page that does not follow (PD entry 2 is pointed at 6 MiB): the fast tier
    /// must leave them to Swift, which reads and writes both pages through the page tables. An
    /// access taken whole from the first page's host address would see the identity-mapped 4 MiB.
    func testAccessesThatCrossAPageBoundary() throws {
        let body = """
            mov dword [0x3FFFFC], 0x11223344
            mov dword [0x400000], 0xAAAAAAAA
            mov dword [0x600000], 0x55667788
            mov qword [0x12010], 0x600083
            invlpg [0x400000]
            mov rax, [0x3FFFFC]
            mov edx, [0x3FFFFE]
            call pf64
            mov rbx, 0x0102030405060708
            mov [0x3FFFFA], rbx
            add qword [0x3FFFFC], 0x10
            mov rax, [0x600000]
            mov rdx, [0x3FFFF8]
            call pf64
            mov rcx, rsp
            mov rsp, 0x400004
            push rbx
            pop rdx
            mov rsp, rcx
            mov rax, [0x600000]
            call pf64
            mov qword [0x12010], 0x400083
            invlpg [0x400000]
            mov rax, [0x400000]
            xor edx, edx
            call pf64

        """
        try compare(body)
    }

    /// Each flag-setting `form` followed by each of the 16 Jcc conditions (a bit per condition,
    /// taken or not, collected in RBX), then the form's flags for later readers, with the operands
    /// of setup(k) for every k in `setups`.
    private func branchesAfter(_ forms: [String], setups: (Int) -> [Int], extra: String = "") -> String {
        var body = "mov qword [FLAGMASK], 0x8D5\n"
        var label = 0
        for (k, form) in forms.enumerated() {
            for n in setups(k) {
                body += setup(n) + extra + "xor r12d, r12d\n"
                for cc in ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"] {
                    label += 1
                    body += "\(form)\nj\(cc) .c\(label)\nor r12, 1\n.c\(label):\nshl r12, 1\n"
                }
                body += "\(form)\nmov rbx, r12\n" + dump
            }
        }
        return body
    }

    /// TEST of a register with an immediate or a register, at every size, fused with the Jcc after
    /// it: all 16 conditions taken and not taken, the flags left for later readers.
    func testFusedTestAndBranchAtEverySize() throws {
        try compare(branchesAfter(["test al, 0x81", "test bh, 0x80", "test ah, bl", "test sil, sil", "test ax, 0x8001",
                                   "test cx, dx", "test bx, ax", "test eax, 0x80000001", "test ebx, 0x7FFFFFFF",
                                   "test rax, -1", "test rbx, 0x40", "test r10b, 0x7F", "test dl, 0"],
                                  setups: { [$0] }, extra: "mov r10, rax\nmov esi, ecx\n"))
    }

    /// CMP of registers or a register and an immediate, 32 and 64 bits, and CMP/TEST of memory
    /// with an immediate at every size, fused with the Jcc after it: all 16 conditions (overflow,
    /// sign and parity too) over operands that are equal, that overflow, that differ in sign.
    func testFusedCompareAndBranch() throws {
        try compare(branchesAfter(["cmp eax, ebx", "cmp rax, rbx", "cmp ebx, eax", "cmp rbx, rax", "cmp rax, rax",
                                   "cmp eax, 0x7FFFFFFF", "cmp rbx, -1", "cmp eax, -3", "cmp rax, 0x40", "cmp ebx, 0",
                                   // Memory with a byte-sized immediate (fused too), and with a larger one (not).
                                   "cmp byte [0x8400], 0x80", "cmp byte [0x8401], 3", "cmp word [0x8402], -2",
                                   "cmp dword [0x8404], 0x7F", "cmp qword [0x8400], -1", "cmp dword [0x8400], 0x12345",
                                   "test byte [0x8401], 0x81", "test word [0x8406], 0x7F", "test dword [0x8404], -128",
                                   "test qword [0x8400], 0x40", "cmp byte [fs:0x10], 0x7F"],
                                  setups: { [$0, $0 + 1] }))
    }

    /// A NOP in a 64-bit block is folded into the instruction before it (one dispatch fewer): the
    /// retired count still counts it, as does the count taken off when a branch leaves the block
    /// early, and the folded instruction's next RIP is after the NOP. The loop opens with ENDBR64
    /// and ftrace's 5-byte NOP, as kernel functions do: 8 and 10 instructions per pass.
    func testNopsFoldedIntoTheirBlockStillRetire() throws {
        func retired(_ passes: Int) throws -> UInt64 {
            try self.retired("""
            .l:
                endbr64
                nop dword [rax+rax*1+0]
                inc eax
                test ecx, 1
                jnz .skip
                inc ebx
                nop
            .skip:
                dec ecx
                nop
                jnz .l

            """, passes: passes)
        }
        XCTAssertEqual(try retired(2000) - retired(1000), 9000)
        XCTAssertEqual(try retired(4000) - retired(1000), 27000)
    }

    /// LOCKed read-modify-writes (host atomics in the fast tier), CMPXCHG and XADD in both
    /// outcomes, and BT/BTS/BTR/BTC with immediate and register bit offsets, including register
    /// offsets that reach the next or the previous qword of a memory operand.
    func testLockedOperationsCompareExchangeAndBitTests() throws {
        // RAX and [0x8400], RBX and RCX, [0x8408] and RDX.
        let dump2 = "mov rdx, [0x8400]\ncall pf64\nmov rax, rbx\nmov rdx, rcx\ncall pf64\nmov rax, [0x8408]\ncall pf64\n"
        var body = ""
        var k = 0
        func add(_ mask: String, _ forms: [String]) {
            for f in forms {
                body += setup(k) + "mov qword [FLAGMASK], \(mask)\n" + (k % 2 == 0 ? "stc\n" : "clc\n") + f + "\n" + dump2
                k += 1
            }
        }
        var locked: [String] = []
        for op in ["add", "or", "adc", "sbb", "and", "sub", "xor"] {
            locked += ["lock \(op) [0x8400], eax", "lock \(op) [0x8400], rbx", "lock \(op) word [0x8402], 0x8001",
                       "lock \(op) byte [0x8401], bh", "lock \(op) qword [0x8408], -2"]
        }
        locked += ["lock inc dword [0x8400]", "lock inc qword [0x8408]", "lock dec word [0x8406]", "lock dec byte [0x8400]",
                   "lock not qword [0x8400]", "lock not byte [0x8403]", "lock neg dword [0x8404]", "lock neg qword [0x8408]",
                   "lock inc dword [0x8401]", "lock add qword [0x8404], rbx"]   // the last two: not naturally aligned
        add("0x8D5", locked)
        var exchanges: [String] = []
        for lock in ["", "lock "] {
            exchanges += ["\(lock)cmpxchg [0x8400], rcx", "\(lock)cmpxchg [0x8408], rdx", "\(lock)cmpxchg [0x8400], ecx",
                          "\(lock)cmpxchg [0x8408], dx", "\(lock)cmpxchg [0x8400], bh", "\(lock)xadd [0x8400], rbx",
                          "\(lock)xadd [0x8404], ecx", "\(lock)xadd [0x8406], bx", "\(lock)xadd [0x8407], dl"]
        }
        // Equal operands: RAX is also at [0x8408] and in RBX (mov rbx, rax first).
        exchanges += ["mov rbx, rax\ncmpxchg rbx, rcx", "cmpxchg rbx, rcx", "mov ebx, eax\ncmpxchg ebx, ecx", "cmpxchg bl, ch",
                      "mov [0x8400], rax\nlock cmpxchg [0x8400], rcx", "mov [0x8400], eax\ncmpxchg [0x8400], edx",
                      "xadd rbx, rcx", "xadd ebx, eax", "xadd al, ah", "xadd rax, rax"]
        add("0x8D5", exchanges)
        var bits: [String] = []
        for op in ["bt", "bts", "btr", "btc"] {
            let lock = op == "bt" ? "" : "lock "
            bits += ["\(op) rax, 63", "\(op) eax, 35", "\(op) bx, 17", "\(op) rbx, rcx", "\(op) ecx, edx",
                     "\(op) qword [0x8400], 1", "\(op) dword [0x8404], 31", "\(op) word [0x8402], 15",
                     "\(lock)\(op) qword [0x8408], 60",
                     "mov rcx, 70\n\(op) [0x8400], rcx", "mov rcx, -1\n\(op) [0x8408], rcx",
                     "mov rcx, -33\n\(lock)\(op) dword [0x8408], ecx", "mov ecx, 20\n\(op) [0x8406], cx",
                     "mov rcx, 5\n\(lock)\(op) [0x8400], rcx"]
        }
        add("0x1", bits)
        try compare(body)
    }

    func testConditionalMovesSetsAndStack() throws {
        var body = "mov qword [FLAGMASK], 0x8D5\n"
        var k = 0
        for cc in ["b", "e", "l", "le", "s", "o", "p", "a"] {
            for form in ["cmov\(cc) eax, ebx", "cmov\(cc) rax, [0x8400]", "cmov\(cc) ecx, [0x8404]", "set\(cc) bh",
                         "set\(cc) byte [0x8401]", "set\(cc) sil"] {
                body += setup(k) + "cmp rbx, rax\n" + form + "\n" + dump
                k += 1
            }
        }
        body += """
            mov rax, rsp
            push rax
            push qword [0x8400]
            pop rbx
            pop rcx
            sub rax, rsp
            mov rdx, rcx
            call pf64
            push rsp
            pop rax
            sub rax, rsp
            call pf64
            call .f
            jmp .after
        .f:
            mov rax, [rsp]
            lea rdx, [rel .after]
            sub rax, rdx
            call pf64
            ret
        .after:
            call .g
            mov rax, rsp
            call pf64
            jmp .done
        .g:
            ret 0
        .done:

        """
        try compare(body)
    }

    /// CBW/CWDE/CDQE, BSWAP, PUSH imm, LEAVE, CLI and PUSHF (the arithmetic flags worked out from
    /// a compare just before), each result printed.
    func testSignExtensionByteSwapStackFrameAndFlags() throws {
        var body = "mov qword [FLAGMASK], 0x8D5\n"
        for (k, f) in ["cbw", "cwde", "cdqe", "bswap eax", "bswap rax", "bswap ebx", "bswap rbx"].enumerated() {
            body += setup(k) + f + "\n" + dump
        }
        for k in 0..<4 {
            body += setup(k) + """
                mov r8, rsp
                push -5
                push 0x7FFFFFFF
                push -0x80000000
                pop rcx
                pop rbx
                pop rdx
                mov rax, r8
                sub rax, rsp
                call pf64
                mov rax, rbx
                mov rdx, rcx
                call pf64
                mov rbp, 0x1111
                push rbp
                mov rbp, rsp
                sub rsp, 0x48
                mov qword [rsp], 7
                mov qword [rbp], 0x2222
                leave
                mov rax, rbp
                mov rdx, r8
                sub rdx, rsp
                call pf64
                cmp rax, rbx
                pushf
                pop rax
                cli
                pushf
                pop rdx
                call pf64
                sti
                add rbx, rbx
                pushf
                pop rax
                mov rdx, rax
                call pf64

                """
        }
        try compare(body)
    }
}

extension GuestTestCase {
    /// Code that writes a callee at `addr`: mov eax, v; ret.
    static func callee(_ addr: Int, _ v: Int) -> String {
        "mov byte [\(addr)], 0xB8\nmov dword [\(addr + 1)], \(v)\nmov byte [\(addr + 5)], 0xC3\n"
    }

    /// 300 calls of `target` from one call site (after `callSite`), summing EAX into RBX, with
    /// `event` before the 151st; prints RBX.
    static func callLoop(_ label: String, _ target: Int, event: String, callSite: String = "",
                         countDown: String = "dec ecx") -> String {
        """
            xor ebx, ebx
            mov ecx, 300
        .\(label):
            cmp ecx, 150
            jne .\(label)_call
        \(event)
        .\(label)_call:
            \(callSite)
            call \(target)
            add ebx, eax
            \(countDown)
            jnz .\(label)
            mov rax, rbx
            xor edx, edx
            call pf64

        """
    }
}
