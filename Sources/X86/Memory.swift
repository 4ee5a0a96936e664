// Guest memory access: segmentation fast path, the software TLB, and the slow path behind both.
//
// An access turns (segment, offset) into a linear address with one compare against `segEnd`, then
// looks the linear page up in a direct-mapped TLB of the current privilege (kernel or user). A hit
// gives the host address (`lin + addend`); tags are per access kind, so a page gets a write tag only
// once it is writable, dirty, RAM and not holding decoded code (nor a data breakpoint, which also
// withholds the read tag for read/write ones). Everything else (misses, page crossings, MMIO, ROM
// writes, code-page writes, non-canonical addresses, watched pages) goes to the slow path.

let tlbSize = 1024
let tlbMask: UInt64 = 1023

struct TLBEntry {
    var rtag: UInt64
    var wtag: UInt64
    var xtag: UInt64
    var addend: UInt64
    var physPage: UInt64
    var global: Bool
    static let invalid = TLBEntry(rtag: .max, wtag: .max, xtag: .max, addend: 0, physPage: 0, global: false)
}

enum Access { case read, write, exec }

extension CPUCore {
    // MARK: segmentation

    @inline(__always) mutating func linear(_ seg: Int, _ ea: UInt64, _ size: Int, write: Bool = false) throws(Fault) -> UInt64 {
        if ea &+ UInt64(size) <= segEnd[seg] {
            let l = segBase[seg] &+ ea
            return mode == .m64 ? l : l & 0xFFFF_FFFF
        }
        return try linearSlow(seg, ea, size, write: write)
    }

    mutating func linearSlow(_ seg: Int, _ ea: UInt64, _ size: Int, write: Bool) throws(Fault) -> UInt64 {
        if mode == .m64 { return segBase[seg] &+ ea }
        let c = segs[seg]
        let fault = seg == SegReg.ss ? Fault.ss(0) : Fault.gp(0)
        if protectedMode && !v86 {
            if c.attr & 0x80 == 0 { throw fault }
            if c.attr & 0x18 == 0x10 && c.attr & 0x4 != 0 {
                // Expand-down: valid offsets are (limit, top], top = 0xFFFF or 0xFFFFFFFF by D/B.
                let top: UInt64 = c.attr & 0x4000 != 0 ? 0xFFFF_FFFF : 0xFFFF
                if ea <= UInt64(c.limit) || ea &+ UInt64(size) &- 1 > top { throw fault }
                return (segBase[seg] &+ ea) & 0xFFFF_FFFF
            }
        }
        // Real mode wrap-around at 64 KiB and plain limit violations.
        if ea &+ UInt64(size) &- 1 > UInt64(c.limit) { throw fault }
        return (segBase[seg] &+ ea) & 0xFFFF_FFFF
    }

    // MARK: fast loads and stores on linear addresses

    @inline(__always) mutating func load<T: FixedWidthInteger & UnsignedInteger>(_ lin: UInt64, _: T.Type) throws(Fault) -> T {
        let page = lin >> 12
        let e = tlb + Int(page & tlbMask)
        if e.pointee.rtag == page && (lin & 0xFFF) &+ UInt64(MemoryLayout<T>.size) <= 0x1000 {
            return UnsafeRawPointer(bitPattern: UInt(truncatingIfNeeded: lin &+ e.pointee.addend)).unsafelyUnwrapped.loadUnaligned(as: T.self)
        }
        return T(truncatingIfNeeded: try loadSlow(lin, MemoryLayout<T>.size, user: cpl == 3))
    }

    @inline(__always) mutating func store<T: FixedWidthInteger & UnsignedInteger>(_ lin: UInt64, _ v: T) throws(Fault) {
        let page = lin >> 12
        let e = tlb + Int(page & tlbMask)
        if e.pointee.wtag == page && (lin & 0xFFF) &+ UInt64(MemoryLayout<T>.size) <= 0x1000 {
            UnsafeMutableRawPointer(bitPattern: UInt(truncatingIfNeeded: lin &+ e.pointee.addend)).unsafelyUnwrapped.storeBytes(of: v, as: T.self)
            return
        }
        try storeSlow(lin, UInt64(v), MemoryLayout<T>.size, user: cpl == 3)
    }

    /// Loads/stores of `size` bytes (1, 2, 4, 8) with the value in a UInt64.
    @inline(__always) mutating func loadN(_ lin: UInt64, _ size: Int) throws(Fault) -> UInt64 {
        switch size {
        case 1: return UInt64(try load(lin, UInt8.self))
        case 2: return UInt64(try load(lin, UInt16.self))
        case 4: return UInt64(try load(lin, UInt32.self))
        default: return try load(lin, UInt64.self)
        }
    }

    @inline(__always) mutating func storeN(_ lin: UInt64, _ v: UInt64, _ size: Int) throws(Fault) {
        switch size {
        case 1: try store(lin, UInt8(truncatingIfNeeded: v))
        case 2: try store(lin, UInt16(truncatingIfNeeded: v))
        case 4: try store(lin, UInt32(truncatingIfNeeded: v))
        default: try store(lin, v)
        }
    }

    /// Checks that `size` bytes at `lin` are writable now (before a read-modify-write or a multi-part
    /// store changes anything), filling the write TLB.
    @inline(__always) mutating func probeWrite(_ lin: UInt64, _ size: Int) throws(Fault) {
        let page = lin >> 12
        let e = tlb + Int(page & tlbMask)
        if e.pointee.wtag == page && (lin & 0xFFF) &+ UInt64(size) <= 0x1000 { return }
        _ = try translate(lin, .write, user: cpl == 3)
        if (lin & 0xFFF) &+ UInt64(size) > 0x1000 {
            _ = try translate((lin | 0xFFF) &+ 1, .write, user: cpl == 3)
        }
    }

