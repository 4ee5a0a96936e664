// Stack-frame and flag-image instructions: ENTER, PUSHA/POPA, PUSHF/POPF; the atomic exchange
// family (CMPXCHG, CMPXCHG8B/16B, XADD); LOOP/JCXZ.

extension CPUCore {
    mutating func enter(_ i: IP) throws(Fault) {
        let size = i.size
        let level = Int(i.aux & 31)
        let frameSize = i.imm
        let bpSize = stackMask == .max ? 8 : (stackMask == 0xFFFF ? 2 : 4)
        let sp0 = r[4]
        do {
            try push(getReg(5, size), size)
            let frameTemp = r[4] & stackMask
            if level > 0 {
                var bp = getReg(5, bpSize)
                for _ in 1..<level {
                    bp = (bp &- UInt64(size)) & stackMask
                    try push(try loadN(try linear(SegReg.ss, bp, size), size), size)
                }
                try push(frameTemp, size)
            }
            // Touch the bottom of the new frame so a fault happens before anything is committed.
            let newSP = (r[4] &- frameSize) & stackMask
            if frameSize > 0 { _ = try linear(SegReg.ss, newSP, 1, write: true) }
            setReg(5, size == 2 ? 2 : bpSize, frameTemp)
            setSP(newSP)
        } catch {
            r[4] = sp0
            throw error
        }
    }

    mutating func pusha(_ size: Int) throws(Fault) {
        let sp0 = r[4]
        let vals = (0..<8).map { getReg(UInt8($0), size) }
        do {
            for (k, v) in vals.enumerated() { try push(k == 4 ? sp0 & sizeMask(size) : v, size) }
        } catch { r[4] = sp0; throw error }
    }

    mutating func popa(_ size: Int) throws(Fault) {
        var vals = [UInt64](repeating: 0, count: 8)
        for k in 0..<8 { vals[7 - k] = try peek(UInt64(k * size), size) }
        for k in 0..<8 where k != 4 { setReg(UInt8(k), size, vals[k]) }
        setSP(r[4] &+ UInt64(8 * size))
    }

    mutating func checkIOPL() throws(Fault) {
        if protectedMode && (v86 ? 3 : cpl) > Int((flags >> 12) & 3) { throw Fault.gp(0) }
    }

    mutating func pushf(_ size: Int) throws(Fault) {
        if v86 && (flags >> 12) & 3 != 3 { throw Fault.gp(0) }
        try push(rflags & 0xFC_FFFF & sizeMask(size), size)
    }

    mutating func popf(_ size: Int) throws(Fault) {
        if v86 && (flags >> 12) & 3 != 3 { throw Fault.gp(0) }
        let v = try pop(size)
        writeFlags(v, size: size)
    }

    /// Writes RFLAGS as POPF/IRET do: IOPL only at CPL 0, IF only when CPL <= IOPL, VM/RF never here.
    mutating func writeFlags(_ v: UInt64, size: Int, iret: Bool = false) {
        var mask: UInt64 = RFlag.arith | RFlag.tf | RFlag.df | RFlag.nt
        if size >= 4 { mask |= RFlag.ac | RFlag.id }
        let iopl = Int((flags >> 12) & 3)
        if !protectedMode || cpl == 0 { mask |= RFlag.iopl | RFlag.ifl }
        else if cpl <= iopl { mask |= RFlag.ifl }
        if iret && size >= 4 { mask |= RFlag.rf }
        mask &= sizeMask(size)
        let oldIF = flags & RFlag.ifl
        let f = (rflags & ~mask) | (v & mask)
        flags = f | 2
        lop = 0
        if flags & RFlag.ifl != 0 && oldIF == 0 { pollNow = true }
    }

    mutating func cmpxchg(_ i: IP) throws(Fault) {
        let size = i.size
        let acc = getReg(0, size)
        let src = getReg(i.reg, size)
        if !i.isMem {
            let d = getReg(i.rm, size)
            _ = alu(7, acc, d, size)
            if acc == d { setReg(i.rm, size, src) } else { setReg(0, size, d) }
            return
        }
        let lin = try opLinear(i, size, write: true)
        let d = try loadRMW(lin, size)
        if let p = atomicPointer(lin, size) {
            let (ok, cur) = atomicCAS(p, size, expected: acc, desired: src)
            _ = alu(7, acc, cur, size)
            if !ok { setReg(0, size, cur) }
            return
        }
        _ = alu(7, acc, d, size)
        if acc == d { try storeN(lin, src, size) } else { try storeN(lin, d, size); setReg(0, size, d) }
    }

    mutating func cmpxchg8b(_ i: IP) throws(Fault) {
        if i.flags & DInst.fRexW != 0 {
            let e = ea(i)
            if e & 15 != 0 { throw Fault.gp(0) }
            let lin = try opLinear(i, 16, write: true)
            try probeWrite(lin, 16)
            try cmpxchg16Lock.withLock { _ throws(Fault) in
                let lo = try loadN(lin, 8), hi = try loadN(lin &+ 8, 8)
                if lo == r[0] && hi == r[2] {
                    try storeN(lin, r[3], 8); try storeN(lin &+ 8, r[1], 8)
                    setArith(arithFlags() | RFlag.zf)
                } else {
                    r[0] = lo; r[2] = hi
                    setArith(arithFlags() & ~RFlag.zf)
                }
            }
            return
        }
        let lin = try opLinear(i, 8, write: true)
        let old = try loadRMW(lin, 8)
        let expected = (r[2] & 0xFFFF_FFFF) << 32 | (r[0] & 0xFFFF_FFFF)
        let desired = (r[1] & 0xFFFF_FFFF) << 32 | (r[3] & 0xFFFF_FFFF)
        var cur = old
        var ok = false
        if let p = atomicPointer(lin, 8) {
            (ok, cur) = atomicCAS(p, 8, expected: expected, desired: desired)
        } else {
            ok = old == expected
            try storeN(lin, ok ? desired : old, 8)
        }
        if ok { setArith(arithFlags() | RFlag.zf) } else {
            setReg(0, 4, cur & 0xFFFF_FFFF); setReg(2, 4, cur >> 32)
            setArith(arithFlags() & ~RFlag.zf)
        }
    }

    mutating func xadd(_ i: IP) throws(Fault) {
        let size = i.size
        let s = getReg(i.reg, size)
        if !i.isMem {
            let d = getReg(i.rm, size)
            let r0 = alu(0, d, s, size)
            setReg(i.reg, size, d)
            setReg(i.rm, size, r0)
            return
        }
        let lin = try opLinear(i, size, write: true)
        var d = try loadRMW(lin, size)
        if let p = atomicPointer(lin, size) {
            while true {
                let (ok, cur) = atomicCAS(p, size, expected: d, desired: (d &+ s) & sizeMask(size))
                if ok { break }
                d = cur
            }
            _ = alu(0, d, s, size)
        } else {
            try storeN(lin, alu(0, d, s, size), size)
        }
        setReg(i.reg, size, d)
    }

    /// LOOP/LOOPE/LOOPNE/JCXZ: returns whether the branch is taken.
    mutating func loopOp(_ i: IP) throws(Fault) -> Bool {
        let cs = Int(i.asz)
        if i.op == .jcxz { return getReg(1, cs) == 0 }
        let c = (getReg(1, cs) &- 1) & sizeMask(cs)
        setReg(1, cs, c)
        switch i.op {
        case .loope: return c != 0 && cond(4)
        case .loopne: return c != 0 && !cond(4)
        default: return c != 0
        }
    }
}
