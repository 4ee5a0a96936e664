// Hardware task switching (legacy protected mode only; long mode has none): JMP/CALL to a TSS
// descriptor or a task gate, interrupts and exceptions through a task gate in the IDT, and IRET
// with NT set returning along the back link. 32-bit (type 9/B) and 16-bit (type 1/3) TSS formats,
// and the 32-bit TSS's T (debug trap) bit.
//
// The order follows the SDM's task-switch steps: validate the new TSS, read its whole image, save
// the current state into the old TSS, update the busy bits and the back link, load TR (CR0.TS set),
// CR3, the flags, EIP and the general registers, then the LDT and the segment registers with their
// checks. A fault after the point of no return is delivered in the new task's context.

extension CPUCore {
    enum TaskSource { case jmp, call, iret, interrupt }

    /// 32-bit TSS offsets (the 16-bit layout is handled beside them).
    private enum TSS32 {
        static let cr3: UInt64 = 0x1C, eip: UInt64 = 0x20, eflags: UInt64 = 0x24, regs: UInt64 = 0x28
        static let segs: UInt64 = 0x48, ldt: UInt64 = 0x60
    }

    /// Resolves a task gate (in the GDT/LDT or the IDT) to its TSS selector and descriptor, with the
    /// checks a task gate's target gets: TI set -> #TS, not a TSS / busy -> #GP, not present -> #NP.
    mutating func taskGateTarget(_ gate: Descriptor) throws(Fault) -> (UInt16, Descriptor) {
        let sel = gate.gateSelector
        let ec = UInt32(sel & 0xFFFC)
        if sel & 4 != 0 { throw Fault.ts(ec) }
        let d = try readDescriptor(sel, fault: .gp(ec))
        if !d.isSystem || d.type & 7 != 1 { throw Fault.gp(ec) }
        if !d.present { throw Fault.np(ec) }
        return (sel, d)
    }

