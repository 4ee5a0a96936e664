// SSE2 integer operations on XMM registers (66-prefixed 0F 60-7F, D1-FE): packed add/sub,
// compares, min/max, shifts, shuffles, unpacks, packs, multiplies.

extension CPUCore {
    mutating func execSSEInt(_ i: IP, _ opc: UInt8) throws(Fault) {
        let d = i.reg
        // Shift-by-immediate groups take the register in rm and the count in imm.
        if opc >= 0x71 && opc <= 0x73 {
            try sseShiftImm(i, opc)
            return
        }
        let a = xget(d)
        let b: V128
        switch opc {
        case 0x70, 0xC5: b = try load128(i)
        case 0xC4: b = V128(try readRm(i, 2), 0)
        default: b = try load128(i)
        }
        if opc == 0xC5 { // PEXTRW
            setReg(d, 4, UInt64(asWords(xget(i.rm))[Int(i.imm & 7)]))
            return
        }
        xset(d, try sseIntLanes(i, opc, a, b))
    }

    /// The lane arithmetic of the 66 0F integer opcodes, shared with their MMX forms (MMX.swift),
    /// which pass their 64-bit operands in the low halves.
    mutating func sseIntLanes(_ i: IP, _ opc: UInt8, _ a: V128, _ b: V128) throws(Fault) -> V128 {
        var r: V128
        switch opc {
        case 0x60: r = unpackLow(a, b, 1)
        case 0x61: r = unpackLow(a, b, 2)
        case 0x62: r = unpackLow(a, b, 4)
        case 0x6C: r = V128(a[0], b[0])
        case 0x68: r = unpackHigh(a, b, 1)
        case 0x69: r = unpackHigh(a, b, 2)
        case 0x6A: r = unpackHigh(a, b, 4)
        case 0x6D: r = V128(a[1], b[1])
        case 0x63: // PACKSSWB
            let x = asSWords(a), y = asSWords(b)
            var o = SIMD16<Int8>()
            for k in 0..<8 { o[k] = Int8(clamping: x[k]); o[k + 8] = Int8(clamping: y[k]) }
            r = v128(o)
        case 0x67: // PACKUSWB
            let x = asSWords(a), y = asSWords(b)
            var o = SIMD16<UInt8>()
            for k in 0..<8 { o[k] = UInt8(clamping: x[k]); o[k + 8] = UInt8(clamping: y[k]) }
            r = v128(o)
        case 0x6B: // PACKSSDW
            let x = asSDwords(a), y = asSDwords(b)
            var o = SIMD8<Int16>()
            for k in 0..<4 { o[k] = Int16(clamping: x[k]); o[k + 4] = Int16(clamping: y[k]) }
            r = v128(o)
        case 0x64: r = v128(SIMD16<Int8>(repeating: 0).replacing(with: -1, where: asSBytes(a) .> asSBytes(b)))
        case 0x65: r = v128(SIMD8<Int16>(repeating: 0).replacing(with: -1, where: asSWords(a) .> asSWords(b)))
        case 0x66: r = v128(SIMD4<Int32>(repeating: 0).replacing(with: -1, where: asSDwords(a) .> asSDwords(b)))
        case 0x74: r = v128(SIMD16<UInt8>(repeating: 0).replacing(with: 0xFF, where: asBytes(a) .== asBytes(b)))
        case 0x75: r = v128(SIMD8<UInt16>(repeating: 0).replacing(with: 0xFFFF, where: asWords(a) .== asWords(b)))
        case 0x76: r = v128(SIMD4<UInt32>(repeating: 0).replacing(with: .max, where: asDwords(a) .== asDwords(b)))
        case 0x70: // PSHUFD
            let x = asDwords(b), s = i.imm
            r = v128(SIMD4<UInt32>(x[Int(s & 3)], x[Int((s >> 2) & 3)], x[Int((s >> 4) & 3)], x[Int((s >> 6) & 3)]))
        case 0xC4: // PINSRW
            var x = asWords(a); x[Int(i.imm & 7)] = UInt16(truncatingIfNeeded: b[0]); r = v128(x)
        case 0xD4: r = a &+ b
        case 0xFB: r = a &- b
        case 0xFC: r = v128(asBytes(a) &+ asBytes(b))
        case 0xFD: r = v128(asWords(a) &+ asWords(b))
        case 0xFE: r = v128(asDwords(a) &+ asDwords(b))
        case 0xF8: r = v128(asBytes(a) &- asBytes(b))
        case 0xF9: r = v128(asWords(a) &- asWords(b))
        case 0xFA: r = v128(asDwords(a) &- asDwords(b))
        case 0xDC, 0xDD, 0xD8, 0xD9, 0xEC, 0xED, 0xE8, 0xE9: r = saturating(opc, a, b)
        case 0xDA: r = v128(pointwiseMin(asBytes(a), asBytes(b)))
        case 0xDE: r = v128(pointwiseMax(asBytes(a), asBytes(b)))
        case 0xEA: r = v128(pointwiseMin(asSWords(a), asSWords(b)))
        case 0xEE: r = v128(pointwiseMax(asSWords(a), asSWords(b)))
        case 0xE0: r = v128(SIMD16<UInt8>(truncatingIfNeeded: (SIMD16<UInt16>(truncatingIfNeeded: asBytes(a)) &+ SIMD16<UInt16>(truncatingIfNeeded: asBytes(b)) &+ 1) &>> 1))
        case 0xE3: r = v128(SIMD8<UInt16>(truncatingIfNeeded: (SIMD8<UInt32>(truncatingIfNeeded: asWords(a)) &+ SIMD8<UInt32>(truncatingIfNeeded: asWords(b)) &+ 1) &>> 1))
        case 0xD5: r = v128(asWords(a) &* asWords(b))
        case 0xE5: r = v128(SIMD8<Int16>(truncatingIfNeeded: (SIMD8<Int32>(truncatingIfNeeded: asSWords(a)) &* SIMD8<Int32>(truncatingIfNeeded: asSWords(b))) &>> 16))
        case 0xE4: r = v128(SIMD8<UInt16>(truncatingIfNeeded: (SIMD8<UInt32>(truncatingIfNeeded: asWords(a)) &* SIMD8<UInt32>(truncatingIfNeeded: asWords(b))) &>> 16))
        case 0xF4: r = V128((a[0] & 0xFFFF_FFFF) &* (b[0] & 0xFFFF_FFFF), (a[1] & 0xFFFF_FFFF) &* (b[1] & 0xFFFF_FFFF))
        case 0xF5: // PMADDWD
            let x = SIMD8<Int32>(truncatingIfNeeded: asSWords(a)), y = SIMD8<Int32>(truncatingIfNeeded: asSWords(b))
            let p = x &* y
            r = v128(SIMD4<Int32>(p[0] &+ p[1], p[2] &+ p[3], p[4] &+ p[5], p[6] &+ p[7]))
        case 0xF6: // PSADBW
            let x = asBytes(a), y = asBytes(b)
            var s0: UInt64 = 0, s1: UInt64 = 0
            for k in 0..<8 { s0 += UInt64(x[k] > y[k] ? x[k] - y[k] : y[k] - x[k]) }
            for k in 8..<16 { s1 += UInt64(x[k] > y[k] ? x[k] - y[k] : y[k] - x[k]) }
            r = V128(s0, s1)
        case 0xD1, 0xD2, 0xD3, 0xE1, 0xE2, 0xF1, 0xF2, 0xF3:
            r = shiftBy(opc, a, b[0])
        default:
            reportUnimplemented(i)
            throw Fault.ud
        }
        return r
    }

