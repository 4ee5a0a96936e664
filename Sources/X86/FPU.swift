// The x87 FPU (and the MMX register aliasing), using the host's Float80, which on x86-64 Linux is
// exactly the x87 80-bit format: registers are kept as raw 10-byte images in 16-byte slots so MMX
// writes (exponent all ones, 64-bit mantissa) round-trip bit-exactly.
//
// The rounding control is honoured by arithmetic, FSQRT and FST/FSTP to memory (X87Rounding.swift,
// which also sets C1 to the rounding direction), FIST/FISTP and FRNDINT; the precision control by
// arithmetic and FSQRT (X87Precision.swift). The common operations (arithmetic, FSQRT,
// compares, loads and stores, FIST conversions, FRNDINT, stack faults) set the status-word
// exception flags (FPExceptions.swift); an unmasked one sets ES and B and the next waiting x87
// instruction raises #MF when CR0.NE is set. Transcendentals go through Double and set no flags.

import Glibc

struct FPUState {
    var regs: UnsafeMutableRawPointer        // 8 physical registers, 16 bytes each
    var top = 0
    var cw: UInt16 = 0x40
    var sw: UInt16 = 0
    var tagWord: UInt16 = 0xFFFF             // 2 bits per physical register, 11 = empty
    var fop: UInt16 = 0
    var fip: UInt64 = 0
    var fdp: UInt64 = 0

    init() {
        regs = .allocate(byteCount: 128, alignment: 16)
        regs.initializeMemory(as: UInt8.self, repeating: 0, count: 128)
    }

    func deallocate() { regs.deallocate() }

    mutating func reset() {
        regs.initializeMemory(as: UInt8.self, repeating: 0, count: 128)
        top = 0; cw = 0x40; sw = 0; tagWord = 0xFFFF; fop = 0; fip = 0; fdp = 0
    }

    mutating func finit() {
        cw = 0x37F; sw = 0; tagWord = 0xFFFF; top = 0; fop = 0; fip = 0; fdp = 0
    }

    @inline(__always) func phys(_ i: Int) -> Int { (top + i) & 7 }
    func isEmpty(_ i: Int) -> Bool { (tagWord >> UInt16(2 * phys(i))) & 3 == 3 }

    func get(_ i: Int) -> Float80 { regs.load(fromByteOffset: phys(i) * 16, as: Float80.self) }
    mutating func set(_ i: Int, _ v: Float80) {
        let p = phys(i)
        regs.storeBytes(of: v, toByteOffset: p * 16, as: Float80.self)
        let tag: UInt16 = v == 0 ? 1 : (v.isFinite && v.isNormal ? 0 : 2)
        tagWord = (tagWord & ~(3 << UInt16(2 * p))) | (tag << UInt16(2 * p))
    }
    mutating func push(_ v: Float80) {
        top = (top - 1) & 7
        if (tagWord >> UInt16(2 * top)) & 3 != 3 {
            // Stack overflow: IE + SF with C1 = 1; the masked response loads the indefinite (an
            // unmasked IE sets ES and B and leaves the register).
            sw |= 0x241
            if cw & 1 == 0 { sw |= 0x8080; return }
            set(0, Float80(sign: .minus, exponentBitPattern: 0x7FFF, significandBitPattern: 0x4000_0000_0000_0000))
            return
        }
        sw &= ~0x200   // C1 = 0: no stack overflow
        set(0, v)
    }
    mutating func pop() {
        tagWord |= 3 << UInt16(2 * top)
        top = (top + 1) & 7
    }
    var status: UInt16 { (sw & ~0x3800) | UInt16(top) << 11 }

    /// The FXSAVE abridged tag byte.
    var abridgedTags: UInt8 {
        var t: UInt8 = 0
        for p in 0..<8 where (tagWord >> UInt16(2 * p)) & 3 != 3 { t |= 1 << UInt8(p) }
        return t
    }
    mutating func setAbridged(_ t: UInt8) {
        tagWord = 0
        for p in 0..<8 {
            if t & (1 << UInt8(p)) == 0 { tagWord |= 3 << UInt16(2 * p) }
            else {
                let v = regs.load(fromByteOffset: p * 16, as: Float80.self)
                let tag: UInt16 = v == 0 ? 1 : (v.isFinite && v.isNormal ? 0 : 2)
                tagWord |= tag << UInt16(2 * p)
            }
        }
    }

