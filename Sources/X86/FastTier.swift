// The interpreter's fast tier: the common 64-bit-mode integer instructions (ALU, MOV, LEA,
// MOVZX/MOVSX, shifts and rotates, INC/DEC, NOT/NEG, two- and three-operand IMUL, TEST, Jcc and the
// fused compare-and-branch forms, CALL/RET, PUSH/POP, SETcc/CMOVcc, LOCKed read-modify-writes,
// CMPXCHG, XADD, BT/BTS/BTR/BTC: the kernel's atomics and bit operations; CBW/CWDE/CDQE, BSWAP,
// PUSH imm, LEAVE, CLI and PUSHF, which its block layer runs often) run in C
// (Sources/CX86Fast), whose labels-as-values give every handler its own indirect jump to the next
// one. A Swift switch compiles to one shared jump-table branch plus a range check and a common
// tail per instruction, which costs more than most of these instructions.
//
// The tier works on the very state the Swift executor uses (registers, lazy flags, the software
// TLB) and only ever takes an instruction's fast path: on anything else (another operation, a
// TLB miss, a page crossing, LOCK on an operand that is not naturally aligned, LOCK ADC/SBB, an
// operand size it does not handle) it returns before the
// instruction has done anything, and the Swift executor runs that instruction, so faults, MMIO,
// self-modifying code and breakpoints keep their one implementation. It runs in 64-bit mode only,
// where segment bases are zero (FS/GS aside) and blocks may chain.
//
// A block entered often enough (jitThreshold) is compiled to host code (Sources/CX86Fast/x86jit.c):
// the same operations with their operands built in, no dispatch, the host's own flags for a
// branch. The compiled code stops at the first instruction it does not compile (or whose TLB
// lookup misses) and the handlers go on from there, so it needs no fault or fallback path of its
// own. It is named by the block's index, and forgotten when the block cache is flushed.
//
// X86_NO_FAST_TIER=1 turns it off (to compare the two, or to rule it out); so does the
// X86_PROFILE build, whose per-operation counters live in the Swift executor. X86_NO_JIT=1 turns
// off the compiled blocks alone.
import CX86Fast
import Glibc

