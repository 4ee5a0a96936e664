// Floating-point exception flags: MXCSR for SSE arithmetic (including ADDSUB and the horizontal
// adds), compares and conversions (this file holds those SSE executors), and the x87 status word
// for the common x87 operations (FPU.swift and X87Rounding.swift call the same lane functions and
// `x87Record`).
//
// Results come from the host (x86-64: the same IEEE operations); the flags are derived in software
// per lane, with the SDM's rules and precedence:
//  - IE: an SNaN operand; any NaN for signaling compares, COMIS and MIN/MAX; invalid operations
//    (inf-inf, 0*inf, 0/0, inf/inf, sqrt of a negative); NaN or out-of-range float->int conversions.
//  - ZE: finite non-zero / 0.   - DE: a subnormal operand (ORed with the post-computation flags).
//  - OE (+PE): a finite result overflowed. With OE unmasked, PE only when the result is inexact at
//    the format's precision (what the handler would see), host-confirmed; the same for UE.
//  - UE: a tiny result that is also inexact (any tiny non-zero result when UE is unmasked).
//  - PE: inexact, found with error-free transforms (Fast2Sum; an FMA residual for MUL/DIV/SQRT,
//    on operands scaled near 1 when it could underflow; exact double arithmetic for single).
// Work is skipped when every flag the operation could raise is already set and masked (the flags
// are sticky), so steady-state code that has already set PE pays one test per instruction.
// Unmasked: pre-computation exceptions (IE/ZE/DE) abort before any result is written; otherwise
// the post-computation ones do; MXCSR gets the flags and #XM (CR4.OSXMMEXCPT) or #UD is raised.
//
// MXCSR.DAZ and FTZ (SSE only; `MXLanes`, `mxSource`): DAZ reads denormal sources as zeros of
// their sign before anything else, so they raise no DE, in arithmetic, compares, COMIS, MIN/MAX
// (which return the flushed operand), conversions from floating point (to double, single or
// integer: a denormal converts as an exact zero) and ROUND*; moves, logic, shuffles and integer
// sources never look at values. FTZ with UM masked replaces a tiny result (exact or not) by a zero
// of its sign and sets UE and PE (ADD/SUB/MUL/DIV, the SSE3 adds, CVTPD2PS/CVTSD2SS); with UM
// unmasked it does nothing and the underflow is raised. Neither costs the common path more than
// one test. Tininess is judged after rounding (to the format's precision with an unbounded
// exponent), as the hardware does; a result rounded up to the smallest normal number can be tiny.
//
// MXCSR.RC: conversions to integer and ROUND* round with `FloatingPointRoundingRule`s; arithmetic,
// CVTSD2SS/CVTPD2PS and integer-to-float conversions take the directed rounding of FPRounding.swift
// whenever RC is not round-to-nearest (the same slower path as DAZ and FTZ).

enum MX {
    static let ie: UInt32 = 1, de: UInt32 = 2, ze: UInt32 = 4, oe: UInt32 = 8, ue: UInt32 = 16, pe: UInt32 = 32
    static let pre: UInt32 = ie | de | ze
    /// Controls: DAZ (denormals are zeros), UM (underflow mask), RC (rounding), FTZ (flush to zero).
    static let daz: UInt32 = 0x40, um: UInt32 = 0x800, rc: UInt32 = 0x6000, ftz: UInt32 = 0x8000
}

enum FPOp {
    case add, sub, mul, div, sqrt, min, max, cmpQuiet, cmpSignaling

    /// One lane's IEEE result (SQRT: of `b`). MIN/MAX return the second operand unless the first is
    /// smaller (larger): for a NaN, and for two zeros of either sign.
    @inline(__always) func apply<T: BinaryFloatingPoint>(_ a: T, _ b: T) -> T {
        switch self {
        case .add: return a + b
        case .sub: return a - b
        case .mul: return a * b
        case .div: return a / b
        case .sqrt: return b.squareRoot()
        case .min: return a < b ? a : b
        case .max: return a > b ? a : b
        default: return a
        }
    }
}

