// Integer arithmetic: the ALU group, shifts and rotates, multiply/divide, bit operations.
//
// ALU results set lazy flags (Flags.swift). Shifts, multiplies and bit scans materialize RFLAGS.
// Where the SDM leaves a flag undefined we produce what QEMU's TCG produces, so side-by-side tests
// can compare whole RFLAGS values more often; the tests still mask undefined bits.

import Synchronization

let cmpxchg16Lock = Mutex<Void>(())

extension CPUCore {
    /// ALU operation `kind` (add, or, adc, sbb, and, sub, xor, cmp) on truncated operands.
    @_transparent mutating func alu(_ kind: Int, _ d: UInt64, _ s0: UInt64, _ size: Int) -> UInt64 {
        let m = sizeMask(size)
        let s = s0 & m
        switch kind {
        case 0:
            let r = (d &+ s) & m; setLazy(LazyKind.add, size, res: r, dst: d, src: s); return r
        case 1:
            let r = d | s; setLogicFlags(size, r); return r
        case 2:
            let c: UInt64 = cf ? 1 : 0
            let r = (d &+ s &+ c) & m; lcin = c; setLazy(LazyKind.adc, size, res: r, dst: d, src: s); return r
        case 3:
            let c: UInt64 = cf ? 1 : 0
            let r = (d &- s &- c) & m; lcin = c; setLazy(LazyKind.sbb, size, res: r, dst: d, src: s); return r
        case 4:
            let r = d & s; setLogicFlags(size, r); return r
        case 6:
            let r = d ^ s; setLogicFlags(size, r); return r
        default:
            let r = (d &- s) & m; setLazy(LazyKind.sub, size, res: r, dst: d, src: s); return r
        }
    }

    /// rm op= src for ALU kinds; CMP (7) writes nothing. Honors LOCK with a host compare-and-swap.
    @inline(__always) mutating func aluRm(_ i: IP, _ kind: Int, _ src: UInt64) throws(Fault) {
        try aluRm(i, kind, src, size: i.size)
    }

    @inline(__always) mutating func aluRm(_ i: IP, _ kind: Int, _ src: UInt64, size: Int) throws(Fault) {
        if !i.isMem {
            let d = getReg(i.rm, size)
            let r = alu(kind, d, src, size)
            if kind != 7 { setReg(i.rm, size, r) }
            return
        }
        if kind == 7 {
            _ = alu(7, try readRm(i, size), src, size)
            return
        }
        if i.flags & DInst.fLock == 0, let h = fastHost(i, size, write: true) {
            hostStore(h, alu(kind, hostLoad(h, size), src, size), size)
            return
        }
        try aluRmSlow(i, kind, src)
    }

    @inline(never) mutating func aluRmSlow(_ i: IP, _ kind: Int, _ src: UInt64) throws(Fault) {
        let size = i.size
        let lin = try opLinear(i, size, write: true)
        let d = try loadRMW(lin, size)
        if i.flags & DInst.fLock != 0, let p = atomicPointer(lin, size) {
            // Each try starts from the flags before the instruction: ADC/SBB read CF, which a
            // failed try (another vCPU won the race) has already replaced.
            let before = arithFlags()
            try atomicUpdate(p, size, first: d) { old, cpu in
                cpu.setArith(before)
                return cpu.alu(kind, old, src, size)
            }
            return
        }
        try storeN(lin, alu(kind, d, src, size), size)
    }

    /// Compare-and-swap loop for a LOCKed read-modify-write on RAM.
    mutating func atomicUpdate(_ p: UnsafeMutableRawPointer, _ size: Int, first: UInt64,
                               _ f: (UInt64, inout CPUCore) -> UInt64) throws(Fault) {
        var old = first
        while true {
            let new = f(old, &self)
            let (ok, cur) = atomicCAS(p, size, expected: old, desired: new)
            if ok { return }
            old = cur
        }
    }

    // MARK: unary

