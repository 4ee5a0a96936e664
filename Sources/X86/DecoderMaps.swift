// Opcode maps: the one-byte map, 0F, 0F38 and 0F3A, choosing the operation and its operand forms.

private let aluRmR: [Op] = [.addRmR, .orRmR, .adcRmR, .sbbRmR, .andRmR, .subRmR, .xorRmR, .cmpRmR]
private let aluRRm: [Op] = [.addRRm, .orRRm, .adcRRm, .sbbRRm, .andRRm, .subRRm, .xorRRm, .cmpRRm]
private let aluRmI: [Op] = [.addRmI, .orRmI, .adcRmI, .sbbRmI, .andRmI, .subRmI, .xorRmI, .cmpRmI]

extension Decoder {
    mutating func decodeOneByte(_ d: inout DInst, _ b: UInt8, rip: UInt64) {
        let m64 = mode == .m64
        switch b {
        case 0x00...0x3F where b & 7 < 6:
            let kind = Int(b >> 3)
            switch b & 7 {
            case 0: d.osz = 1; d.op = aluRmR[kind]; _ = modrm(&d, byteOperand: true)
            case 1: d.op = aluRmR[kind]; _ = modrm(&d)
            case 2: d.osz = 1; d.op = aluRRm[kind]; _ = modrm(&d, byteOperand: true)
            case 3: d.op = aluRRm[kind]; _ = modrm(&d)
            case 4: d.osz = 1; d.op = aluRmI[kind]; d.rm = 0; d.imm = UInt64(byte())
            default: d.op = aluRmI[kind]; d.rm = 0; d.imm = immOsz(d.osz)
            }
        case 0x06, 0x0E, 0x16, 0x1E:
            if m64 { d.op = .ud } else { d.op = .pushSeg; d.reg = b >> 3; d.osz = osz64 }
        case 0x07, 0x17, 0x1F:
            if m64 { d.op = .ud } else { d.op = .popSeg; d.reg = b >> 3; d.osz = osz64 }
        case 0x27: d.op = m64 ? .ud : .daa
        case 0x2F: d.op = m64 ? .ud : .das
        case 0x37: d.op = m64 ? .ud : .aaa
        case 0x3F: d.op = m64 ? .ud : .aas
        case 0x40...0x47: d.op = .incRm; d.rm = b & 7
        case 0x48...0x4F: d.op = .decRm; d.rm = b & 7
        case 0x50...0x57: d.op = .pushR; d.reg = (b & 7) | rexB; d.osz = osz64
        case 0x58...0x5F: d.op = .popR; d.reg = (b & 7) | rexB; d.osz = osz64
        case 0x60: d.op = m64 ? .ud : .pusha
        case 0x61: d.op = m64 ? .ud : .popa
        case 0x62: if m64 { d.op = .ud } else { d.op = .bound; _ = modrm(&d); if !d.isMem { d.op = .ud } }
        case 0x63:
            if m64 { d.op = .movsxd; _ = modrm(&d) } else { d.op = .arpl; d.osz = 2; _ = modrm(&d) }
        case 0x68: d.op = .pushI; d.osz = osz64; d.imm = immOsz(d.osz == 8 ? 8 : d.osz)
        case 0x69: d.op = .imulRRmI; _ = modrm(&d); d.imm = immOsz(d.osz)
        case 0x6A: d.op = .pushI; d.osz = osz64; d.imm = s8()
        case 0x6B: d.op = .imulRRmI; _ = modrm(&d); d.imm = s8()
        case 0x6C: d.op = .ins; d.osz = 1
        case 0x6D: d.op = .ins; if d.osz == 8 { d.osz = 4 }
        case 0x6E: d.op = .outs; d.osz = 1
        case 0x6F: d.op = .outs; if d.osz == 8 { d.osz = 4 }
        case 0x70...0x7F:
            d.op = .jcc; d.aux = UInt16(b & 0xF); d.osz = osz64
            let rel = s8(); d.imm = target(rel, rip: rip, size: d.osz)
        case 0x80, 0x82:
            if b == 0x82 && m64 { d.op = .ud; return }
            d.osz = 1; let m = modrm(&d, byteOperand: true); d.op = aluRmI[Int((m >> 3) & 7)]; d.imm = UInt64(byte())
        case 0x81: let m = modrm(&d); d.op = aluRmI[Int((m >> 3) & 7)]; d.imm = immOsz(d.osz)
        case 0x83: let m = modrm(&d); d.op = aluRmI[Int((m >> 3) & 7)]; d.imm = s8()
        case 0x84: d.osz = 1; d.op = .testRmR; _ = modrm(&d, byteOperand: true)
        case 0x85: d.op = .testRmR; _ = modrm(&d)
        case 0x86: d.osz = 1; d.op = .xchgRmR; _ = modrm(&d, byteOperand: true)
        case 0x87: d.op = .xchgRmR; _ = modrm(&d)
        case 0x88: d.osz = 1; d.op = .movRmR; _ = modrm(&d, byteOperand: true)
        case 0x89: d.op = .movRmR; _ = modrm(&d)
        case 0x8A: d.osz = 1; d.op = .movRRm; _ = modrm(&d, byteOperand: true)
        case 0x8B: d.op = .movRRm; _ = modrm(&d)
        case 0x8C:
            d.op = .movRmSeg; _ = modrm(&d); d.reg &= 7
            if d.isMem { d.osz = 2 }
            if d.reg > 5 { d.op = .ud }
        case 0x8D: d.op = .lea; _ = modrm(&d); if !d.isMem { d.op = .ud }
        case 0x8E:
            d.op = .movSegRm; d.osz = 2; _ = modrm(&d); d.reg &= 7
            if d.reg == 1 || d.reg > 5 { d.op = .ud }
        case 0x8F:
            d.osz = osz64; let m = modrm(&d); d.op = (m >> 3) & 7 == 0 ? .popRm : .ud
        case 0x90:
            if rex & 1 != 0 { d.op = .xchgRmR; d.rm = 8; d.reg = 0 } else { d.op = rep ? .pause : .nop }
        case 0x91...0x97: d.op = .xchgRmR; d.rm = (b & 7) | rexB; d.reg = 0
        case 0x98: d.op = .cbw
        case 0x99: d.op = .cwd
        case 0x9A:
            if m64 { d.op = .ud } else { d.op = .callFarI; d.imm = immOsz(d.osz); d.aux = UInt16(u16()) }
        case 0x9B: d.op = .fwait
        case 0x9C: d.op = .pushf; d.osz = osz64
        case 0x9D: d.op = .popf; d.osz = osz64
        case 0x9E: d.op = .sahf
        case 0x9F: d.op = .lahf
        case 0xA0...0xA3:
            d.flags |= DInst.fMem
            d.disp = asz == 8 ? (u32() | u32() << 32) : (asz == 4 ? u32() : u16())
            d.rm = 0; d.reg = 0
            if b & 1 == 0 { d.osz = 1 }
            d.op = b < 0xA2 ? .movRRm : .movRmR
        case 0xA4: d.op = .movs; d.osz = 1
        case 0xA5: d.op = .movs
        case 0xA6: d.op = .cmps; d.osz = 1
        case 0xA7: d.op = .cmps
        case 0xA8: d.op = .testRmI; d.osz = 1; d.rm = 0; d.imm = UInt64(byte())
        case 0xA9: d.op = .testRmI; d.rm = 0; d.imm = immOsz(d.osz)
        case 0xAA: d.op = .stos; d.osz = 1
        case 0xAB: d.op = .stos
        case 0xAC: d.op = .lods; d.osz = 1
        case 0xAD: d.op = .lods
        case 0xAE: d.op = .scas; d.osz = 1
        case 0xAF: d.op = .scas
        case 0xB0...0xB7: d.op = .movRI; d.osz = 1; d.reg = byteReg((b & 7) | rexB); d.imm = UInt64(byte())
        case 0xB8...0xBF:
            d.op = .movRI; d.reg = (b & 7) | rexB
            d.imm = d.osz == 8 ? (u32() | u32() << 32) : immOsz(d.osz)
        case 0xC0, 0xC1, 0xD0, 0xD1, 0xD2, 0xD3:
            let byteOp = b & 1 == 0
            if byteOp { d.osz = 1 }
            let m = modrm(&d, byteOperand: byteOp)
            d.op = .shift; d.aux = UInt16((m >> 3) & 7)
            switch b {
            case 0xC0, 0xC1: d.imm = UInt64(byte())
            case 0xD0, 0xD1: d.imm = 1
            default: d.flags |= DInst.fCountCL
            }
        case 0xC2: d.op = .ret; d.osz = osz64; d.imm = u16()
        case 0xC3: d.op = .ret; d.osz = osz64
        case 0xC4, 0xC5:
            if m64 || (pos < avail && p[pos] >= 0xC0) { d.op = .unimpl; d.aux = UInt16(b); return } // VEX
            d.op = .loadFarPtr; d.aux = b == 0xC4 ? 0 : 3; _ = modrm(&d)
        case 0xC6, 0xC7:
            let byteOp = b == 0xC6
            if byteOp { d.osz = 1 }
            let m = modrm(&d, byteOperand: byteOp)
            if (m >> 3) & 7 != 0 { d.op = .ud; return }
            d.op = .movRmI; d.imm = immOsz(d.osz)
        case 0xC8: d.op = .enter; d.osz = osz64; d.imm = u16(); d.aux = UInt16(byte())
        case 0xC9: d.op = .leave; d.osz = osz64
        case 0xCA: d.op = .retf; d.imm = u16()
        case 0xCB: d.op = .retf
        case 0xCC: d.op = .int3
        case 0xCD: d.op = .int; d.imm = UInt64(byte())
        case 0xCE: d.op = m64 ? .ud : .into
        case 0xCF: d.op = .iret
        case 0xD4: if m64 { d.op = .ud } else { d.op = .aam; d.imm = UInt64(byte()) }
        case 0xD5: if m64 { d.op = .ud } else { d.op = .aad; d.imm = UInt64(byte()) }
        case 0xD6: d.op = m64 ? .ud : .salc
        case 0xD7: d.op = .xlat
        case 0xD8...0xDF:
            let m = modrm(&d)
            d.op = .x87; d.aux = UInt16(b & 7) << 8 | UInt16(m)
        case 0xE0...0xE3:
            d.op = [Op.loopne, .loope, .loop, .jcxz][Int(b - 0xE0)]
            d.osz = osz64
            let rel = s8(); d.imm = target(rel, rip: rip, size: d.osz)
        case 0xE4: d.op = .inI; d.osz = 1; d.imm = UInt64(byte())
        case 0xE5: d.op = .inI; if d.osz == 8 { d.osz = 4 }; d.imm = UInt64(byte())
        case 0xE6: d.op = .outI; d.osz = 1; d.imm = UInt64(byte())
        case 0xE7: d.op = .outI; if d.osz == 8 { d.osz = 4 }; d.imm = UInt64(byte())
        case 0xE8:
            d.op = .call; d.osz = osz64
            let rel = d.osz == 2 ? s16() : s32(); d.imm = target(rel, rip: rip, size: d.osz)
        case 0xE9:
            d.op = .jmp; d.osz = osz64
            let rel = d.osz == 2 ? s16() : s32(); d.imm = target(rel, rip: rip, size: d.osz)
        case 0xEA:
            if m64 { d.op = .ud } else { d.op = .jmpFarI; d.imm = immOsz(d.osz); d.aux = UInt16(u16()) }
        case 0xEB:
            d.op = .jmp; d.osz = osz64
            let rel = s8(); d.imm = target(rel, rip: rip, size: d.osz)
        case 0xEC: d.op = .inDX; d.osz = 1
        case 0xED: d.op = .inDX; if d.osz == 8 { d.osz = 4 }
        case 0xEE: d.op = .outDX; d.osz = 1
        case 0xEF: d.op = .outDX; if d.osz == 8 { d.osz = 4 }
        case 0xF1: d.op = .int1
        case 0xF4: d.op = .hlt
        case 0xF5: d.op = .cmc
        case 0xF6, 0xF7:
            let byteOp = b == 0xF6
            if byteOp { d.osz = 1 }
            let m = modrm(&d, byteOperand: byteOp)
            switch (m >> 3) & 7 {
            case 0, 1: d.op = .testRmI; d.imm = immOsz(d.osz)
            case 2: d.op = .notRm
            case 3: d.op = .negRm
            case 4: d.op = .mulRm
            case 5: d.op = .imulRm
            case 6: d.op = .divRm
            default: d.op = .idivRm
            }
        case 0xF8: d.op = .clc
        case 0xF9: d.op = .stc
        case 0xFA: d.op = .cli
        case 0xFB: d.op = .sti
        case 0xFC: d.op = .cld
        case 0xFD: d.op = .std
        case 0xFE:
            d.osz = 1
            let m = modrm(&d, byteOperand: true)
            switch (m >> 3) & 7 {
            case 0: d.op = .incRm
            case 1: d.op = .decRm
            default: d.op = .ud
            }
        case 0xFF:
            let m = modrm(&d)
            switch (m >> 3) & 7 {
            case 0: d.op = .incRm
            case 1: d.op = .decRm
            case 2: d.op = .callRm; d.osz = osz64
            case 3: d.op = d.isMem ? .callFarM : .ud
            case 4: d.op = .jmpRm; d.osz = osz64
            case 5: d.op = d.isMem ? .jmpFarM : .ud
            case 6: d.op = .pushRm; d.osz = osz64
            default: d.op = .ud
            }
        default:
            d.op = .ud
        }
        // INC/DEC r (0x40-0x4F) use the register, not a memory operand.
        if (0x40...0x4F).contains(b) && !m64 { d.flags &= ~DInst.fMem }
    }