    /// MMX view: the mantissa of physical register n.
    func mmx(_ n: Int) -> UInt64 { regs.load(fromByteOffset: (n & 7) * 16, as: UInt64.self) }
    mutating func setMMX(_ n: Int, _ v: UInt64) {
        regs.storeBytes(of: v, toByteOffset: (n & 7) * 16, as: UInt64.self)
        regs.storeBytes(of: UInt16(0xFFFF), toByteOffset: (n & 7) * 16 + 8, as: UInt16.self)
        top = 0
        tagWord = 0
    }
}

extension CPUCore {
    mutating func fpuAvailable() throws(Fault) {
        if cr0 & 0xC != 0 { throw Fault.nm }   // EM or TS
    }

    /// An unmasked x87 exception is pending (ES): #MF when CR0.NE is set (the FERR# route of NE = 0
    /// is not modelled).
    mutating func fpuCheckPending() throws(Fault) {
        if fpu.sw & 0x80 != 0 && cr0 & 0x20 != 0 { throw Fault.mf }
    }

    /// Rounds by the FPU control word's RC field.
    mutating func fpuRound(_ v: Float80) -> Float80 {
        switch (fpu.cw >> 10) & 3 {
        case 0: return v.rounded(.toNearestOrEven)
        case 1: return v.rounded(.down)
        case 2: return v.rounded(.up)
        default: return v.rounded(.towardZero)
        }
    }

    /// Converts to an integer of `bits` width, giving the "integer indefinite" value on overflow.
    mutating func fpuToInt(_ v: Float80, bits: Int, truncate: Bool) -> UInt64 {
        let r = truncate ? v.rounded(.towardZero) : fpuRound(v)
        let lim = Float80(sign: .plus, exponent: bits - 1, significand: 1)
        if r.isNaN || r >= lim || r < -lim {
            x87SetC1(false)
            _ = x87Record(MX16.ie)
            return UInt64(1) << UInt64(bits - 1)
        }
        x87SetC1(r.magnitude > v.magnitude)
        if r != v { _ = x87Record(MX16.pe) }
        return UInt64(bitPattern: Int64(r)) & sizeMask(bits / 8)
    }

    mutating func fpuCompare(_ a: Float80, _ b: Float80, eflags: Bool, quiet: Bool = false, pre: UInt16 = 0) {
        _ = x87Record(UInt16(fpLaneFlags(quiet ? .cmpQuiet : .cmpSignaling, a, b, a, unmasked: 0)) | pre)
        var c: UInt16 = 0
        var f: UInt64 = 0
        if a.isNaN || b.isNaN { c = 0x4500; f = RFlag.zf | RFlag.pf | RFlag.cf }
        else if a < b { c = 0x0100; f = RFlag.cf }
        else if a == b { c = 0x4000; f = RFlag.zf }
        if eflags { setArith(f) } else { fpu.sw = (fpu.sw & ~0x4700) | c }
    }

    /// Stack underflow on reading empty registers: IE + SF with C1 = 0; the masked response is the
    /// indefinite QNaN. Returns true when one of ST(0) / ST(i) is empty.
    mutating func x87Underflow(_ i: Int, _ j: Int = 0) -> Bool {
        guard fpu.isEmpty(i) || fpu.isEmpty(j) else { return false }
        fpu.sw &= ~0x200
        _ = x87Record(MX16.ie | MX16.sf)
        return true
    }

