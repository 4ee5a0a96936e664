// Everything off the hot path of the executor: system instructions (descriptor tables, control and
// debug registers, MSRs, SYSCALL/SYSENTER, HLT), port I/O, software interrupts, far transfers,
// BCD adjusts, and the dispatch into the FPU and SSE executors.

import Glibc

extension CPUCore {
    @inline(never)
    mutating func execSlow(_ i: IP) throws(Fault) {
        let size = i.size
        let next = rip &+ UInt64(i.len)
        switch i.op {
        case .nop, .pause, .fence, .wbinvd, .clflush:
            if i.op == .wbinvd { try requireCPL0() }
        case .ud: throw Fault.ud
        case .unimpl:
            reportUnimplemented(i)
            throw Fault.ud

        // Port I/O.
        case .inI, .inDX:
            let port = i.op == .inI ? UInt16(i.imm) : UInt16(truncatingIfNeeded: r[2])
            try checkIOPermission(port, size)
            setReg(0, size, UInt64(platformRef.portRead(cpu: index, port: port, size: size)))
            if bp.io != 0 { ioBreakpoint(port, size) }
            pollNow = true
            rip = next
            throw Fault.exitBlock
        case .outI, .outDX:
            let port = i.op == .outI ? UInt16(i.imm) : UInt16(truncatingIfNeeded: r[2])
            try checkIOPermission(port, size)
            platformRef.portWrite(cpu: index, port: port, size: size, value: UInt32(truncatingIfNeeded: r[0]))
            if bp.io != 0 { ioBreakpoint(port, size) }
            pollNow = true
            rip = next
            throw Fault.exitBlock

        // Interrupts.
        case .int:
            if v86 && (flags >> 12) & 3 != 3 { throw Fault.gp(0) }
            rip = next
            try deliver(vector: UInt8(i.imm), code: nil, kind: .software, next: next)
            throw Fault.exitBlock
        case .int3:
            rip = next
            try deliver(vector: 3, code: nil, kind: .software, next: next)
            throw Fault.exitBlock
        case .into:
            if arithFlags() & RFlag.of != 0 {
                rip = next
                try deliver(vector: 4, code: nil, kind: .software, next: next)
                throw Fault.exitBlock
            }
        case .int1:
            rip = next
            try deliver(vector: 1, code: nil, kind: .exception, next: next)
            throw Fault.exitBlock
        case .iret:
            try iret(size, next: next)
            pollNow = true
            throw Fault.exitBlock
        case .hlt:
            try requireCPL0()
            rip = next
            activity = .halted
            throw Fault.exitBlock

        // Far transfers.
        case .jmpFarI:
            try farJump(i.aux, i.imm, next: next)
            throw Fault.exitBlock
        case .callFarI:
            try farCall(i.aux, i.imm, size, next: next)
            throw Fault.exitBlock
        case .jmpFarM, .callFarM:
            let lin = try opLinear(i, size + 2)
            let off = try loadN(lin, size)
            let sel = UInt16(try loadN(lin &+ UInt64(size), 2))
            if i.op == .jmpFarM { try farJump(sel, off, next: next) } else { try farCall(sel, off, size, next: next) }
            throw Fault.exitBlock
        case .retf:
            try farReturn(mode == .m64 && i.flags & DInst.fRexW == 0 && size == 8 ? 4 : size, popBytes: i.imm)
            throw Fault.exitBlock
        case .loadFarPtr:
            let lin = try opLinear(i, size + 2)
            let off = try loadN(lin, size)
            let sel = UInt16(try loadN(lin &+ UInt64(size), 2))
            try loadSegment(Int(i.aux), sel)
            setReg(i.reg, size, off)
            if i.aux == 2 { interruptShadow = true; rip = next; throw Fault.exitBlock }

        // Segment registers.
        case .movRmSeg:
            let v = UInt64(segs[Int(i.reg)].selector)
            if i.isMem { try writeRm(i, 2, v) } else { setReg(i.rm, size, v) }
        case .movSegRm:
            let v = UInt16(truncatingIfNeeded: try readRm(i, 2))
            try loadSegment(Int(i.reg), v)
            if i.reg == 2 { interruptShadow = true; rip = next; throw Fault.exitBlock }

        // Decimal and legacy.
        case .daa, .das, .aaa, .aas, .aam, .aad: try bcd(i)
        case .arpl:
            if !protectedMode || v86 { throw Fault.ud }
            let d = try readRm(i, 2), s = getReg(i.reg, 2)
            if d & 3 < s & 3 { try writeRm(i, 2, (d & ~3) | (s & 3)); setArith(arithFlags() | RFlag.zf) }
            else { setArith(arithFlags() & ~RFlag.zf) }
        case .bound:
            let lin = try opLinear(i, size * 2)
            let lo = signExtend(try loadN(lin, size), size), hi = signExtend(try loadN(lin &+ UInt64(size), size), size)
            let v = signExtend(getReg(i.reg, size), size)
            if v < lo || v > hi { throw Fault(vector: 5, code: 0, hasCode: false) }

        // Descriptor tables.
        case .lgdt, .lidt:
            try requireCPL0()
            let lin = try opLinear(i, 2)
            let limit = UInt32(try loadN(lin, 2))
            var base = try loadN(try opLinear(i, 2) &+ 2, mode == .m64 ? 8 : 4)
            if mode != .m64 && size == 2 { base &= 0xFF_FFFF }
            if i.op == .lgdt { gdtBase = base; gdtLimit = limit } else { idtBase = base; idtLimit = limit }
        case .sgdt, .sidt:
            let lin = try opLinear(i, mode == .m64 ? 10 : 6, write: true)
            let (b, l) = i.op == .sgdt ? (gdtBase, gdtLimit) : (idtBase, idtLimit)
            try storeN(lin, UInt64(l), 2)
            try storeN(lin &+ 2, b, mode == .m64 ? 8 : 4)
        case .sldt, .str:
            if !protectedMode || v86 { throw Fault.ud }
            let v = UInt64(segs[i.op == .sldt ? SegReg.ldtr : SegReg.tr].selector)
            try writeRm(i, i.isMem ? 2 : size, v)
        case .lldt:
            if !protectedMode || v86 { throw Fault.ud }
            try requireCPL0()
            let sel = UInt16(truncatingIfNeeded: try readRm(i, 2))
            if sel & 0xFFFC == 0 {
                segs[SegReg.ldtr] = SegCache(selector: sel, attr: 0x02, limit: 0, base: 0)
            } else {
                if sel & 4 != 0 { throw Fault.gp(UInt32(sel & 0xFFFC)) }
                let d = try readSystemDescriptor(sel, fault: .gp(UInt32(sel & 0xFFFC)))
                if !d.isSystem || d.type != 2 { throw Fault.gp(UInt32(sel & 0xFFFC)) }
                if !d.present { throw Fault.np(UInt32(sel & 0xFFFC)) }
                segs[SegReg.ldtr] = d.cache(selector: sel)
            }
        case .ltr:
            if !protectedMode || v86 { throw Fault.ud }
            try requireCPL0()
            let sel = UInt16(truncatingIfNeeded: try readRm(i, 2))
            if sel & 0xFFFC == 0 || sel & 4 != 0 { throw Fault.gp(UInt32(sel & 0xFFFC)) }
            let d = try readSystemDescriptor(sel, fault: .gp(UInt32(sel & 0xFFFC)))
            if !d.isSystem || (d.type != 1 && d.type != 9) { throw Fault.gp(UInt32(sel & 0xFFFC)) }
            if !d.present { throw Fault.np(UInt32(sel & 0xFFFC)) }
            try markDescriptor(sel, bit: 2 << 40)
            segs[SegReg.tr] = d.cache(selector: sel)
            segs[SegReg.tr].attr |= 2
        case .verr, .verw, .lar, .lsl:
            try accessRights(i)
        case .smsw:
            try writeRm(i, i.isMem ? 2 : size, cr0 & (i.isMem ? 0xFFFF : sizeMask(size)))
        case .lmsw:
            try requireCPL0()
            let v = try readRm(i, 2)
            try writeCR0((cr0 & ~0xE) | (v & 0xF) | (cr0 & 1))
            rip = next
            throw Fault.exitBlock
        case .clts:
            try requireCPL0()
            cr0 &= ~8
        case .invlpg:
            try requireCPL0()
            flushTLBPage(try opLinear(i, 1))
            rip = next
            throw Fault.exitBlock

        // Control and debug registers.
        case .movFromCR:
            try requireCPL0()
            setReg(i.rm, 8, try readCR(Int(i.reg)) & (mode == .m64 ? .max : 0xFFFF_FFFF))
        case .movToCR:
            try requireCPL0()
            try writeCR(Int(i.reg), getReg(i.rm, mode == .m64 ? 8 : 4))
            rip = next
            throw Fault.exitBlock
        case .movFromDR:
            try requireCPL0()
            setReg(i.rm, mode == .m64 ? 8 : 4, try readDR(Int(i.reg)))
        case .movToDR:
            try requireCPL0()
            try writeDR(Int(i.reg), getReg(i.rm, mode == .m64 ? 8 : 4))
            rip = next
            throw Fault.exitBlock   // breakpoints may have changed: the block and its chain end here
        case .debugBreak:
            throw instructionBreakpointFault()

        // MSRs, TSC, CPUID.
        case .rdmsr:
            try requireCPL0()
            let v = try readMSR(UInt32(truncatingIfNeeded: r[1]))
            setReg(0, 4, v & 0xFFFF_FFFF); setReg(2, 4, v >> 32)
        case .wrmsr:
            try requireCPL0()
            try writeMSR(UInt32(truncatingIfNeeded: r[1]), (r[2] << 32) | (r[0] & 0xFFFF_FFFF))
            rip = next
            throw Fault.exitBlock
        case .rdtsc, .rdtscp:
            if cr4 & 4 != 0 && cpl != 0 { throw Fault.gp(0) }
            let t = readTSC()
            setReg(0, 4, t & 0xFFFF_FFFF); setReg(2, 4, t >> 32)
            if i.op == .rdtscp { setReg(1, 4, tscAux & 0xFFFF_FFFF) }
        case .rdpmc:
            throw Fault.gp(0)
        case .rdpid:
            setReg(i.rm, size, tscAux)
        case .cpuid:
            let (a, b, c, d) = cpuid(UInt32(truncatingIfNeeded: r[0]), UInt32(truncatingIfNeeded: r[1]))
            setReg(0, 4, UInt64(a)); setReg(3, 4, UInt64(b)); setReg(1, 4, UInt64(c)); setReg(2, 4, UInt64(d))
        case .xgetbv:
            if cr4 & 0x4_0000 == 0 { throw Fault.ud }
            if r[1] & 0xFFFF_FFFF != 0 { throw Fault.gp(0) }
            setReg(0, 4, xcr0 & 0xFFFF_FFFF); setReg(2, 4, xcr0 >> 32)
        case .xsetbv:
            if cr4 & 0x4_0000 == 0 { throw Fault.ud }
            try requireCPL0()
            let v = (r[2] << 32) | (r[0] & 0xFFFF_FFFF)
            if r[1] & 0xFFFF_FFFF != 0 || v & 1 == 0 || v & ~UInt64(3) != 0 { throw Fault.gp(0) }
            xcr0 = v

        // Fast system calls.
        case .syscall: try syscallOp(next: next); throw Fault.exitBlock
        case .sysret: sysretWide = i.flags & DInst.fRexW != 0; try sysretOp(); throw Fault.exitBlock
        case .sysenter: try sysenterOp(); throw Fault.exitBlock
        case .sysexit: sysretWide = i.flags & DInst.fRexW != 0; try sysexitOp(); throw Fault.exitBlock
        case .swapgs:
            try requireCPL0()
            let g = segs[SegReg.gs].base
            segs[SegReg.gs].base = kernelGSBase
            kernelGSBase = g
            refreshSegment(SegReg.gs)
        case .rdfsbase, .rdgsbase, .wrfsbase, .wrgsbase:
            if cr4 & 0x1_0000 == 0 { throw Fault.ud }
            let s = (i.op == .rdfsbase || i.op == .wrfsbase) ? SegReg.fs : SegReg.gs
            if i.op == .rdfsbase || i.op == .rdgsbase {
                setReg(i.rm, size, segs[s].base)
            } else {
                let v = getReg(i.rm, size)
                if Int64(bitPattern: v) >> 47 != 0 && Int64(bitPattern: v) >> 47 != -1 { throw Fault.gp(0) }
                segs[s].base = v
                refreshSegment(s)
            }

        // FPU and SIMD.
        case .x87: try execX87(i)
        case .fwait:
            if cr0 & 0xA == 0xA { throw Fault.nm }
            try fpuCheckPending()
        case .emms:
            try fpuAvailable()
            fpu.tagWord = 0xFFFF
        case .sse: try execSSE(i)
        case .fxsave: try fxsave(i)
        case .fxrstor: try fxrstor(i)
        case .xsave: try xsaveOp(i)
        case .xrstor: try xrstorOp(i)
        case .ldmxcsr:
            try sseAvailable()
            let v = UInt32(try readRm(i, 4))
            if v & ~0xFFFF != 0 { throw Fault.gp(0) }
            mxcsr = v
        case .stmxcsr:
            try sseAvailable()
            try writeRm(i, 4, UInt64(mxcsr))
        default:
            reportUnimplemented(i)
            throw Fault.ud
        }
        rip = next
    }

