// SSSE3: 0F 38 00-0B, 1C-1E and 0F 3A 0F (PALIGNR), each in an MMX form (no prefix: 64-bit operands
// in the x87/MMX register file) and an XMM form (66 prefix).
//
// Both forms share one pure lane routine. MMX operands travel in the low half of a V128 with the
// upper half zero and `half` set; lane-wise operations then give the right low half by themselves,
// and `half` only changes the horizontal operations (which pair within each operand), PSHUFB's
// index mask and PALIGNR's width.

extension CPUCore {
    mutating func execSSSE3(_ i: IP, _ opc: UInt8, map: UInt16, mmx: Bool) throws(Fault) {
        if mmx {
            try fpuAvailable()
            let d = Int(i.reg & 7)
            let b = i.isMem ? try load(try opLinear(i, 8), UInt64.self) : fpu.mmx(Int(i.rm & 7))
            let r = CPUCore.ssse3(opc, map: map, V128(fpu.mmx(d), 0), V128(b, 0), half: true, imm: i.imm)
            fpu.setMMX(d, r[0])
        } else {
            try sseAvailable()
            let b = try load128(i, aligned: true)
            xset(i.reg, CPUCore.ssse3(opc, map: map, xget(i.reg), b, half: false, imm: i.imm))
        }
    }

    /// One SSSE3 operation: `a` is the destination operand, `b` the source.
    static func ssse3(_ opc: UInt8, map: UInt16, _ a: V128, _ b: V128, half: Bool, imm: UInt64) -> V128 {
        if map == 3 {
            // PALIGNR: the concatenation a:b (b in the low bytes) shifted right by imm bytes.
            let w = half ? 8 : 16
            let s = Int(imm & 0xFF)
            let lo = asBytes(b), hi = asBytes(a)
            var o = SIMD16<UInt8>()
            for k in 0..<w {
                let j = k + s
                if j < w { o[k] = lo[j] } else if j < 2 * w { o[k] = hi[j - w] }
            }
            return v128(o)
        }
        switch opc {
        case 0x00: // PSHUFB
            let x = asBytes(a), y = asBytes(b)
            let m: UInt8 = half ? 7 : 15
            var o = SIMD16<UInt8>()
            for k in 0..<(half ? 8 : 16) {
                let s = y[k]
                o[k] = s & 0x80 != 0 ? 0 : x[Int(s & m)]
            }
            return v128(o)
        case 0x01, 0x03, 0x05, 0x07: // PHADDW, PHADDSW, PHSUBW, PHSUBSW
            let x = asSWords(a), y = asSWords(b)
            let n = half ? 2 : 4
            var o = SIMD8<Int16>()
            for k in 0..<n {
                o[k] = horizontal16(opc, x[2 * k], x[2 * k + 1])
                o[n + k] = horizontal16(opc, y[2 * k], y[2 * k + 1])
            }
            return v128(o)
        case 0x02, 0x06: // PHADDD, PHSUBD
            let x = asDwords(a), y = asDwords(b)
            let n = half ? 1 : 2
            var o = SIMD4<UInt32>()
            for k in 0..<n {
                o[k] = opc == 0x02 ? x[2 * k] &+ x[2 * k + 1] : x[2 * k] &- x[2 * k + 1]
                o[n + k] = opc == 0x02 ? y[2 * k] &+ y[2 * k + 1] : y[2 * k] &- y[2 * k + 1]
            }
            return v128(o)
        case 0x04: // PMADDUBSW: unsigned bytes of a times signed bytes of b, pairs summed with saturation
            let x = asBytes(a), y = asSBytes(b)
            var o = SIMD8<Int16>()
            for k in 0..<8 {
                o[k] = Int16(clamping: Int(x[2 * k]) * Int(y[2 * k]) + Int(x[2 * k + 1]) * Int(y[2 * k + 1]))
            }
            return v128(o)
        case 0x08: // PSIGNB
            let x = asSBytes(a), y = asSBytes(b)
            var o = SIMD16<Int8>()
            for k in 0..<16 { o[k] = y[k] < 0 ? 0 &- x[k] : (y[k] == 0 ? 0 : x[k]) }
            return v128(o)
        case 0x09: // PSIGNW
            let x = asSWords(a), y = asSWords(b)
            var o = SIMD8<Int16>()
            for k in 0..<8 { o[k] = y[k] < 0 ? 0 &- x[k] : (y[k] == 0 ? 0 : x[k]) }
            return v128(o)
        case 0x0A: // PSIGND
            let x = asSDwords(a), y = asSDwords(b)
            var o = SIMD4<Int32>()
            for k in 0..<4 { o[k] = y[k] < 0 ? 0 &- x[k] : (y[k] == 0 ? 0 : x[k]) }
            return v128(o)
        case 0x0B: // PMULHRSW: (a * b >> 14) + 1 >> 1, low 16 bits
            let p = SIMD8<Int32>(truncatingIfNeeded: asSWords(a)) &* SIMD8<Int32>(truncatingIfNeeded: asSWords(b))
            return v128(SIMD8<Int16>(truncatingIfNeeded: ((p &>> 14) &+ 1) &>> 1))
        case 0x1C: // PABSB (of the source; -128 stays 0x80)
            let y = asSBytes(b)
            return v128(y.replacing(with: 0 &- y, where: y .< 0))
        case 0x1D:
            let y = asSWords(b)
            return v128(y.replacing(with: 0 &- y, where: y .< 0))
        default: // 0x1E PABSD
            let y = asSDwords(b)
            return v128(y.replacing(with: 0 &- y, where: y .< 0))
        }
    }

    @inline(__always) static func horizontal16(_ opc: UInt8, _ x: Int16, _ y: Int16) -> Int16 {
        switch opc {
        case 0x01: return x &+ y
        case 0x03: return Int16(clamping: Int32(x) + Int32(y))
        case 0x05: return x &- y
        default: return Int16(clamping: Int32(x) - Int32(y))
        }
    }
}