    mutating func incDec(_ i: IP, inc: Bool) throws(Fault) {
        try incDec(i, inc: inc, size: i.size)
    }

    @inline(__always) mutating func incDec(_ i: IP, inc: Bool, size: Int) throws(Fault) {
        let m = sizeMask(size)
        let oldCF: UInt64 = cf ? 1 : 0
        func apply(_ d: UInt64, _ c: inout CPUCore) -> UInt64 {
            let r = inc ? (d &+ 1) & m : (d &- 1) & m
            c.lcin = oldCF
            c.setLazy(inc ? LazyKind.inc : LazyKind.dec, size, res: r, dst: d, src: 1)
            return r
        }
        if !i.isMem {
            setReg(i.rm, size, apply(getReg(i.rm, size), &self))
            return
        }
        let lin = try opLinear(i, size, write: true)
        let d = try loadRMW(lin, size)
        if i.flags & DInst.fLock != 0, let p = atomicPointer(lin, size) {
            try atomicUpdate(p, size, first: d, apply)
            return
        }
        try storeN(lin, apply(d, &self), size)
    }

    mutating func notNeg(_ i: IP, neg: Bool) throws(Fault) {
        let size = i.size
        let m = sizeMask(size)
        func apply(_ d: UInt64, _ c: inout CPUCore) -> UInt64 {
            if !neg { return ~d & m }
            let r = (0 &- d) & m
            c.setLazy(LazyKind.sub, size, res: r, dst: 0, src: d)
            return r
        }
        if !i.isMem { setReg(i.rm, size, apply(getReg(i.rm, size), &self)); return }
        let lin = try opLinear(i, size, write: true)
        let d = try loadRMW(lin, size)
        if i.flags & DInst.fLock != 0, let p = atomicPointer(lin, size) {
            try atomicUpdate(p, size, first: d, apply)
            return
        }
        try storeN(lin, apply(d, &self), size)
    }

    // MARK: shifts and rotates

    /// Group-2 operation `kind` on `d` by `count` (already masked to 5/6 bits). Returns the result and
    /// materializes flags.
    mutating func shiftOp(_ kind: Int, _ d: UInt64, _ count: UInt64, _ size: Int) -> UInt64 {
        let bits = UInt64(size * 8)
        let m = sizeMask(size)
        let msb = bits - 1
        if count == 0 { return d }
        var r: UInt64
        switch kind {
        case 0, 1: // ROL, ROR
            var f = arithFlags()
            let c = count % bits
            if kind == 0 {
                r = c == 0 ? d : ((d << c) | (d >> (bits - c))) & m
                let cfb = r & 1
                f = (f & ~(RFlag.cf | RFlag.of)) | cfb | ((((r >> msb) ^ cfb) & 1) << 11)
            } else {
                r = c == 0 ? d : ((d >> c) | (d << (bits - c))) & m
                let cfb = (r >> msb) & 1
                f = (f & ~(RFlag.cf | RFlag.of)) | cfb | ((((r >> msb) ^ (r >> (msb - 1))) & 1) << 11)
            }
            setArith(f)
            return r
        case 2, 3: // RCL, RCR through CF
            var f = arithFlags()
            let c = count % (bits + 1)
            if c == 0 { return d }
            var cfb = f & 1
            r = d
            for _ in 0..<c {
                if kind == 2 {
                    let out = (r >> msb) & 1
                    r = ((r << 1) | cfb) & m
                    cfb = out
                } else {
                    let out = r & 1
                    r = (r >> 1) | (cfb << msb)
                    cfb = out
                }
            }
            let of = kind == 2 ? ((r >> msb) ^ cfb) & 1 : ((r >> msb) ^ (r >> (msb - 1))) & 1
            f = (f & ~(RFlag.cf | RFlag.of)) | cfb | (of << 11)
            setArith(f)
            return r
        case 4, 6: // SHL
            r = count >= 64 ? 0 : (d << count) & m
            let src = count - 1 >= 64 ? 0 : (d << (count - 1)) & m
            lcin = (src >> msb) & 1
            setLazy(LazyKind.shift, size, res: r, dst: ((src ^ r) >> msb) & 1, src: 0)
            return r
        case 5: // SHR
            r = count >= 64 ? 0 : d >> count
            let src = d >> (count - 1)
            lcin = src & 1
            setLazy(LazyKind.shift, size, res: r, dst: ((src ^ r) >> msb) & 1, src: 0)
            return r
        default: // SAR
            let sd = signExtend(d, size)
            r = UInt64(bitPattern: sd >> Int64(min(count, 63))) & m
            let src = UInt64(bitPattern: sd >> Int64(min(count - 1, 63)))
            lcin = src & 1
            setLazy(LazyKind.shift, size, res: r, dst: 0, src: 0)
            return r
        }
    }