    private mutating func unpackLow(_ a: V128, _ b: V128, _ w: Int) -> V128 {
        interleave(a, b, w, high: false)
    }
    private mutating func unpackHigh(_ a: V128, _ b: V128, _ w: Int) -> V128 {
        interleave(a, b, w, high: true)
    }
    private mutating func interleave(_ a: V128, _ b: V128, _ w: Int, high: Bool) -> V128 {
        let x = asBytes(a), y = asBytes(b)
        var o = SIMD16<UInt8>()
        let base = high ? 8 : 0
        var k = 0
        var src = base
        while k < 16 {
            for j in 0..<w { o[k + j] = x[src + j] }
            for j in 0..<w { o[k + w + j] = y[src + j] }
            k += 2 * w
            src += w
        }
        return v128(o)
    }

    private mutating func saturating(_ opc: UInt8, _ a: V128, _ b: V128) -> V128 {
        switch opc {
        case 0xDC: // PADDUSB
            let x = asBytes(a), y = asBytes(b); var o = SIMD16<UInt8>()
            for k in 0..<16 { o[k] = UInt8(clamping: Int(x[k]) + Int(y[k])) }; return v128(o)
        case 0xDD:
            let x = asWords(a), y = asWords(b); var o = SIMD8<UInt16>()
            for k in 0..<8 { o[k] = UInt16(clamping: Int(x[k]) + Int(y[k])) }; return v128(o)
        case 0xD8:
            let x = asBytes(a), y = asBytes(b); var o = SIMD16<UInt8>()
            for k in 0..<16 { o[k] = UInt8(clamping: Int(x[k]) - Int(y[k])) }; return v128(o)
        case 0xD9:
            let x = asWords(a), y = asWords(b); var o = SIMD8<UInt16>()
            for k in 0..<8 { o[k] = UInt16(clamping: Int(x[k]) - Int(y[k])) }; return v128(o)
        case 0xEC:
            let x = asSBytes(a), y = asSBytes(b); var o = SIMD16<Int8>()
            for k in 0..<16 { o[k] = Int8(clamping: Int(x[k]) + Int(y[k])) }; return v128(o)
        case 0xED:
            let x = asSWords(a), y = asSWords(b); var o = SIMD8<Int16>()
            for k in 0..<8 { o[k] = Int16(clamping: Int(x[k]) + Int(y[k])) }; return v128(o)
        case 0xE8:
            let x = asSBytes(a), y = asSBytes(b); var o = SIMD16<Int8>()
            for k in 0..<16 { o[k] = Int8(clamping: Int(x[k]) - Int(y[k])) }; return v128(o)
        default:
            let x = asSWords(a), y = asSWords(b); var o = SIMD8<Int16>()
            for k in 0..<8 { o[k] = Int16(clamping: Int(x[k]) - Int(y[k])) }; return v128(o)
        }
    }

