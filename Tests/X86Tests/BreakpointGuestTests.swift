import XCTest
@testable import X86

/// Debug-register breakpoints (SDM vol. 3, chapter 18): instruction breakpoints (a fault before the
/// instruction, RF to resume), data write and read/write breakpoints of each length (a trap after
/// the access; string iterations, the stack, LOCKed accesses), and disarming. (I/O breakpoints,
/// DR4/DR5, general detect, DR6 and single-step: DebugRegisterGuestTests.)
///
/// A #DB handler prints one line per exception: K (R12, which the test sets before each step),
/// E (the pushed RIP minus [DBX_BASE]), D (DR6) and F (the pushed RFLAGS under [DBX_FMASK]), and
/// optionally C and I (RCX, RDI); it sets RF in the image when DR6.B0-B3 report a hit (which only
/// matters for instruction breakpoints) and clears DR6. Compared with QEMU 7.2's TCG, which
/// implements instruction and data breakpoints; where it departs from the SDM (RF pushed for the
/// traps of unfinished REP iterations, a hit in a REP's last iteration, accesses wider than the
/// breakpoint starting right after it, several breakpoints matching one access, breakpoint
/// addresses with low bits set for lengths 2-8, MOV SS holding a data breakpoint back) the case
/// runs on our CPU against the SDM.
final class BreakpointGuestTests: GuestTestCase {
    static let setup = """
        %define DBX_RF 0x8400       ; DR6 bits for which the handler sets RF in the pushed RFLAGS
        %define DBX_COUNT 0x8408    ; #DBs so far
        %define DBX_LIMIT 0x8410    ; after this many the handler disarms DR7 and clears TF
        %define DBX_FMASK 0x8418    ; pushed RFLAGS bits to print
        %define DBX_KEEP 0x8420     ; nonzero: the handler leaves DR6 alone
        %define DBX_REGS 0x8428     ; nonzero: also print RCX (C) and RDI (I)
        %define DBX_BASE 0x8430     ; subtracted from the pushed RIP
        %macro SHOW 1
            push rax
            mov al, %1
            call putc64
            mov al, '='
            call putc64
            pop rax
            call hex64
            push rax
            mov al, ' '
            call putc64
            pop rax
        %endmacro
        %macro NL 0
            push rax
            mov al, 10
            call putc64
            pop rax
        %endmacro
            lea rax, [rel dbx_handler]
            mov [IDT + 16], ax
            shr rax, 16
            mov [IDT + 16 + 6], ax
            shr rax, 16
            mov [IDT + 16 + 8], eax
            mov qword [DBX_RF], 0xF
            mov qword [DBX_COUNT], 0
            mov qword [DBX_LIMIT], 100
            mov qword [DBX_FMASK], 0x10100
            mov qword [DBX_KEEP], 0
            mov qword [DBX_REGS], 0
            mov qword [DBX_BASE], 0
            xor eax, eax
            mov dr6, rax
            xor r12d, r12d

        """

    static let handler = """

            jmp dbx_end
        dbx_handler:
            push rax
            push rdx
            mov rax, r12
            SHOW 'K'
            mov rax, [rsp + 16]
            sub rax, [DBX_BASE]
            SHOW 'E'
            mov rax, dr6
            SHOW 'D'
            mov rax, [rsp + 32]
            and rax, [DBX_FMASK]
            SHOW 'F'
            cmp qword [DBX_REGS], 0
            je .noregs
            mov rax, rcx
            SHOW 'C'
            mov rax, rdi
            SHOW 'I'
        .noregs:
            NL
            mov rax, dr6
            and rax, [DBX_RF]
            jz .norf
            or qword [rsp + 32], 0x10000
        .norf:
            cmp qword [DBX_KEEP], 0
            jne .keep
            xor eax, eax
            mov dr6, rax
        .keep:
            inc qword [DBX_COUNT]
            mov rax, [DBX_COUNT]
            cmp rax, [DBX_LIMIT]
            jb .out
            mov eax, 0x400
            mov dr7, rax
            and qword [rsp + 32], ~0x100
        .out:
            pop rdx
            pop rax
            iretq
        dbx_end:
            mov rax, [DBX_COUNT]
            SHOW 'N'
            NL

        """