    mutating func requireCPL0() throws(Fault) {
        if protectedMode && (cpl != 0 || v86) { throw Fault.gp(0) }
    }

    mutating func checkIOPermission(_ port: UInt16, _ size: Int) throws(Fault) {
        guard protectedMode && (v86 || cpl > Int((flags >> 12) & 3)) else { return }
        // Consult the TSS I/O permission bitmap.
        let tss = segs[SegReg.tr]
        guard tss.limit >= 0x67 else { throw Fault.gp(0) }
        let mapBase = try loadSys(tss.base &+ 0x66, 2)
        let byte = mapBase + UInt64(port >> 3)
        if byte + 1 > UInt64(tss.limit) { throw Fault.gp(0) }
        let bits = try loadSys(tss.base &+ byte, 2)
        let mask = ((UInt64(1) << UInt64(size)) - 1) << UInt64(port & 7)
        if bits & mask != 0 { throw Fault.gp(0) }
    }

    mutating func reportUnimplemented(_ i: IP) {
        UnimplementedLog.report(op: i.op, aux: i.aux, rip: rip, csBase: segs[SegReg.cs].base)
    }

    mutating func accessRights(_ i: IP) throws(Fault) {
        if !protectedMode || v86 { throw Fault.ud }
        let sel = UInt16(truncatingIfNeeded: try readRm(i, 2))
        var ok = false
        var d = Descriptor(raw: 0)
        if sel & 0xFFFC != 0, let a = descriptorAddress(sel) {
            d = Descriptor(raw: try loadSys(a, 8))
            let rpl = Int(sel & 3)
            let privOK = d.conforming || (d.dpl >= cpl && d.dpl >= rpl)
            switch i.op {
            case .verr: ok = !d.isSystem && d.readable && privOK
            case .verw: ok = d.writableData && privOK
            case .lar:
                let validSys: Set<Int> = longModeActive ? [2, 9, 0xB, 0xC] : [1, 2, 3, 4, 5, 9, 0xB, 0xC]
                ok = privOK && (!d.isSystem || validSys.contains(d.type))
            default:
                let validSys: Set<Int> = longModeActive ? [2, 9, 0xB] : [1, 2, 3, 9, 0xB]
                ok = privOK && (!d.isSystem || validSys.contains(d.type))
            }
        }
        setArith(ok ? arithFlags() | RFlag.zf : arithFlags() & ~RFlag.zf)
        guard ok else { return }
        if i.op == .lar { setReg(i.reg, i.size, d.raw >> 32 & 0x00F0_FF00) }
        if i.op == .lsl { setReg(i.reg, i.size, UInt64(d.limit)) }
    }