    /// PSRLW/D/Q, PSRAW/D, PSLLW/D/Q by a count.
    mutating func shiftBy(_ opc: UInt8, _ a: V128, _ count: UInt64) -> V128 {
        switch opc {
        case 0xD1:
            return count > 15 ? .zero : v128(asWords(a) &>> UInt16(count))
        case 0xD2: return count > 31 ? .zero : v128(asDwords(a) &>> UInt32(count))
        case 0xD3: return count > 63 ? .zero : a &>> count
        case 0xE1: return v128(asSWords(a) &>> Int16(min(count, 15)))
        case 0xE2: return v128(asSDwords(a) &>> Int32(min(count, 31)))
        case 0xF1: return count > 15 ? .zero : v128(asWords(a) &<< UInt16(count))
        case 0xF2: return count > 31 ? .zero : v128(asDwords(a) &<< UInt32(count))
        default: return count > 63 ? .zero : a &<< count
        }
    }

    mutating func sseShiftImm(_ i: IP, _ opc: UInt8) throws(Fault) {
        if i.isMem { throw Fault.ud }
        let sub = Int(i.reg & 7)
        let a = xget(i.rm)
        let n = i.imm & 0xFF
        var r: V128
        switch (opc, sub) {
        case (0x71, 2): r = shiftBy(0xD1, a, n)
        case (0x71, 4): r = shiftBy(0xE1, a, n)
        case (0x71, 6): r = shiftBy(0xF1, a, n)
        case (0x72, 2): r = shiftBy(0xD2, a, n)
        case (0x72, 4): r = shiftBy(0xE2, a, n)
        case (0x72, 6): r = shiftBy(0xF2, a, n)
        case (0x73, 2): r = shiftBy(0xD3, a, n)
        case (0x73, 6): r = shiftBy(0xF3, a, n)
        case (0x73, 3), (0x73, 7): // PSRLDQ / PSLLDQ by bytes
            let x = asBytes(a)
            var o = SIMD16<UInt8>()
            let s = Int(min(n, 16))
            for k in 0..<16 {
                if sub == 3 { if k + s < 16 { o[k] = x[k + s] } }
                else { if k - s >= 0 { o[k] = x[k - s] } }
            }
            r = v128(o)
        default: throw Fault.ud
        }
        xset(i.rm, r)
    }