/// The per-instruction view of MXCSR that SSE lane arithmetic needs, and the flags its lanes raise.
struct MXLanes {
    /// Flags still worth computing (`CPUCore.mxWanted`).
    let want: UInt32
    let mxcsr: UInt32
    /// DAZ, FTZ or a directed rounding mode: the lanes take the slower path.
    let special: Bool
    var flags: UInt32 = 0

    @inline(__always) init(mxcsr: UInt32, want: UInt32) {
        self.want = want
        self.mxcsr = mxcsr
        special = mxcsr & (MX.daz | MX.rc) != 0 || mxcsr & (MX.ftz | MX.um) == MX.ftz | MX.um
    }

    /// The unmasked exceptions (MXCSR's flag layout): UE and OE change which flags a tiny or
    /// overflowing result raises.
    var unmasked: UInt32 { ~(mxcsr >> 7) & 0x3F }
    /// MXCSR.DAZ: denormal sources read as zeros of their sign (and so raise no DE).
    var daz: Bool { mxcsr & MX.daz != 0 }
    /// MXCSR.FTZ with UM masked (FTZ is ignored when UM is clear): a tiny result becomes a zero of
    /// its sign, with UE and PE.
    var ftz: Bool { mxcsr & (MX.ftz | MX.um) == MX.ftz | MX.um }
    /// MXCSR.RC: 0 nearest even, 1 down, 2 up, 3 toward zero.
    var rc: UInt32 { (mxcsr >> 13) & 3 }

    /// `a op b` for one lane, ORing its exception flags into `flags`.
    @inline(__always) mutating func lane<T: BinaryFloatingPoint>(_ op: FPOp, _ a: T, _ b: T) -> T {
        if special { return slowLane(op, a, b) }
        let r = op.apply(a, b)
        if want != 0 { flags |= fpLaneFlags(op, a, b, r, unmasked: unmasked, want: want) }
        return r
    }

    /// `lane` under DAZ, FTZ and/or a directed rounding mode. MIN/MAX return the (flushed)
    /// operand they picked: their result is never a new tiny value, nor rounded.
    @inline(never)
    mutating func slowLane<T: BinaryFloatingPoint>(_ op: FPOp, _ a: T, _ b: T) -> T {
        let x = daz ? dazFlush(a) : a, y = daz ? dazFlush(b) : b
        switch op {
        case .add, .sub, .mul, .div, .sqrt:
            let r = fpRoundedLane(op, x, y, rc: rc, ftz: ftz, unmasked: unmasked)
            flags |= r.flags
            return r.value
        default:
            let r = op.apply(x, y)
            if want != 0 { flags |= fpLaneFlags(op, x, y, r, unmasked: unmasked, want: want) }
            return r
        }
    }

    /// A source operand as DAZ reads it.
    @inline(__always) func source<T: BinaryFloatingPoint>(_ v: T) -> T { daz ? dazFlush(v) : v }

    /// A floating-point format conversion (CVTSD2SS & co.) of one lane, with its flags.
    @inline(__always) mutating func convert<S: BinaryFloatingPoint, D: BinaryFloatingPoint>(_ v: S, to: D.Type) -> D {
        if special { return slowConvert(v, to: D.self) }
        let r = D(v)
        flags |= fpConvertFlags(v, r, unmasked: unmasked)
        return r
    }

    /// `convert` under DAZ, FTZ and/or a directed rounding mode.
    @inline(never)
    mutating func slowConvert<S: BinaryFloatingPoint, D: BinaryFloatingPoint>(_ v: S, to: D.Type) -> D {
        let x = source(v)
        let r = D(x)
        if D.significandBitCount < S.significandBitCount && x.isFinite && x != 0 {
            let res = fpRound(r, fpScaledConversion(x, to: D.self), rc: rc, ftz: ftz, unmasked: unmasked,
                              flags: x.isSubnormal ? MX.de : 0)
            flags |= res.flags
            return res.value
        }
        flags |= fpConvertFlags(x, r, unmasked: unmasked)
        return r
    }
}

/// DAZ's view of a value: a denormal becomes a zero of its sign.
@inline(__always) func dazFlush<T: BinaryFloatingPoint>(_ v: T) -> T { v.isSubnormal ? T(signOf: v, magnitudeOf: 0) : v }