    static func body(_ test: String) -> String { setup + test + handler }

    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// One handler line.
    static func db(_ k: UInt64, e: UInt64 = 0, _ d: UInt64, f: UInt64 = 0, c: UInt64? = nil, i: UInt64? = nil) -> String {
        var s = "K=\(hex(k)) E=\(hex(e)) D=\(hex(d)) F=\(hex(f)) "
        if let c, let i { s += "C=\(hex(c)) I=\(hex(i)) " }
        return s + "\n"
    }

    /// Runs on our CPU only (against the SDM) and compares the whole output.
    @discardableResult
    static func ours(_ test: String, _ expected: String, file: StaticString = #filePath, line: UInt = #line) throws -> X86VCPU {
        let image = try GuestHarness.assemble(Self.body(test), mode: .lm64)
        let (out, cpu, plat) = GuestHarness.runOurs(image)
        XCTAssertNotNil(plat.exitCode, "guest did not reach EXIT; output:\n\(out)", file: file, line: line)
        XCTAssertEqual(out, expected, file: file, line: line)
        return cpu
    }

    // MARK: instruction breakpoints

    /// A fault before the instruction (DR6.Bn, RIP of the instruction, RF = 0 pushed); the handler
    /// sets RF in the image and the instruction then runs once; RF lasts one instruction, so a
    /// breakpoint on the next one hits too. Breakpoints sit in the middle of straight-line code and
    /// on a Jcc that would otherwise be fused with its CMP; a disarmed or re-pointed one is quiet.
    func testInstructionBreakpointAndResumeFlag() throws {
        try compare(Self.body("""
            xor r13d, r13d
            xor r14d, r14d
            lea rax, [rel .bp]
            mov [DBX_BASE], rax
            mov dr0, rax
            lea rax, [rel .bp1]
            mov dr1, rax
            lea rax, [rel .bpj]
            mov dr3, rax
            mov eax, 0x400 | 0x02 | 0x04 | 0x40   ; G0, L1, G3: execute, length 1
            mov dr7, rax
            mov ebx, 1
            mov ecx, 7
            inc ecx
            mov r12d, 1
        .bp:
            add ebx, 2                     ; B0
        .bp1:
            add ebx, ecx                   ; B1: RF lasted one instruction
            mov r12d, 2
            cmp ecx, 8
        .bpj:
            jne .no                        ; B3
            add ebx, 0x100
        .no:
            inc r14d
            cmp r14d, 2
            je .second
            mov r12d, 3
            lea rax, [rel .bpx]            ; DR0 re-pointed, DR1 and DR3 off: the code above is quiet
            mov dr0, rax
            mov eax, 0x400 | 0x02
            mov dr7, rax
            jmp .bp
        .second:
            mov r12d, 4
        .bpx:
            nop                            ; B0 once
            inc r13d
            cmp r13d, 2
            je .done
            mov eax, 0x401                 ; L0 on .bpx, disarmed again before it is reached
            mov dr7, rax
            mov eax, 0x400
            mov dr7, rax
            jmp .bpx
        .done:
            mov eax, ebx
            SHOW 'B'
            NL
        """), expectContains: ["D=00000000FFFF0FF1", "D=00000000FFFF0FF2", "D=00000000FFFF0FF8", "B=0000000000000215",
                               "N=0000000000000004"])
    }

    /// A breakpoint inside a loop hits on every iteration; the same loop disarmed gives the same
    /// result with no #DB.
    func testInstructionBreakpointInLoop() throws {
        try compare(Self.body("""
            lea rax, [rel .lbp]
            mov [DBX_BASE], rax
            mov dr1, rax
            mov eax, 0x400 | 0x08          ; G1
            mov dr7, rax
            mov ecx, 5
            xor ebx, ebx
        .l:
            inc ebx
            mov r12, rcx
        .lbp:
            add ebx, ecx
            dec ecx
            jnz .l
            mov eax, 0x400
            mov dr7, rax
            mov eax, ebx
            SHOW 'B'
            mov ecx, 5
            xor ebx, ebx
            jmp .l2
        .l2:
            inc ebx
            mov r12, rcx
            add ebx, ecx
            dec ecx
            jnz .l2
            mov eax, ebx
            SHOW 'B'
            NL
        """), expectContains: ["D=00000000FFFF0FF2", "B=0000000000000014 B=0000000000000014", "N=0000000000000005"])
    }

