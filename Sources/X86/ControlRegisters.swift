// Control registers, MSRs, the TSC, and the fast system-call instructions.
//
// CR0/CR4/EFER writes recompute the mode (long mode activates when paging turns on with LME), and
// flush the TLB as the SDM requires. MSRs the platform owns (APIC base, x2APIC, TSC deadline) are
// offered to the platform first. The TSC counts nanoseconds of the host's monotonic clock (1 GHz).

import Glibc

/// TSC rate reported to the machine (for the TSC-deadline timer and CPUID leaf 0x15).
let tscHz: UInt64 = 1_000_000_000

@inline(__always) func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

extension CPUCore {
    mutating func readTSC() -> UInt64 { UInt64(bitPattern: Int64(bitPattern: monotonicNanos()) &+ tscOffset) }

    mutating func readCR(_ n: Int) throws(Fault) -> UInt64 {
        switch n {
        case 0: return cr0
        case 2: return cr2
        case 3: return cr3
        case 4: return cr4
        case 8: return cr8
        default: throw Fault.ud
        }
    }

    mutating func writeCR(_ n: Int, _ v: UInt64) throws(Fault) {
        switch n {
        case 0: try writeCR0(v)
        case 2: cr2 = v
        case 3:
            cr3 = v & (longModeActive ? 0x000F_FFFF_FFFF_F000 | 0x18 : 0xFFFF_FFF8)
            flushTLB(keepGlobal: true)
        case 4:
            let allowed: UInt64 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400
                | (model.has("fsgsbase") ? 0x1_0000 : 0) | (model.has("xsave") ? 0x4_0000 : 0)
                | (model.has("smep") ? 0x10_0000 : 0)
            if v & ~allowed != 0 { throw Fault.gp(0) }
            if longModeActive && v & 0x20 == 0 { throw Fault.gp(0) }
            let changed = cr4 ^ v
            cr4 = v
            if changed & (0x10 | 0x20 | 0x80 | 0x10_0000) != 0 { flushTLB(keepGlobal: false) }
            if changed & 8 != 0 { refreshBreakpoints() }   // DE: I/O breakpoints
        case 8:
            if v & ~0xF != 0 { throw Fault.gp(0) }
            cr8 = v
            _ = platformRef.writeMSR(cpu: index, index: 0x808, value: v << 4)
            pollNow = true
        default: throw Fault.ud
        }
    }

    mutating func writeCR0(_ v0: UInt64) throws(Fault) {
        var v = v0 | 0x10
        if v >> 32 != 0 { throw Fault.gp(0) }
        if v & 0x8000_0000 != 0 && v & 1 == 0 { throw Fault.gp(0) }
        if v & 0x2000_0000 != 0 && v & 0x4000_0000 == 0 { throw Fault.gp(0) }
        let wasPaging = cr0 & 0x8000_0000 != 0
        let nowPaging = v & 0x8000_0000 != 0
        if !wasPaging && nowPaging && efer & 0x100 != 0 {
            if cr4 & 0x20 == 0 { throw Fault.gp(0) }
            efer |= 0x400   // LMA
        }
        if wasPaging && !nowPaging && longModeActive {
            if mode == .m64 { throw Fault.gp(0) }
            efer &= ~0x400
        }
        v &= 0xE005_003F
        let changed = cr0 ^ v
        cr0 = v
        if changed & (0x8000_0000 | 0x1_0000 | 1) != 0 { flushTLB(keepGlobal: false) }
        refreshMode()
    }

    // MARK: MSRs