    /// SHL/SHR/SAR by a non-zero count with lazy flags (the common register-by-immediate forms).
    @_transparent mutating func shiftFast(_ kind: Int, _ d: UInt64, _ count: UInt64, _ size: Int) -> UInt64 {
        let msb = UInt64(size * 8 - 1)
        let m = sizeMask(size)
        let r: UInt64, src: UInt64
        switch kind {
        case 4:
            r = (d << count) & m; src = (d << (count - 1)) & m
            lcin = (src >> msb) & 1
        case 5:
            r = d >> count; src = d >> (count - 1)
            lcin = src & 1
        default:
            let sd = signExtend(d, size)
            r = UInt64(bitPattern: sd >> Int64(count)) & m; src = UInt64(bitPattern: sd >> Int64(count - 1))
            lcin = src & 1
        }
        setLazy(LazyKind.shift, size, res: r, dst: kind == 7 ? 0 : ((src ^ r) >> msb) & 1, src: 0)
        return r
    }

    mutating func shiftGroup(_ i: IP) throws(Fault) {
        try shiftGroup(i, size: i.size)
    }

    @inline(__always) mutating func shiftGroup(_ i: IP, size: Int) throws(Fault) {
        let raw = i.flags & DInst.fCountCL != 0 ? r[1] & 0xFF : i.imm
        let count = raw & (size == 8 ? 0x3F : 0x1F)
        let kind = Int(i.aux)
        if !i.isMem {
            let d = getReg(i.rm, size)
            let v = shiftOp(kind, d, count, size)
            if count != 0 || size == 4 { setReg(i.rm, size, v) }
            return
        }
        let lin = try opLinear(i, size, write: true)
        let d = try loadRMW(lin, size)
        if count == 0 { return }
        try storeN(lin, shiftOp(kind, d, count, size), size)
    }

    mutating func doubleShift(_ i: IP, left: Bool) throws(Fault) {
        let size = i.size
        let bits = UInt64(size * 8)
        let raw = i.flags & DInst.fCountCL != 0 ? r[1] & 0xFF : i.imm
        let count = raw & (size == 8 ? 0x3F : 0x1F)
        let lin: UInt64 = i.isMem ? try opLinear(i, size, write: true) : 0
        let d = i.isMem ? try loadRMW(lin, size) : getReg(i.rm, size)
        let s = getReg(i.reg, size)
        if count == 0 {
            if !i.isMem && size == 4 { setReg(i.rm, 4, d) }
            return
        }
        let m = sizeMask(size)
        let msb = bits - 1
        var r: UInt64, cfb: UInt64
        if size == 2 && count > 16 {
            // Intel: 16-bit operands with count > 16 shift through a 48-bit quantity; emulate bitwise.
            var v = left ? (d << 32 | s << 16 | d) : (d | s << 16 | d << 32)
            if left { v <<= count; r = (v >> 32) & m; cfb = (v >> 48) & 1 } else { cfb = (v >> (count - 1)) & 1; v >>= count; r = v & m }
        } else if left {
            r = ((count >= 64 ? 0 : d << count) | (count > bits ? 0 : s >> (bits - count))) & m
            cfb = (d >> (bits - count)) & 1
        } else {
            r = ((count >= 64 ? 0 : d >> count) | (count > bits ? 0 : s << (bits - count))) & m
            cfb = (d >> (count - 1)) & 1
        }
        let of = ((r ^ d) >> msb) & 1
        setArith(cfb | parityEven(r) << 2 | (r == 0 ? RFlag.zf : 0) | ((r >> msb) & 1) << 7 | of << 11)
        if i.isMem { try storeN(lin, r, size) } else { setReg(i.rm, size, r) }
    }