    // MARK: FXSAVE / FXRSTOR / XSAVE / XRSTOR

    mutating func fxsaveImage() -> [UInt8] {
        var img = [UInt8](repeating: 0, count: 512)
        img.withUnsafeMutableBytes { b in
            b.storeBytes(of: fpu.cw, toByteOffset: 0, as: UInt16.self)
            b.storeBytes(of: fpu.status, toByteOffset: 2, as: UInt16.self)
            b.storeBytes(of: fpu.abridgedTags, toByteOffset: 4, as: UInt8.self)
            b.storeBytes(of: fpu.fop, toByteOffset: 6, as: UInt16.self)
            b.storeBytes(of: fpu.fip, toByteOffset: 8, as: UInt64.self)
            b.storeBytes(of: fpu.fdp, toByteOffset: 16, as: UInt64.self)
            b.storeBytes(of: mxcsr, toByteOffset: 24, as: UInt32.self)
            b.storeBytes(of: UInt32(0xFFFF), toByteOffset: 28, as: UInt32.self)
            for k in 0..<8 {
                let p = fpu.phys(k) * 16
                b.storeBytes(of: fpu.regs.load(fromByteOffset: p, as: UInt64.self), toByteOffset: 32 + 16 * k, as: UInt64.self)
                b.storeBytes(of: fpu.regs.load(fromByteOffset: p + 8, as: UInt16.self), toByteOffset: 40 + 16 * k, as: UInt16.self)
            }
            for k in 0..<16 {
                b.storeBytes(of: xmm[k][0], toByteOffset: 160 + 16 * k, as: UInt64.self)
                b.storeBytes(of: xmm[k][1], toByteOffset: 168 + 16 * k, as: UInt64.self)
            }
        }
        return img
    }

    mutating func loadFxsaveImage(_ img: [UInt8], x87: Bool = true, sse: Bool = true) {
        guard img.count >= 512 else { return }
        img.withUnsafeBytes { b in
            if x87 {
                fpu.cw = b.load(fromByteOffset: 0, as: UInt16.self)
                let sw = b.load(fromByteOffset: 2, as: UInt16.self)
                fpu.sw = sw; fpu.top = Int((sw >> 11) & 7)
                fpu.fop = b.load(fromByteOffset: 6, as: UInt16.self)
                fpu.fip = b.load(fromByteOffset: 8, as: UInt64.self)
                fpu.fdp = b.load(fromByteOffset: 16, as: UInt64.self)
                for k in 0..<8 {
                    let p = fpu.phys(k) * 16
                    fpu.regs.storeBytes(of: b.load(fromByteOffset: 32 + 16 * k, as: UInt64.self), toByteOffset: p, as: UInt64.self)
                    fpu.regs.storeBytes(of: b.load(fromByteOffset: 40 + 16 * k, as: UInt16.self), toByteOffset: p + 8, as: UInt16.self)
                }
                fpu.setAbridged(b.load(fromByteOffset: 4, as: UInt8.self))
            }
            if sse {
                mxcsr = b.load(fromByteOffset: 24, as: UInt32.self) & 0xFFFF
                for k in 0..<16 {
                    xmm[k] = V128(b.load(fromByteOffset: 160 + 16 * k, as: UInt64.self), b.load(fromByteOffset: 168 + 16 * k, as: UInt64.self))
                }
            }
        }
    }

