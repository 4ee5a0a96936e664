// SSE, SSE2 and SSE3 (what qemu64 advertises, and what Linux and glibc's baseline x86-64 code
// use), plus MMX moves. SSSE3 and SSE4 (the 0F 38 / 0F 3A maps) live in SSSE3.swift, SSE4.swift
// and StringCompare.swift. Registers are 16-byte SIMD2<UInt64> values; lane arithmetic goes through
// Swift SIMD types, which compile to the host's vector instructions.
//
// `aux` = map << 12 | prefix << 8 | opcode (prefix: 0 none, 1 = 66, 2 = F3, 3 = F2).

typealias V128 = SIMD2<UInt64>

@inline(__always) func asBytes(_ v: V128) -> SIMD16<UInt8> { unsafeBitCast(v, to: SIMD16<UInt8>.self) }
@inline(__always) func asWords(_ v: V128) -> SIMD8<UInt16> { unsafeBitCast(v, to: SIMD8<UInt16>.self) }
@inline(__always) func asDwords(_ v: V128) -> SIMD4<UInt32> { unsafeBitCast(v, to: SIMD4<UInt32>.self) }
@inline(__always) func asSBytes(_ v: V128) -> SIMD16<Int8> { unsafeBitCast(v, to: SIMD16<Int8>.self) }
@inline(__always) func asSWords(_ v: V128) -> SIMD8<Int16> { unsafeBitCast(v, to: SIMD8<Int16>.self) }
@inline(__always) func asSDwords(_ v: V128) -> SIMD4<Int32> { unsafeBitCast(v, to: SIMD4<Int32>.self) }
@inline(__always) func asFloats(_ v: V128) -> SIMD4<Float> { unsafeBitCast(v, to: SIMD4<Float>.self) }
@inline(__always) func asDoubles(_ v: V128) -> SIMD2<Double> { unsafeBitCast(v, to: SIMD2<Double>.self) }
@inline(__always) func v128<T: SIMD>(_ v: T) -> V128 { unsafeBitCast(v, to: V128.self) }

extension CPUCore {
    mutating func sseAvailable() throws(Fault) {
        if cr0 & 4 != 0 || cr4 & 0x200 == 0 { throw Fault.ud }   // EM set or OSFXSR clear
        if cr0 & 8 != 0 { throw Fault.nm }
    }

    @inline(__always) mutating func xget(_ n: UInt8) -> V128 { xmm[Int(n & 15)] }
    @inline(__always) mutating func xset(_ n: UInt8, _ v: V128) { xmm[Int(n & 15)] = v }

    mutating func load128(_ i: IP, aligned: Bool = false) throws(Fault) -> V128 {
        if !i.isMem { return xget(i.rm) }
        let e = ea(i)
        if aligned && e & 15 != 0 { throw Fault.gp(0) }
        let lin = try opLinear(i, 16)
        return V128(try load(lin, UInt64.self), try load(lin &+ 8, UInt64.self))
    }

    mutating func store128(_ i: IP, _ v: V128, aligned: Bool = false) throws(Fault) {
        if !i.isMem { xset(i.rm, v); return }
        let e = ea(i)
        if aligned && e & 15 != 0 { throw Fault.gp(0) }
        let lin = try opLinear(i, 16, write: true)
        try probeWrite(lin, 16)
        try store(lin, v[0]); try store(lin &+ 8, v[1])
    }

    /// The low 64 bits of the source operand (register or 8-byte memory).
    mutating func load64(_ i: IP) throws(Fault) -> UInt64 {
        if !i.isMem { return xget(i.rm)[0] }
        return try load(try opLinear(i, 8), UInt64.self)
    }
    mutating func load32(_ i: IP) throws(Fault) -> UInt32 {
        if !i.isMem { return UInt32(truncatingIfNeeded: xget(i.rm)[0]) }
        return try load(try opLinear(i, 4), UInt32.self)
    }

