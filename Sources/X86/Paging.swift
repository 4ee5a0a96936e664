// Linear to physical translation: the page walk for 32-bit, PAE and 4-level paging, with large
// pages, NX, CR0.WP, SMEP, and accessed/dirty updates, filling the software TLB.
//
// Accessed and dirty bits are set with a host compare-and-swap, so a concurrent guest cmpxchg on the
// same entry from another vCPU is never overwritten. A fault sets CR2 and throws #PF with the
// SDM's error code (P, W/R, U/S, I/D).

import Synchronization

extension CPUCore {
    /// Translates for one access and fills the TLB of that privilege. Returns the physical address.
    mutating func translate(_ lin: UInt64, _ access: Access, user: Bool) throws(Fault) -> UInt64 {
        if mode == .m64 || longModeActive {
            // Non-canonical addresses fault with #GP (the caller's segment decides #SS in rare cases).
            let top = Int64(bitPattern: lin) >> 47
            if top != 0 && top != -1 { throw Fault.gp(0) }
        }
        let page = lin >> 12
        let t = user ? tlbUser : tlbKernel
        let e = t + Int(page & tlbMask)
        if !pagingOn {
            let phys = lin & 0xFFFF_FFFF_FFFF_F000
            fill(e, page: page, phys: phys, r: true, w: true, x: true, global: false)
            return phys | (lin & 0xFFF)
        }
        let w = try walk(lin, access, user: user)
        let physPage = w.phys & ~0xFFF
        fill(e, page: page, phys: physPage, r: true, w: w.writable && w.dirty, x: w.exec, global: w.global)
        return w.phys
    }

    private mutating func fill(_ e: UnsafeMutablePointer<TLBEntry>, page: UInt64, phys: UInt64, r: Bool, w: Bool, x: Bool, global: Bool) {
        guard let host = hostPointer(phys, 0x1000) else {
            // MMIO: no fast entry, every access comes back here.
            if e.pointee.rtag == page || e.pointee.wtag == page || e.pointee.xtag == page { e.pointee = .invalid }
            return
        }
        let readOnly = ram.region(containing: phys)?.readOnly ?? true
        let addend = UInt64(UInt(bitPattern: host)) &- (page << 12)
        let ppage = phys >> 12
        // Keep other tags of the same page when the entry already maps it.
        var n = e.pointee
        if n.addend != addend || n.physPage != ppage || (n.rtag != page && n.wtag != page && n.xtag != page) {
            n = .invalid
        }
        n.addend = addend
        n.physPage = ppage
        n.global = global
        if r { n.rtag = page }
        n.wtag = w && !readOnly && !code.isCode(ppage) ? page : .max
        if x { n.xtag = page }
        if bp.data != 0 {
            // Data breakpoints on this page: its accesses go through the slow path, which checks them.
            let watch = breakpointWatch(page: page)
            if watch.read { n.rtag = .max }
            if watch.write { n.wtag = .max }
        }
        e.pointee = n
    }

    struct Walk {
        var phys: UInt64
        var writable: Bool
        var exec: Bool
        var global: Bool
        var dirty: Bool
    }

    private mutating func pageFaultCode(present: Bool, _ access: Access, user: Bool) -> UInt32 {
        var c: UInt32 = present ? 1 : 0
        if access == .write { c |= 2 }
        if user { c |= 4 }
        if access == .exec && (efer & 0x800 != 0 || cr4 & 0x10_0000 != 0) { c |= 0x10 }
        return c
    }

    private mutating func pf(_ lin: UInt64, present: Bool, _ access: Access, user: Bool) -> Fault {
        cr2 = lin
        return Fault(vector: 14, code: pageFaultCode(present: present, access, user: user), hasCode: true)
    }

    /// Reads a paging-structure entry and sets its accessed (and, for the leaf on writes, dirty) bit.
    private mutating func entry(_ addr: UInt64, wide: Bool) -> (value: UInt64, ptr: UnsafeMutableRawPointer?) {
        guard let h = hostPointer(addr, wide ? 8 : 4) else {
            let v = platformRef.mmioRead(cpu: index, address: addr, size: wide ? 8 : 4)
            return (v, nil)
        }
        return (wide ? h.load(as: UInt64.self) : UInt64(h.load(as: UInt32.self)), h)
    }

    private mutating func setBits(_ ptr: UnsafeMutableRawPointer?, wide: Bool, _ bits: UInt64) {
        guard let ptr else { return }
        if wide {
            let a = ptr.assumingMemoryBound(to: Atomic<UInt64>.self)
            _ = a.pointee.bitwiseOr(bits, ordering: .relaxed)
        } else {
            let a = ptr.assumingMemoryBound(to: Atomic<UInt32>.self)
            _ = a.pointee.bitwiseOr(UInt32(truncatingIfNeeded: bits), ordering: .relaxed)
        }
    }