/// The exception flags of one lane of `r = a op b` (for SQRT, `b` is the operand).
@inline(__always)
func fpLaneFlags<T: BinaryFloatingPoint>(_ op: FPOp, _ a: T, _ b: T, _ r: T, unmasked: UInt32,
                                         want: UInt32 = 0x3F) -> UInt32 {
    let unary = op == .sqrt
    if (!unary && a.isNaN) || b.isNaN {
        if op == .min || op == .max || op == .cmpSignaling { return MX.ie }
        return (!unary && a.isSignalingNaN) || b.isSignalingNaN ? MX.ie : 0
    }
    var f: UInt32 = (!unary && a.isSubnormal) || b.isSubnormal ? MX.de : 0
    switch op {
    case .min, .max, .cmpQuiet, .cmpSignaling: return f
    default: break
    }
    if r.isNaN { return MX.ie }
    if op == .div && b == 0 { return a.isInfinite ? f : MX.ze }
    if r.isInfinite {
        if (unary || a.isFinite) && b.isFinite { f |= fpOverflowFlags(op, a, b, r, unmasked: unmasked) }
        return f
    }
    let nearTiny = r.magnitude <= T.leastNormalMagnitude
    // The exactness test (the costly part) only when PE, or UE of a tiny result, is still wanted.
    guard want & MX.pe != 0 || (nearTiny && want & MX.ue != 0) else { return f }
    if nearTiny { return f | fpTinyFlags(op, a, b, r, unmasked: unmasked) }
    return fpExact(op, a, b, r) ? f : f | MX.pe
}

/// OE and PE of a finite `a op b` that overflowed. With OE unmasked, PE only when the result is
/// inexact at the format's precision (the exception handler's view), host-confirmed.
@inline(never)
func fpOverflowFlags<T: BinaryFloatingPoint>(_ op: FPOp, _ a: T, _ b: T, _ r: T, unmasked: UInt32) -> UInt32 {
    MX.oe | (unmasked & MX.oe == 0 || fpScaledResult(op, a, b, r).err != 0 ? MX.pe : 0)
}

/// UE and PE of `r = a op b` at most 2^emin in magnitude. Tiny means tiny after rounding: below
/// 2^emin, or rounded up to it from a value that rounds below it at the format's precision with an
/// unbounded exponent. Masked, UE needs an inexact result; unmasked, any non-zero tiny value
/// raises it, with PE only when inexact at the format's precision (host-confirmed).
@inline(never)
func fpTinyFlags<T: BinaryFloatingPoint>(_ op: FPOp, _ a: T, _ b: T, _ r: T, unmasked: UInt32) -> UInt32 {
    if unmasked & MX.ue != 0 {
        let p = fpScaledResult(op, a, b, r)
        if p.s != 0 && fpTinyAfterRounding(p) { return MX.ue | (p.err != 0 ? MX.pe : 0) }
    }
    if fpExact(op, a, b, r) { return 0 }
    let tiny = r.magnitude < T.leastNormalMagnitude || fpTinyAfterRounding(fpScaledResult(op, a, b, r))
    return tiny ? MX.ue | MX.pe : MX.pe
}

/// Whether `r` is the exact result of `a op b` (all finite, r finite).
@inline(__always)
func fpExact<T: BinaryFloatingPoint>(_ op: FPOp, _ a: T, _ b: T, _ r: T) -> Bool {
    switch op {
    case .add, .sub:
        return fpSumError(a, op == .add ? b : -b, r) == 0
    case .mul:
        if a == 0 || b == 0 { return true }
        if r == 0 { return false }
        if T.self == Float.self { return Double(a) * Double(b) == Double(r) }
        if r.exponent < fpTinyResidual(T.self) {
            let ea = a.exponent, eb = b.exponent
            return (-fpScale(r, -(ea + eb))).addingProduct(fpScale(a, -ea), fpScale(b, -eb)) == 0
        }
        return (-r).addingProduct(a, b) == 0
    case .div:
        if a == 0 || b.isInfinite { return true }
        if r == 0 { return false }
        if T.self == Float.self { return Double(r) * Double(b) == Double(a) }
        if r.exponent < fpTinyResidual(T.self) || a.exponent < fpTinyResidual(T.self) {
            let er = r.exponent, eb = b.exponent
            return fpScale(a, -(er + eb)).addingProduct(-fpScale(r, -er), fpScale(b, -eb)) == 0
        }
        return a.addingProduct(-r, b) == 0
    case .sqrt:
        if b == 0 || b.isInfinite { return true }
        if T.self == Float.self { return Double(r) * Double(r) == Double(b) }
        if b.exponent < fpTinyResidual(T.self) {
            let er = r.exponent, rs = fpScale(r, -er)
            return fpScale(b, -2 * er).addingProduct(-rs, rs) == 0
        }
        return b.addingProduct(-r, r) == 0
    default:
        return true
    }
}