    mutating func execX87(_ i: IP) throws(Fault) {
        try fpuAvailable()
        let esc = Int(i.aux >> 8)
        let modrm = UInt8(i.aux & 0xFF)
        let sub = Int((modrm >> 3) & 7)
        let sti = Int(modrm & 7)
        if fpu.sw & 0x80 != 0 && !x87NoWait(esc, modrm, isMem: i.isMem) { try fpuCheckPending() }
        fpu.fop = UInt16(esc) << 8 | UInt16(modrm)
        if i.isMem {
            try x87Memory(i, esc, sub)
            return
        }
        switch esc {
        case 0: // D8: st0 op sti
            let empty = x87Underflow(0, sti)
            let a = empty ? x87Indefinite : fpu.get(0), b = empty ? x87Indefinite : fpu.get(sti)
            if sub == 2 || sub == 3 { fpuCompare(a, b, eflags: false); if sub == 3 { fpu.pop() } }
            else if let v = fpuArith(sub, a, b), !(empty && fpu.cw & 1 == 0) { fpu.set(0, v) }
        case 1:
            switch modrm {
            case 0xC0...0xC7: let v = fpu.get(sti); fpu.push(v)
            case 0xC8...0xCF: let a = fpu.get(0), b = fpu.get(sti); fpu.set(0, b); fpu.set(sti, a); x87SetC1(false)
            case 0xD0: break
            case 0xE0: fpu.set(0, -fpu.get(0)); x87SetC1(false)
            case 0xE1: fpu.set(0, abs(fpu.get(0))); x87SetC1(false)
            case 0xE4: fpuCompare(x87Underflow(0) ? x87Indefinite : fpu.get(0), 0, eflags: false)
            case 0xE5: fxam()
            case 0xE8: fpu.push(1)
            case 0xE9: fpu.push(Float80(3.32192809488736234787031942948939))
            case 0xEA: fpu.push(Float80(1.44269504088896340735992468100189214))
            case 0xEB: fpu.push(Float80.pi)
            case 0xEC: fpu.push(Float80(0.301029995663981195213738894724493027))
            case 0xED: fpu.push(Float80(0.693147180559945309417232121458176568))
            case 0xEE: fpu.push(0)
            case 0xF0: fpu.set(0, Float80(pow(2.0, Double(fpu.get(0))) - 1))
            case 0xF1: let v = fpu.get(1) * Float80(log2(Double(fpu.get(0)))); fpu.pop(); fpu.set(0, v)
            case 0xF2: fpu.set(0, Float80(tan(Double(fpu.get(0))))); fpu.push(1); fpu.sw &= ~0x400
            case 0xF3: let v = Float80(atan2(Double(fpu.get(1)), Double(fpu.get(0)))); fpu.pop(); fpu.set(0, v)
            case 0xF4:
                let v = fpu.get(0)
                let e = v == 0 ? -Float80.infinity : Float80(v.exponent)
                fpu.set(0, e); fpu.push(v == 0 ? v : Float80(sign: v.sign, exponent: 0, significand: v.significand))
            case 0xF5, 0xF8:
                let a = fpu.get(0), b = fpu.get(1)
                let q = (a / b).rounded(modrm == 0xF8 ? .towardZero : .toNearestOrEven)
                let r = modrm == 0xF8 ? a.truncatingRemainder(dividingBy: b) : a.remainder(dividingBy: b)
                fpu.set(0, r)
                let qi = q.isFinite ? UInt64(abs(q).truncatingRemainder(dividingBy: 8)) : 0
                fpu.sw = (fpu.sw & ~0x4700) | UInt16((qi & 4) << 12) | UInt16((qi & 2) << 13) | UInt16((qi & 1) << 9)
            case 0xF6: fpu.top = (fpu.top - 1) & 7
            case 0xF7: fpu.top = (fpu.top + 1) & 7
            case 0xF9: let v = fpu.get(1) * Float80(log2(1 + Double(fpu.get(0)))); fpu.pop(); fpu.set(0, v)
            case 0xFA:
                if x87Underflow(0) { if fpu.cw & 1 != 0 { fpu.set(0, x87Indefinite) }; break }
                let v = fpu.get(0)
                // C0, C2 and C3 are undefined after FSQRT; like QEMU, a negative operand leaves C2 set.
                if v.sign == .minus && !v.isNaN { fpu.sw = (fpu.sw & ~0x4500) | 0x400 }
                if let r = fpuSqrt(v) { fpu.set(0, r) }
            case 0xFB: let v = Double(fpu.get(0)); fpu.set(0, Float80(sin(v))); fpu.push(Float80(cos(v))); fpu.sw &= ~0x400
            case 0xFC: fpuRoundToInteger()
            case 0xFD:
                let s = fpu.get(1).rounded(.towardZero)
                if s.isFinite { fpu.set(0, Float80(sign: .plus, exponent: Int(max(-20000, min(20000, s))), significand: 1) * fpu.get(0)) }
            case 0xFE: fpu.set(0, Float80(sin(Double(fpu.get(0))))); fpu.sw &= ~0x400
            case 0xFF: fpu.set(0, Float80(cos(Double(fpu.get(0))))); fpu.sw &= ~0x400
            default: throw Fault.ud
            }
        case 2:
            if modrm == 0xE9 { fpuCompare(fpu.get(0), fpu.get(1), eflags: false, quiet: true); fpu.pop(); fpu.pop(); return }
            let cc: [UInt8] = [2, 4, 6, 10]
            if sub < 4 { if cond(cc[sub]) { fpu.set(0, fpu.get(sti)) } } else { throw Fault.ud }
        case 3:
            switch modrm {
            case 0xE2: fpu.sw &= 0x7F00
            case 0xE3: fpu.finit()
            case 0xE0, 0xE1, 0xE4: break
            default:
                if sub < 4 {
                    let cc: [UInt8] = [3, 5, 7, 11]
                    if cond(cc[sub]) { fpu.set(0, fpu.get(sti)) }
                } else if sub == 5 || sub == 6 {
                    fpuCompare(fpu.get(0), fpu.get(sti), eflags: true, quiet: sub == 5)
                } else { throw Fault.ud }
            }
        case 4: // DC: sti op= st0 (sub 4/5 and 6/7 swap meaning)
            let empty = x87Underflow(0, sti)
            let a = empty ? x87Indefinite : fpu.get(sti), b = empty ? x87Indefinite : fpu.get(0)
            if sub == 2 || sub == 3 { fpuCompare(b, a, eflags: false); if sub == 3 { fpu.pop() }; return }
            let op = [0, 1, 2, 3, 5, 4, 7, 6][sub]
            if let v = fpuArith(op, a, b), !(empty && fpu.cw & 1 == 0) { fpu.set(sti, v) }
        case 5:
            switch sub {
            case 0: fpu.tagWord |= 3 << UInt16(2 * fpu.phys(sti))
            case 2: fpu.set(sti, fpu.get(0))
            case 3: fpu.set(sti, fpu.get(0)); fpu.pop()
            case 4: fpuCompare(fpu.get(0), fpu.get(sti), eflags: false, quiet: true)
            case 5: fpuCompare(fpu.get(0), fpu.get(sti), eflags: false, quiet: true); fpu.pop()
            default: throw Fault.ud
            }
        case 6:
            if modrm == 0xD9 { fpuCompare(fpu.get(0), fpu.get(1), eflags: false); fpu.pop(); fpu.pop(); return }
            if sub == 2 || sub == 3 { throw Fault.ud }
            let empty = x87Underflow(0, sti)
            let a = empty ? x87Indefinite : fpu.get(sti), b = empty ? x87Indefinite : fpu.get(0)
            // DE E0+i FSUBRP st(i) = st0 - st(i); E8+i FSUBP st(i) = st(i) - st0; F0 FDIVRP; F8 FDIVP.
            let v: Float80?
            switch sub {
            case 4: v = fpuArith(4, b, a)
            case 5: v = fpuArith(4, a, b)
            case 6: v = fpuArith(6, b, a)
            case 7: v = fpuArith(6, a, b)
            default: v = fpuArith(sub, a, b)
            }
            if let v, !(empty && fpu.cw & 1 == 0) { fpu.set(sti, v) }
            fpu.pop()
        default:
            switch modrm {
            case 0xE0: setReg(0, 2, UInt64(fpu.status))
            case 0xE8...0xF7: fpuCompare(fpu.get(0), fpu.get(sti), eflags: true, quiet: modrm < 0xF0); fpu.pop()
            case 0xC0...0xC7: fpu.tagWord |= 3 << UInt16(2 * fpu.phys(sti)); fpu.pop()
            default: throw Fault.ud
            }
        }
    }