    mutating func readMSR(_ idx: UInt32) throws(Fault) -> UInt64 {
        if let v = platformRef.readMSR(cpu: index, index: idx) { return v }
        switch idx {
        case 0x10: return readTSC()
        case 0x1B: return 0xFEE0_0000 | 0x800 | (index == 0 ? 0x100 : 0)  // platform did not claim it
        case 0x3A: return 1                                     // FEATURE_CONTROL: locked, no VMX
        case 0x8B: return model.vendor == "AuthenticAMD" ? 0x0100_0065 : 0x1_0000_0000  // microcode revision, as QEMU
        case 0xFE: return 0x508                                 // MTRRCAP: 8 variable, fixed, WC
        case 0x174: return sysenterCS
        case 0x175: return sysenterESP
        case 0x176: return sysenterEIP
        case 0x179, 0x17A: return 0                             // MCG_CAP, MCG_STATUS
        case 0x1A0: return miscEnable
        case 0x200...0x20F, 0x250, 0x258, 0x259, 0x268...0x26F: return mtrr[idx] ?? 0
        case 0x277: return pat
        case 0x2FF: return mtrrDefType
        case 0x400...0x41F: return 0                            // MCi banks
        case 0xC000_0080: return efer
        case 0xC000_0081: return star
        case 0xC000_0082: return lstar
        case 0xC000_0083: return cstar
        case 0xC000_0084: return fmask
        case 0xC000_0100: return segs[SegReg.fs].base
        case 0xC000_0101: return segs[SegReg.gs].base
        case 0xC000_0102: return kernelGSBase
        case 0xC000_0103: return tscAux
        // SYSCFG (no DRAM/MTRR extensions) and INT_PENDING_MSG (no C1E, which Linux checks on
        // family 0Fh for erratum 400): 0 on AMD models, as KVM and QEMU's TCG read them.
        case 0xC001_0010 where model.vendor == "AuthenticAMD", 0xC001_0055 where model.vendor == "AuthenticAMD": return 0
        default: throw Fault.gp(0)
        }
    }

    mutating func writeMSR(_ idx: UInt32, _ v: UInt64) throws(Fault) {
        if platformRef.writeMSR(cpu: index, index: idx, value: v) { pollNow = true; return }
        let canonical = Int64(bitPattern: v) >> 47 == 0 || Int64(bitPattern: v) >> 47 == -1
        switch idx {
        case 0x10: tscOffset = Int64(bitPattern: v) &- Int64(bitPattern: monotonicNanos())
        case 0x1B, 0x3A, 0x8B, 0x79: break
        case 0x174: sysenterCS = v & 0xFFFF
        case 0x175: if !canonical { throw Fault.gp(0) }; sysenterESP = v
        case 0x176: if !canonical { throw Fault.gp(0) }; sysenterEIP = v
        case 0x179, 0x17A: break
        case 0x1A0: miscEnable = v
        case 0x200...0x20F, 0x250, 0x258, 0x259, 0x268...0x26F: mtrr[idx] = v
        case 0x277: pat = v
        case 0x2FF: mtrrDefType = v
        case 0x400...0x41F: break
        case 0xC000_0080:
            var allowed: UInt64 = 0x1
            if model.has("lm") { allowed |= 0x100 | 0x400 }
            if model.has("nx") { allowed |= 0x800 }
            if model.has("syscall") { allowed |= 0x1 }
            if v & ~allowed != 0 { throw Fault.gp(0) }
            // LME may not change while paging is on; LMA is read-only.
            if pagingOn && (v ^ efer) & 0x100 != 0 { throw Fault.gp(0) }
            let changed = efer ^ v
            efer = (v & ~0x400) | (efer & 0x400)
            if changed & 0x800 != 0 { flushTLB(keepGlobal: false) }
        case 0xC000_0081: star = v
        case 0xC000_0082: if !canonical { throw Fault.gp(0) }; lstar = v
        case 0xC000_0083: if !canonical { throw Fault.gp(0) }; cstar = v
        case 0xC000_0084: fmask = v & 0xFFFF_FFFF
        case 0xC000_0100: if !canonical { throw Fault.gp(0) }; segs[SegReg.fs].base = v; refreshSegment(SegReg.fs)
        case 0xC000_0101: if !canonical { throw Fault.gp(0) }; segs[SegReg.gs].base = v; refreshSegment(SegReg.gs)
        case 0xC000_0102: if !canonical { throw Fault.gp(0) }; kernelGSBase = v
        case 0xC000_0103: tscAux = v & 0xFFFF_FFFF
        case 0xC001_0010 where model.vendor == "AuthenticAMD", 0xC001_0055 where model.vendor == "AuthenticAMD": break  // ignored, as KVM
        default: throw Fault.gp(0)
        }
    }

    // MARK: SYSCALL / SYSRET / SYSENTER / SYSEXIT