/// Below this exponent of the result (or dividend, radicand) an FMA residual can fall under the
/// smallest subnormal and round to zero; fpExact then works on operands scaled near 1 (exactly:
/// by powers of two, into the normal range).
@inline(__always) func fpTinyResidual<T: BinaryFloatingPoint>(_: T.Type) -> T.Exponent {
    T.leastNormalMagnitude.exponent + T.Exponent(T.significandBitCount) + 2
}
@inline(__always) func fpScale<T: BinaryFloatingPoint>(_ x: T, _ e: T.Exponent) -> T {
    T(sign: .plus, exponent: e, significand: x)
}

/// Flags of a floating-point format conversion (CVTSD2SS & co.) from `v` to `r`.
@inline(__always)
func fpConvertFlags<S: BinaryFloatingPoint, D: BinaryFloatingPoint>(_ v: S, _ r: D, unmasked: UInt32) -> UInt32 {
    if v.isNaN { return v.isSignalingNaN ? MX.ie : 0 }
    var f: UInt32 = v.isSubnormal ? MX.de : 0
    if v.isInfinite || v == 0 { return f }
    if r.isInfinite || r.magnitude <= D.leastNormalMagnitude { return f | fpConvertEdgeFlags(v, r, unmasked: unmasked) }
    return S(r) != v ? f | MX.pe : f
}

/// fpConvertFlags for an overflowed result or one at most 2^emin in magnitude: as fpOverflowFlags
/// and fpTinyFlags.
@inline(never)
func fpConvertEdgeFlags<S: BinaryFloatingPoint, D: BinaryFloatingPoint>(_ v: S, _ r: D, unmasked: UInt32) -> UInt32 {
    let p = fpScaledConversion(v, to: D.self)
    if r.isInfinite { return MX.oe | (unmasked & MX.oe == 0 || p.err != 0 ? MX.pe : 0) }
    if unmasked & MX.ue != 0 && fpTinyAfterRounding(p) { return MX.ue | (p.err != 0 ? MX.pe : 0) }
    if S(r) == v { return 0 }
    return r.magnitude < D.leastNormalMagnitude || fpTinyAfterRounding(p) ? MX.ue | MX.pe : MX.pe
}

extension CPUCore {
    /// Flags an SSE operation still has to look for: those not yet set, and every unmasked one.
    @inline(__always) var mxWanted: UInt32 { mutating get { (~mxcsr | ~(mxcsr >> 7)) & 0x3F } }
    @inline(__always) var mxLanes: MXLanes { mutating get { MXLanes(mxcsr: mxcsr, want: mxWanted) } }
    /// A source operand as MXCSR.DAZ has the instruction read it.
    @inline(__always) mutating func mxSource<T: BinaryFloatingPoint>(_ v: T) -> T { mxcsr & MX.daz != 0 ? dazFlush(v) : v }

    /// Records the flags of an instruction before its results are written; raises #XM/#UD when one
    /// is unmasked (pre-computation exceptions first, then post-computation ones).
    mutating func mxCommit(_ f: UInt32) throws(Fault) {
        if f == 0 { return }
        let unmasked = ~(mxcsr >> 7) & 0x3F
        if f & MX.pre & unmasked != 0 {
            mxcsr |= f & MX.pre
            throw cr4 & 0x400 != 0 ? Fault.xm : Fault.ud
        }
        mxcsr |= f
        if f & unmasked != 0 { throw cr4 & 0x400 != 0 ? Fault.xm : Fault.ud }
    }