enum FastTier {
    /// Routes each operation the C tier handles to its handler, once per process; returns the
    /// table (operation number -> handler, 0 = not handled) the executor consults.
    nonisolated(unsafe) static let handlers: UnsafePointer<UInt8> = {
        precondition(MemoryLayout<DInst>.stride == MemoryLayout<X86FastInst>.stride
            && MemoryLayout<DInst>.offset(of: \.op) == MemoryLayout<X86FastInst>.offset(of: \.op)
            && MemoryLayout<DInst>.offset(of: \.aux) == MemoryLayout<X86FastInst>.offset(of: \.aux)
            && MemoryLayout<DInst>.offset(of: \.flags) == MemoryLayout<X86FastInst>.offset(of: \.flags)
            && MemoryLayout<DInst>.offset(of: \.fast) == MemoryLayout<X86FastInst>.offset(of: \.fast)
            && MemoryLayout<DInst>.offset(of: \.tail) == MemoryLayout<X86FastInst>.offset(of: \.tail)
            && MemoryLayout<Op>.size == 2
            && MemoryLayout<TLBEntry>.stride == MemoryLayout<X86FastTLB>.stride
            && MemoryLayout<TLBEntry>.offset(of: \.addend) == MemoryLayout<X86FastTLB>.offset(of: \.addend),
            "the fast tier's C structures no longer match DInst/TLBEntry")
        let map: [(Op, Int)] = [
            (.nop, X86F_NOP),
            (.addRmR4, X86F_ADD_RMR4), (.addRRm4, X86F_ADD_RRM4), (.addRmI4, X86F_ADD_RMI4),
            (.addRmR8, X86F_ADD_RMR8), (.addRRm8, X86F_ADD_RRM8), (.addRmI8, X86F_ADD_RMI8),
            (.orRmR4, X86F_OR_RMR4), (.orRRm4, X86F_OR_RRM4), (.orRmI4, X86F_OR_RMI4),
            (.orRmR8, X86F_OR_RMR8), (.orRRm8, X86F_OR_RRM8), (.orRmI8, X86F_OR_RMI8),
            (.adcRmR4, X86F_ADC_RMR4), (.adcRRm4, X86F_ADC_RRM4), (.adcRmI4, X86F_ADC_RMI4),
            (.adcRmR8, X86F_ADC_RMR8), (.adcRRm8, X86F_ADC_RRM8), (.adcRmI8, X86F_ADC_RMI8),
            (.sbbRmR4, X86F_SBB_RMR4), (.sbbRRm4, X86F_SBB_RRM4), (.sbbRmI4, X86F_SBB_RMI4),
            (.sbbRmR8, X86F_SBB_RMR8), (.sbbRRm8, X86F_SBB_RRM8), (.sbbRmI8, X86F_SBB_RMI8),
            (.andRmR4, X86F_AND_RMR4), (.andRRm4, X86F_AND_RRM4), (.andRmI4, X86F_AND_RMI4),
            (.andRmR8, X86F_AND_RMR8), (.andRRm8, X86F_AND_RRM8), (.andRmI8, X86F_AND_RMI8),
            (.subRmR4, X86F_SUB_RMR4), (.subRRm4, X86F_SUB_RRM4), (.subRmI4, X86F_SUB_RMI4),
            (.subRmR8, X86F_SUB_RMR8), (.subRRm8, X86F_SUB_RRM8), (.subRmI8, X86F_SUB_RMI8),
            (.xorRmR4, X86F_XOR_RMR4), (.xorRRm4, X86F_XOR_RRM4), (.xorRmI4, X86F_XOR_RMI4),
            (.xorRmR8, X86F_XOR_RMR8), (.xorRRm8, X86F_XOR_RRM8), (.xorRmI8, X86F_XOR_RMI8),
            (.cmpRmR4, X86F_CMP_RMR4), (.cmpRRm4, X86F_CMP_RRM4), (.cmpRmI4, X86F_CMP_RMI4),
            (.cmpRmR8, X86F_CMP_RMR8), (.cmpRRm8, X86F_CMP_RRM8), (.cmpRmI8, X86F_CMP_RMI8),
            (.movRmR4, X86F_MOV_RMR4), (.movRRm4, X86F_MOV_RRM4), (.movRmI4, X86F_MOV_RMI4), (.movRI4, X86F_MOV_RI4),
            (.movRmR8, X86F_MOV_RMR8), (.movRRm8, X86F_MOV_RRM8), (.movRmI8, X86F_MOV_RMI8), (.movRI8, X86F_MOV_RI8),
            (.movRmR, X86F_MOV_RMR), (.movRRm, X86F_MOV_RRM),
            (.testRmR4, X86F_TEST_RMR4), (.testRmI4, X86F_TEST_RMI4), (.testRmR8, X86F_TEST_RMR8), (.testRmI8, X86F_TEST_RMI8),
            (.lea4, X86F_LEA4), (.lea8, X86F_LEA8),
            (.movzx8_4, X86F_MOVZX8_4), (.movzx16_4, X86F_MOVZX16_4), (.movzx8_8, X86F_MOVZX8_8), (.movzx16_8, X86F_MOVZX16_8),
            (.movsxd, X86F_MOVSXD), (.movsx8, X86F_MOVSX8), (.movsx16, X86F_MOVSX16),
            (.shift4, X86F_SHIFT4), (.shift8, X86F_SHIFT8),
            (.incRm4, X86F_INC4), (.decRm4, X86F_DEC4), (.incRm8, X86F_INC8), (.decRm8, X86F_DEC8),
            (.imulRRm, X86F_IMUL_RRM), (.imulRRmI, X86F_IMUL_RRMI),
            (.cmpjRR4, X86F_CMPJ_RR4), (.cmpjRR8, X86F_CMPJ_RR8), (.cmpjRI4, X86F_CMPJ_RI4), (.cmpjRI8, X86F_CMPJ_RI8),
            (.testjRR4, X86F_TESTJ_RR4), (.testjRR8, X86F_TESTJ_RR8), (.testjRI, X86F_TESTJ_RI), (.testjRR, X86F_TESTJ_RR),
            (.cmpjMI, X86F_CMPJ_MI), (.testjMI, X86F_TESTJ_MI),
            (.jcc, X86F_JCC), (.jmp, X86F_JMP), (.call, X86F_CALL), (.ret, X86F_RET),
            (.pushR, X86F_PUSH), (.popR, X86F_POP), (.setcc, X86F_SETCC), (.cmovcc, X86F_CMOVCC),
            (.addRmR, X86F_ADD_RMR), (.addRRm, X86F_ADD_RRM), (.addRmI, X86F_ADD_RMI),
            (.orRmR, X86F_OR_RMR), (.orRRm, X86F_OR_RRM), (.orRmI, X86F_OR_RMI),
            (.adcRmR, X86F_ADC_RMR), (.adcRRm, X86F_ADC_RRM), (.adcRmI, X86F_ADC_RMI),
            (.sbbRmR, X86F_SBB_RMR), (.sbbRRm, X86F_SBB_RRM), (.sbbRmI, X86F_SBB_RMI),
            (.andRmR, X86F_AND_RMR), (.andRRm, X86F_AND_RRM), (.andRmI, X86F_AND_RMI),
            (.subRmR, X86F_SUB_RMR), (.subRRm, X86F_SUB_RRM), (.subRmI, X86F_SUB_RMI),
            (.xorRmR, X86F_XOR_RMR), (.xorRRm, X86F_XOR_RRM), (.xorRmI, X86F_XOR_RMI),
            (.cmpRmR, X86F_CMP_RMR), (.cmpRRm, X86F_CMP_RRM), (.cmpRmI, X86F_CMP_RMI),
            (.testRmR, X86F_TEST_RMR), (.testRmI, X86F_TEST_RMI), (.notRm, X86F_NOT), (.negRm, X86F_NEG),
            (.incRm, X86F_INC), (.decRm, X86F_DEC), (.movRmI, X86F_MOV_RMI), (.movRI, X86F_MOV_RI),
            (.shift, X86F_SHIFT),
            (.cmpxchg, X86F_CMPXCHG), (.xadd, X86F_XADD),
            (.btI, X86F_BT_I), (.btsI, X86F_BTS_I), (.btrI, X86F_BTR_I), (.btcI, X86F_BTC_I),
            (.btR, X86F_BT_R), (.btsR, X86F_BTS_R), (.btrR, X86F_BTR_R), (.btcR, X86F_BTC_R),
            (.cbw, X86F_CBW), (.bswap, X86F_BSWAP), (.pushI, X86F_PUSH_I), (.leave, X86F_LEAVE),
            (.cli, X86F_CLI), (.pushf, X86F_PUSHF),
        ]
        for (op, handler) in map {
            // The C side reads the stored enum tag: it must be the raw value.
            var o = op
            let tag = withUnsafeBytes(of: &o) { $0.load(as: UInt16.self) }
            precondition(tag == op.rawValue && op.rawValue < 1024, "Op \(op) is stored as \(tag), not \(op.rawValue)")
            x86fast_map(op.rawValue, UInt8(handler))
        }
        return x86fast_handlers()
    }()

