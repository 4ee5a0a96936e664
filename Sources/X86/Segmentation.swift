// Segment registers and descriptor tables: loading DS/ES/FS/GS/SS with the SDM's checks, reading
// and marking descriptors, and CS changes for far JMP/CALL/RET (same privilege and outer returns;
// gates and TSS targets go to Gates.swift and TaskSwitch.swift).
//
// Descriptors are turned into `SegCache` with attributes in the VMX access-rights layout.

struct Descriptor {
    var raw: UInt64
    var high: UInt64 = 0   // second quadword of 16-byte system descriptors in long mode

    var attr: UInt16 { UInt16((raw >> 40) & 0xFF) | UInt16((raw >> 52) & 0xF) << 12 }
    var limit: UInt32 {
        let l = UInt32((raw & 0xFFFF) | ((raw >> 32) & 0xF_0000))
        return raw & (1 << 55) != 0 ? (l << 12) | 0xFFF : l
    }
    var base: UInt64 { ((raw >> 16) & 0xFF_FFFF) | ((raw >> 32) & 0xFF00_0000) | ((high & 0xFFFF_FFFF) << 32) }
    var present: Bool { raw & (1 << 47) != 0 }
    var dpl: Int { Int((raw >> 45) & 3) }
    var isSystem: Bool { raw & (1 << 44) == 0 }
    var type: Int { Int((raw >> 40) & 0xF) }
    var isCode: Bool { !isSystem && type & 8 != 0 }
    var conforming: Bool { isCode && type & 4 != 0 }
    var readable: Bool { !isCode || type & 2 != 0 }
    var writableData: Bool { !isSystem && !isCode && type & 2 != 0 }
    var long: Bool { raw & (1 << 53) != 0 }
    var gateOffset: UInt64 { (raw & 0xFFFF) | ((raw >> 32) & 0xFFFF_0000) | ((high & 0xFFFF_FFFF) << 32) }
    var gateSelector: UInt16 { UInt16((raw >> 16) & 0xFFFF) }

    func cache(selector: UInt16) -> SegCache {
        SegCache(selector: selector, attr: attr, limit: limit, base: base)
    }
}

extension CPUCore {
    /// Address of the descriptor for `selector` in the GDT or LDT, or nil past the table limit.
    mutating func descriptorAddress(_ selector: UInt16, size: UInt64 = 8) -> UInt64? {
        let idx = UInt64(selector & 0xFFF8)
        if selector & 4 != 0 {
            let ldt = segs[SegReg.ldtr]
            if ldt.attr & 0x80 == 0 || idx + size - 1 > UInt64(ldt.limit) { return nil }
            return ldt.base &+ idx
        }
        if idx + size - 1 > UInt64(gdtLimit) { return nil }
        return gdtBase &+ idx
    }

    mutating func readDescriptor(_ selector: UInt16, fault: Fault) throws(Fault) -> Descriptor {
        guard let a = descriptorAddress(selector) else { throw fault }
        return Descriptor(raw: try loadSys(a, 8))
    }

    mutating func readSystemDescriptor(_ selector: UInt16, fault: Fault) throws(Fault) -> Descriptor {
        let wide = longModeActive
        guard let a = descriptorAddress(selector, size: wide ? 16 : 8) else { throw fault }
        var d = Descriptor(raw: try loadSys(a, 8))
        if wide { d.high = try loadSys(a &+ 8, 8) }
        return d
    }

    /// Sets the accessed bit (or the busy bit of a TSS) in the descriptor in memory.
    mutating func markDescriptor(_ selector: UInt16, bit: UInt64) throws(Fault) {
        guard let a = descriptorAddress(selector) else { return }
        let v = try loadSys(a &+ 5, 1)
        if v & (bit >> 40) == 0 { try storeSys(a &+ 5, v | (bit >> 40), 1) }
    }

    /// MOV/POP/LDS-family loads of ES, SS, DS, FS, GS.
    mutating func loadSegment(_ seg: Int, _ sel: UInt16) throws(Fault) {
        if !protectedMode || v86 {
            var c = segs[seg]
            c.selector = sel
            c.base = UInt64(sel) << 4
            if v86 { c.limit = 0xFFFF; c.attr = 0xF3 }
            segs[seg] = c
            refreshSegment(seg)
            return
        }
        let rpl = Int(sel & 3)
        if sel & 0xFFFC == 0 {
            if seg == SegReg.ss && (mode != .m64 || cpl == 3 || rpl != cpl) { throw Fault.gp(0) }
            let attr: UInt16 = seg == SegReg.ss ? UInt16(cpl << 5) | 0x93 : 0
            segs[seg] = SegCache(selector: sel, attr: attr, limit: 0, base: 0)
            refreshSegment(seg)
            return
        }
        let ec = UInt32(sel & 0xFFFC)
        let d = try readDescriptor(sel, fault: .gp(ec))
        if seg == SegReg.ss {
            if rpl != cpl || d.dpl != cpl || !d.writableData { throw Fault.gp(ec) }
            if !d.present { throw Fault.ss(ec) }
        } else {
            if d.isSystem || !d.readable { throw Fault.gp(ec) }
            if !d.isCode || !d.conforming {
                if d.dpl < Swift.max(cpl, rpl) { throw Fault.gp(ec) }
            }
            if !d.present { throw Fault.np(ec) }
        }
        try markDescriptor(sel, bit: 1 << 40)
        segs[seg] = d.cache(selector: sel)
        segs[seg].attr |= 1
        refreshSegment(seg)
    }