    mutating func sseFloatArith(_ i: IP, _ opc: UInt8, _ pfx: UInt16) throws(Fault) {
        let d = i.reg
        let op: FPOp
        switch opc {
        case 0x51: op = .sqrt
        case 0x58: op = .add
        case 0x59: op = .mul
        case 0x5C: op = .sub
        case 0x5D: op = .min
        case 0x5E: op = .div
        default: op = .max
        }
        var m = mxLanes
        switch pfx {
        case 0:
            let a = asFloats(xget(d)), b = asFloats(try load128(i))
            var r = SIMD4<Float>()
            for k in 0..<4 { r[k] = m.lane(op, a[k], b[k]) }
            try mxCommit(m.flags)
            xset(d, v128(r))
        case 1:
            let a = asDoubles(xget(d)), b = asDoubles(try load128(i))
            var r = SIMD2<Double>()
            for k in 0..<2 { r[k] = m.lane(op, a[k], b[k]) }
            try mxCommit(m.flags)
            xset(d, v128(r))
        case 2:
            var a = asFloats(xget(d))
            let r = m.lane(op, a[0], Float(bitPattern: try load32(i)))
            try mxCommit(m.flags)
            a[0] = r
            xset(d, v128(a))
        default:
            var a = asDoubles(xget(d))
            let r = m.lane(op, a[0], Double(bitPattern: try load64(i)))
            try mxCommit(m.flags)
            a[0] = r
            xset(d, v128(a))
        }
    }

    /// ADDSUBPD/ADDSUBPS: even lanes subtract, odd lanes add.
    mutating func sseAddSub(_ i: IP, _ pfx: UInt16) throws(Fault) {
        let d = i.reg
        let a = xget(d), b = try load128(i)
        var m = mxLanes
        if pfx == 1 {
            let x = asDoubles(a), y = asDoubles(b)
            let r = SIMD2<Double>(m.lane(.sub, x[0], y[0]), m.lane(.add, x[1], y[1]))
            try mxCommit(m.flags)
            xset(d, v128(r))
        } else if pfx == 3 {
            let x = asFloats(a), y = asFloats(b)
            let r = SIMD4<Float>(m.lane(.sub, x[0], y[0]), m.lane(.add, x[1], y[1]),
                                 m.lane(.sub, x[2], y[2]), m.lane(.add, x[3], y[3]))
            try mxCommit(m.flags)
            xset(d, v128(r))
        } else { throw Fault.ud }
    }

    /// HADDPD/HADDPS/HSUBPD/HSUBPS: pairs within the destination, then within the source.
    mutating func sseHorizontal(_ i: IP, _ pfx: UInt16, sub: Bool) throws(Fault) {
        let d = i.reg
        let a = xget(d), b = try load128(i)
        let op: FPOp = sub ? .sub : .add
        var m = mxLanes
        if pfx == 1 {
            let x = asDoubles(a), y = asDoubles(b)
            let r = SIMD2<Double>(m.lane(op, x[0], x[1]), m.lane(op, y[0], y[1]))
            try mxCommit(m.flags)
            xset(d, v128(r))
        } else if pfx == 3 {
            let x = asFloats(a), y = asFloats(b)
            let r = SIMD4<Float>(m.lane(op, x[0], x[1]), m.lane(op, x[2], x[3]),
                                 m.lane(op, y[0], y[1]), m.lane(op, y[2], y[3]))
            try mxCommit(m.flags)
            xset(d, v128(r))
        } else { throw Fault.ud }
    }

