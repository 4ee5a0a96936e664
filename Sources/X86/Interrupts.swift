// Exception and interrupt delivery through the IVT (real mode) or the IDT (protected and long
// mode), with stack switches from the TSS (RSP0-2, IST), error codes, the double-fault rules and
// triple-fault shutdown, task gates (TaskSwitch.swift) and delivery from virtual-8086 mode; and
// IRET in its real, vm86, protected (including the task return with NT and the return into vm86)
// and long-mode forms.

extension CPUCore {
    enum EventKind { case exception, hardware, software, nmi }

    /// Delivers a fault raised by an instruction, escalating to #DF and shutdown per the SDM.
    mutating func raise(_ f0: Fault) {
        if traceFaults { logFault(f0) }
        var f = f0
        var prev: UInt8? = nil
        while true {
            do {
                try deliver(vector: f.vector, code: f.hasCode ? f.code : nil, kind: .exception, next: rip)
                return
            } catch {
                let second = error
                if traceFaults { logFault(second) }
                if f.vector == 8 || (prev == 8) { shutdownRequested = true; return }
                let contributory: Set<UInt8> = [0, 10, 11, 12, 13]
                let firstC = contributory.contains(f.vector), secondC = contributory.contains(second.vector)
                if (firstC && secondC) || (f.vector == 14 && (secondC || second.vector == 14)) {
                    prev = f.vector
                    f = Fault(vector: 8, code: 0, hasCode: true)
                } else {
                    prev = f.vector
                    f = second
                }
            }
        }
    }

