// The x86 decoder: bytes at a given mode and RIP in, one `DInst` out (pure; no CPU state).
//
// Prefixes, REX, ModRM/SIB (16-bit and 32/64-bit forms), displacement and immediates are parsed
// here; the operation is picked by the opcode maps in DecoderMaps.swift. An instruction that needs
// more bytes than `avail` comes back with len 0 (the block builder then fetches across the page or
// ends the block). Invalid encodings decode to `.ud`; encodings we know but do not implement decode
// to `.unimpl`, which the executor names once on stderr and turns into #UD.

struct Decoder {
    let p: UnsafePointer<UInt8>
    let avail: Int
    let mode: CodeMode
    var pos = 0
    var incomplete = false

    // Prefix state.
    var opsize = false, adsize = false, rep = false, repne = false, lock = false
    var segOverride: UInt8 = 0xFF
    var rex: UInt8 = 0
    var ripRelative = false
    /// CPUID-dependent encodings: F3 0F BD is LZCNT only with ABM, F3 0F BC is TZCNT only with
    /// BMI1; otherwise the F3 prefix is ignored and they are BSR/BSF, as on real hardware.
    var hasLZCNT = false
    var hasTZCNT = false
    var hasPOPCNT = false
    var hasMOVBE = false
    /// SSSE3 / SSE4.1 / SSE4.2 encodings (bits 0, 1, 2) decode only when CPUID reports them.
    var simdExt: UInt8 = 0

    init(_ p: UnsafePointer<UInt8>, avail: Int, mode: CodeMode, features: DecoderFeatures = DecoderFeatures()) {
        self.p = p
        self.avail = avail
        self.mode = mode
        hasLZCNT = features.lzcnt
        hasTZCNT = features.tzcnt
        hasPOPCNT = features.popcnt
        hasMOVBE = features.movbe
        simdExt = features.simdExt
    }

