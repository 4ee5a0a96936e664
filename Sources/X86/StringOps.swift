// String instructions (MOVS, CMPS, STOS, LODS, SCAS, INS, OUTS) with REP/REPE/REPNE.
//
// A REP instruction runs a bounded number of iterations per visit; if RCX is not exhausted RIP stays
// on the instruction, RF is set and the block ends, so interrupts are taken between chunks as the
// SDM allows (and a data or I/O breakpoint's #DB after the iteration that hit).
// Forward REP MOVS/STOS over RAM copy or fill whole page-bounded chunks through host pointers.

extension CPUCore {
    @inline(__always) private mutating func addrMask(_ asz: UInt8) -> UInt64 {
        asz == 8 ? .max : (asz == 4 ? 0xFFFF_FFFF : 0xFFFF)
    }

    @inline(__always) private mutating func advance(_ reg: Int, _ asz: UInt8, _ delta: UInt64) {
        setReg(UInt8(reg), Int(asz), (r[reg] &+ delta) & addrMask(asz))
    }

    mutating func stringOp(_ i: IP) throws(Fault) {
        let size = i.size
        let rep = i.flags & (DInst.fRep | DInst.fRepne) != 0
        let next = rip &+ UInt64(i.len)
        let step: UInt64 = flags & RFlag.df != 0 ? 0 &- UInt64(size) : UInt64(size)
        if (i.op == .ins || i.op == .outs) { try checkIOPermission(UInt16(truncatingIfNeeded: r[2]), size) }

        if !rep {
            try stringStep(i, size, step)
            rip = next
            return
        }
        // Under TF single-step one iteration per step (the #DB trap comes after each).
        let stepping = flags & RFlag.tf != 0
        if bp.data | bp.io != 0 {
            try watchedRepeat(i, size, step, stepping: stepping)
        } else {
            try repeatLoop(i, size, step, stepping: stepping, watched: false)
        }
        rip = next
        if i.op == .ins || i.op == .outs { pollNow = true }
    }

    /// Leaves a REP string instruction between iterations: RIP stays on it, and RF is set so that an
    /// event taken now pushes RF = 1 and the instruction's breakpoint does not fault again when it
    /// resumes (SDM 18.3.1.1).
    private mutating func repeatLater() throws(Fault) -> Never {
        flags |= RFlag.rf
        throw Fault.exitBlock
    }

    /// The REP loop while data or I/O breakpoints are armed: out of line, so that the usual loop
    /// tests nothing for them. Page chunks stay: they only cover pages with fast TLB tags, which no
    /// data breakpoint watches.
    @inline(never)
    private mutating func watchedRepeat(_ i: IP, _ size: Int, _ step: UInt64, stepping: Bool) throws(Fault) {
        try repeatLoop(i, size, step, stepping: stepping, watched: true)
    }

    /// Iterations of a REP instruction until RCX runs out, the REPE/REPNE condition ends it, or the
    /// budget for one visit is spent; `watched` (a constant at each call) also ends it after an
    /// iteration that hit a data or I/O breakpoint.
    @inline(__always)
    private mutating func repeatLoop(_ i: IP, _ size: Int, _ step: UInt64, stepping: Bool, watched: Bool) throws(Fault) {
        let asz = i.asz
        let am = addrMask(asz)
        var budget = stepping ? 1 : 1 << 14
        while r[1] & am != 0 {
            if budget <= 0 { try repeatLater() }
            if step == UInt64(size) && (i.op == .movs || i.op == .stos) && !stepping {
                let n = try fastChunk(i, size)
                if n > 0 { budget -= n; continue }
            }
            try stringStep(i, size, step)
            setReg(1, Int(asz), (r[1] &- 1) & am)
            budget -= 1
            if i.op == .cmps || i.op == .scas {
                let z = cond(4)
                if i.flags & DInst.fRep != 0 && !z { break }
                if i.flags & DInst.fRepne != 0 && z { break }
            }
            if watched && bp.hits != 0 { budget = 0 }
        }
    }