    mutating func fxam() {
        let v = fpu.get(0)
        var c: UInt16
        if fpu.isEmpty(0) { c = 0x4100 }
        else if v.isNaN { c = 0x0100 }
        else if v.isInfinite { c = 0x0500 }
        else if v == 0 { c = 0x4000 }
        else if v.isSubnormal { c = 0x4400 }
        else { c = 0x0400 }
        if v.sign == .minus { c |= 0x0200 }
        fpu.sw = (fpu.sw & ~0x4700) | c
    }

    mutating func x87Memory(_ i: IP, _ esc: Int, _ sub: Int) throws(Fault) {
        /// The operand (m32fp, m32int, m64fp, m16int by `kind`) and the flags of reading it.
        func loadOperand(_ cpu: inout CPUCore, _ kind: Int) throws(Fault) -> (Float80, UInt16) {
            switch kind {
            case 0: return CPUCore.x87Widen(Float(bitPattern: UInt32(try cpu.loadN(try cpu.opLinear(i, 4), 4))))
            case 1: return (Float80(Int32(truncatingIfNeeded: try cpu.loadN(try cpu.opLinear(i, 4), 4))), 0)
            case 2: return CPUCore.x87Widen(Double(bitPattern: try cpu.loadN(try cpu.opLinear(i, 8), 8)))
            default: return (Float80(Int16(truncatingIfNeeded: try cpu.loadN(try cpu.opLinear(i, 2), 2))), 0)
            }
        }
        switch esc {
        case 0, 2, 4, 6:
            let (v, pre) = try loadOperand(&self, esc / 2)
            let empty = x87Underflow(0)
            let a = empty ? x87Indefinite : fpu.get(0)
            if sub == 2 || sub == 3 { fpuCompare(a, v, eflags: false, pre: pre); if sub == 3 { fpu.pop() }; return }
            if let r = fpuArith(sub, a, v, pre: pre), !(empty && fpu.cw & 1 == 0) { fpu.set(0, r) }
        case 1:
            switch sub {
            case 0:
                let (v, pre) = try loadOperand(&self, 0)
                if !x87Record(pre) || pre == MX16.de { fpu.push(v) }   // an unmasked DE still loads (host-confirmed)
            case 2, 3:
                if let f = fpuNarrow(fpu.get(0), to: Float.self) { try writeRm(i, 4, UInt64(f.bitPattern)) }
                if sub == 3 { fpu.pop() }
            case 4: try fldenv(i)
            case 5: fpu.cw = UInt16(try readRm(i, 2))
            case 6: try fstenv(i)
            case 7: try writeRm(i, 2, UInt64(fpu.cw))
            default: throw Fault.ud
            }
        case 3:
            switch sub {
            case 0: fpu.push(try loadOperand(&self, 1).0)
            case 1, 2, 3:
                try writeRm(i, 4, fpuToInt(fpu.get(0), bits: 32, truncate: sub == 1))
                if sub != 2 { fpu.pop() }
            case 5:
                let lin = try opLinear(i, 10)
                let lo = try loadN(lin, 8), hi = try loadN(lin &+ 8, 2)
                var raw = (lo, hi & 0xFFFF)   // 16 bytes: MemoryLayout<Float80>.size, but only 8-aligned
                let v = withUnsafeBytes(of: &raw) { $0.loadUnaligned(as: Float80.self) }
                fpu.push(v)
            case 7:
                let lin = try opLinear(i, 10, write: true)
                try probeWrite(lin, 10)
                var v = fpu.get(0)
                let (lo, hi) = withUnsafeBytes(of: &v) { ($0.load(as: UInt64.self), $0.load(fromByteOffset: 8, as: UInt16.self)) }
                try storeN(lin, lo, 8); try storeN(lin &+ 8, UInt64(hi), 2)
                fpu.pop()
            default: throw Fault.ud
            }
        case 5:
            switch sub {
            case 0:
                let (v, pre) = try loadOperand(&self, 2)
                if !x87Record(pre) || pre == MX16.de { fpu.push(v) }
            case 1: try writeRm(i, 8, fpuToInt(fpu.get(0), bits: 64, truncate: true)); fpu.pop()
            case 2, 3:
                if let f = fpuNarrow(fpu.get(0), to: Double.self) { try writeRm(i, 8, f.bitPattern) }
                if sub == 3 { fpu.pop() }
            case 4: try frstor(i)
            case 6: try fsave(i)
            case 7: try writeRm(i, 2, UInt64(fpu.status))
            default: throw Fault.ud
            }
        default: // DF
            switch sub {
            case 0: fpu.push(try loadOperand(&self, 3).0)
            case 1, 2, 3:
                try writeRm(i, 2, fpuToInt(fpu.get(0), bits: 16, truncate: sub == 1))
                if sub != 2 { fpu.pop() }
            case 5: fpu.push(Float80(Int64(bitPattern: try loadN(try opLinear(i, 8), 8))))
            case 7: try writeRm(i, 8, fpuToInt(fpu.get(0), bits: 64, truncate: false)); fpu.pop()
            case 4:
                // FBLD: 18 BCD digits and a sign byte.
                let lin = try opLinear(i, 10)
                var v: Float80 = 0
                for k in (0..<9).reversed() {
                    let b = try loadN(lin &+ UInt64(k), 1)
                    v = v * 100 + Float80((b >> 4) * 10 + (b & 0xF))
                }
                if try loadN(lin &+ 9, 1) & 0x80 != 0 { v = -v }
                fpu.push(v)
            default: // 6: FBSTP
                let lin = try opLinear(i, 10, write: true)
                var v = fpuRound(fpu.get(0))
                let neg = v < 0
                v = abs(v)
                if !v.isFinite || v >= 1e18 { v = 0; fpu.sw |= 1 }   // invalid: no indefinite BCD here
                for k in 0..<9 {
                    let d = UInt64(v.truncatingRemainder(dividingBy: 100))
                    v = (v / 100).rounded(.towardZero)
                    try storeN(lin &+ UInt64(k), (d / 10) << 4 | d % 10, 1)
                }
                try storeN(lin &+ 9, neg ? 0x80 : 0, 1)
                fpu.pop()
            }
        }
    }