    mutating func bcd(_ i: IP) throws(Fault) {
        var al = r[0] & 0xFF
        var f = arithFlags()
        let oldCF = f & RFlag.cf != 0
        let oldAF = f & RFlag.af != 0
        switch i.op {
        case .daa, .das:
            let oldAL = al
            var cfOut = false
            if al & 0xF > 9 || oldAF {
                al = i.op == .daa ? (al &+ 6) & 0xFF : (al &- 6) & 0xFF
                cfOut = oldCF || (i.op == .daa ? oldAL > 0xF9 : oldAL < 6)
                f |= RFlag.af
            } else { f &= ~RFlag.af }
            if oldAL > 0x99 || oldCF {
                al = i.op == .daa ? (al &+ 0x60) & 0xFF : (al &- 0x60) & 0xFF
                cfOut = true
            }
            f = (f & ~(RFlag.cf | RFlag.zf | RFlag.sf | RFlag.pf)) | (cfOut ? RFlag.cf : 0)
            f |= (al == 0 ? RFlag.zf : 0) | (al & 0x80) | parityEven(al) << 2
            setReg(0, 1, al)
        case .aaa, .aas:
            var ax = r[0] & 0xFFFF
            if al & 0xF > 9 || oldAF {
                ax = i.op == .aaa ? ax &+ 0x106 : ax &- 0x106
                f |= RFlag.af | RFlag.cf
            } else { f &= ~(RFlag.af | RFlag.cf) }
            ax = (ax & 0xFF0F) & 0xFFFF
            setReg(0, 2, ax)
        case .aam:
            if i.imm == 0 { throw Fault.de }
            let ah = al / i.imm
            al = al % i.imm
            setReg(0, 2, ah << 8 | al)
            f = (f & ~(RFlag.zf | RFlag.sf | RFlag.pf)) | (al == 0 ? RFlag.zf : 0) | (al & 0x80) | parityEven(al) << 2
        default: // aad
            let ah = (r[0] >> 8) & 0xFF
            al = (al &+ ah &* i.imm) & 0xFF
            setReg(0, 2, al)
            f = (f & ~(RFlag.zf | RFlag.sf | RFlag.pf)) | (al == 0 ? RFlag.zf : 0) | (al & 0x80) | parityEven(al) << 2
        }
        setArith(f)
    }
}

