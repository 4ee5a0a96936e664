// The x87's rounding: the control word's RC for FADD/FSUB/FMUL/FDIV (all forms), FSQRT and FST/FSTP
// to single and double precision (PC for the arithmetic and FSQRT: X87Precision.swift), and the
// status word's C1, which after an instruction that rounds tells whether the result's magnitude was
// rounded up (SDM vol. 1 8.1.3.1, 8.5.6).
// Results come from FPRounding.swift's directed rounding on Float80 (exact error from Fast2Sum or
// FMA residuals, `FPRounded.up`), so the x87 path always pays for the error term, not only while
// PE is clear as the SSE path does. Also the exceptions of single and double memory operands,
// which the conversion to Float80 would hide: DE for a denormal (FLD and the arithmetic and
// compare forms) and IE for a signaling NaN, which is loaded quiet.
//
// Not modelled: the biased results delivered to an unmasked overflow or underflow handler.

extension CPUCore {
    /// CW.RC in MXCSR.RC's encoding (0 nearest, 1 down, 2 up, 3 toward zero).
    var x87RC: UInt32 { UInt32((fpu.cw >> 10) & 3) }
    /// The unmasked x87 exceptions, in MXCSR's flag layout (which the status word shares).
    var x87Unmasked: UInt32 { UInt32(~fpu.cw & 0x3F) }

    /// C1 after an instruction that rounds: set when the result was rounded up in magnitude.
    mutating func x87SetC1(_ up: Bool) { fpu.sw = up ? fpu.sw | MX16.c1 : fpu.sw & ~MX16.c1 }

    /// ST(0) op operand for the D8/DC/DE/memory forms (op: 0 add, 1 mul, 4 sub, 5 subr, 6 div,
    /// 7 divr) rounded by CW.RC, with C1 and the exception flags (`pre`: those of loading a memory
    /// operand); nil when an unmasked exception leaves the destination.
    mutating func fpuArith(_ op: Int, _ a: Float80, _ b: Float80, pre: UInt16 = 0) -> Float80? {
        let (x, y) = op == 5 || op == 7 ? (b, a) : (a, b)
        let k: FPOp
        switch op {
        case 0: k = .add
        case 1: k = .mul
        case 4, 5: k = .sub
        default: k = .div
        }
        let r = x87Extended ? fpRoundedLane(k, x, y, rc: x87RC, ftz: false, unmasked: x87Unmasked)
            : x87PrecisionLane(k, x, y, bits: x87Precision, rc: x87RC, unmasked: x87Unmasked)
        if x87Record(UInt16(r.flags) | pre) { return nil }
        x87SetC1(r.up)
        return r.value
    }

    /// FSQRT's result rounded by CW.RC, with C1 and the flags (nil: an unmasked IE/DE).
    mutating func fpuSqrt(_ v: Float80) -> Float80? {
        let r = x87Extended ? fpRoundedLane(.sqrt, v, v, rc: x87RC, ftz: false, unmasked: x87Unmasked)
            : x87PrecisionLane(.sqrt, v, v, bits: x87Precision, rc: x87RC, unmasked: x87Unmasked)
        if x87Record(UInt16(r.flags)) { return nil }
        x87SetC1(r.up)
        return r.value
    }

    /// FST/FSTP to single or double precision: ST(0) rounded by CW.RC, with C1 and the flags (nil:
    /// an unmasked exception, nothing is stored). A denormal ST(0) raises no DE (host-confirmed).
    mutating func fpuNarrow<D: BinaryFloatingPoint>(_ v: Float80, to: D.Type) -> D? {
        let r = D(v)
        let res: FPRounded<D>
        if v.isFinite && v != 0 {
            res = fpRound(r, fpScaledConversion(v, to: D.self), rc: x87RC, ftz: false, unmasked: x87Unmasked, flags: 0)
        } else {
            res = FPRounded(value: r, flags: fpConvertFlags(v, r, unmasked: x87Unmasked))
        }
        if x87Record(UInt16(res.flags)) { return nil }
        x87SetC1(res.up)
        return res.value
    }

    /// FRNDINT: ST(0) rounded to an integer by CW.RC; IE for a signaling NaN (quieted), DE for a
    /// denormal, PE and C1 when the value changed.
    mutating func fpuRoundToInteger() {
        let v = fpu.get(0)
        if v.isNaN {
            x87SetC1(false)
            if !x87Record(v.isSignalingNaN ? MX16.ie : 0) { fpu.set(0, CPUCore.quiet(v)) }
            return
        }
        let r = fpuRound(v)
        x87SetC1(r.magnitude > v.magnitude)
        if !x87Record((v.isSubnormal ? MX16.de : 0) | (r != v ? MX16.pe : 0)) { fpu.set(0, r) }
    }

    /// A single or double memory operand as the x87 reads it, with the flags of reading it: DE
    /// for a denormal, IE for a signaling NaN (returned quiet).
    static func x87Widen<T: BinaryFloatingPoint>(_ v: T) -> (Float80, UInt16) {
        if v.isSignalingNaN { return (quiet(Float80(v)), MX16.ie) }
        return (Float80(v), v.isSubnormal ? MX16.de : 0)
    }
}