    mutating func sseCompare(_ i: IP, _ pfx: UInt16) throws(Fault) {
        let d = i.reg
        let p = Int(i.imm & 7)
        let op: FPOp = (p == 1 || p == 2 || p == 5 || p == 6) ? .cmpSignaling : .cmpQuiet
        let want = mxWanted, daz = mxcsr & MX.daz != 0
        var fl: UInt32 = 0
        func c<T: BinaryFloatingPoint>(_ a: T, _ b: T) -> Bool {
            let a = daz ? dazFlush(a) : a, b = daz ? dazFlush(b) : b
            if want != 0 { fl |= fpLaneFlags(op, a, b, a, unmasked: 0) }
            switch p {
            case 0: return a == b
            case 1: return a < b
            case 2: return a <= b
            case 3: return a.isNaN || b.isNaN
            case 4: return !(a == b)
            case 5: return !(a < b)
            case 6: return !(a <= b)
            default: return !(a.isNaN || b.isNaN)
            }
        }
        switch pfx {
        case 0:
            let a = asFloats(xget(d)), b = asFloats(try load128(i))
            var r = SIMD4<UInt32>()
            for k in 0..<4 { r[k] = c(a[k], b[k]) ? .max : 0 }
            try mxCommit(fl)
            xset(d, v128(r))
        case 1:
            let a = asDoubles(xget(d)), b = asDoubles(try load128(i))
            let r = V128(c(a[0], b[0]) ? .max : 0, c(a[1], b[1]) ? .max : 0)
            try mxCommit(fl)
            xset(d, r)
        case 2:
            var a = asDwords(xget(d))
            a[0] = c(Float(bitPattern: a[0]), Float(bitPattern: try load32(i))) ? .max : 0
            try mxCommit(fl)
            xset(d, v128(a))
        default:
            var a = xget(d)
            a[0] = c(Double(bitPattern: a[0]), Double(bitPattern: try load64(i))) ? .max : 0
            try mxCommit(fl)
            xset(d, a)
        }
    }

    /// COMISS/COMISD (signaling: IE on any NaN) and UCOMISS/UCOMISD (IE on SNaN only).
    mutating func sseComis(_ i: IP, _ pfx: UInt16, signaling: Bool) throws(Fault) {
        let d = i.reg
        let op: FPOp = signaling ? .cmpSignaling : .cmpQuiet
        func flagsFor<T: BinaryFloatingPoint>(_ a: T, _ b: T) -> UInt64 {
            a.isNaN || b.isNaN ? RFlag.zf | RFlag.pf | RFlag.cf : (a < b ? RFlag.cf : (a == b ? RFlag.zf : 0))
        }
        if pfx == 1 {
            let a = mxSource(asDoubles(xget(d))[0]), b = mxSource(Double(bitPattern: try load64(i)))
            if mxWanted != 0 { try mxCommit(fpLaneFlags(op, a, b, a, unmasked: 0)) }
            setArith(flagsFor(a, b))
        } else {
            let a = mxSource(asFloats(xget(d))[0]), b = mxSource(Float(bitPattern: try load32(i)))
            if mxWanted != 0 { try mxCommit(fpLaneFlags(op, a, b, a, unmasked: 0)) }
            setArith(flagsFor(a, b))
        }
    }

    /// Float to integer with SSE's rounding (MXCSR.RC) or truncation; NaN and out of range give the
    /// "integer indefinite" value and IE, an inexact conversion PE.
    mutating func sseToInt<T: BinaryFloatingPoint>(_ v: T, bits: Int, truncate: Bool, flags fl: inout UInt32) -> UInt64 {
        let rule: FloatingPointRoundingRule
        if truncate { rule = .towardZero } else {
            switch (mxcsr >> 13) & 3 {
            case 0: rule = .toNearestOrEven
            case 1: rule = .down
            case 2: rule = .up
            default: rule = .towardZero
            }
        }
        let v = mxSource(v)
        let r = v.rounded(rule)
        let lim = T(sign: .plus, exponent: T.Exponent(bits - 1), significand: 1)
        if r.isNaN || r >= lim || r < -lim {
            fl |= MX.ie
            return UInt64(1) << UInt64(bits - 1)
        }
        if r != v { fl |= MX.pe }
        return UInt64(bitPattern: Int64(r)) & sizeMask(bits / 8)
    }