    // MARK: multiply and divide

    /// Flags of a multiply (lazy: SF, ZF, PF from the truncated low half, CF = OF = overflow, AF = 0).
    @_transparent mutating func mulFlags(_ low: UInt64, overflow: Bool, _ size: Int) {
        lcin = overflow ? RFlag.cf | RFlag.of : 0
        lop = LazyKind.mul << 2 | sizeCode(size)
        lres = low
    }

    mutating func mul(_ i: IP, signed: Bool) throws(Fault) {
        let size = i.size
        let s = try readRm(i, size)
        switch size {
        case 1:
            let a = r[0] & 0xFF
            if signed {
                let p = Int64(Int8(truncatingIfNeeded: a)) * Int64(Int8(truncatingIfNeeded: s))
                setReg(0, 2, UInt64(bitPattern: p))
                mulFlags(UInt64(bitPattern: p) & 0xFF, overflow: p != Int64(Int8(truncatingIfNeeded: p)), 1)
            } else {
                let p = a * s
                setReg(0, 2, p)
                mulFlags(p & 0xFF, overflow: p >> 8 != 0, 1)
            }
        case 2, 4:
            let bits = UInt64(size * 8)
            let m = sizeMask(size)
            let a = r[0] & m
            let lo: UInt64, hi: UInt64, ovf: Bool
            if signed {
                let p = signExtend(a, size) * signExtend(s, size)
                lo = UInt64(bitPattern: p) & m; hi = UInt64(bitPattern: p >> Int64(bits)) & m
                ovf = p != signExtend(lo, size)
            } else {
                let p = a * s
                lo = p & m; hi = p >> bits
                ovf = hi != 0
            }
            setReg(0, size, lo); setReg(2, size, hi)
            mulFlags(lo, overflow: ovf, size)
        default:
            if signed {
                let a = r[0]
                let (high, low) = signedFullProduct(a, s)
                r[0] = low; r[2] = high
                mulFlags(low, overflow: high != UInt64(bitPattern: Int64(bitPattern: low) >> 63), 8)
            } else {
                let p = r[0].multipliedFullWidth(by: s)
                r[0] = p.low; r[2] = p.high
                mulFlags(p.low, overflow: p.high != 0, 8)
            }
        }
    }

    /// IMUL r, rm[, imm]: truncated product, CF=OF on signed overflow.
    @_transparent mutating func imul2(_ i: IP, _ a: UInt64, _ b: UInt64) {
        let size = i.size
        if size == 8 {
            // The overflow-reporting multiply is one host IMUL; Int64's full-width product is an
            // out-of-line library call.
            let (low, ovf) = Int64(bitPattern: a).multipliedReportingOverflow(by: Int64(bitPattern: b))
            r[Int(i.reg)] = UInt64(bitPattern: low)
            mulFlags(UInt64(bitPattern: low), overflow: ovf, 8)
        } else {
            let p = signExtend(a, size) &* signExtend(b, size)
            let lo = UInt64(bitPattern: p) & sizeMask(size)
            setReg(i.reg, size, lo)
            mulFlags(lo, overflow: p != signExtend(lo, size), size)
        }
    }