    mutating func execSSE(_ i: IP) throws(Fault) {
        let aux = i.aux
        let map = aux >> 12
        let pfx = (aux >> 8) & 3
        let opc = UInt8(aux & 0xFF)
        if map != 1 { try execSIMDExt(i); return }   // 0F 38 / 0F 3A: SSE4.swift
        // MMX forms (no prefix, integer opcodes) work on the x87 register file.
        if pfx == 0 && (opc >= 0x60 && opc <= 0x7F || opc >= 0xD0 || opc == 0xC4 || opc == 0xC5) && opc != 0x77 {
            try execMMX(i, opc)
            return
        }
        try sseAvailable()
        if i.isMem && CPUCore.sseNeedsAlignment(opc, pfx) && ea(i) & 15 != 0 { throw Fault.gp(0) }
        let d = i.reg
        switch opc {
        // MARK: moves
        case 0x10, 0x11:
            let toReg = opc == 0x10
            switch pfx {
            case 0, 1:
                if toReg { xset(d, try load128(i)) } else { try store128(i, xget(d)) }
            case 2: // MOVSS
                if toReg {
                    if i.isMem { xset(d, V128(UInt64(try load32(i)), 0)) }
                    else { var v = xget(d); v[0] = (v[0] & ~0xFFFF_FFFF) | (xget(i.rm)[0] & 0xFFFF_FFFF); xset(d, v) }
                } else {
                    if i.isMem { try store(try opLinear(i, 4, write: true), UInt32(truncatingIfNeeded: xget(d)[0])) }
                    else { var v = xget(i.rm); v[0] = (v[0] & ~0xFFFF_FFFF) | (xget(d)[0] & 0xFFFF_FFFF); xset(i.rm, v) }
                }
            default: // MOVSD
                if toReg {
                    if i.isMem { xset(d, V128(try load64(i), 0)) }
                    else { var v = xget(d); v[0] = xget(i.rm)[0]; xset(d, v) }
                } else {
                    if i.isMem { try store(try opLinear(i, 8, write: true), xget(d)[0]) }
                    else { var v = xget(i.rm); v[0] = xget(d)[0]; xset(i.rm, v) }
                }
            }
        case 0x12, 0x13:
            if opc == 0x12 && pfx == 3 { let x = try load64(i); xset(d, V128(x, x)); return }     // MOVDDUP
            if opc == 0x12 && pfx == 2 { let f = asDwords(try load128(i)); xset(d, v128(SIMD4<UInt32>(f[0], f[0], f[2], f[2]))); return } // MOVSLDUP
            if opc == 0x12 {
                var v = xget(d)
                v[0] = i.isMem ? try load64(i) : xget(i.rm)[1]   // MOVLPS / MOVHLPS
                xset(d, v)
            } else {
                try store(try opLinear(i, 8, write: true), xget(d)[0])
            }
        case 0x14: // UNPCKLPS / UNPCKLPD
            let a = xget(d), b = try load128(i)
            if pfx == 1 { xset(d, V128(a[0], b[0])) }
            else { let x = asDwords(a), y = asDwords(b); xset(d, v128(SIMD4<UInt32>(x[0], y[0], x[1], y[1]))) }
        case 0x15:
            let a = xget(d), b = try load128(i)
            if pfx == 1 { xset(d, V128(a[1], b[1])) }
            else { let x = asDwords(a), y = asDwords(b); xset(d, v128(SIMD4<UInt32>(x[2], y[2], x[3], y[3]))) }
        case 0x16, 0x17:
            if opc == 0x16 && pfx == 2 { let f = asDwords(try load128(i)); xset(d, v128(SIMD4<UInt32>(f[1], f[1], f[3], f[3]))); return } // MOVSHDUP
            if opc == 0x16 {
                var v = xget(d)
                v[1] = i.isMem ? try load64(i) : xget(i.rm)[0]   // MOVHPS / MOVLHPS
                xset(d, v)
            } else {
                try store(try opLinear(i, 8, write: true), xget(d)[1])
            }
        case 0x28: xset(d, try load128(i, aligned: true))
        case 0x29: try store128(i, xget(d), aligned: true)
        case 0x2B, 0xE7: try store128(i, xget(d), aligned: true)
        case 0x6F:
            if pfx == 0 { throw Fault.ud }
            xset(d, try load128(i, aligned: pfx == 1))
        case 0x7F:
            try store128(i, xget(d), aligned: pfx == 1)
        case 0xF0:
            if pfx != 3 { throw Fault.ud }
            xset(d, try load128(i))
        case 0x6E: // MOVD/MOVQ xmm, r/m
            let v = try readRm(i, i.size)
            xset(d, V128(v, 0))
        case 0x7E:
            if pfx == 2 { xset(d, V128(try load64(i), 0)) }   // MOVQ xmm, xmm/m64
            else { try writeRm(i, i.size, xget(d)[0] & sizeMask(i.size)) }
        case 0xD6:
            if pfx == 1 {
                if i.isMem { try store(try opLinear(i, 8, write: true), xget(d)[0]) } else { xset(i.rm, V128(xget(d)[0], 0)) }
            } else { throw Fault.ud }
        case 0x50:
            let v = xget(i.rm)
            var m: UInt64 = 0
            if pfx == 1 { m = (v[0] >> 63) | ((v[1] >> 63) << 1) }
            else { let f = asDwords(v); for k in 0..<4 { m |= UInt64(f[k] >> 31) << UInt64(k) } }
            setReg(d, 4, m)
        case 0xD7: // PMOVMSKB
            let b = asBytes(xget(i.rm))
            var m: UInt64 = 0
            for k in 0..<16 { m |= UInt64(b[k] >> 7) << UInt64(k) }
            setReg(d, 4, m)
        case 0xC3: // MOVNTI
            try writeRm(i, i.size, getReg(d, i.size))

        // MARK: logic
        case 0x54: xset(d, xget(d) & (try load128(i)))
        case 0x55: xset(d, ~xget(d) & (try load128(i)))
        case 0x56: xset(d, xget(d) | (try load128(i)))
        case 0x57: xset(d, xget(d) ^ (try load128(i)))
        case 0xDB: xset(d, xget(d) & (try load128(i)))
        case 0xDF: xset(d, ~xget(d) & (try load128(i)))
        case 0xEB: xset(d, xget(d) | (try load128(i)))
        case 0xEF: xset(d, xget(d) ^ (try load128(i)))

        // MARK: floating point
        case 0x51, 0x58, 0x59, 0x5C, 0x5D, 0x5E, 0x5F:
            try sseFloatArith(i, opc, pfx)
        case 0x52, 0x53: try sseReciprocal(i, pfx, sqrt: opc == 0x52)   // RSQRTPS/SS, RCPPS/SS
        case 0xC2: try sseCompare(i, pfx)
        case 0x2E, 0x2F: try sseComis(i, pfx, signaling: opc == 0x2F)
        case 0x2A: try sseConvertFromInt(i, pfx)
        case 0x2C, 0x2D: try sseConvertToInt(i, pfx, truncate: opc == 0x2C)
        case 0x5A, 0x5B, 0xE6: try sseConvertVector(i, opc, pfx)
        case 0xC6: // SHUFPS / SHUFPD
            let a = xget(d), b = try load128(i)
            let s = i.imm
            if pfx == 1 { xset(d, V128(a[Int(s & 1)], b[Int((s >> 1) & 1)])) }
            else {
                let x = asDwords(a), y = asDwords(b)
                xset(d, v128(SIMD4<UInt32>(x[Int(s & 3)], x[Int((s >> 2) & 3)], y[Int((s >> 4) & 3)], y[Int((s >> 6) & 3)])))
            }
        case 0xD0: try sseAddSub(i, pfx)                          // ADDSUBPD/PS
        case 0x7C, 0x7D: try sseHorizontal(i, pfx, sub: opc == 0x7D)    // HADD/HSUB PD/PS

        case 0x70 where pfx == 2 || pfx == 3: // PSHUFHW / PSHUFLW
            let src = asWords(try load128(i))
            var o = src
            let base = pfx == 2 ? 4 : 0
            for k in 0..<4 { o[base + k] = src[base + Int((i.imm >> UInt64(2 * k)) & 3)] }
            xset(d, v128(o))
        case 0xF7 where pfx == 1: // MASKMOVDQU xmm, xmm
            guard !i.isMem else { throw Fault.ud }
            try maskedStore(i, data: xget(d), mask: xget(i.rm), bytes: 16)
        default:
            if pfx == 1 { try execSSEInt(i, opc); return }
            reportUnimplemented(i)
            throw Fault.ud
        }
    }