    /// Switches to the task whose TSS descriptor is `d` (selector `sel`). `returnEIP` is the EIP saved
    /// in the outgoing TSS; `errorCode` (exceptions through a task gate) goes on the new task's
    /// stack. A 32-bit TSS with its T bit set raises the #DB trap (DR6.BT) before the new task's
    /// first instruction.
    mutating func taskSwitch(to sel: UInt16, descriptor d: Descriptor, source: TaskSource,
                             returnEIP: UInt64, errorCode: UInt32? = nil) throws(Fault) {
        let ec = UInt32(sel & 0xFFFC)
        let type = d.type
        if !d.isSystem || type & 5 != 1 { throw Fault.gp(ec) }
        if !d.present { throw Fault.np(ec) }
        let new32 = type & 8 != 0
        if sel & 4 != 0 || d.limit < (new32 ? 0x67 : 0x2B) { throw Fault.ts(ec) }
        let busy = type & 2 != 0
        if source == .iret { if !busy { throw Fault.ts(ec) } } else if busy { throw Fault.gp(ec) }
        let base = d.base & 0xFFFF_FFFF

        // Read the new task's image (faults here leave the old task untouched).
        var g = [UInt64](repeating: 0, count: 8)
        var s = [UInt16](repeating: 0, count: 6)
        let newCR3: UInt64, newEIP: UInt64, ldt: UInt16
        var newFlags: UInt64
        var trapBit = false
        if new32 {
            newCR3 = try loadSys(base &+ TSS32.cr3, 4)
            newEIP = try loadSys(base &+ TSS32.eip, 4)
            newFlags = try loadSys(base &+ TSS32.eflags, 4)
            for k in 0..<8 { g[k] = try loadSys(base &+ TSS32.regs &+ UInt64(4 * k), 4) }
            for k in 0..<6 { s[k] = UInt16(try loadSys(base &+ TSS32.segs &+ UInt64(4 * k), 2)) }
            ldt = UInt16(try loadSys(base &+ TSS32.ldt, 2))
            trapBit = try loadSys(base &+ 0x64, 2) & 1 != 0
        } else {
            newCR3 = 0
            newEIP = try loadSys(base &+ 0x0E, 2)
            newFlags = try loadSys(base &+ 0x10, 2)
            for k in 0..<8 { g[k] = try loadSys(base &+ 0x12 &+ UInt64(2 * k), 2) }
            for k in 0..<4 { s[k] = UInt16(try loadSys(base &+ 0x22 &+ UInt64(2 * k), 2)) }
            ldt = UInt16(try loadSys(base &+ 0x2A, 2))
        }

        // Save the outgoing task.
        let oldTR = segs[SegReg.tr]
        let old32 = oldTR.attr & 8 != 0
        let ob = oldTR.base & 0xFFFF_FFFF
        var oldFlags = rflags
        if source == .iret { oldFlags &= ~RFlag.nt }
        if source == .jmp || source == .iret { try setTSSBusy(oldTR.selector, false) }
        if old32 {
            try storeSys(ob &+ TSS32.eip, returnEIP & 0xFFFF_FFFF, 4)
            try storeSys(ob &+ TSS32.eflags, oldFlags & 0xFFFF_FFFF, 4)
            for k in 0..<8 { try storeSys(ob &+ TSS32.regs &+ UInt64(4 * k), r[k] & 0xFFFF_FFFF, 4) }
            for k in 0..<6 { try storeSys(ob &+ TSS32.segs &+ UInt64(4 * k), UInt64(segs[k].selector), 2) }
        } else {
            try storeSys(ob &+ 0x0E, returnEIP & 0xFFFF, 2)
            try storeSys(ob &+ 0x10, oldFlags & 0xFFFF, 2)
            for k in 0..<8 { try storeSys(ob &+ 0x12 &+ UInt64(2 * k), r[k] & 0xFFFF, 2) }
            for k in 0..<4 { try storeSys(ob &+ 0x22 &+ UInt64(2 * k), UInt64(segs[k].selector), 2) }
        }
        if source == .call || source == .interrupt {
            try storeSys(base, UInt64(oldTR.selector), 2)
            newFlags |= RFlag.nt
        }
        if source != .iret { try setTSSBusy(sel, true) }

        // Point of no return: the new task's state.
        cr0 |= 8
        clearLocalBreakpoints()
        var trc = d.cache(selector: sel)
        trc.attr |= 2
        segs[SegReg.tr] = trc
        if new32 && pagingOn {
            cr3 = newCR3 & 0xFFFF_FFFF
            flushTLB(keepGlobal: true)
        }
        rip = newEIP
        var mask = RFlag.arith | RFlag.df | RFlag.tf | RFlag.ac | RFlag.id | RFlag.ifl | RFlag.iopl
            | RFlag.vm | RFlag.rf | RFlag.nt
        if !new32 { mask &= 0xFFFF }
        flags = (rflags & ~mask) | (newFlags & mask) | 2
        lop = 0
        for k in 0..<8 { r[k] = new32 ? g[k] : (r[k] & ~0xFFFF) | g[k] }
        pollNow = true
        do throws(Fault) {
            try loadTaskSegments(s, ldt: ldt)
            if rip > UInt64(segs[SegReg.cs].limit) { throw Fault.gp(0) }
            if let errorCode {
                let size = new32 ? 4 : 2
                let m: UInt64 = segs[SegReg.ss].attr & 0x4000 != 0 ? 0xFFFF_FFFF : 0xFFFF
                let sp = (r[4] &- UInt64(size)) & m
                try storeSys((segs[SegReg.ss].base &+ sp) & 0xFFFF_FFFF, UInt64(errorCode), size)
                setSP(sp)
            }
        } catch {
            // Delivered in the context of the new task.
            refreshMode()
            raise(error)
            return
        }
        if trapBit {
            raise(debugException(hits: 0, status: DR6.bt))
        }
    }

    private mutating func setTSSBusy(_ sel: UInt16, _ busy: Bool) throws(Fault) {
        let a = gdtBase &+ UInt64(sel & 0xFFF8)
        let v = try loadSys(a &+ 5, 1)
        try storeSys(a &+ 5, busy ? v | 2 : v & ~2, 1)
    }

