// Far JMP/CALL whose selector names a system descriptor: call gates (16/32-bit in legacy mode,
// 64-bit in long mode, with the stack switch from the TSS and, for legacy gates, the parameter copy),
// and in legacy mode TSS descriptors and task gates (handed to TaskSwitch.swift).
// The matching far RET to an outer privilege level is `farReturn` in Segmentation.swift.

extension CPUCore {
    /// The descriptor for `sel` when it is a system descriptor (a gate or a TSS), else nil.
    mutating func systemFarTarget(_ sel: UInt16) throws(Fault) -> Descriptor? {
        if sel & 0xFFFC == 0 { return nil }
        let d = try readDescriptor(sel, fault: .gp(UInt32(sel & 0xFFFC)))
        return d.isSystem ? d : nil
    }

    mutating func farThroughSystem(_ sel: UInt16, _ d0: Descriptor, call: Bool, size: Int, next: UInt64) throws(Fault) {
        let ec = UInt32(sel & 0xFFFC)
        let rpl = Int(sel & 3)
        let long = longModeActive
        let type = d0.type
        let valid = long ? type == 0xC : (type == 1 || type == 4 || type == 5 || type == 9 || type == 0xC)
        if !valid { throw Fault.gp(ec) }
        if d0.dpl < cpl || d0.dpl < rpl { throw Fault.gp(ec) }
        if !d0.present { throw Fault.np(ec) }
        switch type {
        case 1, 9:
            try taskSwitch(to: sel, descriptor: d0, source: call ? .call : .jmp, returnEIP: next)
            return
        case 5:
            let (tsel, td) = try taskGateTarget(d0)
            try taskSwitch(to: tsel, descriptor: td, source: call ? .call : .jmp, returnEIP: next)
            return
        default:
            break
        }

        // Call gate.
        var gate = d0
        if long {
            gate = try readSystemDescriptor(sel, fault: .gp(ec))
            if (gate.high >> 40) & 0x1F != 0 { throw Fault.gp(ec) }
        }
        let csSel = gate.gateSelector
        if csSel & 0xFFFC == 0 { throw Fault.gp(0) }
        let cec = UInt32(csSel & 0xFFFC)
        let cd = try readDescriptor(csSel, fault: .gp(cec))
        if !cd.isCode || cd.dpl > cpl { throw Fault.gp(cec) }
        if !call && !cd.conforming && cd.dpl != cpl { throw Fault.gp(cec) }
        if !cd.present { throw Fault.np(cec) }
        if long && (!cd.long || cd.raw & (1 << 54) != 0) { throw Fault.gp(cec) }
        let psize = long ? 8 : (type & 8 != 0 ? 4 : 2)
        var target = gate.gateOffset
        if !long {
            target &= psize == 4 ? 0xFFFF_FFFF : 0xFFFF
            if target > UInt64(cd.limit) { throw Fault.gp(0) }
        }
        let newCPL = cd.conforming ? cpl : cd.dpl
        let oldCS = UInt64(segs[SegReg.cs].selector)

        if !call || newCPL == cpl {
            if call {
                let sp0 = r[4]
                do { try push(oldCS, psize); try push(next, psize) } catch { r[4] = sp0; throw error }
            }
            try markDescriptor(csSel, bit: 1 << 40)
            loadCS(csSel, descriptor: cd, cpl: cpl)
            rip = target
            return
        }

        // CALL to an inner privilege level: a new stack from the TSS.
        let oldSS = UInt64(segs[SegReg.ss].selector)
        let oldMask = stackMask
        let oldSP = r[4] & oldMask
        let tss = segs[SegReg.tr]
        if long {
            var sp = try loadSys(tss.base &+ 4 &+ UInt64(newCPL) * 8, 8)
            for v in [oldSS, r[4], oldCS, next] {
                sp &-= 8
                try storeSys(sp, v, 8)
            }
            segs[SegReg.ss] = SegCache(selector: UInt16(newCPL), attr: UInt16(newCPL << 5) | 0x93, limit: 0, base: 0)
            try markDescriptor(csSel, bit: 1 << 40)
            loadCS(csSel, descriptor: cd, cpl: newCPL)
            r[4] = sp
            rip = target
            return
        }
        let (esp, ss) = try innerStack(newCPL)
        let sec = UInt32(ss & 0xFFFC)
        if ss & 0xFFFC == 0 { throw Fault.ts(0) }
        let sd = try readDescriptor(ss, fault: .ts(sec))
        if Int(ss & 3) != newCPL || sd.dpl != newCPL || !sd.writableData { throw Fault.ts(sec) }
        if !sd.present { throw Fault.ss(sec) }
        // Parameters from the caller's stack (read at the caller's privilege).
        let count = Int((gate.raw >> 32) & 0x1F)
        var params = [UInt64](repeating: 0, count: count)
        for k in 0..<count {
            let a = (oldSP &+ UInt64(k * psize)) & oldMask
            params[k] = try loadN(try linear(SegReg.ss, a, psize), psize)
        }
        let newMask: UInt64 = sd.attr & 0x4000 != 0 ? 0xFFFF_FFFF : 0xFFFF
        var sp = esp & newMask
        let frame = [oldSS, oldSP] + params.reversed() + [oldCS, next]
        for v in frame {
            sp = (sp &- UInt64(psize)) & newMask
            try storeSys((sd.base &+ sp) & 0xFFFF_FFFF, v, psize)
        }
        try markDescriptor(ss, bit: 1 << 40)
        var ssc = sd.cache(selector: ss)
        ssc.attr |= 1
        segs[SegReg.ss] = ssc
        try markDescriptor(csSel, bit: 1 << 40)
        loadCS(csSel, descriptor: cd, cpl: newCPL)
        if newMask == 0xFFFF { r[4] = (r[4] & ~0xFFFF) | sp } else { r[4] = sp }
        rip = target
    }
}

extension CPUCore {
    /// The inner-ring stack (ESP, SS) for `cpl` from the current TSS (32- or 16-bit format), as a
    /// call gate or an interrupt to a more privileged ring loads it.
    mutating func innerStack(_ cpl: Int) throws(Fault) -> (esp: UInt64, ss: UInt16) {
        let tss = segs[SegReg.tr]
        if tss.attr & 0x8 != 0 {
            return (try loadSys(tss.base &+ 4 &+ UInt64(cpl) * 8, 4), UInt16(try loadSys(tss.base &+ 8 &+ UInt64(cpl) * 8, 2)))
        }
        return (try loadSys(tss.base &+ 2 &+ UInt64(cpl) * 4, 2), UInt16(try loadSys(tss.base &+ 4 &+ UInt64(cpl) * 4, 2)))
    }
}
