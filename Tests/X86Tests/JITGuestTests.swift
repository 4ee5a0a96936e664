import XCTest
@testable import X86

/// The fast tier's code generator (Sources/CX86Fast/x86jit.c), with every block compiled on its
/// first entry: random straight-line runs (seeded, so every run is the same) of the forms it
/// compiles and of some it hands back to the handlers, over random registers and memory, each run
/// twice (the second time with the TLB warm, so memory operands run compiled rather than exiting
/// on a miss), then every register, the flags and the memory compared with QEMU TCG.
final class JITGuestTests: GuestTestCase {
    private var saved: (UInt32, Int) = (0, 0)
    override func setUp() {
        saved = (FastTier.jitThreshold, FastTier.jitBuffer)
        FastTier.jitThreshold = 1
    }
    override func tearDown() { (FastTier.jitThreshold, FastTier.jitBuffer) = saved }

    struct LCG {
        var s: UInt64
        mutating func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s >> 11 }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
        mutating func chance(_ n: Int) -> Bool { below(n) == 0 }
    }

    // Registers the runs may write; R13 holds a small index, R14 the data's base, R15 the pass count.
    static let writable = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12]
    static let r64 = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
    static let r32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "r8d", "r9d", "r10d", "r11d", "r12d", "r13d", "r14d", "r15d"]
    static let r16 = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8w", "r9w", "r10w", "r11w", "r12w", "r13w", "r14w", "r15w"]
    static let r8 = ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil", "r8b", "r9b", "r10b", "r11b", "r12b", "r13b", "r14b", "r15b"]
    static let conditions = ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"]

    struct Gen {
        var g: LCG
        let seed: UInt64
        var label = 0
        var depth = 0   // qwords pushed and not yet popped

        mutating func reg(_ size: Int, writable: Bool = true) -> String {
            let n = writable ? g.pick(JITGuestTests.writable) : g.pick(JITGuestTests.writable + [13, 14])
            switch size {
            case 8: return JITGuestTests.r64[n]
            case 4: return JITGuestTests.r32[n]
            case 2: return JITGuestTests.r16[n]
            default: return JITGuestTests.r8[n]
            }
        }
        /// A memory operand in the 256 data bytes at 0x8400 (absolute, R14-based, indexed by R13, FS-relative).
        mutating func mem(_ size: Int) -> String {
            let width = ["", "byte", "word", "", "dword", "", "", "", "qword"][size]
            let d = g.below(0x78)
            switch g.below(4) {
            case 0: return "\(width) [0x\(String(0x8400 + d, radix: 16))]"
            case 1: return "\(width) [r14 + \(d)]"
            case 2: return "\(width) [r14 + r13*\(g.pick([1, 2, 4, 8])) + \(g.below(0x40))]"
            default: return "\(width) [fs:0x\(String(0x8400 + d, radix: 16))]"
            }
        }
        mutating func imm(_ size: Int) -> String {
            switch size {
            case 1: return String(g.pick([0, 1, 0x7F, 0x80, 0xFF, g.below(256)]))
            case 2: return String(g.pick([0, 1, 0x7FFF, 0x8000, 0xFFFF, g.below(65536)]))
            default:
                // 64-bit operations take a sign-extended 32-bit immediate.
                let v = g.pick([0, 1, -1, 0x7F, -0x80, 0x7FFF_FFFF, -0x8000_0000, Int(Int32(truncatingIfNeeded: g.next()))])
                return size == 4 ? "0x" + String(UInt32(truncatingIfNeeded: v), radix: 16) : String(v)
            }
        }
        mutating func size() -> Int { g.chance(8) ? g.pick([2, 1]) : g.pick([8, 4]) }
        mutating func aluOp() -> String { g.chance(16) ? g.pick(["adc", "sbb"]) : g.pick(["add", "or", "and", "sub", "xor", "cmp"]) }

        /// Two- and three-operand IMUL, its CF/OF read at once now and then (ADC, JO).
        mutating func imul() -> String {
            let w = g.pick([4, 8]), src = g.chance(2) ? reg(w, writable: false) : mem(w)
            label += 1
            return (g.chance(2) ? "imul \(reg(w)), \(src)" : "imul \(reg(w)), \(src), \(imm(w))")
                + (g.chance(3) ? "\nadc \(reg(8)), 0" : g.chance(2) ? "\njo .o\(seed)_\(label)\nnot \(reg(8))\n.o\(seed)_\(label):" : "")
        }

        /// One instruction that does not branch.
        mutating func simple() -> String {
            switch g.below(14) {
            case 0, 1, 2: // ALU, every form (and IMUL)
                if g.chance(8) { return imul() }
                let s = size(), op = aluOp()
                switch g.below(5) {
                case 0: return "\(op) \(reg(s)), \(reg(s, writable: false))"
                case 1: return "\(op) \(reg(s)), \(mem(s))"
                case 2: return "\(op) \(mem(s)), \(reg(s, writable: false))"
                case 3: return "\(op) \(reg(s)), \(imm(s))"
                default: return "\(op) \(mem(s)), \(imm(s))"
                }
            case 3, 4: // MOV
                let s = size()
                switch g.below(6) {
                case 0: return "mov \(reg(s)), \(reg(s, writable: false))"
                case 1: return "mov \(reg(s)), \(mem(s))"
                case 2: return "mov \(mem(s)), \(reg(s, writable: false))"
                case 3: return "mov \(reg(s)), \(imm(s))"
                case 4: return "mov \(reg(8)), 0x\(String(g.next(), radix: 16))"
                default: return "mov \(mem(s)), \(imm(s))"
                }
            case 5: // TEST
                let s = size()
                switch g.below(4) {
                case 0: return "test \(reg(s, writable: false)), \(reg(s, writable: false))"
                case 1: return "test \(reg(s, writable: false)), \(imm(s))"
                case 2: return "test \(mem(s)), \(reg(s, writable: false))"
                default: return "test \(mem(s)), \(imm(s))"
                }
            case 6: // LEA, of a data address or of any registers' values
                let m = g.chance(2) ? mem(8).replacingOccurrences(of: "qword ", with: "").replacingOccurrences(of: "fs:", with: "")
                    : "[\(reg(8, writable: false)) + \(reg(8, writable: false))*\(g.pick([1, 2, 4, 8])) - \(g.below(1000))]"
                return "lea \(reg(g.pick([4, 8]))), \(m)"
            case 7: // MOVZX, MOVSXD
                switch g.below(5) {
                case 0: return "movzx \(reg(g.pick([4, 8]))), \(reg(1, writable: false))"
                case 1: return "movzx \(JITGuestTests.r32[g.below(4)]), \(g.pick(["ah", "bh", "ch", "dh"]))"
                case 2: return "movzx \(reg(g.pick([4, 8]))), \(g.chance(2) ? mem(1) : mem(2))"
                case 3: return "movzx \(reg(g.pick([4, 8]))), \(reg(2, writable: false))"
                default: return g.chance(2) ? "movsxd \(reg(8)), \(reg(4, writable: false))" : "movsxd \(reg(8)), \(mem(4))"
                }
            case 8, 9: // shifts by an immediate (and now and then by CL, or a rotate: the handlers')
                let s = g.pick([8, 4]), count = g.pick([0, 1, 2, 31, 32, 63, g.below(64)])
                if g.chance(3) {   // by CL (a zero count now and then, and counts past 31)
                    let r = reg(s)   // (RCX itself too)
                    return (g.chance(3) ? "and ecx, \(g.pick([0, 0x20, 0x3F, 1, 0x21]))\n" : "") + "\(g.pick(["shl", "shr", "sar"])) \(r), cl"
                }
                let r = reg(s), shift = "\(g.chance(10) ? "rol" : g.pick(["shl", "shr", "sar"])) \(r), \(count)"
                // Now and then CF read at once by the handlers (ADC: carry_flag from the shift's lazy state).
                return g.chance(4) ? shift + "\nadc \(r), 0" : shift
            case 10: // stack, and a call to a routine that returns with RET 8 (popping what was pushed)
                if g.chance(4) { return "push \(reg(8, writable: false))\ncall ret8" }
                if depth > 0 && g.chance(2) { depth -= 1; return "pop \(reg(8))" }
                depth += 1
                return "push \(reg(8, writable: false))"
            case 11 where g.chance(3): // forms the code generator leaves to the handlers
                return g.pick(["imul \(reg(2)), \(reg(2, writable: false))",
                               "setnz \(reg(1))", "cmovc \(reg(8)), \(reg(8, writable: false))", "lock not \(mem(4))"])
            case 11: // NOT, NEG, MOVSX, CMPXCHG (aligned, after a load that makes it succeed now and then)
                let s = size()
                switch g.below(6) {
                case 0: return "\(g.pick(["not", "neg"])) \(g.chance(2) ? reg(s) : mem(s))"
                case 5: return imul()
                case 4: // INC/DEC keep CF: after each kind of flag writer, or first in a block
                    return "\(g.pick(["inc", "dec"])) \(g.chance(2) ? reg(s) : mem(s))" + (g.chance(3) ? "\nadc \(reg(8)), 0" : "")
                case 1: return "movsx \(reg(g.pick([2, 4, 8]))), \(g.chance(2) ? reg(1, writable: false) : mem(1))"
                case 2: return "movsx \(reg(g.pick([4, 8]))), \(g.chance(2) ? reg(2, writable: false) : mem(2))"
                default:
                    let w = g.pick([4, 8]), m = "\(w == 8 ? "qword" : "dword") [r14 + \(w * g.below(8))]"
                    return (g.chance(2) ? "mov \(w == 8 ? "rax" : "eax"), \(m)\n" : "") + "\(g.chance(2) ? "lock " : "")cmpxchg \(m), \(reg(w, writable: false))"
                }
            default: // MOV between registers, the commonest of all
                return "mov \(reg(8)), \(reg(8, writable: false))"
            }
        }

        /// A compare or test fused with its Jcc, or a flag-writer with a MOV between it and a lone
        /// Jcc; the branch skips one instruction.
        mutating func branch() -> String {
            label += 1
            let cc = g.pick(JITGuestTests.conditions), s = g.pick([8, 4])
            let setter: String
            switch g.below(8) {
            case 0: setter = "cmp \(reg(s, writable: false)), \(reg(s, writable: false))"
            case 1: setter = "cmp \(reg(s, writable: false)), \(imm(s))"
            case 2: setter = "test \(reg(s, writable: false)), \(g.chance(2) ? reg(s, writable: false) : imm(s))"
            case 3: let ms = g.pick([1, 2, 4, 8]); setter = "\(g.pick(["cmp", "test"])) \(mem(ms)), \(g.pick([0, 1, 0x7F, -1, -0x80]))"
            case 4: setter = "\(aluOp()) \(reg(s)), \(reg(s, writable: false))\nmov \(reg(8)), \(reg(8, writable: false))"
            case 5: setter = "\(aluOp()) \(mem(s)), \(imm(s))\nlea \(reg(8)), [r14 + 8]"
            case 6: // (a load between them runs a TLB check, which changes the host's CF)
                setter = "\(g.pick(["inc", "dec"])) \(g.chance(2) ? reg(s) : mem(s))" + (g.chance(2) ? "\nmov \(reg(8)), \(mem(8))" : "")
            default: setter = "\(g.pick(["shl", "shr", "sar"])) \(reg(s)), \(g.pick([1, 3]))\nmov \(reg(8)), \(reg(8, writable: false))"
            }
            switch g.below(6) {
            case 0: // the condition as a byte, from the same writer
                return "\(setter)\nset\(cc) \(g.chance(2) ? reg(1) : mem(1))"
            case 1: // or a conditional move (32 bits clear the upper half either way)
                let s = g.pick([8, 4])
                return "\(setter)\ncmov\(cc) \(reg(s)), \(g.chance(2) ? reg(s, writable: false) : mem(s))"
            default:
                let target = ".j\(seed)_\(label)"   // (simple() may take labels of its own)
                return "\(setter)\nj\(cc) \(target)\n\(simple())\n\(target):"
            }
        }
    }

    func program(seeds: ClosedRange<UInt64>, length: Int) -> String {
        var body = "mov qword [FLAGMASK], 0x8D5\njmp jit_cases\nret8:\nmov r13, [rsp + 8]\nand r13d, 7\nret 8\njit_cases:\n"
        for seed in seeds {
            var gen = Gen(g: LCG(s: seed &* 0x9E37_79B9_7F4A_7C15), seed: seed)
            body += "mov r15d, 2\n.case\(seed):\n"
            for n in JITGuestTests.writable { body += "mov \(JITGuestTests.r64[n]), 0x\(String(gen.g.next() | (gen.g.chance(3) ? 1 << 63 : 0), radix: 16))\n" }
            for k in 0..<32 { body += "mov rax, 0x\(String(gen.g.next(), radix: 16))\nmov [\(0x8400 + 8 * k)], rax\n" }
            body += "mov rax, 0x\(String(gen.g.next(), radix: 16))\nmov r13d, \(gen.g.below(8))\nmov r14d, 0x8400\n"
            for _ in 0..<length { body += (gen.g.chance(4) ? gen.branch() : gen.simple()) + "\n" }
            for _ in 0..<gen.depth { body += "pop rax\n" }
            body += "call dump64\n"
            for k in stride(from: 0, to: 16, by: 2) { body += "mov rax, [\(0x8400 + 8 * k)]\nmov rdx, [\(0x8408 + 8 * k)]\ncall pf64\n" }
            body += "dec r15d\njnz .case\(seed)\n"
        }
        return body
    }

    func testRandomBlocksCompiledMatchQEMU() throws {
        // 20 runs fill most of the guest image; X86_JIT_SEEDS=n runs more chunks of 20.
        try compareRandomRuns(chunks: ProcessInfo.processInfo.environment["X86_JIT_SEEDS"].flatMap { Int($0) }.map { max(1, $0 / 20) } ?? 3)
    }

    /// The same with a code buffer of 64 KiB, which fills several times over: each time the
    /// compiled blocks are forgotten and compiled again.
    func testFullCodeBufferStartsOver() throws {
        FastTier.jitBuffer = 64 << 10
        try compareRandomRuns(chunks: 1)
    }

    /// A loop whose blocks are all compiled and chained to each other (a fused TEST+Jcc leaving the
    /// first mid-block, a lone Jcc after SUB closing the loop): the retired count stays exact
    /// through the chained exits (each one's skipped instructions and the next block's count).
    func testRetiredCountThroughChainedBlocks() throws {
        func retired(_ passes: Int) throws -> UInt64 {
            let image = try GuestHarness.assemble("""
                mov ecx, \(passes)
                xor ebx, ebx
            .l:
                add eax, 1
                test ecx, 1
                jnz .skip
                add ebx, 1
            .skip:
                sub ecx, 1
                jnz .l
                mov rax, rbx
                xor edx, edx
                call pf64

            """, mode: .lm64)
            let (out, cpu, plat) = GuestHarness.runOurs(image)
            XCTAssertNotNil(plat.exitCode, out)
            XCTAssertTrue(out.contains(String(format: "%016X", passes / 2)), out)
            if FastTier.enabled { XCTAssertGreaterThan(cpu.compiledBlocks, 2) }
            return cpu.instructionsRetired
        }
        // 5 instructions on odd passes, 6 on even ones. (Pass counts whose halves print with the
        // same number of hex letters: pf64 takes an extra instruction for each digit above 9.)
        XCTAssertEqual(try retired(2000) - retired(1000), 5500)
        XCTAssertEqual(try retired(24000) - retired(6000), 99000)
    }

    /// Compiled calls to compiled callees on other pages, chained with checks on every pass: the
    /// chain must be given up when the callee's code is rewritten in place (its page's generation),
    /// and when its page is remapped to other code, also after another call site has filled the
    /// TLB entry again (the physical page) and when nothing has (the TLB entry's tag), as
    /// FastTierGuestTests' handler-driven version.
    func testCrossPageChainsFollowRewrittenAndRemappedCode() throws {
        // The call site is a block of two compiled instructions; SUB, not DEC, counts down.
        let callee = Self.callee
        let loop = { Self.callLoop($0, $1, event: $2, callSite: "mov edx, ecx", countDown: "sub ecx, 1") }
        let body = "mov qword [FLAGMASK], 0\n"
            + callee(0x40000, 1) + loop("a", 0x40000, "mov dword [0x40001], 7")
            + callee(0x400000, 3) + callee(0x600000, 5)
            + loop("b", 0x400000, "mov rax, [0x12000 + 3 * 8]\nmov [0x12000 + 2 * 8], rax\ninvlpg [0x400000]\ncall 0x400000")
            // Mapped back, and called at once: the TLB entry is empty (its physical page is stale).
            + loop("c", 0x400000, "mov rax, 0x400083\nmov [0x12000 + 2 * 8], rax\ninvlpg [0x400000]")
        let image = try GuestHarness.assemble(body, mode: .lm64)
        let (ours, cpu, plat) = GuestHarness.runOurs(image)
        XCTAssertNotNil(plat.exitCode, ours)
        if FastTier.enabled { XCTAssertGreaterThan(cpu.compiledBlocks, 4) }
        // 150 x 1 + 150 x 7, 150 x 3 + 150 x 5, 150 x 5 + 150 x 3.
        XCTAssertEqual(ours, String(repeating: String(format: "%016X 0000000000000000 0000000000000000\n", 1200), count: 3))
        if let ref = try GuestHarness.runQEMU(image) { XCTAssertEqual(ours, ref) }
    }

    /// Compiled RETs go where the address they pop says: a callee returning to two call sites in
    /// turn, one whose return address is moved on the stack on one pass, and RET imm16 (the stack
    /// pointer printed), against QEMU, with the retired count exact.
    func testReturnsFollowTheAddressTheyPop() throws {
        func run(_ passes: Int) throws -> (String, UInt64) {
            let image = try GuestHarness.assemble("""
                xor ebx, ebx
                mov ecx, \(passes)
            .l:
                test ecx, 1
                jz .even
                call .f
                add ebx, eax
                jmp .next
            .even:
                call .f
                lea ebx, [rbx + rax * 4]
            .next:
                call .g
                add ebx, 7
                add ebx, eax
                push rcx
                call .h
                sub ecx, 1
                jnz .l
                mov rax, rbx
                mov rdx, rsp
                call pf64
                jmp .done
            .f:
                mov eax, ecx
                ret
            .g:
                mov eax, 1
                cmp ecx, 3
                jne .g_ret
                add qword [rsp], 3
            .g_ret:
                ret
            .h:
                mov rax, [rsp + 8]
                add ebx, eax
                ret 8
            .done:

            """, mode: .lm64)
            let (out, cpu, plat) = GuestHarness.runOurs(image)
            XCTAssertNotNil(plat.exitCode, out)
            if FastTier.enabled { XCTAssertGreaterThan(cpu.compiledBlocks, 4) }
            if let ref = try GuestHarness.runQEMU(image) { XCTAssertEqual(out, ref) }
            return (out, cpu.instructionsRetired)
        }
        let (small, a) = try run(1000), (big, b) = try run(3000)
        // f: odd passes add c, even ones 4c; g adds 8 (1 on pass 3); h adds c.
        func expected(_ n: Int) -> String {
            var sum: UInt32 = 0
            for c in stride(from: n, to: 0, by: -1) {
                let c32 = UInt32(c)
                sum = sum &+ (c % 2 == 1 ? c32 : 4 &* c32) &+ (c == 3 ? 1 : 8) &+ c32
            }
            return String(format: "%016X", UInt64(sum))
        }
        XCTAssertTrue(small.contains(expected(1000)), small)
        XCTAssertTrue(big.contains(expected(3000)), big)
        // Per pass: odd 21 instructions, even 20 (TEST, JZ, CALL f, MOV, RET, ADD or LEA, and JMP
        // on odd passes; then CALL g, MOV, CMP, JNE, RET, ADD, ADD, PUSH, CALL h, MOV, ADD, RET,
        // SUB, JNZ).
        let digits = { (s: String) in s.prefix(16).filter { $0 >= "A" && $0 <= "F" }.count }
        XCTAssertEqual(Int64(b) - Int64(a) - Int64(digits(big) - digits(small)), 2000 / 2 * 21 + 2000 / 2 * 20)
    }

    /// ADC and SBB chains, compiled: CF from a known writer in the block and, first in a block,
    /// from the lazy kind at run time; the edge where the result equals an operand and the carry
    /// in decides CF (an all-ones operand with a carry in); CF left in cin for the next reader.
    func testCarryChains() throws {
        var body = "mov qword [FLAGMASK], 0x8D5\nmov r15d, 2\n.again:\n"
        for (k, (a, b)) in [("-1", "-1"), ("-1", "0"), ("0x8000000000000000", "0x7FFFFFFFFFFFFFFF"), ("5", "-1")].enumerated() {
            for op in ["adc", "sbb"] {
                body += """
                    xor ebx, ebx
                    mov rdx, \(a)
                    mov rcx, \(b)
                    mov rax, -1
                    add rax, 1
                    \(op) rdx, rcx
                    adc rbx, 0
                    \(op) rdx, rcx
                    \(op) edx, ecx
                    jmp .n\(k)\(op)
                .n\(k)\(op):
                    adc rbx, 0
                    \(op) dx, cx
                    jmp .m\(k)\(op)
                .m\(k)\(op):
                    \(op) dl, 0x80
                    adc rbx, 0
                    mov rax, rbx
                    call pf64

                """
            }
        }
        body += "dec r15d\njnz .again\n"
        try compare(body)
    }

    private func compareRandomRuns(chunks: Int) throws {
        for chunk in 0..<chunks {
            let seeds = UInt64(chunk * 20 + 1)...UInt64(chunk * 20 + 20)
            let image = try GuestHarness.assemble(program(seeds: seeds, length: 40), mode: .lm64)
            let (ours, cpu, plat) = GuestHarness.runOurs(image)
            XCTAssertNotNil(plat.exitCode, "guest did not reach EXIT; output:\n\(ours)")
            if FastTier.enabled {
                XCTAssertGreaterThan(cpu.compiledBlocks, 200, "the code generator compiled \(cpu.compiledBlocks) blocks")
            }
            if ProcessInfo.processInfo.environment["X86_TEST_VERBOSE"] != nil { print("compiled \(cpu.compiledBlocks) blocks\n\(ours)") }
            guard let ref = try GuestHarness.runQEMU(image) else { throw XCTSkip("qemu-system-x86_64 not installed") }
            let a = ours.split(separator: "\n", omittingEmptySubsequences: false)
            let b = ref.split(separator: "\n", omittingEmptySubsequences: false)
            var diff = ""
            for k in 0..<max(a.count, b.count) where diff.count < 4000 {
                let x = k < a.count ? String(a[k]) : "<none>", y = k < b.count ? String(b[k]) : "<none>"
                if x != y { diff += "line \(k): ours \(x) | qemu \(y)\n" }
            }
            XCTAssertTrue(diff.isEmpty, "seeds \(seeds): output differs from QEMU:\n\(diff)")
        }
    }
}