    /// The signed 128-bit product as (high, low): the unsigned product (one host MUL), with the high
    /// half corrected for negative factors.
    @inline(__always) func signedFullProduct(_ a: UInt64, _ b: UInt64) -> (UInt64, UInt64) {
        let p = a.multipliedFullWidth(by: b)
        var high = p.high
        if Int64(bitPattern: a) < 0 { high &-= b }
        if Int64(bitPattern: b) < 0 { high &-= a }
        return (high, p.low)
    }

    mutating func div(_ i: IP, signed: Bool) throws(Fault) {
        let size = i.size
        let s = try readRm(i, size)
        if s == 0 { throw Fault.de }
        switch size {
        case 1:
            let a = r[0] & 0xFFFF
            if signed {
                let n = Int64(Int16(truncatingIfNeeded: a)), dv = Int64(Int8(truncatingIfNeeded: s))
                let q = n / dv, rem = n % dv
                if q > 127 || q < -128 { throw Fault.de }
                setReg(0, 1, UInt64(bitPattern: q)); setReg(1, 1, UInt64(bitPattern: rem))
            } else {
                let q = a / s, rem = a % s
                if q > 0xFF { throw Fault.de }
                setReg(0, 1, q); setReg(1, 1, rem)
            }
        case 2, 4:
            let bits = UInt64(size * 8)
            let m = sizeMask(size)
            let n = (r[2] & m) << bits | (r[0] & m)
            if signed {
                let sn = Int64(bitPattern: n), sd = signExtend(s, size)
                if sn == Int64.min && sd == -1 { throw Fault.de }
                let q = sn / sd, rem = sn % sd
                if q != signExtend(UInt64(bitPattern: q) & m, size) { throw Fault.de }
                setReg(0, size, UInt64(bitPattern: q)); setReg(2, size, UInt64(bitPattern: rem))
            } else {
                let q = n / s, rem = n % s
                if q > m { throw Fault.de }
                setReg(0, size, q); setReg(2, size, rem)
            }
        default:
            if signed {
                let hi = Int64(bitPattern: r[2]), lo = r[0]
                let sd = Int64(bitPattern: s)
                let neg = hi < 0
                // |dividend| as unsigned 128-bit.
                var mh = UInt64(bitPattern: hi), ml = lo
                if neg { ml = ~ml &+ 1; mh = ~mh &+ (ml == 0 ? 1 : 0) }
                let ad = sd < 0 ? UInt64(bitPattern: 0 &- sd) : UInt64(sd)
                if mh >= ad { throw Fault.de }
                let (q, rem) = ad.dividingFullWidth((high: mh, low: ml))
                let qneg = neg != (sd < 0)
                if qneg ? q > UInt64(1) << 63 : q >= UInt64(1) << 63 { throw Fault.de }
                r[0] = qneg ? 0 &- q : q
                r[2] = neg ? 0 &- rem : rem
            } else {
                if r[2] >= s { throw Fault.de }
                let (q, rem) = s.dividingFullWidth((high: r[2], low: r[0]))
                r[0] = q; r[2] = rem
            }
        }
    }

    // MARK: bit operations