    @inline(__always) mutating func byte() -> UInt8 {
        if pos >= avail || pos >= 15 { incomplete = true; return 0 }
        let b = p[pos]
        pos += 1
        return b
    }
    mutating func u16() -> UInt64 { let a = UInt64(byte()); return a | UInt64(byte()) << 8 }
    mutating func u32() -> UInt64 { let a = u16(); return a | u16() << 16 }
    mutating func s8() -> UInt64 { UInt64(bitPattern: Int64(Int8(bitPattern: byte()))) }
    mutating func s16() -> UInt64 { UInt64(bitPattern: Int64(Int16(truncatingIfNeeded: u16()))) }
    mutating func s32() -> UInt64 { UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: u32()))) }

    var rexW: Bool { rex & 8 != 0 }
    var rexR: UInt8 { (rex & 4) << 1 }
    var rexX: UInt8 { (rex & 2) << 2 }
    var rexB: UInt8 { (rex & 1) << 3 }

    /// Operand size for ordinary instructions.
    var osz: UInt8 {
        if mode == .m64 { return rexW ? 8 : (opsize ? 2 : 4) }
        return (mode == .m32) != opsize ? 4 : 2
    }
    /// Operand size for instructions that default to 64 bits in long mode (push, pop, near branches).
    var osz64: UInt8 {
        if mode == .m64 { return opsize && !rexW ? 2 : 8 }
        return osz
    }
    var asz: UInt8 {
        switch mode {
        case .m64: return adsize ? 4 : 8
        case .m32: return adsize ? 2 : 4
        case .m16: return adsize ? 4 : 2
        }
    }

    /// Register code for an 8-bit operand: byte offset into the register file.
    func byteReg(_ n: UInt8) -> UInt8 {
        if rex == 0 && n >= 4 && n < 8 { return (n - 4) * 8 + 1 }
        return n * 8
    }

    /// Parses ModRM (and SIB/displacement) into `d`. Returns the ModRM byte.
    mutating func modrm(_ d: inout DInst, byteOperand: Bool = false, byteRegField: Bool? = nil) -> UInt8 {
        let m = byte()
        let mod = m >> 6
        let regf = ((m >> 3) & 7) | rexR
        let rmf = m & 7
        d.reg = (byteRegField ?? byteOperand) ? byteReg(regf) : regf
        if mod == 3 {
            let r = rmf | rexB
            d.rm = byteOperand ? byteReg(r) : r
            return m
        }
        d.flags |= DInst.fMem
        var defaultSS = false
        if asz == 2 {
            switch rmf {
            case 0: d.base = 3; d.index = 6
            case 1: d.base = 3; d.index = 7
            case 2: d.base = 5; d.index = 6; defaultSS = true
            case 3: d.base = 5; d.index = 7; defaultSS = true
            case 4: d.base = 6
            case 5: d.base = 7
            case 6: if mod == 0 { d.base = 16 } else { d.base = 5; defaultSS = true }
            default: d.base = 3
            }
            switch mod {
            case 0: d.disp = rmf == 6 ? u16() : 0
            case 1: d.disp = s8()
            default: d.disp = u16()
            }
        } else {
            var base = rmf
            if rmf == 4 {
                let sib = byte()
                d.scale = sib >> 6
                let idx = ((sib >> 3) & 7) | rexX
                d.index = idx == 4 ? 16 : idx
                base = sib & 7
                if base == 5 && mod == 0 {
                    d.base = 16
                    d.disp = s32()
                } else {
                    d.base = base | rexB
                    if base == 4 || base == 5 { defaultSS = true }
                }
            } else if rmf == 5 && mod == 0 {
                d.base = 16
                d.disp = s32()
                if mode == .m64 { ripRelative = true }
            } else {
                d.base = rmf | rexB
                if rmf == 4 || rmf == 5 { defaultSS = true }
            }
            if mod == 1 { d.disp = d.disp &+ s8() } else if mod == 2 { d.disp = d.disp &+ s32() }
        }
        d.seg = segOverride != 0xFF ? segOverride : (defaultSS ? 2 : 3)
        return m
    }

    /// Decodes one instruction at `rip`.
    mutating func decode(rip: UInt64) -> DInst {
        var d = DInst()
        // Prefixes.
        var b: UInt8
        while true {
            b = byte()
            if incomplete { return DInst(op: .ud, len: 0) }
            switch b {
            case 0x66: opsize = true; rex = 0; continue
            case 0x67: adsize = true; rex = 0; continue
            case 0xF2: repne = true; rep = false; rex = 0; continue
            case 0xF3: rep = true; repne = false; rex = 0; continue
            case 0xF0: lock = true; rex = 0; continue
            case 0x26: if mode != .m64 { segOverride = 0 }; rex = 0; continue
            case 0x2E: if mode != .m64 { segOverride = 1 }; rex = 0; continue
            case 0x36: if mode != .m64 { segOverride = 2 }; rex = 0; continue
            case 0x3E: if mode != .m64 { segOverride = 3 }; rex = 0; continue
            case 0x64: segOverride = 4; rex = 0; continue
            case 0x65: segOverride = 5; rex = 0; continue
            default: break
            }
            if mode == .m64 && b & 0xF0 == 0x40 { rex = b; continue }
            break
        }
        d.osz = osz
        d.asz = asz
        d.seg = segOverride != 0xFF ? segOverride : 3
        if opsize { d.flags |= DInst.fOpsize }
        if rep { d.flags |= DInst.fRep }
        if repne { d.flags |= DInst.fRepne }
        if lock { d.flags |= DInst.fLock }
        if rexW { d.flags |= DInst.fRexW }
        if rex != 0 { d.flags |= DInst.fRex }

        if b == 0x0F {
            let b2 = byte()
            switch b2 {
            case 0x38: decode0F38(&d, byte())
            case 0x3A: decode0F3A(&d, byte())
            default: decode0F(&d, b2, rip: rip)
            }
        } else {
            decodeOneByte(&d, b, rip: rip)
        }
        if incomplete { return DInst(op: .ud, len: 0) }
        d.len = UInt8(pos)
        let next = rip &+ UInt64(pos)
        if ripRelative { d.disp = d.disp &+ next }
        // LOCK is only valid on read-modify-write memory forms.
        if lock && !lockAllowed(d) { d.op = .ud }
        d.op = Decoder.specialize(d)
        return d
    }

    func lockAllowed(_ d: DInst) -> Bool {
        guard d.isMem else { return false }
        switch d.op {
        case .addRmR, .orRmR, .adcRmR, .sbbRmR, .andRmR, .subRmR, .xorRmR,
             .addRmI, .orRmI, .adcRmI, .sbbRmI, .andRmI, .subRmI, .xorRmI,
             .incRm, .decRm, .notRm, .negRm, .xchgRmR, .cmpxchg, .cmpxchg8b, .xadd,
             .btsR, .btrR, .btcR, .btsI, .btrI, .btcI:
            return true
        default: return false
        }
    }

    /// Reads an immediate of operand size (64-bit operands take a sign-extended imm32).
    mutating func immOsz(_ size: UInt8) -> UInt64 {
        switch size {
        case 1: return UInt64(byte())
        case 2: return u16()
        case 4: return u32()
        default: return s32()
        }
    }

    /// A relative branch target, truncated to the operand size.
    func target(_ rel: UInt64, rip: UInt64, size: UInt8) -> UInt64 {
        let t = rip &+ UInt64(pos) &+ rel
        switch size {
        case 2: return t & 0xFFFF
        case 4: return t & 0xFFFF_FFFF
        default: return t
        }
    }
}