    mutating func fxsave(_ i: IP) throws(Fault) {
        if cr0 & 0xC != 0 { throw cr0 & 4 != 0 ? Fault.ud : Fault.nm }
        let e = ea(i)
        if e & 15 != 0 { throw Fault.gp(0) }
        let lin = try opLinear(i, 512, write: true)
        try probeWrite(lin, 512)
        try probeWrite(lin &+ 511, 1)
        let img = fxsaveImage()
        // Bytes 464-511 are available to software: leave them alone.
        for k in stride(from: 0, to: 464, by: 8) {
            let v = img.withUnsafeBytes { $0.load(fromByteOffset: k, as: UInt64.self) }
            try store(lin &+ UInt64(k), v)
        }
    }

    mutating func readImage(_ lin: UInt64, _ count: Int) throws(Fault) -> [UInt8] {
        var img = [UInt8](repeating: 0, count: count)
        for k in stride(from: 0, to: count, by: 8) {
            let v = try load(lin &+ UInt64(k), UInt64.self)
            for j in 0..<8 { img[k + j] = UInt8(truncatingIfNeeded: v >> UInt64(8 * j)) }
        }
        return img
    }

    mutating func fxrstor(_ i: IP) throws(Fault) {
        if cr0 & 0xC != 0 { throw cr0 & 4 != 0 ? Fault.ud : Fault.nm }
        let e = ea(i)
        if e & 15 != 0 { throw Fault.gp(0) }
        let lin = try opLinear(i, 512)
        let img = try readImage(lin, 512)
        let m = img.withUnsafeBytes { $0.load(fromByteOffset: 24, as: UInt32.self) }
        if m & ~0xFFFF != 0 { throw Fault.gp(0) }
        loadFxsaveImage(img)
    }

    mutating func xsaveOp(_ i: IP) throws(Fault) {
        if cr4 & 0x4_0000 == 0 { throw Fault.ud }
        if cr0 & 8 != 0 { throw Fault.nm }
        let e = ea(i)
        if e & 63 != 0 { throw Fault.gp(0) }
        let rfbm = xcr0 & ((r[2] << 32) | (r[0] & 0xFFFF_FFFF)) & 3
        let lin = try opLinear(i, 576, write: true)
        try probeWrite(lin, 576)
        try probeWrite(lin &+ 575, 1)
        let img = fxsaveImage()
        func put(_ from: Int, _ to: Int) throws(Fault) {
            for k in stride(from: from, to: to, by: 8) {
                try store(lin &+ UInt64(k), img.withUnsafeBytes { $0.load(fromByteOffset: k, as: UInt64.self) })
            }
        }
        if rfbm & 1 != 0 { try put(0, 24); try put(32, 160) }
        if rfbm & 2 != 0 { try put(160, 416) }
        if rfbm & 3 != 0 { try put(24, 32) }   // MXCSR travels with either
        let bv = try load(lin &+ 512, UInt64.self)
        try store(lin &+ 512, (bv & ~rfbm) | rfbm)
    }

    mutating func xrstorOp(_ i: IP) throws(Fault) {
        if cr4 & 0x4_0000 == 0 { throw Fault.ud }
        if cr0 & 8 != 0 { throw Fault.nm }
        let e = ea(i)
        if e & 63 != 0 { throw Fault.gp(0) }
        let rfbm = xcr0 & ((r[2] << 32) | (r[0] & 0xFFFF_FFFF)) & 3
        let lin = try opLinear(i, 576)
        let img = try readImage(lin, 576)
        let bv = img.withUnsafeBytes { $0.load(fromByteOffset: 512, as: UInt64.self) }
        let comp = img.withUnsafeBytes { $0.load(fromByteOffset: 520, as: UInt64.self) }
        if comp != 0 || bv & ~xcr0 != 0 { throw Fault.gp(0) }
        if rfbm & 1 != 0 {
            if bv & 1 != 0 { loadFxsaveImage(img, x87: true, sse: false) } else { fpu.finit(); fpu.regs.initializeMemory(as: UInt8.self, repeating: 0, count: 128) }
        }
        if rfbm & 2 != 0 {
            if bv & 2 != 0 { loadFxsaveImage(img, x87: false, sse: true) } else { for k in 0..<16 { xmm[k] = .zero } }
        }
        if rfbm & 3 != 0 { mxcsr = img.withUnsafeBytes { $0.load(fromByteOffset: 24, as: UInt32.self) } & 0xFFFF }
    }
}
