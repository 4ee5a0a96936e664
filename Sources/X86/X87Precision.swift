// x87 precision control (CW.PC, bits 8-9; SDM vol. 1 8.1.5.2): with PC = 00 (24 bits) or 10 (53
// bits), FADD/FSUB/FMUL/FDIV (all forms, integer and memory operands included) and FSQRT round the
// significand of their result to that many bits in the mode CW.RC selects, while the exponent keeps
// the extended range (nothing overflows or underflows at the single or double limits). PC = 11 and
// the reserved 01 keep 64 bits (as the host CPU and QEMU do); no other instruction looks at PC.
//
// The p-bit result comes from the operation's round-to-nearest result in scaled form (`FPScaled`:
// s, k and the sign of the exact error, FPRounding.swift) without double rounding: s's bits below
// the cut, with the error's sign as a sticky bit beyond them, place the exact value against its
// p-bit neighbours (below, at or above the halfway point; or just under s when those bits are zero
// and the error is negative, where the grid below a power of two is twice as fine). Then, as for
// the x87's own format:
//  - a result past the largest p-bit value (2 - 2^(1-p)) * 2^16383 overflows (OE, PE): infinity,
//    or that value when RC rounds toward zero for its sign;
//  - a result tiny after rounding with unbounded exponent (below 2^-16382, the x87's tininess rule)
//    is rounded on the fixed grid 2^(-16382-p+1), so fewer bits survive: UE and PE when inexact
//    (an unmasked UE is raised by tininess alone; the biased result its handler would get is not
//    modelled, as for the extended path);
//  - C1 tells whether the magnitude was rounded up.
// The extended path (the default) pays one bit test of CW.PC per instruction.

extension CPUCore {
    /// Whether CW.PC asks for the full 64 bits: PC = 11, or the reserved 01 (one bit to test).
    @inline(__always) var x87Extended: Bool { fpu.cw & 0x100 != 0 }
    /// The significand bits of PC = 00 and 10.
    @inline(__always) var x87Precision: Int { fpu.cw & 0x200 != 0 ? 53 : 24 }
}

/// One x87 ADD, SUB, MUL, DIV or SQRT (of `y`) rounded to `bits` (24 or 53) significant bits in mode
/// `rc` with the extended exponent range: the result, its flags and its rounding direction.
@inline(never)
func x87PrecisionLane(_ op: FPOp, _ x: Float80, _ y: Float80, bits: Int, rc: UInt32, unmasked: UInt32) -> FPRounded<Float80> {
    let r = op.apply(x, y)
    let unary = op == .sqrt
    if r.isNaN || !y.isFinite || (!unary && !x.isFinite) || (op == .div && y == 0) {
        // NaN operands, invalid operations, infinities, division by zero: nothing to round.
        return FPRounded(value: r, flags: fpLaneFlags(op, x, y, r, unmasked: unmasked))
    }
    let f: UInt32 = (!unary && x.isSubnormal) || y.isSubnormal ? MX.de : 0
    if r == 0 && (op == .add || op == .sub) {
        // An exact zero sum: -0 when rounding down unless both addends are +0.
        let minus = x.sign == .minus || (op == .add ? y.sign == .minus : y.sign == .plus)
        return FPRounded(value: rc == 1 && minus ? -0.0 : r, flags: f)
    }
    return x87RoundPrecision(fpScaledResult(op, x, y, r), bits: bits, rc: rc, unmasked: unmasked, flags: f)
}

