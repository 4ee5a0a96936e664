// Lazy arithmetic flags.
//
// The common flag writers (ADD, ADC, SUB, SBB, CMP, AND/OR/XOR/TEST, INC, DEC, NEG) only record
// what they did: `lop` = kind * 4 + size code (0..3 for 8..64 bits) and the truncated result and
// operands. Readers compute just the bit they need; Jcc after CMP compares the operands directly.
// Everything else (shifts, multiplies, bit tests, POPF...) materializes RFLAGS and stores `lop = 0`.

enum LazyKind {
    static let none: UInt32 = 0, add: UInt32 = 1, adc: UInt32 = 2, sub: UInt32 = 3, sbb: UInt32 = 4
    static let logic: UInt32 = 5, inc: UInt32 = 6, dec: UInt32 = 7
    /// SHL/SHR/SAR: CF in `lcin`, OF (0/1) in `ldst`, AF = 0.
    static let shift: UInt32 = 8
    /// MUL/IMUL: CF and OF (both or neither) as RFLAGS bits in `lcin`, AF = 0; SF/ZF/PF from `lres`.
    static let mul: UInt32 = 9
}

@inline(__always) func sizeCode(_ size: Int) -> UInt32 {
    switch size { case 1: return 0; case 2: return 1; case 4: return 2; default: return 3 }
}
@inline(__always) func sizeMask(_ size: Int) -> UInt64 {
    size == 8 ? UInt64.max : (UInt64(1) << UInt64(size * 8)) &- 1
}
@inline(__always) func signBit(_ size: Int) -> UInt64 { UInt64(1) << UInt64(size * 8 - 1) }
/// 1 when the low byte has an even number of set bits (PF).
@inline(__always) func parityEven(_ v: UInt64) -> UInt64 {
    let b = v & 0xFF
    return ((0x6996 >> ((b ^ (b >> 4)) & 0xF)) & 1) ^ 1
}
@inline(__always) func signExtend(_ v: UInt64, _ size: Int) -> Int64 {
    let sh = UInt64(64 - size * 8)
    return Int64(bitPattern: v << sh) >> Int64(sh)
}

extension CPUCore {
    @inline(__always) mutating func setLazy(_ kind: UInt32, _ size: Int, res: UInt64, dst: UInt64, src: UInt64) {
        lop = kind << 2 | sizeCode(size)
        lres = res; ldst = dst; lsrc = src
    }

    @inline(__always) mutating func setLogicFlags(_ size: Int, _ res: UInt64) {
        lop = LazyKind.logic << 2 | sizeCode(size)
        lres = res
    }

    /// The six arithmetic flags as RFLAGS bits.
    mutating func arithFlags() -> UInt64 {
        let kind = lop >> 2
        if kind == LazyKind.none { return flags & RFlag.arith }
        let size = 1 << Int(lop & 3)
        let sb = signBit(size)
        let res = lres, dst = ldst, src = lsrc
        var f: UInt64 = 0
        if res == 0 { f |= RFlag.zf }
        if res & sb != 0 { f |= RFlag.sf }
        f |= parityEven(res) << 2
        switch kind {
        case LazyKind.add:
            if res < dst { f |= RFlag.cf }
            if (dst ^ res) & (src ^ res) & sb != 0 { f |= RFlag.of }
            f |= (dst ^ src ^ res) & RFlag.af
        case LazyKind.adc:
            if lcin != 0 ? res <= dst : res < dst { f |= RFlag.cf }
            if (dst ^ res) & (src ^ res) & sb != 0 { f |= RFlag.of }
            f |= (dst ^ src ^ res) & RFlag.af
        case LazyKind.sub:
            if dst < src { f |= RFlag.cf }
            if (dst ^ src) & (dst ^ res) & sb != 0 { f |= RFlag.of }
            f |= (dst ^ src ^ res) & RFlag.af
        case LazyKind.sbb:
            if lcin != 0 ? dst <= src : dst < src { f |= RFlag.cf }
            if (dst ^ src) & (dst ^ res) & sb != 0 { f |= RFlag.of }
            f |= (dst ^ src ^ res) & RFlag.af
        case LazyKind.inc:
            f |= lcin
            if (dst ^ res) & (src ^ res) & sb != 0 { f |= RFlag.of }
            f |= (dst ^ src ^ res) & RFlag.af
        case LazyKind.dec:
            f |= lcin
            if (dst ^ src) & (dst ^ res) & sb != 0 { f |= RFlag.of }
            f |= (dst ^ src ^ res) & RFlag.af
        case LazyKind.shift:
            f |= lcin | ldst << 11
        case LazyKind.mul:
            f |= lcin
        default: // logic
            break
        }
        return f
    }