    mutating func decode0F(_ d: inout DInst, _ b: UInt8, rip: UInt64) {
        let m64 = mode == .m64
        switch b {
        case 0x00:
            let m = modrm(&d); d.osz = 2
            switch (m >> 3) & 7 {
            case 0: d.op = .sldt; if !d.isMem { d.osz = osz }
            case 1: d.op = .str; if !d.isMem { d.osz = osz }
            case 2: d.op = .lldt
            case 3: d.op = .ltr
            case 4: d.op = .verr
            case 5: d.op = .verw
            default: d.op = .ud
            }
        case 0x01:
            let m = modrm(&d)
            let sub = (m >> 3) & 7
            if d.isMem {
                switch sub {
                case 0: d.op = .sgdt
                case 1: d.op = .sidt
                case 2: d.op = .lgdt
                case 3: d.op = .lidt
                case 4: d.op = .smsw; d.osz = 2
                case 6: d.op = .lmsw; d.osz = 2
                case 7: d.op = .invlpg
                default: d.op = .ud
                }
            } else {
                switch m {
                case 0xD0: d.op = .xgetbv
                case 0xD1: d.op = .xsetbv
                case 0xF8: d.op = m64 ? .swapgs : .ud
                case 0xF9: d.op = .rdtscp
                case 0xC8, 0xC9, 0xCA, 0xCB: d.op = .ud  // MONITOR/MWAIT/CLAC/STAC: not in CPUID
                default:
                    if sub == 4 { d.op = .smsw } else if sub == 6 { d.op = .lmsw; d.osz = 2 } else { d.op = .ud }
                }
            }
        case 0x02: d.op = .lar; _ = modrm(&d)
        case 0x03: d.op = .lsl; _ = modrm(&d)
        case 0x05: d.op = m64 ? .syscall : .ud
        case 0x06: d.op = .clts
        case 0x07: d.op = m64 ? .sysret : .ud
        case 0x08, 0x09: d.op = .wbinvd
        case 0x0B, 0xB9, 0xFF: d.op = .ud; if b != 0x0B { _ = modrm(&d) }
        case 0x0D, 0x18...0x1F: d.op = .nop; _ = modrm(&d)
        case 0x20...0x23:
            let m = byte()
            d.reg = ((m >> 3) & 7) | rexR
            d.rm = (m & 7) | rexB
            d.osz = m64 ? 8 : 4
            if lock && b == 0x20 || lock && b == 0x22 { d.reg |= 8; lock = false; d.flags &= ~DInst.fLock }
            d.op = [Op.movFromCR, .movFromDR, .movToCR, .movToDR][Int(b - 0x20)]
        case 0x30: d.op = .wrmsr
        case 0x31: d.op = .rdtsc
        case 0x32: d.op = .rdmsr
        case 0x33: d.op = .rdpmc
        case 0x34: d.op = .sysenter
        case 0x35: d.op = .sysexit
        case 0x40...0x4F: d.op = .cmovcc; d.aux = UInt16(b & 0xF); _ = modrm(&d)
        case 0x80...0x8F:
            d.op = .jcc; d.aux = UInt16(b & 0xF); d.osz = osz64
            let rel = d.osz == 2 ? s16() : s32(); d.imm = target(rel, rip: rip, size: d.osz)
        case 0x90...0x9F: d.op = .setcc; d.aux = UInt16(b & 0xF); d.osz = 1; _ = modrm(&d, byteOperand: true)
        case 0xA0: d.op = .pushSeg; d.reg = 4; d.osz = osz64
        case 0xA1: d.op = .popSeg; d.reg = 4; d.osz = osz64
        case 0xA8: d.op = .pushSeg; d.reg = 5; d.osz = osz64
        case 0xA9: d.op = .popSeg; d.reg = 5; d.osz = osz64
        case 0xA2: d.op = .cpuid
        case 0xA3: d.op = .btR; _ = modrm(&d)
        case 0xAB: d.op = .btsR; _ = modrm(&d)
        case 0xB3: d.op = .btrR; _ = modrm(&d)
        case 0xBB: d.op = .btcR; _ = modrm(&d)
        case 0xA4: d.op = .shld; _ = modrm(&d); d.imm = UInt64(byte())
        case 0xA5: d.op = .shld; _ = modrm(&d); d.flags |= DInst.fCountCL
        case 0xAC: d.op = .shrd; _ = modrm(&d); d.imm = UInt64(byte())
        case 0xAD: d.op = .shrd; _ = modrm(&d); d.flags |= DInst.fCountCL
        case 0xAE:
            let m = modrm(&d)
            let sub = (m >> 3) & 7
            if d.isMem {
                if rep || repne || opsize { d.op = .ud; return }
                switch sub {
                case 0: d.op = .fxsave
                case 1: d.op = .fxrstor
                case 2: d.op = .ldmxcsr
                case 3: d.op = .stmxcsr
                case 4: d.op = .xsave
                case 5: d.op = .xrstor
                case 6: d.op = .xsave      // XSAVEOPT: same effect
                default: d.op = .clflush
                }
            } else if rep && m64 {
                d.osz = rexW ? 8 : 4
                d.op = [Op.rdfsbase, .rdgsbase, .wrfsbase, .wrgsbase, .ud, .ud, .ud, .ud][Int(sub)]
            } else {
                d.op = sub >= 5 ? .fence : .ud
            }
        case 0xAF: d.op = .imulRRm; _ = modrm(&d)
        case 0xB0: d.op = .cmpxchg; d.osz = 1; _ = modrm(&d, byteOperand: true)
        case 0xB1: d.op = .cmpxchg; _ = modrm(&d)
        case 0xB2: d.op = .loadFarPtr; d.aux = 2; _ = modrm(&d); if !d.isMem { d.op = .ud }
        case 0xB4: d.op = .loadFarPtr; d.aux = 4; _ = modrm(&d); if !d.isMem { d.op = .ud }
        case 0xB5: d.op = .loadFarPtr; d.aux = 5; _ = modrm(&d); if !d.isMem { d.op = .ud }
        case 0xB6: d.op = .movzx8; let o = d.osz; d.osz = 1; _ = modrm(&d, byteOperand: true, byteRegField: false); d.imm = UInt64(o)
        case 0xB7: d.op = .movzx16; _ = modrm(&d)
        case 0xBE: d.op = .movsx8; let o = d.osz; d.osz = 1; _ = modrm(&d, byteOperand: true, byteRegField: false); d.imm = UInt64(o)
        case 0xBF: d.op = .movsx16; _ = modrm(&d)
        case 0xB8: if rep && hasPOPCNT { d.op = .popcnt; _ = modrm(&d) } else { d.op = .ud }
        case 0xBA:
            let m = modrm(&d)
            d.imm = UInt64(byte())
            switch (m >> 3) & 7 {
            case 4: d.op = .btI
            case 5: d.op = .btsI
            case 6: d.op = .btrI
            case 7: d.op = .btcI
            default: d.op = .ud
            }
        case 0xBC: d.op = rep && hasTZCNT ? .tzcnt : .bsf; _ = modrm(&d)
        case 0xBD: d.op = rep && hasLZCNT ? .lzcnt : .bsr; _ = modrm(&d)
        case 0xC0: d.op = .xadd; d.osz = 1; _ = modrm(&d, byteOperand: true)
        case 0xC1: d.op = .xadd; _ = modrm(&d)
        case 0xC7:
            let m = modrm(&d)
            let sub = (m >> 3) & 7
            if d.isMem && sub == 1 { d.op = .cmpxchg8b }
            else if !d.isMem && sub == 7 && rep { d.op = .rdpid; d.osz = m64 ? 8 : 4 }
            else if !d.isMem && (sub == 6 || sub == 7) { d.op = .ud }  // RDRAND/RDSEED: not in CPUID
            else { d.op = .ud }
        case 0xC8...0xCF: d.op = .bswap; d.reg = (b & 7) | rexB
        case 0x77: d.op = .emms
        default:
            // Everything else in 0F is SSE/MMX (0x10-0x17, 0x28-0x2F, 0x50-0x7F, 0xC2-0xC6, 0xD0-0xFE).
            decodeSSE(&d, map: 1, b)
        }
    }