    mutating func walk(_ lin: UInt64, _ access: Access, user: Bool) throws(Fault) -> Walk {
        let nxe = efer & 0x800 != 0
        let wp = cr0 & 0x1_0000 != 0
        var allW = true, allU = true, nx = false
        var phys: UInt64 = 0
        var global = false
        var leafPtr: UnsafeMutableRawPointer? = nil
        var leafWide = true
        var leafValue: UInt64 = 0

        if cr4 & 0x20 == 0 {
            // 32-bit paging.
            let pdeAddr = (cr3 & 0xFFFF_F000) | ((lin >> 20) & 0xFFC)
            let (pde, pdep) = entry(pdeAddr, wide: false)
            if pde & 1 == 0 { throw pf(lin, present: false, access, user: user) }
            allW = pde & 2 != 0; allU = pde & 4 != 0
            if pde & 0x80 != 0 && cr4 & 0x10 != 0 {
                phys = (pde & 0xFFC0_0000) | ((pde & 0x1E000) << 19) | (lin & 0x3F_FFFF)
                global = pde & 0x100 != 0 && cr4 & 0x80 != 0
                leafPtr = pdep; leafWide = false; leafValue = pde
            } else {
                if pde & 0x20 == 0 { setBits(pdep, wide: false, 0x20) }
                let pteAddr = (pde & 0xFFFF_F000) | ((lin >> 10) & 0xFFC)
                let (pte, ptep) = entry(pteAddr, wide: false)
                if pte & 1 == 0 { throw pf(lin, present: false, access, user: user) }
                allW = allW && pte & 2 != 0; allU = allU && pte & 4 != 0
                phys = (pte & 0xFFFF_F000) | (lin & 0xFFF)
                global = pte & 0x100 != 0 && cr4 & 0x80 != 0
                leafPtr = ptep; leafWide = false; leafValue = pte
            }
        } else {
            let addrMask: UInt64 = 0x000F_FFFF_FFFF_F000
            var table: UInt64
            var level: Int
            if longModeActive {
                table = cr3 & addrMask
                level = 4
            } else {
                // PAE: the PDPTE selected by bits 31:30.
                let pdpteAddr = (cr3 & 0xFFFF_FFE0) | ((lin >> 27) & 0x18)
                let (pdpte, _) = entry(pdpteAddr, wide: true)
                if pdpte & 1 == 0 { throw pf(lin, present: false, access, user: user) }
                table = pdpte & addrMask
                level = 2
            }
            while true {
                let shift = UInt64(12 + 9 * (level - 1))
                let idx = (lin >> shift) & 0x1FF
                let (v, p) = entry(table | (idx << 3), wide: true)
                if v & 1 == 0 { throw pf(lin, present: false, access, user: user) }
                if longModeActive || level < 3 {
                    allW = allW && v & 2 != 0
                    allU = allU && v & 4 != 0
                }
                if nxe && v & (1 << 63) != 0 { nx = true }
                let large = v & 0x80 != 0 && (level == 2 || (level == 3 && longModeActive))
                if level == 1 || large {
                    let pageMask: UInt64 = (1 << shift) - 1
                    phys = (v & addrMask & ~pageMask) | (lin & pageMask)
                    global = v & 0x100 != 0 && cr4 & 0x80 != 0
                    leafPtr = p; leafWide = true; leafValue = v
                    break
                }
                if v & 0x20 == 0 { setBits(p, wide: true, 0x20) }
                table = v & addrMask
                level -= 1
            }
        }

        // Permission check for this access.
        var ok = true
        switch access {
        case .read:
            if user && !allU { ok = false }
        case .write:
            if user { ok = allU && allW } else { ok = allW || !wp }
        case .exec:
            if nx { ok = false }
            if user && !allU { ok = false }
            if !user && allU && cr4 & 0x10_0000 != 0 { ok = false }
        }
        if !ok { throw pf(lin, present: true, access, user: user) }

        // Accessed (set on the way down already) and dirty on the leaf for writes.
        var leafBits: UInt64 = 0x20
        if access == .write { leafBits |= 0x40 }
        if leafValue & leafBits != leafBits { setBits(leafPtr, wide: leafWide, leafBits) }
        let dirty = access == .write || leafValue & 0x40 != 0
        let writable = user ? (allU && allW) : (allW || !wp)
        let exec = !nx && (!user || allU) && !(!user && allU && cr4 & 0x10_0000 != 0)
        return Walk(phys: phys, writable: writable, exec: exec, global: global, dirty: dirty)
    }
}
