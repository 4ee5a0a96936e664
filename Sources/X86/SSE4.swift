// SSE4.1 and the non-string half of SSE4.2 (PCMPGTQ, CRC32), and the router for the 0F 38 / 0F 3A
// maps (`aux` = map << 12 | prefix << 8 | opcode, as in SSE.swift).
//
// The decoder only lets through encodings whose CPUID bit the model reports
// (`Decoder.simdExtRequirement`); what reaches `execSIMDExt` with requirement 0 is an encoding we do
// not implement, named once on stderr and raised as #UD. ROUND* and DPPS/DPPD set MXCSR's
// exception flags and honour DAZ/FTZ (FPExceptions.swift); DPPS/DPPD round every step by MXCSR.RC
// (FPRounding.swift), ROUND* by imm8 or MXCSR.RC. A 16-byte memory operand must be 16-byte
// aligned (#GP(0) otherwise), as on hardware; the smaller ones (PMOVSX/ZX, ROUNDSS/SD, INSERTPS,
// PINSR/PEXTR) and PCMPxSTRx's need not be.

extension CPUCore {
    mutating func execSIMDExt(_ i: IP) throws(Fault) {
        let aux = i.aux
        let map = aux >> 12, pfx = (aux >> 8) & 3, opc = UInt8(aux & 0xFF)
        if map == 2 && pfx == 3 && (opc == 0xF0 || opc == 0xF1) { try crc32(i); return }
        switch Decoder.simdExtRequirement(map: map, pfx: pfx, opc) {
        case 1:
            try execSSSE3(i, opc, map: map, mmx: pfx == 0)
        case 2, 4:
            try sseAvailable()
            if map == 2 { try execSSE4Map38(i, opc) }
            else if opc >= 0x60 { try execStringCompare(i, opc) }
            else { try execSSE4Map3A(i, opc) }
        default:
            reportUnimplemented(i)
            throw Fault.ud
        }
    }

    // MARK: CRC32 (SSE4.2)

    /// CRC32 r32/r64, r/m8/16/32/64: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of the
    /// source's bytes, least significant first, continuing from the destination's low 32 bits; no
    /// pre- or post-inversion. Flags are unaffected; the result is zero-extended.
    mutating func crc32(_ i: IP) throws(Fault) {
        let size = i.size
        let src = try readRm(i, size)
        var c = UInt32(truncatingIfNeeded: r[Int(i.reg)])
        for k in 0..<size {
            c ^= UInt32(truncatingIfNeeded: src >> UInt64(8 * k)) & 0xFF
            for _ in 0..<8 { c = (c >> 1) ^ (0x82F6_3B78 & (0 &- (c & 1))) }
        }
        setReg(i.reg, i.flags & DInst.fRexW != 0 ? 8 : 4, UInt64(c))
    }

    // MARK: 0F 38 (66 prefix)

    /// The low `bytes` of the source operand (PMOVSX/ZX read 2, 4 or 8 bytes of memory).
    mutating func loadLow(_ i: IP, _ bytes: Int) throws(Fault) -> V128 {
        if !i.isMem { return xget(i.rm) }
        let lin = try opLinear(i, bytes)
        switch bytes {
        case 2: return V128(UInt64(try load(lin, UInt16.self)), 0)
        case 4: return V128(UInt64(try load(lin, UInt32.self)), 0)
        default: return V128(try load(lin, UInt64.self), 0)
        }
    }