    // MARK: system (supervisor) accesses: descriptor tables, TSS, interrupt stacks

    mutating func loadSys(_ lin: UInt64, _ size: Int) throws(Fault) -> UInt64 {
        try loadSlow(lin, size, user: false)
    }

    mutating func storeSys(_ lin: UInt64, _ v: UInt64, _ size: Int) throws(Fault) {
        try storeSlow(lin, v, size, user: false)
    }

    // MARK: slow path

    mutating func loadSlow(_ lin: UInt64, _ size: Int, user: Bool) throws(Fault) -> UInt64 {
        if bp.data != 0 { dataBreakpoint(lin, size, write: false) }
        if (lin & 0xFFF) &+ UInt64(size) > 0x1000 {
            // Page crossing: both pages must be readable before anything is returned.
            var v: UInt64 = 0
            for k in 0..<size {
                let a = lin &+ UInt64(k)
                let p = try translate(a, .read, user: user)
                v |= try physRead(p, 1) << UInt64(8 * k)
            }
            return v
        }
        let p = try translate(lin, .read, user: user)
        return try physRead(p, size)
    }

    mutating func storeSlow(_ lin: UInt64, _ v: UInt64, _ size: Int, user: Bool) throws(Fault) {
        if bp.data != 0 { dataBreakpoint(lin, size, write: true) }
        if (lin & 0xFFF) &+ UInt64(size) > 0x1000 {
            let second = (lin | 0xFFF) &+ 1
            _ = try translate(second, .write, user: user)
            var phys: [UInt64] = []
            for k in 0..<size { phys.append(try translate(lin &+ UInt64(k), .write, user: user)) }
            for k in 0..<size { try physWrite(phys[k], (v >> UInt64(8 * k)) & 0xFF, 1) }
            return
        }
        let p = try translate(lin, .write, user: user)
        try physWrite(p, v, size)
    }

    // MARK: physical memory

    @inline(__always) mutating func hostPointer(_ phys: UInt64, _ size: Int) -> UnsafeMutableRawPointer? {
        ram.hostPointer(physical: phys, length: UInt64(size))
    }

    mutating func physRead(_ phys: UInt64, _ size: Int) throws(Fault) -> UInt64 {
        if let h = hostPointer(phys, size) {
            switch size {
            case 1: return UInt64(h.load(as: UInt8.self))
            case 2: return UInt64(h.loadUnaligned(as: UInt16.self))
            case 4: return UInt64(h.loadUnaligned(as: UInt32.self))
            default: return h.loadUnaligned(as: UInt64.self)
            }
        }
        pollNow = true
        return platformRef.mmioRead(cpu: index, address: phys, size: size)
    }

    mutating func physWrite(_ phys: UInt64, _ v: UInt64, _ size: Int) throws(Fault) {
        if let r = ram.region(containing: phys), phys &+ UInt64(size) &- r.guestPhysical <= r.size {
            if r.readOnly { return }
            let page = phys >> 12
            if code.isCode(page) {
                code.invalidate(page)
                stopBlock = true
            }
            let h = r.host + Int(phys - r.guestPhysical)
            switch size {
            case 1: h.storeBytes(of: UInt8(truncatingIfNeeded: v), as: UInt8.self)
            case 2: h.storeBytes(of: UInt16(truncatingIfNeeded: v), as: UInt16.self)
            case 4: h.storeBytes(of: UInt32(truncatingIfNeeded: v), as: UInt32.self)
            default: h.storeBytes(of: v, as: UInt64.self)
            }
            return
        }
        pollNow = true
        stopBlock = true
        platformRef.mmioWrite(cpu: index, address: phys, size: size, value: v)
    }

    // MARK: TLB maintenance

    mutating func flushTLB(keepGlobal: Bool) {
        for t in [tlbKernel, tlbUser] {
            for i in 0..<tlbSize where !(keepGlobal && t[i].global) { t[i] = .invalid }
        }
    }

    mutating func flushTLBPage(_ lin: UInt64) {
        let page = lin >> 12
        let i = Int(page & tlbMask)
        for t in [tlbKernel, tlbUser] where t[i].rtag == page || t[i].wtag == page || t[i].xtag == page {
            t[i] = .invalid
        }
        // Large pages may be cached under other indices: drop every entry of the same large frame.
        for t in [tlbKernel, tlbUser] {
            for j in 0..<tlbSize where t[j].rtag != .max && (t[j].rtag >> 9) == (page >> 9) { t[j] = .invalid }
        }
    }

    /// Drops write tags for pages that some CPU began to treat as code.
    @inline(__always) mutating func syncCodeEpoch() {
        let e = code.epoch.pointee
        if e != blocks.seenEpoch { drainCodeEpoch(e) }
    }

    mutating func drainCodeEpoch(_ e: UInt64) {
        let ringSize = UInt64(CodeTracker.ringSize)
        if e &- blocks.seenEpoch >= ringSize {
            for t in [tlbKernel, tlbUser] { for i in 0..<tlbSize { t[i].wtag = .max } }
        } else {
            var k = blocks.seenEpoch &+ 1
            while k <= e {
                let page = code.ring[Int(k % ringSize)]
                for t in [tlbKernel, tlbUser] {
                    for i in 0..<tlbSize where t[i].physPage == page { t[i].wtag = .max }
                }
                k &+= 1
            }
        }
        blocks.seenEpoch = e
    }
}