    mutating func sseConvertToInt(_ i: IP, _ pfx: UInt16, truncate: Bool) throws(Fault) {
        let bits = i.size * 8
        var fl: UInt32 = 0
        let v: UInt64
        switch pfx {
        case 2: v = sseToInt(Float(bitPattern: try load32(i)), bits: bits, truncate: truncate, flags: &fl)
        case 3: v = sseToInt(Double(bitPattern: try load64(i)), bits: bits, truncate: truncate, flags: &fl)
        default:
            // CVT(T)PS2PI mm, xmm/m64 and CVT(T)PD2PI mm, xmm/m128: two lanes into an MMX register.
            let lo: UInt64, hi: UInt64
            if pfx == 0 {
                let src = i.isMem ? try load64(i) : xget(i.rm)[0]
                lo = sseToInt(Float(bitPattern: UInt32(truncatingIfNeeded: src)), bits: 32, truncate: truncate, flags: &fl)
                hi = sseToInt(Float(bitPattern: UInt32(truncatingIfNeeded: src >> 32)), bits: 32, truncate: truncate, flags: &fl)
            } else {
                let src = try load128(i)
                lo = sseToInt(Double(bitPattern: src[0]), bits: 32, truncate: truncate, flags: &fl)
                hi = sseToInt(Double(bitPattern: src[1]), bits: 32, truncate: truncate, flags: &fl)
            }
            try mxCommit(fl)
            fpu.setMMX(Int(i.reg & 7), (hi << 32) | (lo & 0xFFFF_FFFF))
            return
        }
        try mxCommit(fl)
        setReg(i.reg, i.size, v)
    }

    mutating func sseConvertFromInt(_ i: IP, _ pfx: UInt16) throws(Fault) {
        let d = i.reg
        switch pfx {
        case 2, 3:
            let raw = try readRm(i, i.size)
            let v = i.size == 8 ? Int64(bitPattern: raw) : Int64(Int32(truncatingIfNeeded: raw))
            var x = xget(d)
            let rc = (mxcsr >> 13) & 3
            if pfx == 2 {
                let (f, inexact): (Float, Bool) = fpFromInt(v, rc: rc)
                try mxCommit(inexact ? MX.pe : 0)
                x[0] = (x[0] & ~0xFFFF_FFFF) | UInt64(f.bitPattern)
            } else {
                let (f, inexact): (Double, Bool) = fpFromInt(v, rc: rc)
                try mxCommit(inexact ? MX.pe : 0)
                x[0] = f.bitPattern
            }
            xset(d, x)
        default:
            // CVTPI2PS / CVTPI2PD xmm, mm/m64: two signed dwords.
            let src = i.isMem ? try load64(i) : fpu.mmx(Int(i.rm & 7))
            let a = Int32(truncatingIfNeeded: src), b = Int32(truncatingIfNeeded: src >> 32)
            if pfx == 0 {
                let rc = (mxcsr >> 13) & 3
                let (fa, ia): (Float, Bool) = fpFromInt(Int64(a), rc: rc), (fb, ib): (Float, Bool) = fpFromInt(Int64(b), rc: rc)
                try mxCommit(ia || ib ? MX.pe : 0)
                var x = xget(d)
                x[0] = UInt64(fa.bitPattern) | UInt64(fb.bitPattern) << 32
                xset(d, x)
            } else {
                xset(d, V128(Double(a).bitPattern, Double(b).bitPattern))
            }
        }
    }

