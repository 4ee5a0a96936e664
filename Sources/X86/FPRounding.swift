// MXCSR.RC (round to nearest even, down, up, toward zero) for SSE arithmetic and conversions, and
// x86's tininess rule (after rounding, SDM vol. 1 4.9.1.5) for UE and FTZ.
//
// Swift's Float and Double arithmetic always rounds to nearest, and the host's MXCSR must stay as
// it is (the interpreter's own code and other threads use it), so a directed result is derived
// from the round-to-nearest one. Each operation is redone on operands scaled by powers of two (an
// exact step) so its result s lies near 1, and an error-free transform gives the sign of the exact
// error (v * 2^-k - s): Fast2Sum for ADD/SUB, an FMA residual for MUL/DIV/SQRT, the wider source for
// a narrowing conversion (`FPScaled`). Then (`fpRound`):
//  - the result rounded in the mode with an unbounded exponent is s or its neighbour (nextUp or
//    nextDown), times 2^k;
//  - above the largest finite value it overflows (OE, PE): infinity, or the largest finite value
//    of the sign when the mode rounds toward zero for that sign (RZ; RD for +; RU for -);
//  - below the smallest normal it is tiny: UE when inexact (or UM unmasked), FTZ returns a zero of
//    the result's sign; otherwise the IEEE subnormal result is the host's round-to-nearest one
//    moved one step by the sign of its own error, which comparing s with it (scaled) gives;
//  - an exact zero sum (x + -x, +0 + -0) is -0 when rounding down, +0 in the other modes.
// Only instructions that run with RC, DAZ or FTZ set take this path (`MXLanes.special`); the
// round-to-nearest common path pays one test. An integer-to-float conversion is inexact when the
// integer's significant bits do not fit; a directed one truncates them or steps away from zero.

/// A finite lane result before its final rounding: the exact value is (s + e) * 2^k, where s is
/// the round-to-nearest result of the scaled operation and |e| < ulp(s) has the sign `err` (0 when
/// s is exact).
struct FPScaled<T: BinaryFloatingPoint> {
    var s: T
    var k: Int
    var err: Int
}

@inline(__always) func fpSign<T: BinaryFloatingPoint>(_ x: T) -> Int { x > 0 ? 1 : (x < 0 ? -1 : 0) }

/// `op` (ADD, SUB, MUL, DIV, SQRT of `b`) of finite operands whose round-to-nearest result `r` is
/// not NaN and not a division by zero, in scaled form.
@inline(never)
func fpScaledResult<T: BinaryFloatingPoint>(_ op: FPOp, _ a: T, _ b: T, _ r: T) -> FPScaled<T> {
    switch op {
    case .add, .sub:
        let y = op == .add ? b : -b
        if r.isFinite { return FPScaled(s: r, k: 0, err: fpSign(fpSumError(a, y, r))) }
        // Overflowed: the smaller operand is at least 2^-p times the largest finite value, so
        // halving both is exact.
        let x2 = a / 2, y2 = y / 2, s = x2 + y2
        return FPScaled(s: s, k: 1, err: fpSign(fpSumError(x2, y2, s)))
    case .mul:
        if a == 0 || b == 0 { return FPScaled(s: r, k: 0, err: 0) }
        let ea = Int(a.exponent), eb = Int(b.exponent)
        let x = fpScale(a, T.Exponent(-ea)), y = fpScale(b, T.Exponent(-eb)), s = x * y
        return FPScaled(s: s, k: ea + eb, err: fpSign((-s).addingProduct(x, y)))
    case .div:
        if a == 0 { return FPScaled(s: r, k: 0, err: 0) }
        let ea = Int(a.exponent), eb = Int(b.exponent)
        let x = fpScale(a, T.Exponent(-ea)), y = fpScale(b, T.Exponent(-eb)), s = x / y
        // x - s*y is exact; x/y - s has its sign times y's.
        let res = fpSign(x.addingProduct(-s, y))
        return FPScaled(s: s, k: ea - eb, err: y < 0 ? -res : res)
    default: // .sqrt
        if b == 0 { return FPScaled(s: r, k: 0, err: 0) }
        let h = Int(b.exponent) >> 1
        let x = fpScale(b, T.Exponent(-2 * h)), s = x.squareRoot()
        return FPScaled(s: s, k: h, err: fpSign(x.addingProduct(-s, s)))
    }
}

/// The rounding error of a finite s = RN(a + b), exactly (Dekker's Fast2Sum on the operands
/// ordered by magnitude: s - x is then exact, so no step can overflow, unlike Knuth's TwoSum, whose
/// s - a does when s is near the largest finite value).
@inline(__always) func fpSumError<T: BinaryFloatingPoint>(_ a: T, _ b: T, _ s: T) -> T {
    let (x, y) = a.magnitude >= b.magnitude ? (a, b) : (b, a)
    return y - (s - x)
}

/// A finite non-zero `v` narrowed to D (CVTSD2SS), in scaled form.
@inline(never)
func fpScaledConversion<S: BinaryFloatingPoint, D: BinaryFloatingPoint>(_ v: S, to: D.Type) -> FPScaled<D> {
    let e = Int(v.exponent)
    let x = fpScale(v, S.Exponent(-e))
    let s = D(x), back = S(s)
    return FPScaled(s: s, k: e, err: x > back ? 1 : (x < back ? -1 : 0))
}

/// `v` rounded one step in MXCSR.RC's direction (`rc`: 1 down, 2 up, 3 toward zero) when the
/// exact value lies on the side `err` of it; `neg` is the exact value's sign.
@inline(__always) func fpStep<T: BinaryFloatingPoint>(_ v: T, err: Int, rc: UInt32, neg: Bool) -> T {
    switch rc {
    case 1: return err < 0 ? v.nextDown : v
    case 2: return err > 0 ? v.nextUp : v
    case 3:
        if neg { return err > 0 ? v.nextUp : v }
        return err < 0 ? v.nextDown : v
    default: return v
    }
}