    /// RCPPS/RCPSS (0F 53) and RSQRTPS/RSQRTSS (0F 52, F3 for the scalar forms): 1/x and 1/sqrt(x)
    /// of singles. The hardware's results are table-driven approximations within 1.5 * 2^-12
    /// relative error whose bits differ between Intel and AMD; these are QEMU 7.2's (within that
    /// bound): 1/x rounded to nearest, and 1 / sqrt(x) with both steps rounded to nearest. Otherwise
    /// as the SDM says (and the host CPU does; QEMU differs): MXCSR.RC, DAZ and FTZ are ignored, and
    /// no exception is raised nor MXCSR flag set.
    mutating func sseReciprocal(_ i: IP, _ pfx: UInt16, sqrt: Bool) throws(Fault) {
        let d = i.reg
        switch pfx {
        case 0:
            let v = asFloats(try load128(i))
            var r = SIMD4<Float>()
            for k in 0..<4 { r[k] = sqrt ? CPUCore.rsqrtApprox(v[k]) : CPUCore.rcpApprox(v[k]) }
            xset(d, v128(r))
        case 2:
            let v = Float(bitPattern: try load32(i))
            var x = asFloats(xget(d))
            x[0] = sqrt ? CPUCore.rsqrtApprox(v) : CPUCore.rcpApprox(v)
            xset(d, v128(x))
        default: throw Fault.ud
        }
    }