    /// Loads CS for a far transfer to `sel` at privilege `newCPL` (real mode: just the base).
    mutating func loadCS(_ sel: UInt16, descriptor d: Descriptor?, cpl newCPL: Int) {
        if let d {
            var c = d.cache(selector: (sel & 0xFFFC) | UInt16(newCPL))
            c.attr |= 1
            segs[SegReg.cs] = c
        } else {
            var c = segs[SegReg.cs]
            c.selector = sel
            c.base = UInt64(sel) << 4
            if v86 { c.limit = 0xFFFF; c.attr = 0xF3 } else if !protectedMode { c.attr = (c.attr & ~0x60) | 0x9B }
            segs[SegReg.cs] = c
        }
        cpl = newCPL
        refreshMode()
    }

    /// Checks a code-segment selector for a far JMP/CALL at the same privilege.
    mutating func checkFarTarget(_ sel: UInt16) throws(Fault) -> Descriptor {
        let ec = UInt32(sel & 0xFFFC)
        if sel & 0xFFFC == 0 { throw Fault.gp(0) }
        let d = try readDescriptor(sel, fault: .gp(ec))
        if !d.isCode {
            throw Fault.gp(ec)   // (system descriptors were routed to Gates.swift by the callers)
        }
        if d.conforming { if d.dpl > cpl { throw Fault.gp(ec) } }
        else if d.dpl != cpl || Int(sel & 3) > cpl { throw Fault.gp(ec) }
        if !d.present { throw Fault.np(ec) }
        if longModeActive && d.long && d.raw & (1 << 54) != 0 { throw Fault.gp(ec) }
        try markDescriptor(sel, bit: 1 << 40)
        return d
    }

    mutating func farJump(_ sel: UInt16, _ offset: UInt64, next: UInt64 = 0) throws(Fault) {
        if !protectedMode || v86 {
            loadCS(sel, descriptor: nil, cpl: cpl)
            rip = offset & 0xFFFF_FFFF
            return
        }
        if let g = try systemFarTarget(sel) {
            try farThroughSystem(sel, g, call: false, size: 0, next: next)
            return
        }
        let d = try checkFarTarget(sel)
        let newMode64 = longModeActive && d.long
        if !newMode64 && offset > UInt64(d.limit) { throw Fault.gp(0) }
        loadCS(sel, descriptor: d, cpl: cpl)
        rip = offset
    }

    mutating func farCall(_ sel: UInt16, _ offset: UInt64, _ size: Int, next: UInt64) throws(Fault) {
        let oldCS = UInt64(segs[SegReg.cs].selector)
        let sp0 = r[4]
        if !protectedMode || v86 {
            do { try push(oldCS, size); try push(next, size) } catch { r[4] = sp0; throw error }
            loadCS(sel, descriptor: nil, cpl: cpl)
            rip = offset & sizeMask(size)
            return
        }
        if let g = try systemFarTarget(sel) {
            try farThroughSystem(sel, g, call: true, size: size, next: next)
            return
        }
        let d = try checkFarTarget(sel)
        do { try push(oldCS, size); try push(next, size) } catch { r[4] = sp0; throw error }
        loadCS(sel, descriptor: d, cpl: cpl)
        rip = offset & (mode == .m64 ? .max : sizeMask(size))
    }

    mutating func farReturn(_ size: Int, popBytes: UInt64) throws(Fault) {
        let newIP = try peek(0, size)
        let sel = UInt16(truncatingIfNeeded: try peek(UInt64(size), size))
        if !protectedMode || v86 {
            setSP(r[4] &+ UInt64(2 * size) &+ popBytes)
            loadCS(sel, descriptor: nil, cpl: cpl)
            rip = newIP
            return
        }
        let rpl = Int(sel & 3)
        if rpl < cpl || sel & 0xFFFC == 0 { throw Fault.gp(UInt32(sel & 0xFFFC)) }
        let ec = UInt32(sel & 0xFFFC)
        let d = try readDescriptor(sel, fault: .gp(ec))
        if !d.isCode || (d.conforming ? d.dpl > rpl : d.dpl != rpl) { throw Fault.gp(ec) }
        if !d.present { throw Fault.np(ec) }
        if rpl == cpl {
            setSP(r[4] &+ UInt64(2 * size) &+ popBytes)
            loadCS(sel, descriptor: d, cpl: rpl)
            rip = newIP
            return
        }
        // Return to an outer privilege level: SS:SP follow on the stack.
        let newSP = try peek(UInt64(2 * size) &+ popBytes, size)
        let newSS = UInt16(truncatingIfNeeded: try peek(UInt64(3 * size) &+ popBytes, size))
        loadCS(sel, descriptor: d, cpl: rpl)
        try loadSegment(SegReg.ss, newSS)
        setSP(newSP &+ popBytes)
        rip = newIP
        nullifyDataSegments()
    }

    /// After a return to an outer privilege level, data segments the new CPL may not use become null.
    mutating func nullifyDataSegments() {
        for s in [SegReg.es, SegReg.ds, SegReg.fs, SegReg.gs] {
            let c = segs[s]
            let isCode = c.attr & 0x8 != 0
            let conforming = isCode && c.attr & 0x4 != 0
            if c.attr & 0x10 != 0 && (!isCode || !conforming) && Int((c.attr >> 5) & 3) < cpl {
                segs[s] = SegCache(selector: 0, attr: 0, limit: 0, base: mode == .m64 ? c.base : 0)
                refreshSegment(s)
            }
        }
    }
}