/// A rounded lane: the value, its flags (MXCSR's layout, which x87's status word shares) and
/// whether the rounding increased its magnitude (the x87's C1 after an inexact result).
struct FPRounded<T: BinaryFloatingPoint> {
    var value: T
    var flags: UInt32
    var up = false
}

/// Whether `r` lies farther from zero than the exact value, `dir` being the sign of r - exact.
@inline(__always) func fpAway<T: BinaryFloatingPoint>(_ r: T, dir: Int) -> Bool { dir != 0 && r != 0 && (dir > 0) == (r > 0) }

/// The lane result in mode `rc` and its post-computation flags (ORed into `flags`), from the
/// round-to-nearest result `r` of the host and the scaled form `p` of the same value.
@inline(never)
func fpRound<T: BinaryFloatingPoint>(_ r: T, _ p: FPScaled<T>, rc: UInt32, ftz: Bool, unmasked: UInt32,
                                     flags: UInt32) -> FPRounded<T> {
    if p.s == 0 { return FPRounded(value: r, flags: flags) }
    let neg = p.s < 0
    let d = fpStep(p.s, err: p.err, rc: rc, neg: neg)
    if d.isInfinite || Int(d.exponent) + p.k > Int(T.greatestFiniteMagnitude.exponent) {
        let toInfinity = rc == 0 || rc == (neg ? 1 : 2)
        let m = toInfinity ? T.infinity : T.greatestFiniteMagnitude
        // Unmasked, PE only when inexact at the format's precision (the handler's view).
        return FPRounded(value: neg ? -m : m, flags: flags | MX.oe | (unmasked & MX.oe != 0 && p.err == 0 ? 0 : MX.pe),
                         up: toInfinity)
    }
    if Int(d.exponent) + p.k < Int(T.leastNormalMagnitude.exponent) {
        // Unmasked UE: tininess alone raises it (the result is not written), PE as for OE.
        if unmasked & MX.ue != 0 { return FPRounded(value: r, flags: flags | MX.ue | (p.err != 0 ? MX.pe : 0)) }
        // Tiny after rounding. The subnormal result: r, one step away when the mode says so; the
        // sign of r's error follows from s against r scaled (on a coarser grid than s's ulp).
        let rs = fpScale(r, T.Exponent(-p.k))
        let c = p.s > rs ? 1 : (p.s < rs ? -1 : p.err)
        if c == 0 {
            if ftz { return FPRounded(value: T(signOf: r, magnitudeOf: 0), flags: flags | MX.ue | MX.pe) }
            return FPRounded(value: r, flags: flags)
        }
        if ftz { return FPRounded(value: T(signOf: p.s, magnitudeOf: 0), flags: flags | MX.ue | MX.pe) }
        let t = fpStep(r, err: c, rc: rc, neg: neg)
        return FPRounded(value: t, flags: flags | MX.ue | MX.pe, up: fpAway(t, dir: t > r ? 1 : (t < r ? -1 : -c)))
    }
    if p.err == 0 { return FPRounded(value: r, flags: flags) }
    return FPRounded(value: fpScale(d, T.Exponent(p.k)), flags: flags | MX.pe,
                     up: fpAway(d, dir: d > p.s ? 1 : (d < p.s ? -1 : -p.err)))
}

/// One lane of ADD, SUB, MUL, DIV or SQRT rounded in mode `rc`, with FTZ (SSE; DAZ already applied
/// to the operands): the result, all its flags, and the rounding direction.
@inline(never)
func fpRoundedLane<T: BinaryFloatingPoint>(_ op: FPOp, _ x: T, _ y: T, rc: UInt32, ftz: Bool,
                                           unmasked: UInt32) -> FPRounded<T> {
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
        return FPRounded(value: rc == 1 && minus ? -T.zero : r, flags: f)
    }
    return fpRound(r, fpScaledResult(op, x, y, r), rc: rc, ftz: ftz, unmasked: unmasked, flags: f)
}

/// Whether a round-to-nearest result of magnitude 2^emin that is inexact came from a value tiny
/// after rounding (below 2^emin at the format's precision with an unbounded exponent): UE.
func fpTinyAfterRounding<T: BinaryFloatingPoint>(_ p: FPScaled<T>) -> Bool {
    Int(p.s.exponent) + p.k < Int(T.leastNormalMagnitude.exponent)
}

/// A signed integer converted to T in mode `rc`, and whether it was inexact (PE): exact when its
/// significant bits fit T's significand.
@inline(__always)
func fpFromInt<T: BinaryFloatingPoint>(_ v: Int64, rc: UInt32) -> (T, Bool) {
    let m = v.magnitude
    if 64 - m.leadingZeroBitCount - m.trailingZeroBitCount <= T.significandBitCount + 1 { return (T(v), false) }
    return (rc == 0 ? T(v) : fpFromIntDirected(v, rc: rc), true)
}

/// An inexact integer conversion in a directed mode: the magnitude truncated to T's precision
/// (exact), or the next value away from zero.
@inline(never)
func fpFromIntDirected<T: BinaryFloatingPoint>(_ v: Int64, rc: UInt32) -> T {
    let m = v.magnitude
    let shift = UInt64(64 - m.leadingZeroBitCount - (T.significandBitCount + 1))
    let t = T((m >> shift) << shift)
    let truncate = rc == 3 || (rc == 1) == (v > 0)
    let mag = truncate ? t : t.nextUp
    return v < 0 ? -mag : mag
}
