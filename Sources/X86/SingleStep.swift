// TF single-step: while RFLAGS.TF is set the run loop executes one instruction at a time (decoded
// here, outside the block cache, so fused CMP+Jcc pairs and whole blocks never run as one step) and
// raises the single-step #DB trap after each instruction that began with TF set:
//  - DR6.BS is set and the pushed RIP is the next instruction;
//  - an instruction that faults gets its fault instead, and INT n / INT3 / INTO / INT1 enter their
//    handler with TF clear and no trap;
//  - MOV SS / POP SS hold the trap back until after the following instruction;
//  - POPF/IRET that set TF take effect after the next instruction (TF is sampled at the start);
//  - a REP string instruction traps after each iteration (StringOps runs one per step).
// RF (pushed as 1 by fault-class exceptions and restored by IRET) lasts for one instruction: it is
// cleared when the next instruction completes (unless that instruction loaded RFLAGS itself: IRET,
// or a far transfer that may switch tasks). There are no instruction breakpoints for it to mask.
// The run loop's normal path tests one mask (TF | RF) per block for all this.

extension CPUCore {
    /// Runs one instruction, then clears RF and delivers the single-step trap. Called when TF or RF
    /// is set.
    @inline(never)
    mutating func singleStep() {
        var d: DInst
        do {
            d = try decodeOne()
        } catch {
            raise(error)
            return
        }
        let tf = flags & RFlag.tf != 0
        let rf = flags & RFlag.rf != 0
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
            if error.vector != 0xFF { completed = false; raise(error) }
        }
        instructions &+= 1
        guard completed else { return }
        if rf {
            switch d.op {
            case .iret, .jmpFarI, .jmpFarM, .callFarI, .callFarM: break
            default: flags &= ~RFlag.rf
            }
        }
        // No trap out of HLT (as QEMU: the halt is not cut short by its own single-step trap).
        guard tf && activity == .running else { return }
        switch d.op {
        case .int, .int3, .into, .int1:
            return
        case .movSegRm, .popSeg:
            // MOV SS / POP SS: the trap comes after the next instruction (unless this one already
            // ran in a shadow).
            if d.reg == 2 && !shadowed { return }
        default:
            break
        }
        if shadowed { interruptShadow = false }
        dr.4 |= 0x4000
        raise(Fault(vector: 1, code: 0, hasCode: false))
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