    /// Block entries before the fast tier compiles a block to host code (x86jit.c): 0 = never.
    /// X86_NO_JIT=1 turns the code generator off; X86_JIT_THRESHOLD=n sets the count (tests use 1,
    /// so that code run once is compiled too).
    nonisolated(unsafe) static var jitThreshold: UInt32 = {
        if getenv("X86_NO_JIT") != nil { return 0 }
        if let s = getenv("X86_JIT_THRESHOLD"), let n = UInt32(String(cString: s)) { return n }
        return 64   // 16 and 256 run a Linux boot and its disk reads as fast; 64 compiles less code
    }()

    /// Bytes of host code per vCPU: pages are only touched as code is written (a Linux boot
    /// compiles about 1.5 MiB), and a full buffer starts over, the hot blocks compiled again as
    /// they are entered. Tests make it small to exercise that.
    nonisolated(unsafe) static var jitBuffer = 4 << 20

    static let enabled: Bool = {
        #if X86_PROFILE
        return false
        #else
        return getenv("X86_NO_FAST_TIER") == nil
        #endif
    }()

    /// The C view of the CPU state at `core` (allocated once, never moved), or nil when disabled.
    static func bind(_ core: UnsafeMutablePointer<CPUCore>) -> UnsafeMutablePointer<X86FastCore>? {
        guard enabled else { return nil }
        _ = handlers
        let base = UnsafeMutableRawPointer(core)
        func field<T>(_ path: PartialKeyPath<CPUCore>, _: T.Type) -> UnsafeMutablePointer<T> {
            (base + MemoryLayout<CPUCore>.offset(of: path)!).assumingMemoryBound(to: T.self)
        }
        // The lazy flag fields are consecutive in CPUCore, as X86FastLazy lays them out.
        let lop = MemoryLayout<CPUCore>.offset(of: \CPUCore.lop)!
        precondition(MemoryLayout<CPUCore>.offset(of: \CPUCore.lres)! == lop + MemoryLayout<X86FastLazy>.offset(of: \.res)!
            && MemoryLayout<CPUCore>.offset(of: \CPUCore.ldst)! == lop + MemoryLayout<X86FastLazy>.offset(of: \.dst)!
            && MemoryLayout<CPUCore>.offset(of: \CPUCore.lsrc)! == lop + MemoryLayout<X86FastLazy>.offset(of: \.src)!
            && MemoryLayout<CPUCore>.offset(of: \CPUCore.lcin)! == lop + MemoryLayout<X86FastLazy>.offset(of: \.cin)!,
            "CPUCore's lazy flag fields no longer match X86FastLazy")
        precondition(MemoryLayout<BlockInfo>.stride == MemoryLayout<X86FastBlock>.stride
            && MemoryLayout<BlockInfo>.offset(of: \.first) == MemoryLayout<X86FastBlock>.offset(of: \.first)
            && MemoryLayout<BlockInfo>.offset(of: \.count) == MemoryLayout<X86FastBlock>.offset(of: \.count)
            && MemoryLayout<BlockInfo>.offset(of: \.guestCount) == MemoryLayout<X86FastBlock>.offset(of: \.guestCount)
            && MemoryLayout<BlockInfo>.offset(of: \.linkRIP0) == MemoryLayout<X86FastBlock>.offset(of: \.linkRIP0)
            && MemoryLayout<BlockInfo>.offset(of: \.linkRIP1) == MemoryLayout<X86FastBlock>.offset(of: \.linkRIP1)
            && MemoryLayout<BlockInfo>.offset(of: \.linkIdx0) == MemoryLayout<X86FastBlock>.offset(of: \.linkIdx0)
            && MemoryLayout<BlockInfo>.offset(of: \.linkIdx1) == MemoryLayout<X86FastBlock>.offset(of: \.linkIdx1)
            && MemoryLayout<BlockInfo>.offset(of: \.exitRIP) == MemoryLayout<X86FastBlock>.offset(of: \.exitRIP)
            && MemoryLayout<BlockInfo>.offset(of: \.exitIdx) == MemoryLayout<X86FastBlock>.offset(of: \.exitIdx)
            && MemoryLayout<BlockInfo>.offset(of: \.vaddr) == MemoryLayout<X86FastBlock>.offset(of: \.vaddr)
            && MemoryLayout<BlockInfo>.offset(of: \.phys) == MemoryLayout<X86FastBlock>.offset(of: \.phys)
            && MemoryLayout<BlockInfo>.offset(of: \.phys2) == MemoryLayout<X86FastBlock>.offset(of: \.phys2)
            && MemoryLayout<BlockInfo>.offset(of: \.gen) == MemoryLayout<X86FastBlock>.offset(of: \.gen)
            && MemoryLayout<BlockInfo>.offset(of: \.gen2) == MemoryLayout<X86FastBlock>.offset(of: \.gen2)
            && MemoryLayout<BlockInfo>.offset(of: \.mode) == MemoryLayout<X86FastBlock>.offset(of: \.mode)
            && CodeMode.m64.rawValue == 2
            && BlockCache.slot(0x1234_5678_9ABC) == Int(truncatingIfNeeded: (UInt64(0x1234_5678_9ABC) &* 0x9E37_79B9_7F4A_7C15) >> UInt64(64 - BlockCache.tableSize.trailingZeroBitCount)) & ~1
            && MemoryLayout<Int>.size == 8 && MemoryLayout<Bool>.size == 1,
            "BlockInfo no longer matches X86FastBlock")
        let fast = UnsafeMutablePointer<X86FastCore>.allocate(capacity: 1)
        fast.initialize(to: X86FastCore(
            regs: core.pointee.r,
            rflags: field(\CPUCore.flags, UInt64.self),
            lazy: field(\CPUCore.lop, X86FastLazy.self),
            tlb: field(\CPUCore.tlb, UnsafeMutablePointer<X86FastTLB>?.self),
            segBase: UnsafePointer(core.pointee.segBase),
            segEnd: UnsafePointer(core.pointee.segEnd),
            infos: UnsafeMutableRawPointer(core.pointee.blocks.infos).assumingMemoryBound(to: X86FastBlock.self),
            insts: UnsafeRawPointer(core.pointee.blocks.insts).assumingMemoryBound(to: X86FastInst.self),
            pollCountdown: field(\CPUCore.pollCountdown, Int64.self),
            pollNow: UnsafePointer(field(\CPUCore.pollNow, UInt8.self)),
            instructions: field(\CPUCore.instructions, UInt64.self),
            table: UnsafePointer(core.pointee.blocks.table),
            tableBits: UInt32(BlockCache.tableSize.trailingZeroBitCount),
            infoCount: UnsafePointer((base + MemoryLayout<CPUCore>.offset(of: \CPUCore.blocks)! + MemoryLayout<BlockCache>.offset(of: \.infoCount)!)
                .assumingMemoryBound(to: Int64.self)),
            codeGen: UnsafePointer(core.pointee.code.gen),
            codePages: UInt64(core.pointee.code.pageCount),
            jit: x86jit_new(UInt32(BlockCache.infoSize), jitThreshold, jitBuffer, core.pointee.segBase, core.pointee.segEnd),
            flushes: UnsafePointer((base + MemoryLayout<CPUCore>.offset(of: \CPUCore.blocks)! + MemoryLayout<BlockCache>.offset(of: \.flushes)!)
                .assumingMemoryBound(to: UInt64.self)),
            cpl: UnsafePointer(field(\CPUCore.cpl, Int64.self))))
        return fast
    }
}