    // MARK: data breakpoints

    /// Writes and reads of 1, 2, 4 and 8 bytes at offsets around a breakpoint of each length, aligned
    /// and overlapping it, then a read-modify-write and a compare; R12 numbers the accesses and the
    /// #DB comes after the access (RIP of the next instruction). Also returns the accesses the SDM
    /// says hit (any byte of the access in the breakpoint's range). `qemuQuirk` leaves out the
    /// accesses QEMU 7.2 reports wrongly: wider than the breakpoint and starting right after it.
    static func dataTable(rw: Int, qemuQuirk: Bool = false) -> (asm: String, hits: [Int]) {
        var s = "    mov qword [DBX_LIMIT], 0x1000\n"
        var hits: [Int] = []
        let dr = 0x200808
        var k = 0
        for (len, enc) in [(1, 0), (2, 1), (4, 3), (8, 2)] {
            s += """
                    mov rax, \(dr)
                    mov dr0, rax
                    mov eax, 0x402 | (\(rw) << 16) | (\(enc) << 18)
                    mov dr7, rax

                """
            for size in [1, 2, 4, 8] {
                let reg = ["", "al", "ax", "", "eax", "", "", "", "rax"][size]
                for off in Set([-size, -size + 1, -1, 0, len - 1, len, len - size, len - size + 1]).sorted() {
                    let overlaps = off <= len - 1 && off + size - 1 >= 0
                    k += 2
                    if qemuQuirk && off == len && size > len { continue }
                    s += "    mov r12d, \(k - 1)\n    mov [\(dr + off)], \(reg)\n"
                    s += "    mov r12d, \(k)\n    mov \(reg), [\(dr + off)]\n"
                    if overlaps { hits += rw == 3 ? [k - 1, k] : [k - 1] }
                }
            }
            k += 1
            s += "    mov r12d, \(k)\n    add dword [\(dr)], 1\n"
            hits.append(k)
            k += 1
            s += "    mov r12d, \(k)\n    cmp dword [\(dr)], 1\n"
            if rw == 3 { hits.append(k) }
        }
        return (s + "    mov eax, 0x400\n    mov dr7, rax\n", hits)
    }

    func checkDataTable(rw: Int) throws {
        try compare(Self.body(Self.dataTable(rw: rw, qemuQuirk: true).asm), expectContains: ["D=00000000FFFF0FF1"])
        let t = Self.dataTable(rw: rw)
        let image = try GuestHarness.assemble(Self.body(t.asm), mode: .lm64)
        let (out, _, plat) = GuestHarness.runOurs(image)
        XCTAssertNotNil(plat.exitCode)
        let ks = out.split(separator: "\n").filter { $0.hasPrefix("K=") }.map { Int($0.dropFirst(2).prefix(16), radix: 16)! }
        XCTAssertEqual(ks, t.hits, "the accesses that hit, against the SDM")
    }

    func testDataWriteBreakpoints() throws { try checkDataTable(rw: 1) }

    func testDataReadWriteBreakpoints() throws { try checkDataTable(rw: 3) }

    /// A quadword store across a page boundary hits a breakpoint on the second page.
    func testPageCrossingAccess() throws {
        try compare(Self.body("""
            mov rax, 0x201000
            mov dr0, rax
            mov eax, 0x402 | (1 << 16) | (2 << 18)   ; write, 8 bytes
            mov dr7, rax
            mov rax, 0x1122334455667788
            mov r12d, 1
            mov [0x200FFC], rax
            mov r12d, 2
            mov [0x200FF8], rax
            mov r12d, 3
            mov [0x201007], al
            mov r12d, 4
            mov [0x201008], al
            mov r12d, 5
            mov eax, [0x200FFE]
            mov eax, 0x400
            mov dr7, rax
        """), expectContains: ["N=0000000000000002"])
    }

