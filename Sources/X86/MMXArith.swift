// MMX arithmetic (no-prefix 0F 60-76, 0F 70-73, 0F C4/C5/D1-FE): the SSE2 integer lane routines run
// on the 64-bit MMX operands placed in the low half of a vector. Packs and high unpacks need the
// operands placed differently (a pack of MMX words takes the destination's 4 then the source's 4;
// a high unpack interleaves bytes 4-7), the rest is lane-wise, so the low half is the MMX result.

extension CPUCore {
    mutating func execMMXArith(_ i: IP, _ opc: UInt8) throws(Fault) {
        let d = Int(i.reg & 7)
        if opc >= 0x71 && opc <= 0x73 {
            try mmxShiftImm(i, opc)
            return
        }
        let a = fpu.mmx(d)
        let r: UInt64
        switch opc {
        case 0xC4: // PINSRW mm, r32/m16, imm8
            let w = try readRm(i, 2) & 0xFFFF
            let sh = UInt64(i.imm & 3) * 16
            r = (a & ~(0xFFFF << sh)) | (w << sh)
        case 0xC5: // PEXTRW r32, mm, imm8
            setReg(i.reg, 4, (fpu.mmx(Int(i.rm & 7)) >> (UInt64(i.imm & 3) * 16)) & 0xFFFF)
            return
        case 0xD7: // PMOVMSKB r32, mm
            let v = fpu.mmx(Int(i.rm & 7))
            var m: UInt64 = 0
            for k in 0..<8 where (v >> (UInt64(k) * 8 + 7)) & 1 != 0 { m |= 1 << UInt64(k) }
            setReg(i.reg, 4, m)
            return
        case 0xF7: // MASKMOVQ mm, mm: the bytes whose mask byte has its top bit set go to DS:rDI
            guard !i.isMem else { throw Fault.ud }
            try maskedStore(i, data: V128(a, 0), mask: V128(fpu.mmx(Int(i.rm & 7)), 0), bytes: 8)
            return
        case 0xE7: // MOVNTQ m64, mm
            guard i.isMem else { throw Fault.ud }
            try store(try opLinear(i, 8, write: true), a)
            return
        default:
            let b = i.isMem ? try load(try opLinear(i, 8), UInt64.self) : fpu.mmx(Int(i.rm & 7))
            switch opc {
            case 0x70: // PSHUFW
                var o: UInt64 = 0
                for k in 0..<4 {
                    let sel = UInt64((i.imm >> (UInt64(k) * 2)) & 3)
                    o |= ((b >> (sel * 16)) & 0xFFFF) << (UInt64(k) * 16)
                }
                r = o
            case 0x63, 0x67, 0x6B: // PACKSSWB, PACKUSWB, PACKSSDW
                r = try sseIntLanes(i, opc, V128(a, b), V128(0, 0))[0]
            case 0x68, 0x69, 0x6A: // PUNPCKHBW/WD/DQ: the low unpack of the upper halves
                r = try sseIntLanes(i, opc - 8, V128(a >> 32, 0), V128(b >> 32, 0))[0]
            case 0x60...0x62, 0x64...0x66, 0x74...0x76, 0xD1...0xD5, 0xD8...0xDE, 0xE0...0xE5,
                 0xE8...0xEE, 0xF1...0xF6, 0xF8...0xFE:
                r = try sseIntLanes(i, opc, V128(a, 0), V128(b, 0))[0]
            default:
                reportUnimplemented(i)
                throw Fault.ud
            }
        }
        fpu.setMMX(d, r)
    }

    /// 0F 71/72/73 with /2 (logical right), /4 (arithmetic right), /6 (left) and an immediate count,
    /// on the MMX register in rm; the 128-bit-only /3 and /7 (byte shifts) are #UD here.
    private mutating func mmxShiftImm(_ i: IP, _ opc: UInt8) throws(Fault) {
        let kind = i.reg & 7
        let form: UInt8
        switch (opc, kind) {
        case (0x71, 2): form = 0xD1
        case (0x71, 4): form = 0xE1
        case (0x71, 6): form = 0xF1
        case (0x72, 2): form = 0xD2
        case (0x72, 4): form = 0xE2
        case (0x72, 6): form = 0xF2
        case (0x73, 2): form = 0xD3
        case (0x73, 6): form = 0xF3
        default:
            reportUnimplemented(i)
            throw Fault.ud
        }
        let n = Int(i.rm & 7)
        fpu.setMMX(n, shiftBy(form, V128(fpu.mmx(n), 0), UInt64(i.imm & 0xFF))[0])
    }

    /// MASKMOVQ / MASKMOVDQU: a byte-masked store to DS:rDI (segment override allowed), address
    /// size from the instruction; only the selected bytes are written.
    mutating func maskedStore(_ i: IP, data: V128, mask: V128, bytes: Int) throws(Fault) {
        let am: UInt64 = i.asz == 8 ? .max : (i.asz == 4 ? 0xFFFF_FFFF : 0xFFFF)
        for k in 0..<bytes {
            let lane = k >> 3, sh = UInt64(k & 7) * 8
            guard (mask[lane] >> (sh + 7)) & 1 != 0 else { continue }
            let lin = try linear(Int(i.seg), (r[7] &+ UInt64(k)) & am, 1, write: true)
            try store(lin, UInt8(truncatingIfNeeded: data[lane] >> sh))
        }
    }
}