    /// Loads LDTR and the six segment registers from a task image, with the task-switch checks.
    private mutating func loadTaskSegments(_ s: [UInt16], ldt: UInt16) throws(Fault) {
        if flags & RFlag.vm != 0 {
            cpl = 3
            for k in 0..<6 {
                segs[k] = SegCache(selector: s[k], attr: 0xF3, limit: 0xFFFF, base: UInt64(s[k]) << 4)
            }
        } else {
            // Selectors first, so a fault below shows the new task's selectors.
            for k in 0..<6 { segs[k] = SegCache(selector: s[k], attr: k == SegReg.cs ? segs[k].attr : 0, limit: 0, base: 0) }
            cpl = Int(s[SegReg.cs] & 3)
        }
        segs[SegReg.ldtr] = SegCache(selector: ldt & ~4, attr: 0, limit: 0, base: 0)
        refreshMode()
        if ldt & 4 != 0 { throw Fault.ts(UInt32(ldt & 0xFFFC)) }
        if ldt & 0xFFFC != 0 {
            let lec = UInt32(ldt & 0xFFFC)
            let d = try readDescriptor(ldt, fault: .ts(lec))
            if !d.isSystem || d.type != 2 || !d.present { throw Fault.ts(lec) }
            segs[SegReg.ldtr] = d.cache(selector: ldt)
        }
        if flags & RFlag.vm != 0 { return }
        let newCPL = cpl
        for seg in [SegReg.cs, SegReg.ss, SegReg.es, SegReg.ds, SegReg.fs, SegReg.gs] {
            let sel = s[seg]
            let ec = UInt32(sel & 0xFFFC)
            if sel & 0xFFFC == 0 {
                if seg == SegReg.cs || seg == SegReg.ss { throw Fault.ts(ec) }
                segs[seg] = SegCache(selector: sel, attr: 0, limit: 0, base: 0)
                continue
            }
            let d = try readDescriptor(sel, fault: .ts(ec))
            if d.isSystem { throw Fault.ts(ec) }
            let rpl = Int(sel & 3)
            if seg == SegReg.cs {
                if !d.isCode { throw Fault.ts(ec) }
                if d.conforming ? d.dpl > rpl : d.dpl != rpl { throw Fault.ts(ec) }
            } else if seg == SegReg.ss {
                if !d.writableData || d.dpl != newCPL || rpl != newCPL { throw Fault.ts(ec) }
            } else {
                if !d.readable { throw Fault.ts(ec) }
                if !d.conforming && (d.dpl < newCPL || d.dpl < rpl) { throw Fault.ts(ec) }
            }
            if !d.present { throw seg == SegReg.ss ? Fault.ss(ec) : Fault.np(ec) }
            try markDescriptor(sel, bit: 1 << 40)
            var c = d.cache(selector: sel)
            c.attr |= 1
            segs[seg] = c
            if seg == SegReg.cs { refreshMode() }
        }
        refreshMode()
    }

    /// IRET with NT set (legacy mode): return to the task in the current TSS's back link.
    mutating func iretTask(next: UInt64) throws(Fault) {
        let link = UInt16(try loadSys(segs[SegReg.tr].base & 0xFFFF_FFFF, 2))
        let ec = UInt32(link & 0xFFFC)
        if link & 4 != 0 { throw Fault.ts(ec) }
        let d = try readDescriptor(link, fault: .ts(ec))
        if !d.isSystem || d.type & 7 != 3 { throw Fault.ts(ec) }
        try taskSwitch(to: link, descriptor: d, source: .iret, returnEIP: next)
    }

    /// An interrupt or exception through a task gate in the IDT; the error code, if any, goes on
    /// the new task's stack.
    mutating func interruptThroughTaskGate(_ gate: Descriptor, code: UInt32?, next: UInt64) throws(Fault) {
        let (sel, d) = try taskGateTarget(gate)
        try taskSwitch(to: sel, descriptor: d, source: .interrupt, returnEIP: next, errorCode: code)
    }
}