    /// Lengths 2, 4 and 8 ignore the breakpoint address's low bits (SDM 18.2.5); several breakpoints
    /// matching one access all set their B bits. (QEMU 7.2 watches DRn as written and reports one
    /// watchpoint per access: our CPU against the SDM.)
    func testUnalignedAddressAndSeveralMatches() throws {
        let dr6 = 0xFFFF_0FF0 as UInt64
        try Self.ours("""
            mov rax, 0x201006                        ; length 4: covers 0x201004-0x201007
            mov dr2, rax
            mov eax, 0x400 | 0x20 | (1 << 24) | (3 << 26)
            mov dr7, rax
            lea rax, [rel .a1]
            mov [DBX_BASE], rax
            mov r12d, 1
            mov [0x201003], al
            mov r12d, 2
            mov [0x201004], al
        .a1:
            lea rax, [rel .a2]
            mov [DBX_BASE], rax
            mov r12d, 3
            mov [0x201008], al
            mov r12d, 4
            mov [0x201002], eax
        .a2:
            ; DR0 (write, 4 bytes at 0x200800) and DR1 (read/write, 4 bytes at 0x200804)
            mov rax, 0x200800
            mov dr0, rax
            mov rax, 0x200804
            mov dr1, rax
            mov eax, 0x400 | 0x0A | (1 << 16) | (3 << 18) | (3 << 20) | (3 << 22)
            mov dr7, rax
            lea rax, [rel .a3]
            mov [DBX_BASE], rax
            mov r12d, 5
            mov [0x200802], rax
        .a3:
            lea rax, [rel .a4]
            mov [DBX_BASE], rax
            mov r12d, 6
            mov rax, [0x200802]
        .a4:
            mov eax, 0x400
            mov dr7, rax
        """, Self.db(2, dr6 | 4) + Self.db(4, dr6 | 4) + Self.db(5, dr6 | 3) + Self.db(6, dr6 | 2) + "N=0000000000000004 \n")
    }

    /// REP MOVSB/STOSQ/LODSB reach a breakpoint in the middle: the #DB follows the iteration that hit
    /// (RIP still on the instruction, RCX/RDI of the next iteration), the rest runs after IRET.
    static let repTest = """
            mov rdi, 0x200100
            mov ecx, 32
            mov al, 0x5A
            rep stosb
            mov qword [DBX_REGS], 1
            mov rax, 0x200010
            mov dr0, rax
            mov rax, 0x200040
            mov dr1, rax
            mov rax, 0x20012F
            mov dr2, rax
            mov eax, 0x400 | 0x2A | (1 << 16) | (3 << 18) | (1 << 20) | (2 << 22) | (3 << 24)
            mov dr7, rax
            lea rax, [rel .r1]
            mov [DBX_BASE], rax
            mov r12d, 1
            mov rsi, 0x200100
            mov rdi, 0x200000
            mov ecx, 32
        .r1:
            rep movsb                ; writes 0x200010-13 (DR0): four hits
            lea rax, [rel .r2]
            mov [DBX_BASE], rax
            mov r12d, 2
            mov rdi, 0x200020
            mov ecx, 16
            mov rax, -1
        .r2:
            rep stosq                ; the 5th store writes 0x200040 (DR1)
            lea rax, [rel .r3]
            mov [DBX_BASE], rax
            mov r12d, 3
            std
            mov rsi, 0x200130
            mov ecx, 4
        .r3:
            rep lodsb                ; backwards: the 2nd load reads 0x20012F (DR2)
            cld
            mov eax, 0x400
            mov dr7, rax
            mov rax, [0x200000]
            SHOW 'M'
            mov rax, [0x200040]
            SHOW 'M'
            NL

        """

    /// A hit in the last iteration: the instruction has completed, so the #DB reports the next one
    /// with RF = 0 (QEMU 7.2 reports the REP instruction again, ending it with RCX = 0 after IRET).
    static let repLast = """
            mov rax, 0x20011F
            mov dr2, rax
            mov eax, 0x400 | 0x20 | (3 << 24)
            mov dr7, rax
            lea rax, [rel .r4]
            mov [DBX_BASE], rax
            mov r12d, 4
            mov rsi, 0x200100
            mov rdi, 0x200000
            mov ecx, 32
        .r4:
            rep movsb                ; the last iteration reads 0x20011F (DR2)
            mov eax, 0x400
            mov dr7, rax

        """