    /// RCP's lane: ±0 and denormals (read as zeros) give ±inf, ±inf gives ±0, a NaN comes back
    /// quiet, and tiny results are flushed to ±0: from |x| = 2^126 on, as on the host CPU (AMD),
    /// whose approximation of 2^-126 is already below it (the SDM leaves inputs near 2^126 to the
    /// implementation).
    static func rcpApprox(_ x: Float) -> Float {
        if x.isNaN { return quiet(x) }
        if x == 0 || x.isSubnormal { return Float(signOf: x, magnitudeOf: .infinity) }
        if x.magnitude >= 0x1p126 { return Float(signOf: x, magnitudeOf: 0) }
        return 1 / x
    }

    /// RSQRT's lane: ±0 and denormals give ±inf, +inf gives +0, any other negative the QNaN
    /// indefinite, a NaN comes back quiet.
    static func rsqrtApprox(_ x: Float) -> Float {
        if x.isNaN { return quiet(x) }
        if x == 0 || x.isSubnormal { return Float(signOf: x, magnitudeOf: .infinity) }
        if x < 0 { return Float(bitPattern: 0xFFC0_0000) }
        return 1 / x.squareRoot()
    }

    mutating func execMMX(_ i: IP, _ opc: UInt8) throws(Fault) {
        try fpuAvailable()
        let d = Int(i.reg & 7)
        switch opc {
        case 0x6E: fpu.setMMX(d, try readRm(i, i.size))
        case 0x7E: try writeRm(i, i.size, fpu.mmx(d) & sizeMask(i.size))
        case 0x6F: fpu.setMMX(d, i.isMem ? try load(try opLinear(i, 8), UInt64.self) : fpu.mmx(Int(i.rm)))
        case 0x7F:
            if i.isMem { try store(try opLinear(i, 8, write: true), fpu.mmx(d)) } else { fpu.setMMX(Int(i.rm), fpu.mmx(d)) }
        case 0xEF, 0xEB, 0xDB, 0xDF:
            let b = i.isMem ? try load(try opLinear(i, 8), UInt64.self) : fpu.mmx(Int(i.rm))
            let a = fpu.mmx(d)
            fpu.setMMX(d, opc == 0xEF ? a ^ b : (opc == 0xEB ? a | b : (opc == 0xDB ? a & b : ~a & b)))
        default:
            try execMMXArith(i, opc)
        }
    }
}

extension CPUCore {
    /// Legacy SSE's rule for 0F-map opcodes (prefix: 0 none, 1 = 66, 2 = F3, 3 = F2): a 128-bit
    /// memory operand must be 16-byte aligned, else #GP(0). Exempt: the unaligned moves (MOVUPS/PD,
    /// MOVDQU, LDDQU), scalar forms and every operand of 64 bits or less. (MOVAPS/MOVDQA/MOVNT*
    /// check at their own load and store.)
    static func sseNeedsAlignment(_ opc: UInt8, _ pfx: UInt16) -> Bool {
        switch opc {
        case 0x52, 0x53: return pfx == 0                     // RSQRTPS, RCPPS (66: #UD)
        case 0x14, 0x15, 0x51...0x59, 0x5C...0x5F, 0xC2, 0xC6: return pfx <= 1   // packed PS/PD
        case 0x5A, 0x2C, 0x2D: return pfx == 1               // CVTPD2PS, CVT(T)PD2PI
        case 0x5B: return pfx <= 2                           // CVTDQ2PS, CVTPS2DQ, CVTTPS2DQ
        case 0x12, 0x16: return pfx == 2                     // MOVSLDUP, MOVSHDUP
        case 0x70: return pfx != 0                           // PSHUFD/HW/LW
        case 0x7C, 0x7D, 0xD0, 0xE6: return pfx == 1 || pfx == 3   // HADD/HSUB, ADDSUB, CVT(T)PD2DQ
        case 0x60...0x6D, 0x74...0x76, 0xD1...0xD5, 0xD8...0xE5, 0xE8...0xEF, 0xF1...0xF6, 0xF8...0xFE:
            return pfx == 1                                  // 66: SSE2 integer
        default: return false
        }
    }
}