    /// Delivers vector `v`. `next` is the RIP to push (the faulting instruction for faults, the next
    /// instruction for traps, INT n and external interrupts).
    mutating func deliver(vector v: UInt8, code: UInt32?, kind: EventKind, next: UInt64) throws(Fault) {
        interruptShadow = false
        activity = .running
        let ext: UInt32 = kind == .software ? 0 : 1
        if !protectedMode {
            // Real mode: IVT entry = offset:segment.
            let entry = UInt64(v) * 4
            if entry + 3 > UInt64(idtLimit) { throw Fault.gp(0) }
            let ip = try loadSys(idtBase &+ entry, 2)
            let cs = try loadSys(idtBase &+ entry &+ 2, 2)
            try push(rflags & 0xFFFF, 2)
            try push(UInt64(segs[SegReg.cs].selector), 2)
            try push(next & 0xFFFF, 2)
            flags &= ~(RFlag.ifl | RFlag.tf | RFlag.ac | RFlag.rf)
            loadCS(UInt16(cs), descriptor: nil, cpl: 0)
            rip = ip
            return
        }
        let long = longModeActive
        let gateSize: UInt64 = long ? 16 : 8
        let off = UInt64(v) * gateSize
        let idtCode = UInt32(v) * 8 + 2 + ext
        if off + gateSize - 1 > UInt64(idtLimit) { throw Fault.gp(idtCode) }
        var gate = Descriptor(raw: try loadSys(idtBase &+ off, 8))
        if long { gate.high = try loadSys(idtBase &+ off &+ 8, 8) }
        let gtype = gate.type
        let validTypes: Set<Int> = long ? [0xE, 0xF] : [0x5, 0x6, 0x7, 0xE, 0xF]
        if !gate.isSystem || !validTypes.contains(gtype) { throw Fault.gp(idtCode) }
        if kind == .software && gate.dpl < cpl { throw Fault.gp(UInt32(v) * 8 + 2) }
        if !gate.present { throw Fault.np(idtCode) }
        if gtype == 0x5 {
            try interruptThroughTaskGate(gate, code: code, next: next)
            return
        }

        let sel = gate.gateSelector
        if sel & 0xFFFC == 0 { throw Fault.gp(ext) }
        let cd = try readDescriptor(sel, fault: .gp(UInt32(sel & 0xFFFC) + ext))
        if !cd.isCode || cd.dpl > cpl { throw Fault.gp(UInt32(sel & 0xFFFC) + ext) }
        if !cd.present { throw Fault.np(UInt32(sel & 0xFFFC) + ext) }
        if long && (!cd.long || cd.raw & (1 << 54) != 0) { throw Fault.gp(UInt32(sel & 0xFFFC) + ext) }
        let newCPL = cd.conforming ? cpl : cd.dpl
        let is32 = long || gtype & 8 != 0
        let psize = long ? 8 : (is32 ? 4 : 2)
        let target = long ? gate.gateOffset : (is32 ? gate.gateOffset & 0xFFFF_FFFF : gate.gateOffset & 0xFFFF)
        var oldFlags = rflags
        // Fault-class exceptions push RF = 1 so the restarted instruction is not re-trapped.
        if kind == .exception && !(v == 1 || v == 3 || v == 4 || v == 8 || v == 18) { oldFlags |= RFlag.rf }
        let oldCS = UInt64(segs[SegReg.cs].selector)
        let oldSS = UInt64(segs[SegReg.ss].selector)
        let oldSP = r[4]
        let fromV86 = v86
        if fromV86 && newCPL != 0 { throw Fault.gp(UInt32(sel & 0xFFFC)) }

        if long {
            let ist = Int(gate.raw >> 32) & 7
            var sp: UInt64
            let tss = segs[SegReg.tr].base
            if ist != 0 {
                sp = try loadSys(tss &+ 0x24 &+ UInt64(ist - 1) * 8, 8)
            } else if newCPL != cpl {
                sp = try loadSys(tss &+ 4 &+ UInt64(newCPL) * 8, 8)
            } else {
                sp = oldSP
            }
            sp &= ~0xF
            var frame: [UInt64] = [oldSS, oldSP, oldFlags, oldCS, next]
            if let code { frame.append(UInt64(code)) }
            for (k, val) in frame.enumerated() {
                try storeSys(sp &- UInt64(8 * (k + 1)), val, 8)
            }
            sp &-= UInt64(8 * frame.count)
            if newCPL != cpl {
                segs[SegReg.ss] = SegCache(selector: UInt16(newCPL), attr: UInt16(newCPL << 5) | 0x93, limit: 0, base: 0)
            }
            loadCS(sel, descriptor: cd, cpl: newCPL)
            r[4] = sp
        } else {
            var ssBase = segs[SegReg.ss].base
            var sp = oldSP
            var stackMask32: UInt64 = segs[SegReg.ss].attr & 0x4000 != 0 ? 0xFFFF_FFFF : 0xFFFF
            var newSSCache: SegCache? = nil
            if newCPL < cpl {
                let (esp, ss) = try innerStack(newCPL)
                let ec = UInt32(ss & 0xFFFC) + ext
                if ss & 0xFFFC == 0 { throw Fault.ts(ext) }
                let sd = try readDescriptor(ss, fault: .ts(ec))
                if Int(ss & 3) != newCPL || sd.dpl != newCPL || !sd.writableData { throw Fault.ts(ec) }
                if !sd.present { throw Fault.ss(ec) }
                newSSCache = sd.cache(selector: ss)
                ssBase = sd.base
                stackMask32 = sd.attr & 0x4000 != 0 ? 0xFFFF_FFFF : 0xFFFF
                sp = esp
            }
            var frame: [UInt64] = []
            if fromV86 {
                // From virtual-8086 mode the data segments go on the ring-0 stack and become null.
                frame += [SegReg.gs, SegReg.fs, SegReg.ds, SegReg.es].map { UInt64(segs[$0].selector) }
            }
            if newSSCache != nil { frame += [oldSS, oldSP] }
            frame += [oldFlags, oldCS, next]
            if let code { frame.append(UInt64(code)) }
            for val in frame {
                sp = (sp &- UInt64(psize)) & stackMask32
                try storeSys((ssBase &+ sp) & 0xFFFF_FFFF, val, psize)
            }
            if var ssc = newSSCache {
                ssc.attr |= 1
                segs[SegReg.ss] = ssc
            }
            if fromV86 {
                for s in [SegReg.es, SegReg.ds, SegReg.fs, SegReg.gs] { segs[s] = SegCache(selector: 0, attr: 0, limit: 0, base: 0) }
            }
            loadCS(sel, descriptor: cd, cpl: newCPL)
            if stackMask32 == 0xFFFF { r[4] = (r[4] & ~0xFFFF) | (sp & 0xFFFF) } else { r[4] = sp }
        }
        flags &= ~(RFlag.tf | RFlag.nt | RFlag.rf | RFlag.vm)
        if gtype & 1 == 0 { flags &= ~RFlag.ifl }
        lop = 0
        flags = (flags & ~RFlag.arith) | (oldFlags & RFlag.arith)
        refreshMode()
        rip = target
    }