struct DecoderFeatures {
    var lzcnt = false
    var tzcnt = false
    var popcnt = false
    var movbe = false
    var simdExt: UInt8 = 0
    init() {}
    init(model: CPUModel) {
        lzcnt = model.has("abm")
        tzcnt = model.has("bmi1")
        popcnt = model.has("popcnt")
        movbe = model.has("movbe")
        simdExt = (model.has("ssse3") ? 1 : 0) | (model.has("sse4.1") ? 2 : 0) | (model.has("sse4.2") ? 4 : 0)
    }
}

extension Decoder {
    /// Replaces an operation by its 32- or 64-bit specialized form, where one exists.
    static func specialize(_ d: DInst) -> Op {
        if d.op == .movzx8 && (d.imm == 4 || d.imm == 8) { return d.imm == 4 ? .movzx8_4 : .movzx8_8 }
        if d.op == .movzx16 && (d.osz == 4 || d.osz == 8) { return d.osz == 4 ? .movzx16_4 : .movzx16_8 }
        switch (d.op, d.osz) {
        case (.addRmR, 4): return .addRmR4
        case (.addRRm, 4): return .addRRm4
        case (.addRmI, 4): return .addRmI4
        case (.orRmR, 4): return .orRmR4
        case (.orRRm, 4): return .orRRm4
        case (.orRmI, 4): return .orRmI4
        case (.adcRmR, 4): return .adcRmR4
        case (.adcRRm, 4): return .adcRRm4
        case (.adcRmI, 4): return .adcRmI4
        case (.sbbRmR, 4): return .sbbRmR4
        case (.sbbRRm, 4): return .sbbRRm4
        case (.sbbRmI, 4): return .sbbRmI4
        case (.andRmR, 4): return .andRmR4
        case (.andRRm, 4): return .andRRm4
        case (.andRmI, 4): return .andRmI4
        case (.subRmR, 4): return .subRmR4
        case (.subRRm, 4): return .subRRm4
        case (.subRmI, 4): return .subRmI4
        case (.xorRmR, 4): return .xorRmR4
        case (.xorRRm, 4): return .xorRRm4
        case (.xorRmI, 4): return .xorRmI4
        case (.cmpRmR, 4): return .cmpRmR4
        case (.cmpRRm, 4): return .cmpRRm4
        case (.cmpRmI, 4): return .cmpRmI4
        case (.movRmR, 4): return .movRmR4
        case (.movRRm, 4): return .movRRm4
        case (.movRmI, 4): return .movRmI4
        case (.movRI, 4): return .movRI4
        case (.testRmR, 4): return .testRmR4
        case (.testRmI, 4): return .testRmI4
        case (.lea, 4): return .lea4
        case (.shift, 4): return .shift4
        case (.incRm, 4): return .incRm4
        case (.decRm, 4): return .decRm4
        case (.addRmR, 8): return .addRmR8
        case (.addRRm, 8): return .addRRm8
        case (.addRmI, 8): return .addRmI8
        case (.orRmR, 8): return .orRmR8
        case (.orRRm, 8): return .orRRm8
        case (.orRmI, 8): return .orRmI8
        case (.adcRmR, 8): return .adcRmR8
        case (.adcRRm, 8): return .adcRRm8
        case (.adcRmI, 8): return .adcRmI8
        case (.sbbRmR, 8): return .sbbRmR8
        case (.sbbRRm, 8): return .sbbRRm8
        case (.sbbRmI, 8): return .sbbRmI8
        case (.andRmR, 8): return .andRmR8
        case (.andRRm, 8): return .andRRm8
        case (.andRmI, 8): return .andRmI8
        case (.subRmR, 8): return .subRmR8
        case (.subRRm, 8): return .subRRm8
        case (.subRmI, 8): return .subRmI8
        case (.xorRmR, 8): return .xorRmR8
        case (.xorRRm, 8): return .xorRRm8
        case (.xorRmI, 8): return .xorRmI8
        case (.cmpRmR, 8): return .cmpRmR8
        case (.cmpRRm, 8): return .cmpRRm8
        case (.cmpRmI, 8): return .cmpRmI8
        case (.movRmR, 8): return .movRmR8
        case (.movRRm, 8): return .movRRm8
        case (.movRmI, 8): return .movRmI8
        case (.movRI, 8): return .movRI8
        case (.testRmR, 8): return .testRmR8
        case (.testRmI, 8): return .testRmI8
        case (.lea, 8): return .lea8
        case (.shift, 8): return .shift8
        case (.incRm, 8): return .incRm8
        case (.decRm, 8): return .decRm8
        default: return d.op
        }
    }
}