extension CPUCore {
    /// Runs the fast tier from `p` in `block` (chaining to linked blocks unless `chain` is false);
    /// returns where it stopped: the instruction, the end and info of its block, the RIP there.
    @inline(__always) func runFast(_ fast: UnsafeMutablePointer<X86FastCore>, _ p: UnsafePointer<DInst>,
                                   _ end: UnsafePointer<DInst>, _ block: UnsafeMutablePointer<BlockInfo>, chain: Bool,
                                   _ pc: UInt64)
        -> (UnsafePointer<DInst>, UnsafePointer<DInst>, UnsafeMutablePointer<BlockInfo>, UInt64) {
        let res = x86fast_run(fast, UnsafeRawPointer(p).assumingMemoryBound(to: X86FastInst.self),
                              UnsafeRawPointer(end).assumingMemoryBound(to: X86FastInst.self),
                              chain ? UnsafeRawPointer(block).assumingMemoryBound(to: X86FastBlock.self) : nil, pc)
        let b = res.block.map { UnsafeMutableRawPointer(mutating: $0).assumingMemoryBound(to: BlockInfo.self) } ?? block
        return (UnsafeRawPointer(res.next).assumingMemoryBound(to: DInst.self),
                UnsafeRawPointer(res.end).assumingMemoryBound(to: DInst.self), b, res.pc)
    }
}

extension X86VCPU {
    /// Blocks the fast tier has compiled to host code (x86jit.c) so far; 0 when it is off.
    public var compiledBlocks: UInt64 { x86jit_compiled(core.pointee.fast?.pointee.jit) }
}