    mutating func execSSE4Map38(_ i: IP, _ opc: UInt8) throws(Fault) {
        let d = i.reg
        switch opc {
        case 0x20...0x25, 0x30...0x35: // PMOVSX / PMOVZX: BW BD BQ WD WQ DQ
            let kind = Int(opc & 7)
            let bytes = kind == 2 ? 2 : (kind == 1 || kind == 4 ? 4 : 8)
            xset(d, CPUCore.pmovx(try loadLow(i, bytes), kind, signed: opc < 0x30))
            return
        case 0x2A: // MOVNTDQA
            if !i.isMem { throw Fault.ud }
            xset(d, try load128(i, aligned: true))
            return
        default: break
        }
        let a = xget(d), b = try load128(i, aligned: true)
        let r: V128
        switch opc {
        case 0x10: // PBLENDVB: XMM0's byte sign bits pick the source
            let m = asSBytes(xmm[0]) .< 0
            r = v128(asBytes(a).replacing(with: asBytes(b), where: m))
        case 0x14: // BLENDVPS
            let m = asSDwords(xmm[0]) .< 0
            r = v128(asDwords(a).replacing(with: asDwords(b), where: m))
        case 0x15: // BLENDVPD
            let m = unsafeBitCast(xmm[0], to: SIMD2<Int64>.self) .< 0
            r = a.replacing(with: b, where: m)
        case 0x17: // PTEST
            let z = a & b, c = ~a & b
            setArith((z == .zero ? RFlag.zf : 0) | (c == .zero ? RFlag.cf : 0))
            return
        case 0x28: // PMULDQ: signed dwords 0 and 2
            let x = asSDwords(a), y = asSDwords(b)
            r = V128(UInt64(bitPattern: Int64(x[0]) &* Int64(y[0])), UInt64(bitPattern: Int64(x[2]) &* Int64(y[2])))
        case 0x29: // PCMPEQQ
            r = V128(repeating: 0).replacing(with: .max, where: a .== b)
        case 0x37: // PCMPGTQ (SSE4.2)
            let x = unsafeBitCast(a, to: SIMD2<Int64>.self), y = unsafeBitCast(b, to: SIMD2<Int64>.self)
            r = V128(repeating: 0).replacing(with: .max, where: x .> y)
        case 0x2B: // PACKUSDW
            let x = asSDwords(a), y = asSDwords(b)
            var o = SIMD8<UInt16>()
            for k in 0..<4 { o[k] = UInt16(clamping: x[k]); o[k + 4] = UInt16(clamping: y[k]) }
            r = v128(o)
        case 0x38: r = v128(pointwiseMin(asSBytes(a), asSBytes(b)))
        case 0x39: r = v128(pointwiseMin(asSDwords(a), asSDwords(b)))
        case 0x3A: r = v128(pointwiseMin(asWords(a), asWords(b)))
        case 0x3B: r = v128(pointwiseMin(asDwords(a), asDwords(b)))
        case 0x3C: r = v128(pointwiseMax(asSBytes(a), asSBytes(b)))
        case 0x3D: r = v128(pointwiseMax(asSDwords(a), asSDwords(b)))
        case 0x3E: r = v128(pointwiseMax(asWords(a), asWords(b)))
        case 0x3F: r = v128(pointwiseMax(asDwords(a), asDwords(b)))
        case 0x40: r = v128(asDwords(a) &* asDwords(b)) // PMULLD
        default: // 0x41 PHMINPOSUW: the smallest unsigned word of the source and its (lowest) index
            let w = asWords(b)
            var m = w[0], idx = 0
            for k in 1..<8 where w[k] < m { m = w[k]; idx = k }
            r = V128(UInt64(m) | UInt64(idx) << 16, 0)
        }
        xset(d, r)
    }