    func testRepStringHitsMidway() throws {
        // QEMU pushes RF = 0 for the unfinished iterations' traps: RF is left out here.
        try compare(Self.body("    mov qword [DBX_FMASK], 0x100\n" + Self.repTest), expectContains: ["N=0000000000000006"])
        // The SDM: RF = 1 in the image for a trap of an iteration that is not the last.
        let dr6 = 0xFFFF_0FF0 as UInt64
        var want = ""
        for n in 0..<4 { want += Self.db(1, dr6 | 1, f: 0x10000, c: UInt64(15 - n), i: 0x200011 + UInt64(n)) }
        want += Self.db(2, dr6 | 2, f: 0x10000, c: 11, i: 0x200048)
        want += Self.db(3, dr6 | 4, f: 0x10000, c: 2, i: 0x2000A0)
        want += "M=5A5A5A5A5A5A5A5A M=FFFFFFFFFFFFFFFF \n"
        want += Self.db(4, e: 2, dr6 | 4, c: 0, i: 0x200020)
        try Self.ours(Self.repTest + Self.repLast, want + "N=0000000000000007 \n")
    }

    /// PUSH, POP, CALL and RET hit a breakpoint on their stack slot (the slot is 16-byte aligned so
    /// the #DB frame never covers it).
    func testStackAccesses() throws {
        try compare(Self.body("""
            mov rbx, rsp
            mov rsp, 0x8E008
            mov rax, 0x8E000
            mov dr0, rax
            mov eax, 0x402 | (3 << 16) | (2 << 18)   ; read/write, 8 bytes
            mov dr7, rax
            mov r12d, 1
            push rax
            mov r12d, 2
            pop rax
            mov r12d, 3
            call .f
            mov r12d, 5
            push qword 7
            mov r12d, 6
            pop qword [0x200000]
            mov r12d, 7
            mov eax, 0x400
            mov dr7, rax
            mov rsp, rbx
            jmp .over
        .f:
            mov r12d, 4
            ret
        .over:
        """), expectContains: ["N=0000000000000006"])
    }

    /// LOCKed read-modify-writes and XCHG on a watched page: accesses overlapping the breakpoint hit
    /// (a failed CMPXCHG writes too), the rest of the page does not, and the results are right.
    func testLockedAccesses() throws {
        try compare(Self.body("""
            mov rax, 0x200800
            mov dr0, rax
            mov eax, 0x402 | (1 << 16) | (3 << 18)   ; write, 4 bytes
            mov dr7, rax
            mov dword [0x200800], 5
            mov dword [0x200810], 5
            mov eax, 3
            mov r12d, 1
            lock add [0x200800], eax
            mov r12d, 2
            lock add [0x200810], eax
            mov r12d, 3
            xchg [0x200800], eax
            mov r12d, 4
            mov ecx, 9
            lock cmpxchg [0x200800], ecx
            mov r12d, 5
            lock xadd [0x200810], ecx
            mov r12d, 6
            lock inc dword [0x200802]
            mov eax, 0x400
            mov dr7, rax
            mov eax, [0x200800]
            SHOW 'V'
            mov eax, [0x200810]
            SHOW 'V'
            NL
        """), expectContains: ["N=0000000000000005", "V=0000000000010003 V=0000000000000011"])
    }

    /// MOV SS holds a data breakpoint's #DB back until after the next instruction (SDM 6.8.3;
    /// QEMU 7.2 does not, a known FIXME there).
    func testMovSSHoldsDataBreakpoint() throws {
        try Self.ours("""
            mov word [0x200800], 0x10
            mov rax, 0x200800
            mov dr0, rax
            mov eax, 0x402 | (3 << 16) | (1 << 18)
            mov dr7, rax
            lea rax, [rel .a]
            mov [DBX_BASE], rax
            mov r12d, 1
            mov ss, [0x200800]
            mov r12d, 2
        .a:
            mov eax, 0x400
            mov dr7, rax
        """, Self.db(2, 0xFFFF_0FF1) + "N=0000000000000001 \n")
    }