/// Names each unimplemented opcode once on stderr.
enum UnimplementedLog {
    private static let seen = SeenSet()
    /// How many distinct unimplemented encodings were reported (tests).
    static var reportedCount: Int { seen.count }
    static func report(op: Op, aux: UInt16, rip: UInt64, csBase: UInt64) {
        let key = UInt32(op.rawValue) << 16 | UInt32(aux)
        guard seen.insert(key) else { return }
        let what: String
        switch op {
        case .sse:
            let map = ["", "0F", "0F 38", "0F 3A"][Int(aux >> 12) & 3]
            let pfx = ["", "66 ", "F3 ", "F2 "][Int(aux >> 8) & 3]
            what = "\(pfx)\(map) \(String(aux & 0xFF, radix: 16, uppercase: true))"
        case .x87:
            what = "x87 \(String(0xD8 + (aux >> 8), radix: 16, uppercase: true)) /\(String(aux & 0xFF, radix: 16, uppercase: true))"
        default:
            what = "\(op) \(String(aux, radix: 16))"
        }
        let msg = "x86: unimplemented instruction \(what) at \(String(csBase &+ rip, radix: 16)) (raising #UD)\n"
        writeDiagnostic(msg)
    }
}

import Synchronization

final class SeenSet: Sendable {
    private let keys = Mutex<Set<UInt32>>([])
    func insert(_ k: UInt32) -> Bool { keys.withLock { $0.insert(k).inserted } }
    var count: Int { keys.withLock { $0.count } }
}