    static func pmovx(_ v: V128, _ kind: Int, signed: Bool) -> V128 {
        switch (kind, signed) {
        case (0, true): return v128(SIMD8<Int16>(truncatingIfNeeded: asSBytes(v).lowHalf))
        case (0, false): return v128(SIMD8<UInt16>(truncatingIfNeeded: asBytes(v).lowHalf))
        case (1, true): return v128(SIMD4<Int32>(truncatingIfNeeded: asSBytes(v).lowHalf.lowHalf))
        case (1, false): return v128(SIMD4<UInt32>(truncatingIfNeeded: asBytes(v).lowHalf.lowHalf))
        case (2, true): return v128(SIMD2<Int64>(truncatingIfNeeded: asSBytes(v).lowHalf.lowHalf.lowHalf))
        case (2, false): return v128(SIMD2<UInt64>(truncatingIfNeeded: asBytes(v).lowHalf.lowHalf.lowHalf))
        case (3, true): return v128(SIMD4<Int32>(truncatingIfNeeded: asSWords(v).lowHalf))
        case (3, false): return v128(SIMD4<UInt32>(truncatingIfNeeded: asWords(v).lowHalf))
        case (4, true): return v128(SIMD2<Int64>(truncatingIfNeeded: asSWords(v).lowHalf.lowHalf))
        case (4, false): return v128(SIMD2<UInt64>(truncatingIfNeeded: asWords(v).lowHalf.lowHalf))
        case (_, true): return v128(SIMD2<Int64>(truncatingIfNeeded: asSDwords(v).lowHalf))
        default: return v128(SIMD2<UInt64>(truncatingIfNeeded: asDwords(v).lowHalf))
        }
    }

    // MARK: 0F 3A (66 prefix, imm8)