    mutating func sseConvertVector(_ i: IP, _ opc: UInt8, _ pfx: UInt16) throws(Fault) {
        let d = i.reg
        var fl: UInt32 = 0
        switch (opc, pfx) {
        case (0x5A, 0): // CVTPS2PD
            let f = asFloats(V128(try load64(i), 0))
            var m = mxLanes
            let r = SIMD2<Double>(m.convert(f[0], to: Double.self), m.convert(f[1], to: Double.self))
            try mxCommit(m.flags)
            xset(d, v128(r))
        case (0x5A, 1): // CVTPD2PS
            let a = asDoubles(try load128(i))
            var m = mxLanes
            let r = SIMD4<Float>(m.convert(a[0], to: Float.self), m.convert(a[1], to: Float.self), 0, 0)
            try mxCommit(m.flags)
            xset(d, v128(r))
        case (0x5A, 2): // CVTSS2SD
            var m = mxLanes
            let r = m.convert(Float(bitPattern: try load32(i)), to: Double.self)
            try mxCommit(m.flags)
            var x = xget(d); x[0] = r.bitPattern; xset(d, x)
        case (0x5A, 3): // CVTSD2SS
            var m = mxLanes
            let r = m.convert(Double(bitPattern: try load64(i)), to: Float.self)
            try mxCommit(m.flags)
            var x = xget(d)
            x[0] = (x[0] & ~0xFFFF_FFFF) | UInt64(r.bitPattern)
            xset(d, x)
        case (0x5B, 0): // CVTDQ2PS
            let a = asSDwords(try load128(i))
            let rc = (mxcsr >> 13) & 3
            var r = SIMD4<Float>()
            for k in 0..<4 {
                let (f, inexact): (Float, Bool) = fpFromInt(Int64(a[k]), rc: rc)
                r[k] = f
                if inexact { fl |= MX.pe }
            }
            try mxCommit(fl)
            xset(d, v128(r))
        case (0x5B, 1), (0x5B, 2): // CVTPS2DQ / CVTTPS2DQ
            let a = asFloats(try load128(i))
            var r = SIMD4<UInt32>()
            for k in 0..<4 { r[k] = UInt32(truncatingIfNeeded: sseToInt(a[k], bits: 32, truncate: pfx == 2, flags: &fl)) }
            try mxCommit(fl)
            xset(d, v128(r))
        case (0xE6, 2): // CVTDQ2PD
            let a = asSDwords(V128(try load64(i), 0))
            xset(d, v128(SIMD2<Double>(Double(a[0]), Double(a[1]))))
        case (0xE6, 1), (0xE6, 3): // CVTTPD2DQ / CVTPD2DQ
            let a = asDoubles(try load128(i))
            let lo = sseToInt(a[0], bits: 32, truncate: pfx == 1, flags: &fl)
            let hi = sseToInt(a[1], bits: 32, truncate: pfx == 1, flags: &fl)
            try mxCommit(fl)
            xset(d, V128(lo | hi << 32, 0))
        default: throw Fault.ud
        }
    }
}

/// x87 status-word bits.
enum MX16 {
    static let ie: UInt16 = 1, de: UInt16 = 2, ze: UInt16 = 4, oe: UInt16 = 8, ue: UInt16 = 0x10, pe: UInt16 = 0x20
    static let sf: UInt16 = 0x40, es: UInt16 = 0x80, c1: UInt16 = 0x200, busy: UInt16 = 0x8000
}

extension CPUCore {
    /// The x87 "real indefinite" QNaN (the masked response to an invalid operation).
    var x87Indefinite: Float80 { Float80(sign: .minus, exponentBitPattern: 0x7FFF, significandBitPattern: 0x4000_0000_0000_0000) }

    /// Records x87 exception flags (same bit layout as MXCSR's low six). An unmasked one sets ES and
    /// B so the next waiting x87 instruction raises #MF. Returns true when an unmasked IE/DE/ZE
    /// means the destination is not written.
    mutating func x87Record(_ f: UInt16) -> Bool {
        if f == 0 { return false }
        let unmasked = f & ~fpu.cw & 0x3F
        if unmasked == 0 { fpu.sw |= f; return false }
        // An unmasked pre-computation exception stops the operation: its post-computation flags
        // are not raised (host-confirmed for DE of a memory operand, whose sum would be inexact).
        let stop = unmasked & (MX16.ie | MX16.de | MX16.ze) != 0
        fpu.sw |= (stop ? f & (MX16.ie | MX16.de | MX16.ze | MX16.sf) : f) | MX16.es | MX16.busy
        return stop
    }

    /// The control instructions that do not check for a pending x87 exception: FNINIT, FNCLEX,
    /// FNSTSW, FNSTCW, FNSTENV, FNSAVE.
    func x87NoWait(_ esc: Int, _ modrm: UInt8, isMem: Bool) -> Bool {
        let sub = (modrm >> 3) & 7
        if isMem { return (esc == 1 && (sub == 6 || sub == 7)) || (esc == 5 && (sub == 6 || sub == 7)) }
        return (esc == 3 && (modrm == 0xE2 || modrm == 0xE3)) || (esc == 7 && modrm == 0xE0)
    }
}
