// The executor: one switch over the decoded operation. Simple operations are written inline;
// families live in their own files (Integer, ControlFlow, StringOps, System, Segmentation, FPU, SSE).
// Every case either falls through to `rip = next` or sets RIP itself and continues (control flow
// only ends blocks, so the loop then ends). The loop and the switch share one function: a call per
// guest instruction costs more than most instructions.

extension CPUCore {
    /// With `chain`, a block that runs to its end continues straight into the next block when that
    /// one is already decoded and valid (see `peekBlock`), until a poll is due: the lookup and this
    /// function's entry are paid once per chain instead of once per block.
    /// A taken conditional branch before the end of its block (64-bit blocks run on past them):
    /// the block is left here, and the instructions after the branch, counted when the block was
    /// entered, are taken off the count.
    @inline(__always) mutating func leaveBlock(_ i: UnsafePointer<DInst>, _ p: inout UnsafePointer<DInst>, _ blockEnd: UnsafePointer<DInst>) {
        instructions &-= UInt64(i.pointee.tail)
        p = blockEnd
    }

    mutating func execBlock(_ start: UnsafePointer<DInst>, _ end: UnsafePointer<DInst>, block: UnsafeMutablePointer<BlockInfo>, chain: Bool) throws(Fault) {
        // RIP lives in a local while the block runs (a store and reload per instruction otherwise
        // chains every instruction through memory); it is written back before anything that reads
        // it (slow paths), at the block's end, and by the catch below when an instruction faults.
        var p = start
        var blockEnd = end
        var cur = block
        var pc = rip
        #if X86_PROFILE
        var blockStart = start
        #endif
        // The fast tier (FastTier.swift) takes the instructions it handles; this loop the rest. It
        // runs whole blocks only: it finds a block's end by the marker there (single steps and
        // interrupt shadows run one instruction here).
        let fast = mode == .m64 && end == UnsafePointer(blocks.insts + Int(block.pointee.first + block.pointee.count)) ? self.fast : nil
        do throws(Fault) {
        while true {
        while p < blockEnd {
        if let fast, p.pointee.fast != 0 {
            (p, blockEnd, cur, pc) = runFast(fast, p, blockEnd, cur, chain: chain, pc)
            if p >= blockEnd { break }
        }
        let i = p
        p += 1
        #if X86_PROFILE
        profOp(i.op, first: i == blockStart)
        #endif
        let size = i.size
        let next = pc &+ UInt64(i.len)
        switch i.op {
        // MARK: fused compare-and-branch
        case .cmpjRR4, .cmpjRR8, .cmpjRI4, .cmpjRI8:
            let sz = i.op == .cmpjRR4 || i.op == .cmpjRI4 ? 4 : 8
            let m: UInt64 = sz == 4 ? 0xFFFF_FFFF : .max
            let d = r[Int(i.rm)] & m
            let s = (i.op == .cmpjRR4 || i.op == .cmpjRR8 ? r[Int(i.reg)] : i.disp) & m
            setLazy(LazyKind.sub, sz, res: (d &- s) & m, dst: d, src: s)
            let taken: Bool
            switch i.aux {
            case 2: taken = d < s
            case 3: taken = d >= s
            case 4: taken = d == s
            case 5: taken = d != s
            case 6: taken = d <= s
            case 7: taken = d > s
            case 12, 13, 14, 15:
                let sh = UInt64(64 - 8 * sz)
                let a = Int64(bitPattern: d << sh), b = Int64(bitPattern: s << sh)
                taken = i.aux == 12 ? a < b : (i.aux == 13 ? a >= b : (i.aux == 14 ? a <= b : a > b))
            default: taken = cond(UInt8(i.aux))
            }
            pc = taken ? i.imm : next
            if taken && p < blockEnd { leaveBlock(i, &p, blockEnd) }
            continue
        case .cmpjMI, .testjMI:
            let m = sizeMask(size)
            let d = try readRm(i, size)
            let s = UInt64(bitPattern: Int64(Int8(bitPattern: i.reg))) & m
            if i.op == .cmpjMI { setLazy(LazyKind.sub, size, res: (d &- s) & m, dst: d, src: s) } else { setLogicFlags(size, d & s) }
            let taken = cond(UInt8(i.aux))
            pc = taken ? i.imm : next
            if taken && p < blockEnd { leaveBlock(i, &p, blockEnd) }
            continue
        case .testjRR4, .testjRR8, .testjRI, .testjRR:
            // (The sized forms keep the operand size of the TEST they came from.)
            let v = getReg(i.rm, size) & (i.op == .testjRI ? i.disp : getReg(i.reg, size)) & sizeMask(size)
            setLogicFlags(size, v)
            let sign: UInt64 = 1 << UInt64(size * 8 - 1)
            let taken: Bool
            switch i.aux {
            case 4: taken = v == 0
            case 5: taken = v != 0
            case 8: taken = v & sign != 0
            case 9: taken = v & sign == 0
            default: taken = cond(UInt8(i.aux))
            }
            pc = taken ? i.imm : next
            if taken && p < blockEnd { leaveBlock(i, &p, blockEnd) }
            continue

        // MARK: size-specialized hot forms
        case .addRmR4:
            if !i.isMem { let dv = getReg(i.rm, 4); let sv = getReg(i.reg, 4) & 0xFFFF_FFFF; let r = (dv &+ sv) & 0xFFFF_FFFF; setLazy(LazyKind.add, 4, res: r, dst: dv, src: sv); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 0, getReg(i.reg, 4), size: 4) }
        case .addRRm4:
            let src = try readRm(i, 4); let dv = getReg(i.reg, 4); let sv = src & 0xFFFF_FFFF; let r = (dv &+ sv) & 0xFFFF_FFFF; setLazy(LazyKind.add, 4, res: r, dst: dv, src: sv); setReg(i.reg, 4, r); _ = r
        case .addRmI4:
            if !i.isMem { let dv = getReg(i.rm, 4); let sv = i.imm & 0xFFFF_FFFF; let r = (dv &+ sv) & 0xFFFF_FFFF; setLazy(LazyKind.add, 4, res: r, dst: dv, src: sv); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 0, i.imm, size: 4) }
        case .orRmR4:
            if !i.isMem { let r = (getReg(i.rm, 4) | getReg(i.reg, 4)) & 0xFFFF_FFFF; setLogicFlags(4, r); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 1, getReg(i.reg, 4), size: 4) }
        case .orRRm4:
            let src = try readRm(i, 4); let r = (getReg(i.reg, 4) | src) & 0xFFFF_FFFF; setLogicFlags(4, r); setReg(i.reg, 4, r); _ = r
        case .orRmI4:
            if !i.isMem { let r = (getReg(i.rm, 4) | i.imm) & 0xFFFF_FFFF; setLogicFlags(4, r); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 1, i.imm, size: 4) }
        case .adcRmR4:
            if !i.isMem { let r = alu(2, getReg(i.rm, 4), getReg(i.reg, 4), 4); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 2, getReg(i.reg, 4), size: 4) }
        case .adcRRm4:
            let src = try readRm(i, 4); let r = alu(2, getReg(i.reg, 4), src, 4); setReg(i.reg, 4, r); _ = r
        case .adcRmI4:
            if !i.isMem { let r = alu(2, getReg(i.rm, 4), i.imm, 4); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 2, i.imm, size: 4) }
        case .sbbRmR4:
            if !i.isMem { let r = alu(3, getReg(i.rm, 4), getReg(i.reg, 4), 4); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 3, getReg(i.reg, 4), size: 4) }
        case .sbbRRm4:
            let src = try readRm(i, 4); let r = alu(3, getReg(i.reg, 4), src, 4); setReg(i.reg, 4, r); _ = r
        case .sbbRmI4:
            if !i.isMem { let r = alu(3, getReg(i.rm, 4), i.imm, 4); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 3, i.imm, size: 4) }
        case .andRmR4:
            if !i.isMem { let r = (getReg(i.rm, 4) & getReg(i.reg, 4)) & 0xFFFF_FFFF; setLogicFlags(4, r); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 4, getReg(i.reg, 4), size: 4) }
        case .andRRm4:
            let src = try readRm(i, 4); let r = (getReg(i.reg, 4) & src) & 0xFFFF_FFFF; setLogicFlags(4, r); setReg(i.reg, 4, r); _ = r
        case .andRmI4:
            if !i.isMem { let r = (getReg(i.rm, 4) & i.imm) & 0xFFFF_FFFF; setLogicFlags(4, r); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 4, i.imm, size: 4) }
        case .subRmR4:
            if !i.isMem { let dv = getReg(i.rm, 4); let sv = getReg(i.reg, 4) & 0xFFFF_FFFF; let r = (dv &- sv) & 0xFFFF_FFFF; setLazy(LazyKind.sub, 4, res: r, dst: dv, src: sv); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 5, getReg(i.reg, 4), size: 4) }
        case .subRRm4:
            let src = try readRm(i, 4); let dv = getReg(i.reg, 4); let sv = src & 0xFFFF_FFFF; let r = (dv &- sv) & 0xFFFF_FFFF; setLazy(LazyKind.sub, 4, res: r, dst: dv, src: sv); setReg(i.reg, 4, r); _ = r
        case .subRmI4:
            if !i.isMem { let dv = getReg(i.rm, 4); let sv = i.imm & 0xFFFF_FFFF; let r = (dv &- sv) & 0xFFFF_FFFF; setLazy(LazyKind.sub, 4, res: r, dst: dv, src: sv); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 5, i.imm, size: 4) }
        case .xorRmR4:
            if !i.isMem { let r = (getReg(i.rm, 4) ^ getReg(i.reg, 4)) & 0xFFFF_FFFF; setLogicFlags(4, r); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 6, getReg(i.reg, 4), size: 4) }
        case .xorRRm4:
            let src = try readRm(i, 4); let r = (getReg(i.reg, 4) ^ src) & 0xFFFF_FFFF; setLogicFlags(4, r); setReg(i.reg, 4, r); _ = r
        case .xorRmI4:
            if !i.isMem { let r = (getReg(i.rm, 4) ^ i.imm) & 0xFFFF_FFFF; setLogicFlags(4, r); setReg(i.rm, 4, r); _ = r } else { try aluRm(i, 6, i.imm, size: 4) }
        case .cmpRmR4:
            if !i.isMem { let dv = getReg(i.rm, 4); let sv = getReg(i.reg, 4) & 0xFFFF_FFFF; let r = (dv &- sv) & 0xFFFF_FFFF; setLazy(LazyKind.sub, 4, res: r, dst: dv, src: sv); _ = r } else { try aluRm(i, 7, getReg(i.reg, 4), size: 4) }
        case .cmpRRm4:
            let src = try readRm(i, 4); let dv = getReg(i.reg, 4); let sv = src & 0xFFFF_FFFF; let r = (dv &- sv) & 0xFFFF_FFFF; setLazy(LazyKind.sub, 4, res: r, dst: dv, src: sv); _ = r
        case .cmpRmI4:
            if !i.isMem { let dv = getReg(i.rm, 4); let sv = i.imm & 0xFFFF_FFFF; let r = (dv &- sv) & 0xFFFF_FFFF; setLazy(LazyKind.sub, 4, res: r, dst: dv, src: sv); _ = r } else { try aluRm(i, 7, i.imm, size: 4) }
        case .movRmR4: try writeRm(i, 4, getReg(i.reg, 4))
        case .movRRm4: setReg(i.reg, 4, try readRm(i, 4))
        case .movRmI4: try writeRm(i, 4, i.imm)
        case .movRI4: setReg(i.reg, 4, i.imm)
        case .testRmR4: setLogicFlags(4, try readRm(i, 4) & getReg(i.reg, 4))
        case .testRmI4: setLogicFlags(4, try readRm(i, 4) & i.imm & sizeMask(4))
        case .lea4: setReg(i.reg, 4, ea(i))
        case .movzx8_4: setReg(i.reg, 4, try readRm(i, 1))
        case .movzx16_4: setReg(i.reg, 4, try readRm(i, 2))
        case .shift4:
            if !i.isMem && i.aux >= 4 && i.aux != 6 {
                let c = (i.flags & DInst.fCountCL == 0 ? i.imm : r[1]) & 0x1F
                if c != 0 { setReg(i.rm, 4, shiftFast(Int(i.aux), getReg(i.rm, 4), c, 4)) } else { setReg(i.rm, 4, getReg(i.rm, 4)) }
            } else { try shiftGroup(i, size: 4) }
        case .incRm4: try incDec(i, inc: true, size: 4)
        case .decRm4: try incDec(i, inc: false, size: 4)
        case .addRmR8:
            if !i.isMem { let dv = getReg(i.rm, 8); let sv = getReg(i.reg, 8) & UInt64.max; let r = (dv &+ sv) & UInt64.max; setLazy(LazyKind.add, 8, res: r, dst: dv, src: sv); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 0, getReg(i.reg, 8), size: 8) }
        case .addRRm8:
            let src = try readRm(i, 8); let dv = getReg(i.reg, 8); let sv = src & UInt64.max; let r = (dv &+ sv) & UInt64.max; setLazy(LazyKind.add, 8, res: r, dst: dv, src: sv); setReg(i.reg, 8, r); _ = r
        case .addRmI8:
            if !i.isMem { let dv = getReg(i.rm, 8); let sv = i.imm & UInt64.max; let r = (dv &+ sv) & UInt64.max; setLazy(LazyKind.add, 8, res: r, dst: dv, src: sv); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 0, i.imm, size: 8) }
        case .orRmR8:
            if !i.isMem { let r = (getReg(i.rm, 8) | getReg(i.reg, 8)) & UInt64.max; setLogicFlags(8, r); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 1, getReg(i.reg, 8), size: 8) }
        case .orRRm8:
            let src = try readRm(i, 8); let r = (getReg(i.reg, 8) | src) & UInt64.max; setLogicFlags(8, r); setReg(i.reg, 8, r); _ = r
        case .orRmI8:
            if !i.isMem { let r = (getReg(i.rm, 8) | i.imm) & UInt64.max; setLogicFlags(8, r); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 1, i.imm, size: 8) }
        case .adcRmR8:
            if !i.isMem { let r = alu(2, getReg(i.rm, 8), getReg(i.reg, 8), 8); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 2, getReg(i.reg, 8), size: 8) }
        case .adcRRm8:
            let src = try readRm(i, 8); let r = alu(2, getReg(i.reg, 8), src, 8); setReg(i.reg, 8, r); _ = r
        case .adcRmI8:
            if !i.isMem { let r = alu(2, getReg(i.rm, 8), i.imm, 8); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 2, i.imm, size: 8) }
        case .sbbRmR8:
            if !i.isMem { let r = alu(3, getReg(i.rm, 8), getReg(i.reg, 8), 8); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 3, getReg(i.reg, 8), size: 8) }
        case .sbbRRm8:
            let src = try readRm(i, 8); let r = alu(3, getReg(i.reg, 8), src, 8); setReg(i.reg, 8, r); _ = r
        case .sbbRmI8:
            if !i.isMem { let r = alu(3, getReg(i.rm, 8), i.imm, 8); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 3, i.imm, size: 8) }
        case .andRmR8:
            if !i.isMem { let r = (getReg(i.rm, 8) & getReg(i.reg, 8)) & UInt64.max; setLogicFlags(8, r); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 4, getReg(i.reg, 8), size: 8) }
        case .andRRm8:
            let src = try readRm(i, 8); let r = (getReg(i.reg, 8) & src) & UInt64.max; setLogicFlags(8, r); setReg(i.reg, 8, r); _ = r
        case .andRmI8:
            if !i.isMem { let r = (getReg(i.rm, 8) & i.imm) & UInt64.max; setLogicFlags(8, r); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 4, i.imm, size: 8) }
        case .subRmR8:
            if !i.isMem { let dv = getReg(i.rm, 8); let sv = getReg(i.reg, 8) & UInt64.max; let r = (dv &- sv) & UInt64.max; setLazy(LazyKind.sub, 8, res: r, dst: dv, src: sv); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 5, getReg(i.reg, 8), size: 8) }
        case .subRRm8:
            let src = try readRm(i, 8); let dv = getReg(i.reg, 8); let sv = src & UInt64.max; let r = (dv &- sv) & UInt64.max; setLazy(LazyKind.sub, 8, res: r, dst: dv, src: sv); setReg(i.reg, 8, r); _ = r
        case .subRmI8:
            if !i.isMem { let dv = getReg(i.rm, 8); let sv = i.imm & UInt64.max; let r = (dv &- sv) & UInt64.max; setLazy(LazyKind.sub, 8, res: r, dst: dv, src: sv); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 5, i.imm, size: 8) }
        case .xorRmR8:
            if !i.isMem { let r = (getReg(i.rm, 8) ^ getReg(i.reg, 8)) & UInt64.max; setLogicFlags(8, r); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 6, getReg(i.reg, 8), size: 8) }
        case .xorRRm8:
            let src = try readRm(i, 8); let r = (getReg(i.reg, 8) ^ src) & UInt64.max; setLogicFlags(8, r); setReg(i.reg, 8, r); _ = r
        case .xorRmI8:
            if !i.isMem { let r = (getReg(i.rm, 8) ^ i.imm) & UInt64.max; setLogicFlags(8, r); setReg(i.rm, 8, r); _ = r } else { try aluRm(i, 6, i.imm, size: 8) }
        case .cmpRmR8:
            if !i.isMem { let dv = getReg(i.rm, 8); let sv = getReg(i.reg, 8) & UInt64.max; let r = (dv &- sv) & UInt64.max; setLazy(LazyKind.sub, 8, res: r, dst: dv, src: sv); _ = r } else { try aluRm(i, 7, getReg(i.reg, 8), size: 8) }
        case .cmpRRm8:
            let src = try readRm(i, 8); let dv = getReg(i.reg, 8); let sv = src & UInt64.max; let r = (dv &- sv) & UInt64.max; setLazy(LazyKind.sub, 8, res: r, dst: dv, src: sv); _ = r
        case .cmpRmI8:
            if !i.isMem { let dv = getReg(i.rm, 8); let sv = i.imm & UInt64.max; let r = (dv &- sv) & UInt64.max; setLazy(LazyKind.sub, 8, res: r, dst: dv, src: sv); _ = r } else { try aluRm(i, 7, i.imm, size: 8) }
        case .movRmR8: try writeRm(i, 8, getReg(i.reg, 8))
        case .movRRm8: setReg(i.reg, 8, try readRm(i, 8))
        case .movRmI8: try writeRm(i, 8, i.imm)
        case .movRI8: setReg(i.reg, 8, i.imm)
        case .testRmR8: setLogicFlags(8, try readRm(i, 8) & getReg(i.reg, 8))
        case .testRmI8: setLogicFlags(8, try readRm(i, 8) & i.imm & sizeMask(8))
        case .lea8: setReg(i.reg, 8, ea(i))
        case .movzx8_8: setReg(i.reg, 8, try readRm(i, 1))
        case .movzx16_8: setReg(i.reg, 8, try readRm(i, 2))
        case .shift8:
            if !i.isMem && i.aux >= 4 && i.aux != 6 {
                let c = (i.flags & DInst.fCountCL == 0 ? i.imm : r[1]) & 0x3F
                if c != 0 { setReg(i.rm, 8, shiftFast(Int(i.aux), getReg(i.rm, 8), c, 8)) } else { setReg(i.rm, 8, getReg(i.rm, 8)) }
            } else { try shiftGroup(i, size: 8) }
        case .incRm8: try incDec(i, inc: true, size: 8)
        case .decRm8: try incDec(i, inc: false, size: 8)

        // MARK: data movement
        case .movRmR:
            try writeRm(i, size, getReg(i.reg, size))
        case .movRRm:
            setReg(i.reg, size, try readRm(i, size))
        case .movRmI, .movRI:
            if i.op == .movRI { setReg(i.reg, size, i.imm) } else { try writeRm(i, size, i.imm) }
        case .movzx8:
            setReg(i.reg, Int(i.imm), try readRm(i, 1))
        case .movsx8:
            setReg(i.reg, Int(i.imm), UInt64(bitPattern: Int64(Int8(truncatingIfNeeded: try readRm(i, 1)))))
        case .movzx16:
            setReg(i.reg, size, try readRm(i, 2))
        case .movsx16:
            setReg(i.reg, size, UInt64(bitPattern: Int64(Int16(truncatingIfNeeded: try readRm(i, 2)))))
        case .movsxd:
            let v = try readRm(i, 4)
            setReg(i.reg, size, size == 8 ? UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: v))) : v)
        case .lea:
            setReg(i.reg, size, ea(i))
        case .xchgRmR:
            if i.isMem {
                let lin = try opLinear(i, size, write: true)
                let old = try loadRMW(lin, size)
                let v = getReg(i.reg, size)
                if let p = atomicPointer(lin, size) {
                    var cur = old
                    while true { let (ok, c) = atomicCAS(p, size, expected: cur, desired: v); if ok { break }; cur = c }
                    setReg(i.reg, size, cur)
                } else {
                    try storeN(lin, v, size)
                    setReg(i.reg, size, old)
                }
            } else {
                let a = getReg(i.rm, size), b = getReg(i.reg, size)
                setReg(i.rm, size, b); setReg(i.reg, size, a)
            }
        case .cbw:
            switch size {
            case 2: setReg(0, 2, UInt64(bitPattern: Int64(Int8(truncatingIfNeeded: r[0]))))
            case 4: setReg(0, 4, UInt64(bitPattern: Int64(Int16(truncatingIfNeeded: r[0]))))
            default: r[0] = UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: r[0])))
            }
        case .cwd:
            let neg = getReg(0, size) & signBit(size) != 0
            setReg(2, size, neg ? UInt64.max : 0)
        case .bswap:
            if size == 8 { r[Int(i.reg)] = r[Int(i.reg)].byteSwapped }
            else if size == 4 { setReg(i.reg, 4, UInt64(UInt32(truncatingIfNeeded: r[Int(i.reg)]).byteSwapped)) }
            else { setReg(i.reg, 2, 0) }
        case .movbeLoad:
            let v = try readRm(i, size)
            switch size {
            case 2: setReg(i.reg, 2, UInt64(UInt16(truncatingIfNeeded: v).byteSwapped))
            case 4: setReg(i.reg, 4, UInt64(UInt32(truncatingIfNeeded: v).byteSwapped))
            default: setReg(i.reg, 8, v.byteSwapped)
            }
        case .movbeStore:
            let v = getReg(i.reg, size)
            switch size {
            case 2: try writeRm(i, 2, UInt64(UInt16(truncatingIfNeeded: v).byteSwapped))
            case 4: try writeRm(i, 4, UInt64(UInt32(truncatingIfNeeded: v).byteSwapped))
            default: try writeRm(i, 8, v.byteSwapped)
            }
        case .xlat:
            let base = i.asz == 8 ? r[3] : (i.asz == 4 ? r[3] & 0xFFFF_FFFF : r[3] & 0xFFFF)
            let a = (base &+ (r[0] & 0xFF)) & (i.asz == 8 ? UInt64.max : (i.asz == 4 ? 0xFFFF_FFFF : 0xFFFF))
            setReg(0, 1, try loadN(try linear(Int(i.seg), a, 1), 1))

        // MARK: ALU
        case .addRmR: try aluRm(i, 0, getReg(i.reg, size))
        case .orRmR: try aluRm(i, 1, getReg(i.reg, size))
        case .adcRmR: try aluRm(i, 2, getReg(i.reg, size))
        case .sbbRmR: try aluRm(i, 3, getReg(i.reg, size))
        case .andRmR: try aluRm(i, 4, getReg(i.reg, size))
        case .subRmR: try aluRm(i, 5, getReg(i.reg, size))
        case .xorRmR: try aluRm(i, 6, getReg(i.reg, size))
        case .cmpRmR: try aluRm(i, 7, getReg(i.reg, size))
        case .addRRm: setReg(i.reg, size, alu(0, getReg(i.reg, size), try readRm(i, size), size))
        case .orRRm: setReg(i.reg, size, alu(1, getReg(i.reg, size), try readRm(i, size), size))
        case .adcRRm: setReg(i.reg, size, alu(2, getReg(i.reg, size), try readRm(i, size), size))
        case .sbbRRm: setReg(i.reg, size, alu(3, getReg(i.reg, size), try readRm(i, size), size))
        case .andRRm: setReg(i.reg, size, alu(4, getReg(i.reg, size), try readRm(i, size), size))
        case .subRRm: setReg(i.reg, size, alu(5, getReg(i.reg, size), try readRm(i, size), size))
        case .xorRRm: setReg(i.reg, size, alu(6, getReg(i.reg, size), try readRm(i, size), size))
        case .cmpRRm: _ = alu(7, getReg(i.reg, size), try readRm(i, size), size)
        case .addRmI: try aluRm(i, 0, i.imm)
        case .orRmI: try aluRm(i, 1, i.imm)
        case .adcRmI: try aluRm(i, 2, i.imm)
        case .sbbRmI: try aluRm(i, 3, i.imm)
        case .andRmI: try aluRm(i, 4, i.imm)
        case .subRmI: try aluRm(i, 5, i.imm)
        case .xorRmI: try aluRm(i, 6, i.imm)
        case .cmpRmI: try aluRm(i, 7, i.imm)
        case .testRmR: setLogicFlags(size, try readRm(i, size) & getReg(i.reg, size))
        case .testRmI: setLogicFlags(size, try readRm(i, size) & i.imm & sizeMask(size))
        case .incRm: try incDec(i, inc: true)
        case .decRm: try incDec(i, inc: false)
        case .notRm: try notNeg(i, neg: false)
        case .negRm: try notNeg(i, neg: true)
        case .shift: try shiftGroup(i)
        case .shld: try doubleShift(i, left: true)
        case .shrd: try doubleShift(i, left: false)
        case .mulRm: try mul(i, signed: false)
        case .imulRm: try mul(i, signed: true)
        case .divRm: try div(i, signed: false)
        case .idivRm: try div(i, signed: true)
        case .imulRRm: imul2(i, getReg(i.reg, size), try readRm(i, size))
        case .imulRRmI: imul2(i, try readRm(i, size), i.imm)
        case .btR: try bitTest(i, 0, immediate: false)
        case .btsR: try bitTest(i, 1, immediate: false)
        case .btrR: try bitTest(i, 2, immediate: false)
        case .btcR: try bitTest(i, 3, immediate: false)
        case .btI: try bitTest(i, 0, immediate: true)
        case .btsI: try bitTest(i, 1, immediate: true)
        case .btrI: try bitTest(i, 2, immediate: true)
        case .btcI: try bitTest(i, 3, immediate: true)
        case .bsf, .bsr, .tzcnt, .lzcnt, .popcnt: try bitScan(i, i.op)
        case .setcc: try writeRm(i, 1, cond(UInt8(i.aux)) ? 1 : 0)
        case .cmovcc:
            let v = try readRm(i, size)
            if cond(UInt8(i.aux)) { setReg(i.reg, size, v) } else if size == 4 { setReg(i.reg, 4, getReg(i.reg, 4)) }
        case .cmpxchg: try cmpxchg(i)
        case .cmpxchg8b: try cmpxchg8b(i)
        case .xadd: try xadd(i)

        // MARK: stack
        case .pushR:
            if size == 8 && mode == .m64, let h = stackHost(r[4] &- 8, write: true) {
                h.storeBytes(of: r[Int(i.reg)], as: UInt64.self); r[4] &-= 8
            } else { try push(getReg(i.reg, size), size) }
        case .popR:
            if size == 8 && mode == .m64, let h = stackHost(r[4], write: false) {
                let v = h.loadUnaligned(as: UInt64.self); r[4] &+= 8; r[Int(i.reg)] = v
            } else {
                let v = try pop(size)
                setReg(i.reg, size, v)
            }
        case .pushI: try push(i.imm, size)
        case .pushRm: try push(try readRm(i, size), size)
        case .popRm:
            // The address is computed after RSP is incremented.
            let v = try peek(0, size)
            let sp = r[4]
            setSP(sp &+ UInt64(size))
            do { try writeRm(i, size, v) } catch { r[4] = sp; throw error }
        case .leave:
            let bp = getReg(5, stackMask == .max ? 8 : (stackMask == 0xFFFF ? 2 : 4))
            let v = try loadN(try linear(SegReg.ss, bp, size), size)
            setSP(bp &+ UInt64(size))
            setReg(5, size, v)
        case .enter: try enter(i)
        case .pusha: try pusha(size)
        case .popa: try popa(size)
        case .pushf: try pushf(size)
        case .popf:
            try popf(size)
            rip = next
            throw Fault.exitBlock
        case .pushSeg: try push(UInt64(segs[Int(i.reg)].selector), size)
        case .popSeg:
            let v = try peek(0, size)
            try loadSegment(Int(i.reg), UInt16(truncatingIfNeeded: v))
            setSP(r[4] &+ UInt64(size))
            if i.reg == 2 { interruptShadow = true; rip = next; throw Fault.exitBlock }

        // MARK: flags
        case .clc: setArith(arithFlags() & ~RFlag.cf)
        case .stc: setArith(arithFlags() | RFlag.cf)
        case .cmc: setArith(arithFlags() ^ RFlag.cf)
        case .cld: flags &= ~RFlag.df
        case .std: flags |= RFlag.df
        case .cli:
            try checkIOPL()
            flags &= ~RFlag.ifl
        case .sti:
            try checkIOPL()
            if flags & RFlag.ifl == 0 { interruptShadow = true }
            flags |= RFlag.ifl
            rip = next
            pollNow = true
            throw Fault.exitBlock
        case .sahf:
            let ah = (r[0] >> 8) & 0xFF
            setArith((arithFlags() & RFlag.of) | (ah & (RFlag.cf | RFlag.pf | RFlag.af | RFlag.zf | RFlag.sf)))
        case .lahf:
            setReg(1, 1, (rflags & 0xD5) | 2)
        case .salc:
            setReg(0, 1, cf ? 0xFF : 0)

        // MARK: control flow
        case .jcc:
            let cc = UInt8(i.aux)
            let taken: Bool
            if lop >> 2 == LazyKind.sub && cc >= 2 && cc <= 7 {
                switch cc {
                case 2: taken = ldst < lsrc
                case 3: taken = ldst >= lsrc
                case 4: taken = ldst == lsrc
                case 5: taken = ldst != lsrc
                case 6: taken = ldst <= lsrc
                default: taken = ldst > lsrc
                }
            } else if lop >> 2 == LazyKind.logic && (cc == 4 || cc == 5) {
                taken = (lres == 0) == (cc == 4)
            } else {
                taken = cond(cc)
            }
            pc = taken ? i.imm : next
            if taken && p < blockEnd { leaveBlock(i, &p, blockEnd) }
            continue
        case .jmp:
            pc = i.imm
            continue
        case .jmpRm:
            pc = try readRm(i, size)
            continue
        case .call:
            if size == 8 && mode == .m64, let h = stackHost(r[4] &- 8, write: true) {
                h.storeBytes(of: next, as: UInt64.self); r[4] &-= 8
            } else { try push(next, size) }
            pc = i.imm
            continue
        case .callRm:
            let t = try readRm(i, size)
            try push(next, size)
            pc = t
            continue
        case .ret:
            let t: UInt64
            if size == 8 && mode == .m64, let h = stackHost(r[4], write: false) {
                t = h.loadUnaligned(as: UInt64.self); r[4] &+= 8
            } else { t = try pop(size) }
            setSP(r[4] &+ i.imm)
            pc = t
            continue
        case .jcxz, .loop, .loope, .loopne:
            pc = try loopOp(i) ? i.imm : next
            continue

        // MARK: strings
        case .movs, .cmps, .stos, .lods, .scas, .ins, .outs:
            rip = pc
            try stringOp(i)
            pc = rip
            if stopBlock { stopBlock = false; return }
            continue

        default:
            rip = pc
            try execSlow(i)
            pc = rip
            if stopBlock { stopBlock = false; return }
            continue
        }
        pc = next
        if stopBlock { stopBlock = false; rip = pc; return }
        }
        rip = pc
        if !chain { return }
        pollCountdown &-= 1
        if pollNow || pollCountdown <= 0 { return }
        guard let nb = linkedBlock(cur, pc) ?? peekBlock() else { return }
        cur = nb
        instructions &+= UInt64(nb.pointee.guestCount)
        #if X86_PROFILE
        profBlock(nb)
        #endif
        p = UnsafePointer(blocks.insts + Int(nb.pointee.first))
        blockEnd = p + Int(nb.pointee.count)
        #if X86_PROFILE
        blockStart = p
        #endif
        }
        } catch {
            // A fault leaves RIP on the faulting instruction; "exit block" set RIP itself.
            if error.vector != 0xFF { rip = pc }
            throw error
        }
    }
}