    /// BT/BTS/BTR/BTC. `op`: 0 test, 1 set, 2 reset, 3 complement.
    mutating func bitTest(_ i: IP, _ op: Int, immediate: Bool) throws(Fault) {
        let size = i.size
        let bits = Int64(size * 8)
        var off = immediate ? Int64(i.imm) : Int64(bitPattern: getReg(i.reg, size))
        if immediate || !i.isMem { off = Int64(UInt64(bitPattern: off) & UInt64(bits - 1)) }
        else { off = signExtend(UInt64(bitPattern: off), size) }
        func apply(_ v: UInt64, _ bit: UInt64) -> UInt64 {
            switch op { case 1: return v | bit; case 2: return v & ~bit; case 3: return v ^ bit; default: return v }
        }
        if !i.isMem {
            let v = getReg(i.rm, size)
            let bit = UInt64(1) << UInt64(off)
            setArith((arithFlags() & ~RFlag.cf) | (v & bit != 0 ? 1 : 0))
            if op != 0 { setReg(i.rm, size, apply(v, bit)) }
            return
        }
        // Memory: the bit offset may reach outside the operand.
        let unit = Int64(size)
        let byteOff = (off >> Int64(bits.trailingZeroBitCount)) * unit
        let bitIdx = UInt64(off & (bits - 1))
        let e = (ea(i) &+ UInt64(bitPattern: byteOff)) & (i.asz == 8 ? UInt64.max : (i.asz == 4 ? 0xFFFF_FFFF : 0xFFFF))
        let lin = try linear(Int(i.seg), e, size, write: op != 0)
        let bit = UInt64(1) << bitIdx
        if op == 0 {
            let v = try loadN(lin, size)
            setArith((arithFlags() & ~RFlag.cf) | (v & bit != 0 ? 1 : 0))
            return
        }
        var v = try loadRMW(lin, size)
        if i.flags & DInst.fLock != 0, let p = atomicPointer(lin, size) {
            while true {
                let (ok, cur) = atomicCAS(p, size, expected: v, desired: apply(v, bit))
                if ok { break }
                v = cur
            }
        } else {
            try storeN(lin, apply(v, bit), size)
        }
        setArith((arithFlags() & ~RFlag.cf) | (v & bit != 0 ? 1 : 0))
    }

    mutating func bitScan(_ i: IP, _ kind: Op) throws(Fault) {
        let size = i.size
        let s = try readRm(i, size)
        let bits = UInt64(size * 8)
        var f = arithFlags()
        switch kind {
        case .bsf, .bsr:
            if s == 0 { f |= RFlag.zf; setArith(f); return }
            f &= ~RFlag.zf
            setReg(i.reg, size, kind == .bsf ? UInt64(s.trailingZeroBitCount) : UInt64(63 - s.leadingZeroBitCount))
            setArith(f)
        case .tzcnt, .lzcnt:
            let v: UInt64 = s == 0 ? bits : (kind == .tzcnt ? UInt64(s.trailingZeroBitCount) : UInt64(s.leadingZeroBitCount) - (64 - bits))
            setReg(i.reg, size, v)
            f &= ~(RFlag.cf | RFlag.zf)
            if s == 0 { f |= RFlag.cf }
            if v == 0 { f |= RFlag.zf }
            setArith(f)
        default: // popcnt
            let v = UInt64(s.nonzeroBitCount)
            setReg(i.reg, size, v)
            setArith(s == 0 ? RFlag.zf : 0)
        }
    }
}

import Synchronization

@inline(__always) func atomicCAS(_ p: UnsafeMutableRawPointer, _ size: Int, expected: UInt64, desired: UInt64) -> (Bool, UInt64) {
    switch size {
    case 1:
        let r = p.assumingMemoryBound(to: Atomic<UInt8>.self).pointee.compareExchange(
            expected: UInt8(truncatingIfNeeded: expected), desired: UInt8(truncatingIfNeeded: desired), ordering: .sequentiallyConsistent)
        return (r.exchanged, UInt64(r.original))
    case 2:
        let r = p.assumingMemoryBound(to: Atomic<UInt16>.self).pointee.compareExchange(
            expected: UInt16(truncatingIfNeeded: expected), desired: UInt16(truncatingIfNeeded: desired), ordering: .sequentiallyConsistent)
        return (r.exchanged, UInt64(r.original))
    case 4:
        let r = p.assumingMemoryBound(to: Atomic<UInt32>.self).pointee.compareExchange(
            expected: UInt32(truncatingIfNeeded: expected), desired: UInt32(truncatingIfNeeded: desired), ordering: .sequentiallyConsistent)
        return (r.exchanged, UInt64(r.original))
    default:
        let r = p.assumingMemoryBound(to: Atomic<UInt64>.self).pointee.compareExchange(
            expected: expected, desired: desired, ordering: .sequentiallyConsistent)
        return (r.exchanged, r.original)
    }
}