    mutating func decode0F38(_ d: inout DInst, _ b: UInt8) {
        if b == 0xF0 || b == 0xF1 {
            if repne {
                // CRC32 r32/r64, r/m8 (F0) or r/m16/32/64 (F1): osz is the source's size, REX.W the
                // destination's.
                d.op = simdExt & 4 != 0 ? .sse : .ud
                d.aux = 0x2300 | UInt16(b)
                if b == 0xF0 { d.osz = 1 }
                _ = modrm(&d, byteOperand: b == 0xF0, byteRegField: false)
                return
            }
            d.op = b == 0xF0 ? .movbeLoad : .movbeStore
            _ = modrm(&d)
            if !d.isMem || !hasMOVBE { d.op = .ud }
            return
        }
        decodeSSE(&d, map: 2, b)
    }

    mutating func decode0F3A(_ d: inout DInst, _ b: UInt8) {
        decodeSSE(&d, map: 3, b)
        d.imm = UInt64(byte())
    }

    /// SSE/MMX: operands via ModRM, the executor decides by `aux` = map << 12 | prefix << 8 | opcode
    /// (prefix 0 none, 1 = 66, 2 = F3, 3 = F2).
    mutating func decodeSSE(_ d: inout DInst, map: UInt16, _ b: UInt8) {
        let pfx: UInt16 = repne ? 3 : (rep ? 2 : (opsize ? 1 : 0))
        d.op = .sse
        d.aux = map << 12 | pfx << 8 | UInt16(b)
        d.osz = rexW ? 8 : 4
        _ = modrm(&d)
        if map == 1 {
            switch b {
            case 0x70, 0x71, 0x72, 0x73, 0xC2, 0xC4, 0xC5, 0xC6: d.imm = UInt64(byte())
            default: break
            }
        } else {
            // 0F 38 / 0F 3A: CPUID decides. Encodings we do not implement stay `.sse` and are named
            // by the executor; ones CPUID does not report raise #UD silently, as QEMU's TCG does.
            let need = Decoder.simdExtRequirement(map: map, pfx: pfx, b)
            if need != 0 && simdExt & need == 0 { d.op = .ud }
        }
    }

    /// The CPUID feature (`simdExt` bit: 1 SSSE3, 2 SSE4.1, 4 SSE4.2) an 0F 38 / 0F 3A encoding
    /// needs, or 0 when the interpreter does not implement it.
    static func simdExtRequirement(map: UInt16, pfx: UInt16, _ b: UInt8) -> UInt8 {
        if map == 2 {
            switch b {
            case 0x00...0x0B, 0x1C...0x1E: return pfx <= 1 ? 1 : 0
            case 0x10, 0x14, 0x15, 0x17, 0x20...0x25, 0x28...0x2B, 0x30...0x35, 0x38...0x41: return pfx == 1 ? 2 : 0
            case 0x37: return pfx == 1 ? 4 : 0
            default: return 0
            }
        }
        switch b {
        case 0x0F: return pfx <= 1 ? 1 : 0
        case 0x08...0x0E, 0x14...0x17, 0x20...0x22, 0x40...0x42: return pfx == 1 ? 2 : 0
        case 0x60...0x63: return pfx == 1 ? 4 : 0
        default: return 0
        }
    }
}
