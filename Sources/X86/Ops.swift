// The decoded instruction: a fixed 32-byte value the decoder fills once per block, and the list of
// operations the executor's switch dispatches on.
//
// Operand conventions: `reg` and `rm` are register numbers, except for 8-bit operands where they are
// byte offsets into the register file (AL=0, CL=8, ..., AH=1, CH=9, DH=17, BH=25, SPL=32, R15B=120).
// Memory operands: ea = disp + r[base] + r[index] << scale, masked to the address size; absent base
// or index is register 16, which always holds zero; RIP-relative operands are resolved at decode
// time into `disp` (blocks are keyed by their virtual RIP). Branch targets are absolute in `imm`.

struct DInst {
    var disp: UInt64 = 0
    var imm: UInt64 = 0
    var op: Op = .ud
    var len: UInt8 = 0
    var osz: UInt8 = 4
    var asz: UInt8 = 4
    var reg: UInt8 = 0
    var rm: UInt8 = 0
    var base: UInt8 = 16
    var index: UInt8 = 16
    var scale: UInt8 = 0
    var seg: UInt8 = 3
    var flags: UInt8 = 0
    /// Secondary immediate or sub-operation (shift kind, condition code, SSE opcode, far selector).
    var aux: UInt16 = 0
    /// The fast tier's handler for this instruction, set when its block is built (FastTier.swift).
    var fast: UInt8 = 0
    /// Guest instructions after this one in its block, set when the block is built: what a taken
    /// conditional branch in the middle of a block takes back off the count added on entry.
    var tail: UInt8 = 0

    static let fMem: UInt8 = 1, fRep: UInt8 = 2, fRepne: UInt8 = 4, fLock: UInt8 = 8, fOpsize: UInt8 = 16
    static let fRexW: UInt8 = 32, fCountCL: UInt8 = 64, fRex: UInt8 = 128

    @inline(__always) var isMem: Bool { flags & DInst.fMem != 0 }
    @inline(__always) var size: Int { Int(osz) }
}