    mutating func execSSE4Map3A(_ i: IP, _ opc: UInt8) throws(Fault) {
        let d = i.reg
        let imm = i.imm & 0xFF
        switch opc {
        case 0x14: // PEXTRB r32/m8: a register destination is zero-extended
            let v = UInt64(asBytes(xget(d))[Int(imm & 15)])
            if i.isMem { try writeRm(i, 1, v) } else { setReg(i.rm, 4, v) }
            return
        case 0x15: // PEXTRW r32/m16
            let v = UInt64(asWords(xget(d))[Int(imm & 7)])
            if i.isMem { try writeRm(i, 2, v) } else { setReg(i.rm, 4, v) }
            return
        case 0x16: // PEXTRD / PEXTRQ (REX.W)
            if i.flags & DInst.fRexW != 0 { try writeRm(i, 8, xget(d)[Int(imm & 1)]) }
            else { try writeRm(i, 4, UInt64(asDwords(xget(d))[Int(imm & 3)])) }
            return
        case 0x17: // EXTRACTPS r32/m32
            try writeRm(i, 4, UInt64(asDwords(xget(d))[Int(imm & 3)]))
            return
        case 0x20: // PINSRB xmm, r32/m8 (the register form reads the GPR's low byte)
            let v = i.isMem ? try readRm(i, 1) : r[Int(i.rm)]
            var x = asBytes(xget(d)); x[Int(imm & 15)] = UInt8(truncatingIfNeeded: v); xset(d, v128(x))
            return
        case 0x22: // PINSRD / PINSRQ (REX.W)
            if i.flags & DInst.fRexW != 0 {
                let v = try readRm(i, 8)
                var x = xget(d); x[Int(imm & 1)] = v; xset(d, x)
            } else {
                let v = try readRm(i, 4)
                var x = asDwords(xget(d)); x[Int(imm & 3)] = UInt32(truncatingIfNeeded: v); xset(d, v128(x))
            }
            return
        case 0x21: // INSERTPS: a dword of the source (imm[7:6], register form) into imm[5:4], then zero imm[3:0]
            let v = i.isMem ? try load32(i) : asDwords(xget(i.rm))[Int((imm >> 6) & 3)]
            var x = asDwords(xget(d))
            x[Int((imm >> 4) & 3)] = v
            for k in 0..<4 where imm & (1 << UInt64(k)) != 0 { x[k] = 0 }
            xset(d, v128(x))
            return
        case 0x0A: // ROUNDSS
            let f = mxSource(Float(bitPattern: try load32(i)))
            let rr = CPUCore.roundFloat(f, roundRule(imm))
            try mxCommit(CPUCore.roundFlags(f, rr, imm))
            var x = asFloats(xget(d)); x[0] = rr; xset(d, v128(x))
            return
        case 0x0B: // ROUNDSD
            let f = mxSource(Double(bitPattern: try load64(i)))
            let rr = CPUCore.roundDouble(f, roundRule(imm))
            try mxCommit(CPUCore.roundFlags(f, rr, imm))
            var x = asDoubles(xget(d)); x[0] = rr; xset(d, v128(x))
            return
        default: break
        }
        let a = xget(d), b = try load128(i, aligned: true)
        let r: V128
        switch opc {
        case 0x08: // ROUNDPS
            let rule = roundRule(imm), v = asFloats(b)
            let x = SIMD4<Float>(mxSource(v[0]), mxSource(v[1]), mxSource(v[2]), mxSource(v[3]))
            let o = SIMD4<Float>(CPUCore.roundFloat(x[0], rule), CPUCore.roundFloat(x[1], rule),
                                 CPUCore.roundFloat(x[2], rule), CPUCore.roundFloat(x[3], rule))
            var fl: UInt32 = 0
            for k in 0..<4 { fl |= CPUCore.roundFlags(x[k], o[k], imm) }
            try mxCommit(fl)
            r = v128(o)
        case 0x09: // ROUNDPD
            let rule = roundRule(imm), v = asDoubles(b)
            let x = SIMD2<Double>(mxSource(v[0]), mxSource(v[1]))
            let o = SIMD2<Double>(CPUCore.roundDouble(x[0], rule), CPUCore.roundDouble(x[1], rule))
            try mxCommit(CPUCore.roundFlags(x[0], o[0], imm) | CPUCore.roundFlags(x[1], o[1], imm))
            r = v128(o)
        case 0x0C: // BLENDPS
            let m = SIMD4<UInt32>(1, 2, 4, 8) & UInt32(imm) .!= 0
            r = v128(asDwords(a).replacing(with: asDwords(b), where: m))
        case 0x0D: // BLENDPD
            r = a.replacing(with: b, where: SIMD2<UInt64>(1, 2) & imm .!= 0)
        case 0x0E: // PBLENDW
            let m = SIMD8<UInt16>(1, 2, 4, 8, 16, 32, 64, 128) & UInt16(imm) .!= 0
            r = v128(asWords(a).replacing(with: asWords(b), where: m))
        case 0x40: // DPPS: products selected by imm[7:4] (others +0.0), (p0 + p1) + (p2 + p3), to lanes imm[3:0]
            let x = asFloats(a), y = asFloats(b)
            var m = mxLanes
            var p = SIMD4<Float>()
            for k in 0..<4 where imm & (16 << UInt64(k)) != 0 { p[k] = m.dotStep(.mul, x[k], y[k]) }
            try mxCommitStep(&m)
            let lo = m.dotStep(.add, p[0], p[1]), hi = m.dotStep(.add, p[2], p[3])
            try mxCommitStep(&m)
            let s = m.dotStep(.add, lo, hi)
            try mxCommit(m.flags)
            var o = SIMD4<Float>()
            for k in 0..<4 { o[k] = imm & (1 << UInt64(k)) != 0 ? s : 0 }
            r = v128(o)
        case 0x41: // DPPD
            let x = asDoubles(a), y = asDoubles(b)
            var m = mxLanes
            let p0 = imm & 16 != 0 ? m.dotStep(.mul, x[0], y[0]) : 0
            let p1 = imm & 32 != 0 ? m.dotStep(.mul, x[1], y[1]) : 0
            try mxCommitStep(&m)
            let s = m.dotStep(.add, p0, p1)
            try mxCommit(m.flags)
            r = v128(SIMD2<Double>(imm & 1 != 0 ? s : 0, imm & 2 != 0 ? s : 0))
        default: // 0x42 MPSADBW: eight sums of absolute differences of a sliding 4-byte window of a
                 // (from byte 4 * imm[2]) against the 4-byte block imm[1:0] of b
            let x = asBytes(a), y = asBytes(b)
            let ao = Int((imm >> 2) & 1) * 4, bo = Int(imm & 3) * 4
            var o = SIMD8<UInt16>()
            for k in 0..<8 {
                var s: UInt16 = 0
                for j in 0..<4 {
                    let u = x[ao + k + j], v = y[bo + j]
                    s += UInt16(u > v ? u - v : v - u)
                }
                o[k] = s
            }
            r = v128(o)
        }
        xset(d, r)
    }