    @inline(__always) var cf: Bool {
        mutating get {
        let kind = lop >> 2
        switch kind {
        case LazyKind.none: return flags & RFlag.cf != 0
        case LazyKind.sub: return ldst < lsrc
        case LazyKind.add: return lres < ldst
        case LazyKind.logic: return false
        case LazyKind.shift: return lcin != 0
        case LazyKind.adc: return lcin != 0 ? lres <= ldst : lres < ldst
        case LazyKind.sbb: return lcin != 0 ? ldst <= lsrc : ldst < lsrc
        case LazyKind.inc, LazyKind.dec, LazyKind.mul: return lcin & RFlag.cf != 0
        default: return arithFlags() & RFlag.cf != 0
        }
    }
    }

    /// Full RFLAGS with lazy bits folded in.
    var rflags: UInt64 { mutating get { (flags & ~RFlag.arith) | arithFlags() | 2 } }

    @inline(__always) mutating func materializeFlags() {
        if lop != 0 {
            flags = (flags & ~RFlag.arith) | arithFlags()
            lop = 0
        }
    }

    /// Sets the arithmetic flags from explicit bits (shifts, multiplies, POPF...).
    @inline(__always) mutating func setArith(_ bits: UInt64) {
        flags = (flags & ~RFlag.arith) | (bits & RFlag.arith)
        lop = 0
    }

    /// Jcc/SETcc/CMOVcc condition `cc` (0..15).
    @_transparent mutating func cond(_ cc: UInt8) -> Bool {
        let kind = lop >> 2
        if kind == LazyKind.sub {
            switch cc {
            case 2: return ldst < lsrc
            case 3: return ldst >= lsrc
            case 4: return ldst == lsrc
            case 5: return ldst != lsrc
            case 6: return ldst <= lsrc
            case 7: return ldst > lsrc
            case 12, 13, 14, 15:
                let sh = UInt64(64 - (8 << (lop & 3)))
                let a = Int64(bitPattern: ldst << sh), b = Int64(bitPattern: lsrc << sh)
                switch cc {
                case 12: return a < b
                case 13: return a >= b
                case 14: return a <= b
                default: return a > b
                }
            default: break
            }
        } else if kind == LazyKind.logic {
            let sb = UInt64(1) << UInt64((8 << (lop & 3)) - 1)
            switch cc {
            case 4: return lres == 0
            case 5: return lres != 0
            case 2, 0: return false
            case 3, 1: return true
            case 8, 12: return lres & sb != 0
            case 9, 13: return lres & sb == 0
            case 6: return lres == 0
            case 7: return lres != 0
            case 14: return lres == 0 || lres & sb != 0
            case 15: return lres != 0 && lres & sb == 0
            default: break
            }
        } else if kind != LazyKind.none {
            // Every other recorded writer keeps its truncated result in `lres`: ZF and SF come
            // from it, CF from the kind's own rule, without materializing all six flags.
            switch cc {
            case 4: return lres == 0
            case 5: return lres != 0
            case 8: return lres & (UInt64(1) << UInt64((8 << (lop & 3)) - 1)) != 0
            case 9: return lres & (UInt64(1) << UInt64((8 << (lop & 3)) - 1)) == 0
            case 2: return cf
            case 3: return !cf
            default: break
            }
        }
        return condFromFlags(cc, arithFlags())
    }
}

@inline(__always) func condFromFlags(_ cc: UInt8, _ f: UInt64) -> Bool {
    let r: Bool
    switch cc >> 1 {
    case 0: r = f & RFlag.of != 0
    case 1: r = f & RFlag.cf != 0
    case 2: r = f & RFlag.zf != 0
    case 3: r = f & (RFlag.cf | RFlag.zf) != 0
    case 4: r = f & RFlag.sf != 0
    case 5: r = f & RFlag.pf != 0
    case 6: r = (f & RFlag.sf != 0) != (f & RFlag.of != 0)
    default: r = f & RFlag.zf != 0 || ((f & RFlag.sf != 0) != (f & RFlag.of != 0))
    }
    return cc & 1 == 0 ? r : !r
}