enum Op: UInt16 {
    case ud, unimpl, nop
    // ALU: rm op= reg, reg op= rm, rm op= imm (kinds in ALU order add, or, adc, sbb, and, sub, xor, cmp)
    case addRmR, orRmR, adcRmR, sbbRmR, andRmR, subRmR, xorRmR, cmpRmR
    case addRRm, orRRm, adcRRm, sbbRRm, andRRm, subRRm, xorRRm, cmpRRm
    case addRmI, orRmI, adcRmI, sbbRmI, andRmI, subRmI, xorRmI, cmpRmI
    case testRmR, testRmI, incRm, decRm, notRm, negRm
    case movRmR, movRRm, movRmI, movRI, movzx8, movzx16, movsx8, movsx16, movsxd, lea
    case xchgRmR, cmpxchg, cmpxchg8b, xadd, bswap, movbeLoad, movbeStore
    case pushR, pushI, pushRm, popR, popRm, pushSeg, popSeg, pusha, popa, pushf, popf, enter, leave
    case shift, shld, shrd, mulRm, imulRm, divRm, idivRm, imulRRm, imulRRmI
    case cbw, cwd
    case jcc, jmp, jmpRm, call, callRm, ret, jcxz, loop, loope, loopne
    case setcc, cmovcc
    case btR, btsR, btrR, btcR, btI, btsI, btrI, btcI, bsf, bsr, tzcnt, lzcnt, popcnt
    case movs, cmps, stos, lods, scas, ins, outs
    case clc, stc, cmc, cld, std, cli, sti, sahf, lahf, salc, xlat
    case inI, inDX, outI, outDX
    case int, int3, into, int1, iret, hlt
    case callFarI, jmpFarI, callFarM, jmpFarM, retf
    case movRmSeg, movSegRm, loadFarPtr
    case daa, das, aaa, aas, aam, aad, arpl, bound
    // System.
    case sgdt, sidt, lgdt, lidt, smsw, lmsw, invlpg, sldt, str, lldt, ltr, verr, verw, lar, lsl
    case movFromCR, movToCR, movFromDR, movToDR, clts, rdmsr, wrmsr, rdtsc, rdtscp, rdpmc, cpuid
    case syscall, sysret, sysenter, sysexit, swapgs, wbinvd, xgetbv, xsetbv, rdpid
    case rdfsbase, rdgsbase, wrfsbase, wrgsbase, clflush, fence, pause
    case fxsave, fxrstor, xsave, xrstor, ldmxcsr, stmxcsr
    // FPU and SIMD: the executor switches again on `aux`.
    case x87, sse, fwait, emms
    // Fused compare-and-branch (CMP/TEST on registers followed by Jcc): one dispatch for two.
    case cmpjRR4, cmpjRR8, cmpjRI4, cmpjRI8, testjRR4, testjRR8
    // TEST of a register at any size (8/16-bit: byte-offset registers) with an immediate (in disp)
    // or a register, fused with the Jcc after it.
    case testjRI, testjRR
    // CMP and TEST of a memory operand (any size) with an immediate that fits a signed byte (kept,
    // sign-extended on use, in `reg`: disp addresses the operand, imm is the branch target),
    // fused with the Jcc after it.
    case cmpjMI, testjMI
    // Size-specialized forms of the hottest operations (32 and 64 bits), chosen by Decoder.specialize.
    case addRmR4, addRRm4, addRmI4, orRmR4, orRRm4, orRmI4, adcRmR4, adcRRm4, adcRmI4, sbbRmR4, sbbRRm4, sbbRmI4, andRmR4, andRRm4, andRmI4, subRmR4, subRRm4, subRmI4, xorRmR4, xorRRm4, xorRmI4, cmpRmR4, cmpRRm4, cmpRmI4, movRmR4, movRRm4, movRmI4, movRI4, testRmR4, testRmI4, lea4, movzx8_4, movzx16_4, shift4, incRm4, decRm4, addRmR8, addRRm8, addRmI8, orRmR8, orRRm8, orRmI8, adcRmR8, adcRRm8, adcRmI8, sbbRmR8, sbbRRm8, sbbRmI8, andRmR8, andRRm8, andRmI8, subRmR8, subRRm8, subRmI8, xorRmR8, xorRRm8, xorRmI8, cmpRmR8, cmpRRm8, cmpRmI8, movRmR8, movRRm8, movRmI8, movRI8, testRmR8, testRmI8, lea8, movzx8_8, movzx16_8, shift8, incRm8, decRm8
    /// Not an instruction: raises the #DB fault of an instruction breakpoint (Breakpoints.swift).
    case debugBreak
}

/// The executor passes decoded instructions by pointer: fields are loaded where a case needs them
/// instead of all at once (a 32-byte value spills registers in the big switch).
typealias IP = UnsafePointer<DInst>

extension UnsafePointer where Pointee == DInst {
    @inline(__always) var disp: UInt64 { pointee.disp }
    @inline(__always) var imm: UInt64 { pointee.imm }
    @inline(__always) var op: Op { pointee.op }
    @inline(__always) var len: UInt8 { pointee.len }
    @inline(__always) var osz: UInt8 { pointee.osz }
    @inline(__always) var asz: UInt8 { pointee.asz }
    @inline(__always) var reg: UInt8 { pointee.reg }
    @inline(__always) var rm: UInt8 { pointee.rm }
    @inline(__always) var base: UInt8 { pointee.base }
    @inline(__always) var index: UInt8 { pointee.index }
    @inline(__always) var scale: UInt8 { pointee.scale }
    @inline(__always) var seg: UInt8 { pointee.seg }
    @inline(__always) var flags: UInt8 { pointee.flags }
    @inline(__always) var aux: UInt16 { pointee.aux }
    @inline(__always) var isMem: Bool { pointee.flags & DInst.fMem != 0 }
    @inline(__always) var size: Int { Int(pointee.osz) }
}