/// The finite value (s + e) * 2^k of `p` rounded to `bits` significant bits in mode `rc` with the
/// x87's exponent range, with the post-computation flags ORed into `flags`.
func x87RoundPrecision(_ p: FPScaled<Float80>, bits: Int, rc: UInt32, unmasked: UInt32, flags: UInt32) -> FPRounded<Float80> {
    if p.s == 0 { return FPRounded(value: p.s, flags: flags) }
    let neg = p.s < 0
    let a = p.s.magnitude
    let e = Int(a.exponent) + p.k
    let m = UInt64(fpScale(a.significand, 63))     // the 64-bit significand, top bit set
    let c = neg ? -p.err : p.err                    // the exact magnitude lies on this side of a
    let emin = -16382, emax = 16383
    // With an unbounded exponent: overflow and tininess.
    let u = x87RoundBits(m, e, c: c, bits: bits, floor: Int.min / 2, rc: rc, neg: neg)
    let ue = u.q == 0 ? Int.min : 63 - u.q.leadingZeroBitCount + u.g
    let sign: FloatingPointSign = neg ? .minus : .plus
    if ue > emax {
        let toInfinity = rc == 0 || (rc == 1 && neg) || (rc == 2 && !neg)
        let mag = toInfinity ? Float80.infinity
            : Float80(sign: .plus, exponent: emax - bits + 1, significand: Float80((UInt64(1) << UInt64(bits)) - 1))
        let pe = unmasked & MX.oe != 0 && !u.inexact ? 0 : MX.pe
        return FPRounded(value: neg ? -mag : mag, flags: flags | MX.oe | pe, up: toInfinity)
    }
    let tiny = ue < emin
    let d = x87RoundBits(m, e, c: c, bits: bits, floor: emin, rc: rc, neg: neg)
    let value = Float80(sign: sign, exponent: d.g, significand: Float80(d.q))
    var f = flags
    if tiny && unmasked & MX.ue != 0 {
        // Tininess alone raises an unmasked UE (the handler's biased result is not modelled).
        f |= MX.ue | (u.inexact ? MX.pe : 0)
    } else if d.inexact {
        f |= tiny ? MX.ue | MX.pe : MX.pe
    }
    return FPRounded(value: value, flags: f, up: d.up)
}

/// A magnitude rounded to q * 2^g with q < 2^bits (or = 2^bits after a carry).
struct X87Rounded {
    var q: UInt64
    var g: Int
    var inexact: Bool
    var up: Bool
}

/// Rounds the magnitude m * 2^(e - 63) (m with its top bit set), whose exact value lies on side `c`
/// of it (the sign of the error), to the grid 2^g with g = max(e, floor) - bits + 1, in mode `rc`
/// for a value of sign `neg`.
func x87RoundBits(_ m: UInt64, _ e: Int, c: Int, bits: Int, floor: Int, rc: UInt32, neg: Bool) -> X87Rounded {
    let g = max(e, floor) - bits + 1
    let shift = g - (e - 63)                        // at least 64 - bits
    let q: UInt64, rem: UInt64, half: UInt64
    if shift >= 65 {
        q = 0; rem = m; half = .max                 // far below half of the grid step (m < 2^64)
    } else if shift == 64 {
        q = 0; rem = m; half = 1 << 63
    } else {
        q = m >> UInt64(shift); rem = m & ((1 << UInt64(shift)) - 1); half = 1 << UInt64(shift - 1)
    }
    if rem == 0 && c == 0 { return X87Rounded(q: q, g: g, inexact: false, up: false) }
    // Directed modes: whether they round the magnitude up.
    let away = rc == 2 ? !neg : (rc == 1 ? neg : false)
    if rem == 0 && c < 0 {
        // Just under q * 2^g (the error is negative): to nearest and away that value, toward zero
        // its predecessor, on the finer grid below a power of two.
        if rc == 0 || away { return X87Rounded(q: q, g: g, inexact: true, up: true) }
        if q == 1 << UInt64(bits - 1) && e > floor {
            return X87Rounded(q: (1 << UInt64(bits)) - 1, g: g - 1, inexact: true, up: false)
        }
        return X87Rounded(q: q - 1, g: g, inexact: true, up: false)
    }
    let up: Bool
    if rc == 0 {
        let side = rem > half ? 1 : (rem < half ? -1 : c)
        up = side > 0 || (side == 0 && q & 1 == 1)
    } else {
        up = away
    }
    return X87Rounded(q: up ? q + 1 : q, g: g, inexact: true, up: up)
}