    /// ROUND*'s rounding: imm8[1:0], or MXCSR.RC when imm8[2] is set.
    mutating func roundRule(_ imm: UInt64) -> FloatingPointRoundingRule {
        let mode = imm & 4 != 0 ? UInt64((mxcsr >> 13) & 3) : imm & 3
        switch mode {
        case 0: return .toNearestOrEven
        case 1: return .down
        case 2: return .up
        default: return .towardZero
        }
    }

    /// SSE's NaN rule made explicit (Swift's operators leave the operand order to the compiler): a
    /// NaN in the first operand (the destination) wins, else the second's, quieted. Measured on the
    /// host CPU for DPPS/DPPD; QEMU 7.2 instead returns the NaN with the larger significand.
    @inline(__always) static func nanFirst<T: BinaryFloatingPoint>(_ a: T, _ b: T, _ op: (T, T) -> T) -> T {
        if a.isNaN { return a.isSignalingNaN ? quiet(a) : a }
        if b.isNaN { return b.isSignalingNaN ? quiet(b) : b }
        return op(a, b)
    }
    @inline(__always) static func quiet<T: BinaryFloatingPoint>(_ v: T) -> T {
        T(sign: v.sign, exponentBitPattern: v.exponentBitPattern,
          significandBitPattern: v.significandBitPattern | (T.RawSignificand(1) << (T.significandBitCount - 1)))
    }

    /// ROUND*'s MXCSR flags for one lane: IE for a signaling NaN, else PE when the value changed,
    /// unless imm8[3] suppresses precision exceptions.
    static func roundFlags<T: BinaryFloatingPoint>(_ x: T, _ r: T, _ imm: UInt64) -> UInt32 {
        if x.isSignalingNaN { return MX.ie }
        if x.isNaN || imm & 8 != 0 { return 0 }
        return r == x ? 0 : MX.pe
    }

    /// Rounds to an integral value; a NaN comes back quiet, with its sign and payload.
    static func roundFloat(_ x: Float, _ rule: FloatingPointRoundingRule) -> Float {
        if x.isNaN { return Float(bitPattern: x.bitPattern | 0x0040_0000) }
        return x.rounded(rule)
    }
    static func roundDouble(_ x: Double, _ rule: FloatingPointRoundingRule) -> Double {
        if x.isNaN { return Double(bitPattern: x.bitPattern | 0x0008_0000_0000_0000) }
        return x.rounded(rule)
    }
}

extension CPUCore {
    /// Ends one stage of DPPS/DPPD (the multiplies, the pairwise adds): its flags go to MXCSR, and
    /// an unmasked one raises #XM before the next stage runs, so a later stage adds no flags
    /// (host-confirmed: an unmasked PE of a product hides the DE of the add that would take it).
    @inline(__always) mutating func mxCommitStep(_ m: inout MXLanes) throws(Fault) {
        try mxCommit(m.flags)
        m.flags = 0
    }
}

extension MXLanes {
    /// One multiply or add of DPPS/DPPD: each step rounds and raises its own MXCSR flags, under
    /// DAZ and FTZ like any lane (a denormal product is a denormal operand of the add that takes
    /// it; host-confirmed), with the NaN rule of `CPUCore.nanFirst`.
    @inline(__always) mutating func dotStep<T: BinaryFloatingPoint>(_ op: FPOp, _ a: T, _ b: T) -> T {
        let r = lane(op, a, b)
        return a.isNaN || b.isNaN ? CPUCore.nanFirst(a, b) { _, _ in r } : r
    }
}