    mutating func iret(_ size: Int, next: UInt64 = 0) throws(Fault) {
        if !protectedMode || v86 {
            if v86 && (flags >> 12) & 3 != 3 { throw Fault.gp(0) }
            let ip = try peek(0, size)
            let cs = try peek(UInt64(size), size)
            let fl = try peek(UInt64(2 * size), size)
            setSP(r[4] &+ UInt64(3 * size))
            loadCS(UInt16(truncatingIfNeeded: cs), descriptor: nil, cpl: cpl)
            writeFlags(fl, size: size, iret: true)
            rip = ip
            return
        }
        if flags & RFlag.nt != 0 {
            if longModeActive { throw Fault.gp(0) }   // no task return in IA-32e mode
            try iretTask(next: next)
            return
        }
        let newIP = try peek(0, size)
        let sel = UInt16(truncatingIfNeeded: try peek(UInt64(size), size))
        let newFlags = try peek(UInt64(2 * size), size)
        if newFlags & RFlag.vm != 0 && size == 4 && cpl == 0 && !longModeActive {
            try iretToV86(newIP: newIP, cs: sel, newFlags: newFlags)
            return
        }
        let rpl = Int(sel & 3)
        let ec = UInt32(sel & 0xFFFC)
        if sel & 0xFFFC == 0 { throw Fault.gp(0) }
        if rpl < cpl { throw Fault.gp(ec) }
        let d = try readDescriptor(sel, fault: .gp(ec))
        if !d.isCode || (d.conforming ? d.dpl > rpl : d.dpl != rpl) { throw Fault.gp(ec) }
        if !d.present { throw Fault.np(ec) }
        let popsStack = mode == .m64 || rpl > cpl
        if popsStack {
            let newSP = try peek(UInt64(3 * size), size)
            let newSS = UInt16(truncatingIfNeeded: try peek(UInt64(4 * size), size))
            let oldCPL = cpl
            writeFlags(newFlags, size: size, iret: true)
            loadCS(sel, descriptor: d, cpl: rpl)
            if newSS & 0xFFFC == 0 && mode == .m64 && rpl != 3 {
                segs[SegReg.ss] = SegCache(selector: newSS, attr: UInt16(rpl << 5) | 0x93, limit: 0, base: 0)
                refreshSegment(SegReg.ss)
            } else {
                do { try loadSegment(SegReg.ss, newSS) } catch {
                    cpl = oldCPL; refreshMode(); throw error
                }
            }
            r[4] = size == 2 ? (r[4] & ~0xFFFF) | (newSP & 0xFFFF) : (size == 4 && mode != .m64 ? newSP & 0xFFFF_FFFF : newSP)
            if rpl > oldCPL { nullifyDataSegments() }
        } else {
            writeFlags(newFlags, size: size, iret: true)
            setSP(r[4] &+ UInt64(3 * size))
            loadCS(sel, descriptor: d, cpl: rpl)
        }
        rip = mode == .m64 ? newIP : newIP & 0xFFFF_FFFF
        nmiBlocked = false
    }
}

import Glibc

extension CPUCore {
    mutating func logFault(_ f: Fault) {
        let msg = "x86[\(index)]: exception \(f.vector) code \(String(f.code, radix: 16)) at \(String(segs[SegReg.cs].selector, radix: 16)):\(String(rip, radix: 16)) cr2 \(String(cr2, radix: 16)) rsp \(String(r[4], radix: 16))\n"
        writeDiagnostic(msg)
    }
}

extension CPUCore {
    /// IRET at CPL 0 with VM set in the popped EFLAGS: EIP, CS, EFLAGS, ESP, SS, ES, DS, FS, GS.
    mutating func iretToV86(newIP: UInt64, cs: UInt16, newFlags: UInt64) throws(Fault) {
        var v = [UInt64](repeating: 0, count: 6)
        for k in 0..<6 { v[k] = try peek(UInt64(12 + 4 * k), 4) }
        flags = (newFlags & 0x3F_7FD5 & ~(RFlag.vif | RFlag.vip)) | (flags & (RFlag.vif | RFlag.vip)) | 2
        lop = 0
        cpl = 3
        let sels: [(Int, UInt64)] = [(SegReg.cs, UInt64(cs)), (SegReg.ss, v[1]), (SegReg.es, v[2]),
                                     (SegReg.ds, v[3]), (SegReg.fs, v[4]), (SegReg.gs, v[5])]
        for (s, sel) in sels {
            let x = UInt16(truncatingIfNeeded: sel)
            segs[s] = SegCache(selector: x, attr: 0xF3, limit: 0xFFFF, base: UInt64(x) << 4)
        }
        r[4] = v[0] & 0xFFFF_FFFF
        rip = newIP & 0xFFFF
        refreshMode()
        pollNow = true
    }
}