    // MARK: environment images

    private mutating func fullTagWord() -> UInt16 { fpu.tagWord }

    mutating func fstenv(_ i: IP) throws(Fault) {
        let lin = try opLinear(i, 28, write: true)
        let w = i.size == 2 ? 2 : 4
        let vals: [UInt64] = [UInt64(fpu.cw), UInt64(fpu.status), UInt64(fpu.tagWord), fpu.fip & 0xFFFF_FFFF, 0, fpu.fdp & 0xFFFF_FFFF, 0]
        for (k, v) in vals.enumerated() { try storeN(lin &+ UInt64(k * w), v, w) }
        fpu.cw |= 0x3F
    }

    mutating func fldenv(_ i: IP) throws(Fault) {
        let lin = try opLinear(i, 28)
        let w = i.size == 2 ? 2 : 4
        fpu.cw = UInt16(truncatingIfNeeded: try loadN(lin, 2))
        let s = UInt16(truncatingIfNeeded: try loadN(lin &+ UInt64(w), 2))
        fpu.sw = s; fpu.top = Int((s >> 11) & 7)
        fpu.tagWord = UInt16(truncatingIfNeeded: try loadN(lin &+ UInt64(2 * w), 2))
    }

    mutating func fsave(_ i: IP) throws(Fault) {
        let w = i.size == 2 ? 14 : 28
        let lin = try opLinear(i, w + 80, write: true)
        try probeWrite(lin, w + 80)
        try fstenv(i)
        for k in 0..<8 {
            let p = fpu.phys(k) * 16
            try storeN(lin &+ UInt64(w + k * 10), fpu.regs.load(fromByteOffset: p, as: UInt64.self), 8)
            try storeN(lin &+ UInt64(w + k * 10 + 8), UInt64(fpu.regs.load(fromByteOffset: p + 8, as: UInt16.self)), 2)
        }
        fpu.finit()
    }

    mutating func frstor(_ i: IP) throws(Fault) {
        let w = i.size == 2 ? 14 : 28
        let lin = try opLinear(i, w + 80)
        try fldenv(i)
        let tags = fpu.tagWord
        for k in 0..<8 {
            let p = fpu.phys(k) * 16
            fpu.regs.storeBytes(of: try loadN(lin &+ UInt64(w + k * 10), 8), toByteOffset: p, as: UInt64.self)
            fpu.regs.storeBytes(of: UInt16(try loadN(lin &+ UInt64(w + k * 10 + 8), 2)), toByteOffset: p + 8, as: UInt16.self)
        }
        fpu.tagWord = tags
    }
}
