// TF single-step: while RFLAGS.TF is set the run loop executes one instruction at a time (decoded
// here, outside the block cache, so fused CMP+Jcc pairs and whole blocks never run as one step) and
// raises the single-step #DB trap after each instruction that began with TF set:
//  - DR6.BS is set and the pushed RIP is the next instruction; the data/I/O breakpoints the
//    instruction hit are reported in the same #DB (Breakpoints.swift);
//  - an instruction that faults gets its fault instead, and INT n / INT3 / INTO / INT1 enter their
//    handler with TF clear and no trap;
//  - MOV SS / POP SS hold the trap (and their data breakpoints) back until after the following
//    instruction;
//  - POPF/IRET that set TF take effect after the next instruction (TF is sampled at the start);
//  - a REP string instruction traps after each iteration (StringOps runs one per step).
// RF (pushed as 1 by fault-class exceptions, restored by IRET, set between the chunks of a REP
// string instruction) masks instruction breakpoints for one instruction: it is checked before the
// instruction and cleared as it starts (SDM 18.3.1.1); an instruction that loads RFLAGS (IRET, a
// task switch) or stops between REP iterations sets it again. The run loop's normal path tests one
// mask (TF | RF) per block for all this; instruction breakpoints without RF live in decoded blocks.

extension CPUCore {
    /// Runs one instruction after checking its instruction breakpoints (unless RF), then delivers
    /// the single-step trap. Called when TF or RF is set.
    @inline(never)
    mutating func singleStep() {
        let rf = flags & RFlag.rf != 0
        if bp.exec != 0 && !rf, let lin = linearRIP() {
            let m = instructionBreakpoints(at: lin)
            if m != 0 {
                raise(debugException(hits: m, status: 0))
                return
            }
        }
        var d: DInst
        do {
            d = try decodeOne()
        } catch {
            raise(error)
            return
        }
        let tf = flags & RFlag.tf != 0
        flags &= ~RFlag.rf
        let shadowed = interruptShadow
        interruptShadow = false
        pollNow = true
        var completed = true
        do throws(Fault) {
            // Outside the block cache: a throwaway block record (unchained runs never link it).
            var info = BlockInfo()
            try withUnsafePointer(to: &d) { (p: UnsafePointer<DInst>) throws(Fault) in
                try withUnsafeMutablePointer(to: &info) { (b: UnsafeMutablePointer<BlockInfo>) throws(Fault) in
                    try execBlock(p, p + 1, block: b, chain: false)
                }
            }
        } catch {
            stopBlock = false
            if error.vector != 0xFF {
                completed = false
                bp.hits = 0
                raise(error)
            }
        }
        instructions &+= 1
        guard completed else { return }
        // MOV SS / POP SS: the trap and any breakpoint matches wait for the next instruction (unless
        // this one already ran in a shadow).
        if (d.op == .movSegRm || d.op == .popSeg) && d.reg == 2 && !shadowed { return }
        // No trap out of HLT (as QEMU: the halt is not cut short by its own single-step trap).
        var trap = tf && activity == .running
        switch d.op {
        case .int, .int3, .into, .int1: trap = false
        default: break
        }
        guard trap || bp.hits != 0 else { return }
        raiseDebugTrap(status: trap ? DR6.bs : 0)
    }

    /// Decodes the instruction at CS:RIP (up to 15 bytes, from two pages when it crosses).
    mutating func decodeOne() throws(Fault) -> DInst {
        let lin = try codeLinear()
        let (_, host) = try fetchPage(lin)
        guard let host else { throw Fault.gp(0) }
        let room = Swift.min(Int(0x1000 - (lin & 0xFFF)), 15)
        var buf = (UInt64(0), UInt64(0))
        let m = mode, f = decoderFeatures, pc = rip
        var d = withUnsafeMutableBytes(of: &buf) { raw -> DInst in
            let b = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            for k in 0..<room { b[k] = host.load(fromByteOffset: k, as: UInt8.self) }
            var dec = Decoder(UnsafePointer(b), avail: room, mode: m, features: f)
            return dec.decode(rip: pc)
        }
        if d.len != 0 { return d }
        let nextLin = (lin | 0xFFF) &+ 1
        let (_, nextHost) = try fetchPage(mode == .m64 ? nextLin : nextLin & 0xFFFF_FFFF)
        guard let nextHost else { throw Fault.gp(0) }
        d = withUnsafeMutableBytes(of: &buf) { raw -> DInst in
            let b = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            for k in room..<15 { b[k] = nextHost.load(fromByteOffset: k - room, as: UInt8.self) }
            var dec = Decoder(UnsafePointer(b), avail: 15, mode: m, features: f)
            return dec.decode(rip: pc)
        }
        if d.len == 0 { d = DInst(op: .ud, len: 1) }
        return d
    }
}