    mutating func syscallOp(next: UInt64) throws(Fault) {
        if efer & 1 == 0 { throw Fault.ud }
        let sel = UInt16((star >> 32) & 0xFFFC)
        r[1] = next
        r[11] = rflags
        segs[SegReg.cs] = SegCache(selector: sel, attr: 0xA09B, limit: 0xFFFF_FFFF, base: 0)
        segs[SegReg.ss] = SegCache(selector: sel &+ 8, attr: 0xC093, limit: 0xFFFF_FFFF, base: 0)
        flags = (rflags & ~fmask & ~RFlag.rf) | 2
        lop = 0
        cpl = 0
        refreshMode()
        rip = lstar
    }

    mutating func sysretOp() throws(Fault) {
        if efer & 1 == 0 { throw Fault.ud }
        try requireCPL0()
        let base = UInt16((star >> 48) & 0xFFFF)
        let to64 = rflagsWideSysret
        if to64 {
            if Int64(bitPattern: r[1]) >> 47 != 0 && Int64(bitPattern: r[1]) >> 47 != -1 { throw Fault.gp(0) }
            segs[SegReg.cs] = SegCache(selector: (base &+ 16) | 3, attr: 0xA0FB, limit: 0xFFFF_FFFF, base: 0)
            rip = r[1]
        } else {
            segs[SegReg.cs] = SegCache(selector: base | 3, attr: 0xC0FB, limit: 0xFFFF_FFFF, base: 0)
            rip = r[1] & 0xFFFF_FFFF
        }
        segs[SegReg.ss] = SegCache(selector: (base &+ 8) | 3, attr: 0xC0F3, limit: 0xFFFF_FFFF, base: 0)
        flags = (r[11] & 0x3C_7FD7) | 2
        lop = 0
        cpl = 3
        refreshMode()
        pollNow = true
    }

    /// Set by the executor before SYSRET from the instruction's REX.W (see execSlow).
    var rflagsWideSysret: Bool { mutating get { sysretWide } }

    mutating func sysenterOp() throws(Fault) {
        if !protectedMode || sysenterCS & 0xFFFC == 0 { throw Fault.gp(0) }
        let sel = UInt16(sysenterCS & 0xFFFC)
        flags &= ~(RFlag.vm | RFlag.ifl | RFlag.rf)
        if longModeActive {
            segs[SegReg.cs] = SegCache(selector: sel, attr: 0xA09B, limit: 0xFFFF_FFFF, base: 0)
            rip = sysenterEIP
            r[4] = sysenterESP
        } else {
            segs[SegReg.cs] = SegCache(selector: sel, attr: 0xC09B, limit: 0xFFFF_FFFF, base: 0)
            rip = sysenterEIP & 0xFFFF_FFFF
            r[4] = sysenterESP & 0xFFFF_FFFF
        }
        segs[SegReg.ss] = SegCache(selector: sel &+ 8, attr: 0xC093, limit: 0xFFFF_FFFF, base: 0)
        cpl = 0
        refreshMode()
    }

    mutating func sysexitOp() throws(Fault) {
        if !protectedMode || sysenterCS & 0xFFFC == 0 { throw Fault.gp(0) }
        try requireCPL0()
        let sel = UInt16(sysenterCS & 0xFFFC)
        if sysretWide {
            segs[SegReg.cs] = SegCache(selector: (sel &+ 32) | 3, attr: 0xA0FB, limit: 0xFFFF_FFFF, base: 0)
            segs[SegReg.ss] = SegCache(selector: (sel &+ 40) | 3, attr: 0xC0F3, limit: 0xFFFF_FFFF, base: 0)
            rip = r[2]; r[4] = r[1]
        } else {
            segs[SegReg.cs] = SegCache(selector: (sel &+ 16) | 3, attr: 0xC0FB, limit: 0xFFFF_FFFF, base: 0)
            segs[SegReg.ss] = SegCache(selector: (sel &+ 24) | 3, attr: 0xC0F3, limit: 0xFFFF_FFFF, base: 0)
            rip = r[2] & 0xFFFF_FFFF; r[4] = r[1] & 0xFFFF_FFFF
        }
        cpl = 3
        refreshMode()
    }
}
