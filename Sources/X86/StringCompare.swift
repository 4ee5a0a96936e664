// SSE4.2 packed string compares: PCMPESTRM (66 0F 3A 60), PCMPESTRI (61), PCMPISTRM (62),
// PCMPISTRI (63). glibc picks its strchr/strcspn/strspn/strstr/strcasecmp variants by these when
// CPUID reports SSE4.2, so they follow the SDM to the bit, flags included.
//
// imm8: [1:0] element format (unsigned bytes, unsigned words, signed bytes, signed words);
// [3:2] aggregation (equal any, ranges, equal each, equal ordered); [5:4] polarity (positive,
// negative, masked positive, masked negative); [6] the most significant index (I forms) or a
// byte/word mask instead of a bit mask (M forms).
//
// Operand 1 (the set, ranges or needle) is the XMM register, operand 2 (the text) the XMM register
// or unaligned m128. Lengths are explicit (|EAX| and |EDX|, |RAX| and |RDX| with REX.W, saturated to
// the element count) or implicit (up to the first zero element). Elements past a length are
// "invalid" and force the comparison result as the SDM's table says: equal any and ranges never
// match them; equal each matches where both are invalid; equal ordered treats an invalid needle
// element as a match and a valid needle element against invalid text as a mismatch.
// Flags: CF = result != 0, ZF = operand 2 shorter than the element count, SF = the same for operand
// 1, OF = result bit 0, AF = PF = 0.

extension CPUCore {
    mutating func execStringCompare(_ i: IP, _ opc: UInt8) throws(Fault) {
        let imm = UInt8(truncatingIfNeeded: i.imm)
        let n = imm & 1 != 0 ? 8 : 16
        let a = xget(i.reg), b = try load128(i)
        let la: Int, lb: Int
        if opc & 2 == 0 {
            let wide = i.flags & DInst.fRexW != 0
            la = CPUCore.explicitLength(r[0], wide: wide, n: n)
            lb = CPUCore.explicitLength(r[2], wide: wide, n: n)
        } else {
            la = CPUCore.implicitLength(a, n: n)
            lb = CPUCore.implicitLength(b, n: n)
        }
        let (res, f) = CPUCore.stringCompareFlags(a, b, la: la, lb: lb, imm: imm)
        if opc & 1 != 0 {
            setReg(1, 4, UInt64(CPUCore.stringCompareIndex(res, imm: imm)))
        } else {
            xmm[0] = CPUCore.stringCompareMask(res, imm: imm)
        }
        setArith(f)
    }

    /// IntRes2 and the arithmetic flags.
    static func stringCompareFlags(_ a: V128, _ b: V128, la: Int, lb: Int, imm: UInt8) -> (UInt32, UInt64) {
        let n = imm & 1 != 0 ? 8 : 16
        let res = stringCompare(a, b, la: la, lb: lb, imm: imm)
        var f: UInt64 = 0
        if res != 0 { f |= RFlag.cf }
        if lb < n { f |= RFlag.zf }
        if la < n { f |= RFlag.sf }
        if res & 1 != 0 { f |= RFlag.of }
        return (res, f)
    }

    /// PCMPxSTRI's ECX: the lowest (or, with imm8[6], highest) set bit, or the element count.
    static func stringCompareIndex(_ res: UInt32, imm: UInt8) -> Int {
        if res == 0 { return imm & 1 != 0 ? 8 : 16 }
        return imm & 0x40 != 0 ? 31 - res.leadingZeroBitCount : res.trailingZeroBitCount
    }

    /// PCMPxSTRM's XMM0: the bits, or (imm8[6]) each bit widened to a byte or word mask.
    static func stringCompareMask(_ res: UInt32, imm: UInt8) -> V128 {
        if imm & 0x40 == 0 { return V128(UInt64(res), 0) }
        if imm & 1 == 0 {
            var o = SIMD16<UInt8>()
            for k in 0..<16 where res & (1 << UInt32(k)) != 0 { o[k] = 0xFF }
            return v128(o)
        }
        var o = SIMD8<UInt16>()
        for k in 0..<8 where res & (1 << UInt32(k)) != 0 { o[k] = 0xFFFF }
        return v128(o)
    }

    static func explicitLength(_ v: UInt64, wide: Bool, n: Int) -> Int {
        let s = wide ? Int64(bitPattern: v) : Int64(Int32(truncatingIfNeeded: v))
        return Int(min(s.magnitude, UInt64(n)))
    }

    static func implicitLength(_ v: V128, n: Int) -> Int {
        for k in 0..<n where element(v, k, words: n == 8, signed: false) == 0 { return k }
        return n
    }

    @inline(__always) static func element(_ v: V128, _ k: Int, words: Bool, signed: Bool) -> Int {
        if words {
            let w = UInt16(truncatingIfNeeded: v[k >> 2] >> UInt64((k & 3) * 16))
            return signed ? Int(Int16(bitPattern: w)) : Int(w)
        }
        let b = UInt8(truncatingIfNeeded: v[k >> 3] >> UInt64((k & 7) * 8))
        return signed ? Int(Int8(bitPattern: b)) : Int(b)
    }

    /// The elements widened once into lanes (words leave lanes 8-15 zero).
    @inline(__always) static func lanes(_ v: V128, words: Bool, signed: Bool) -> SIMD16<Int32> {
        if words {
            let w = signed ? SIMD8<Int32>(truncatingIfNeeded: asSWords(v)) : SIMD8<Int32>(truncatingIfNeeded: asWords(v))
            return SIMD16<Int32>(lowHalf: w, highHalf: SIMD8<Int32>())
        }
        return signed ? SIMD16<Int32>(truncatingIfNeeded: asSBytes(v)) : SIMD16<Int32>(truncatingIfNeeded: asBytes(v))
    }

    /// IntRes2 of the SDM: bit j describes element j of operand 2, after polarity.
    static func stringCompare(_ a: V128, _ b: V128, la: Int, lb: Int, imm: UInt8) -> UInt32 {
        let words = imm & 1 != 0, signed = imm & 2 != 0
        let n = words ? 8 : 16
        let x = lanes(a, words: words, signed: signed), y = lanes(b, words: words, signed: signed)
        let index = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        var res: UInt32 = 0
        switch (imm >> 2) & 3 {
        case 0: // equal any: text element j is one of the set's elements
            let valid = index .< Int32(la)
            for j in 0..<lb where any((x .== SIMD16(repeating: y[j])) .& valid) { res |= 1 << UInt32(j) }
        case 1: // ranges: lo <= text element j <= hi for some complete (lo, hi) pair of operand 1
            let pairs = la / 2
            for j in 0..<lb {
                let t = y[j]
                for k in 0..<pairs where x[2 * k] <= t && t <= x[2 * k + 1] {
                    res |= 1 << UInt32(j)
                    break
                }
            }
        case 2: // equal each: both valid and equal, or both invalid
            for j in 0..<n {
                if j >= la && j >= lb || j < la && j < lb && x[j] == y[j] { res |= 1 << UInt32(j) }
            }
        default: // equal ordered: the needle (operand 1) occurs in the text starting at element j
            for j in 0..<n {
                var match = true
                var k = 0
                while k < n - j && k < la {
                    if j + k >= lb || x[k] != y[j + k] {
                        match = false
                        break
                    }
                    k += 1
                }
                if match { res |= 1 << UInt32(j) }
            }
        }
        switch (imm >> 4) & 3 {
        case 1: res = ~res & ((1 << UInt32(n)) - 1)
        case 3: res ^= (1 << UInt32(lb)) - 1
        default: break
        }
        return res
    }
}