    private mutating func stringStep(_ i: IP, _ size: Int, _ step: UInt64) throws(Fault) {
        let asz = i.asz
        let am = addrMask(asz)
        switch i.op {
        case .movs:
            let v = try loadN(try linear(Int(i.seg), r[6] & am, size), size)
            try storeN(try linear(SegReg.es, r[7] & am, size, write: true), v, size)
            advance(6, asz, step); advance(7, asz, step)
        case .stos:
            try storeN(try linear(SegReg.es, r[7] & am, size, write: true), r[0], size)
            advance(7, asz, step)
        case .lods:
            setReg(0, size, try loadN(try linear(Int(i.seg), r[6] & am, size), size))
            advance(6, asz, step)
        case .cmps:
            let a = try loadN(try linear(Int(i.seg), r[6] & am, size), size)
            let b = try loadN(try linear(SegReg.es, r[7] & am, size), size)
            _ = alu(7, a, b, size)
            advance(6, asz, step); advance(7, asz, step)
        case .scas:
            let b = try loadN(try linear(SegReg.es, r[7] & am, size), size)
            _ = alu(7, getReg(0, size), b, size)
            advance(7, asz, step)
        case .ins:
            let lin = try linear(SegReg.es, r[7] & am, size, write: true)
            try probeWrite(lin, size)
            let v = UInt64(platformRef.portRead(cpu: index, port: UInt16(truncatingIfNeeded: r[2]), size: size))
            try storeN(lin, v, size)
            if bp.io != 0 { ioBreakpoint(UInt16(truncatingIfNeeded: r[2]), size) }
            advance(7, asz, step)
        default: // outs
            let v = try loadN(try linear(Int(i.seg), r[6] & am, size), size)
            platformRef.portWrite(cpu: index, port: UInt16(truncatingIfNeeded: r[2]), size: size, value: UInt32(truncatingIfNeeded: v))
            if bp.io != 0 { ioBreakpoint(UInt16(truncatingIfNeeded: r[2]), size) }
            advance(6, asz, step)
        }
    }

    /// Forward REP MOVS/STOS over plain RAM in one go, up to the end of the current pages. Returns
    /// the number of elements done (0 = use the element loop).
    private mutating func fastChunk(_ i: IP, _ size: Int) throws(Fault) -> Int {
        let asz = i.asz
        let am = addrMask(asz)
        let count = r[1] & am
        let di = r[7] & am
        // Stay within the address-size wrap and within segment limits (fast path only).
        let maxElems = Swift.min(count, UInt64(1 << 12))
        let dlin = try linear(SegReg.es, di, size, write: true)
        let dRoom = (0x1000 - (dlin & 0xFFF)) / UInt64(size)
        var n = Swift.min(maxElems, dRoom)
        if n == 0 { return 0 }
        if di &+ n &* UInt64(size) > am || di &+ n &* UInt64(size) > segEnd[SegReg.es] { return 0 }
        try probeWrite(dlin, size)
        guard let dp = atomicPointer(dlin, size) else { return 0 }
        if i.op == .stos {
            if UInt(bitPattern: dp) % UInt(size) != 0 { return 0 }   // typed fill needs alignment
            switch size {
            case 1: dp.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: r[0]), count: Int(n))
            case 2: dp.bindMemory(to: UInt16.self, capacity: Int(n)).update(repeating: UInt16(truncatingIfNeeded: r[0]), count: Int(n))
            case 4: dp.bindMemory(to: UInt32.self, capacity: Int(n)).update(repeating: UInt32(truncatingIfNeeded: r[0]), count: Int(n))
            default: dp.bindMemory(to: UInt64.self, capacity: Int(n)).update(repeating: r[0], count: Int(n))
            }
            advance(7, asz, n &* UInt64(size))
            setReg(1, Int(asz), (count &- n) & am)
            return Int(n)
        }
        let si = r[6] & am
        let slin = try linear(Int(i.seg), si, size)
        let sRoom = (0x1000 - (slin & 0xFFF)) / UInt64(size)
        n = Swift.min(n, sRoom)
        if n == 0 || si &+ n &* UInt64(size) > am || si &+ n &* UInt64(size) > segEnd[Int(i.seg)] { return 0 }
        let page = slin >> 12
        let e = tlb + Int(page & tlbMask)
        // Fill the read TLB entry or fault (no access: MMIO and watched pages get no tag).
        if e.pointee.rtag != page { _ = try translate(slin, .read, user: cpl == 3) }
        guard e.pointee.rtag == page, let sp = UnsafeRawPointer(bitPattern: UInt(truncatingIfNeeded: slin &+ e.pointee.addend)) else { return 0 }
        let bytes = Int(n) * size
        let d = UInt(bitPattern: dp), s = UInt(bitPattern: sp)
        if d > s && d < s + UInt(bytes) { return 0 }  // forward overlap: element semantics differ
        dp.copyMemory(from: sp, byteCount: bytes)
        advance(6, asz, UInt64(bytes)); advance(7, asz, UInt64(bytes))
        setReg(1, Int(asz), (count &- n) & am)
        return Int(n)
    }
}