    /// Protected mode (32-bit code: the block lookup without the 64-bit shortcuts): an instruction
    /// breakpoint, a read/write breakpoint hit by a store and by REP MOVSB (mid-way, so RF is left
    /// out), and POP.
    func testProtectedMode() throws {
        try compare(SingleStepGuestTests.print32 + """
            mov eax, .db
            mov [IDT + 8], ax
            shr eax, 16
            mov [IDT + 8 + 6], ax
            xor eax, eax
            mov dr6, eax
            mov eax, .bp
            mov dr0, eax
            mov eax, 0x8804
            mov dr1, eax
            mov eax, 0x400 | 0x0A | (3 << 20) | (3 << 22)
            mov dr7, eax
            mov ebx, 1
        .bp:
            add ebx, 2
            mov [0x8804], ebx
            mov esi, 0x8900
            mov edi, 0x87FC
            mov ecx, 16
            rep movsb
            push dword [0x8804]
            mov [0x8804], esp
            pop eax
            mov eax, 0x400
            mov dr7, eax
            mov eax, ebx
            PRINT 'B'
            jmp .done
        .db:
            push eax
            mov eax, [esp + 4]
            sub eax, .bp
            PRINT 'E'
            mov eax, dr6
            PRINT 'D'
            mov eax, ecx
            PRINT 'C'
            mov eax, dr6
            test al, 1
            jz .norf
            or dword [esp + 12], 0x10000
        .norf:
            xor eax, eax
            mov dr6, eax
            pop eax
            iretd
        .done:
        """, mode: .pm32, expectContains: ["D=FFFF0FF1", "D=FFFF0FF2", "B=00000003"])
    }


    // MARK: speed paths

    /// A loop over a page with a data breakpoint, then the same loop disarmed: the same results; and
    /// afterwards the page has its fast TLB tags again and no decoded block holds a breakpoint.
    func testDisarmingRestoresFastPath() throws {
        let loop = """
            mov rdi, 0x200000
            xor eax, eax
            mov ecx, 512
        .l%1:
            add rax, rcx
            add [rdi], rax
            add rax, [rdi]
            add rdi, 8
            dec ecx
            jnz .l%1
            SHOW 'R'
            NL
        """
        let test = """
            mov qword [DBX_LIMIT], 0x1000
            mov rax, 0x200800
            mov dr0, rax
            lea rax, [rel .l1]
            mov dr1, rax
            mov eax, 0x400 | 0x0A | (1 << 16) | (2 << 18)   ; DR0 write 8 bytes, DR1 execute
            mov dr7, rax
            mov r12d, 1

        """ + loop.replacingOccurrences(of: "%1", with: "1") + "\n" + """
            mov eax, 0x400
            mov dr7, rax
            mov r12d, 2
            mov rdi, 0x200000
            mov ecx, 512
            xor eax, eax
            rep stosq

        """ + loop.replacingOccurrences(of: "%1", with: "2") + "\n"
        try compare(Self.body(test), expectContains: ["N=0000000000000201"])
        let image = try GuestHarness.assemble(Self.body(test), mode: .lm64)
        let (out, cpu, _) = GuestHarness.runOurs(image)
        let results = out.split(separator: "\n").filter { $0.hasPrefix("R=") }
        XCTAssertEqual(results.count, 2)
        XCTAssertEqual(results.first, results.last, "the loop gives the same result armed and disarmed")
        let core = cpu.core
        let page: UInt64 = 0x200
        let e = core.pointee.tlbKernel[Int(page & tlbMask)]
        XCTAssertEqual(e.rtag, page, "read tag is back")
        XCTAssertEqual(e.wtag, page, "write tag is back")
        let b = core.pointee.blocks
        for k in 0..<b.used { XCTAssertNotEqual("\(b.insts[k].op)", "debugBreak", "a decoded block still holds a breakpoint") }
    }
}
