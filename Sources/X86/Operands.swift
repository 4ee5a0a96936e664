// Operand access for the executor: effective addresses, register views by size, and memory
// operands through segmentation and the TLB. All `@inline(__always)`: they vanish into the switch.

extension CPUCore {
    @inline(__always) mutating func ea(_ i: IP) -> UInt64 {
        let a = i.disp &+ r[Int(i.base)] &+ (r[Int(i.index)] << UInt64(i.scale))
        switch i.asz {
        case 8: return a
        case 4: return a & 0xFFFF_FFFF
        default: return a & 0xFFFF
        }
    }

    @inline(__always) mutating func getReg(_ code: UInt8, _ size: Int) -> UInt64 {
        switch size {
        case 1: return UInt64(regsRaw.load(fromByteOffset: Int(code), as: UInt8.self))
        case 2: return r[Int(code)] & 0xFFFF
        case 4: return r[Int(code)] & 0xFFFF_FFFF
        default: return r[Int(code)]
        }
    }

    @inline(__always) mutating func setReg(_ code: UInt8, _ size: Int, _ v: UInt64) {
        switch size {
        case 1: regsRaw.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: Int(code), as: UInt8.self)
        case 2: regsRaw.storeBytes(of: UInt16(truncatingIfNeeded: v), toByteOffset: Int(code) * 8, as: UInt16.self)
        case 4: r[Int(code)] = v & 0xFFFF_FFFF
        default: r[Int(code)] = v
        }
    }

    /// Linear address of the memory operand for an access of `size` bytes.
    @inline(__always) mutating func opLinear(_ i: IP, _ size: Int, write: Bool = false) throws(Fault) -> UInt64 {
        try linear(Int(i.seg), ea(i), size, write: write)
    }

    /// Host address of a memory operand when segmentation and the TLB allow it without help
    /// (`write` selects the write tag), or nil.
    @inline(__always) mutating func fastHost(_ i: IP, _ size: Int, write: Bool) -> UnsafeMutableRawPointer? {
        let e = ea(i)
        let seg = Int(i.seg)
        var lin: UInt64
        if mode == .m64 && seg < SegReg.fs {
            lin = e   // ES, CS, SS, DS: base 0 and no limit in 64-bit mode
        } else {
            guard e &+ UInt64(size) <= segEnd[seg] else { return nil }
            lin = segBase[seg] &+ e
            if mode != .m64 { lin &= 0xFFFF_FFFF }
        }
        let page = lin >> 12
        let t = tlb + Int(page & tlbMask)
        let tag = write ? t.pointee.wtag : t.pointee.rtag
        guard tag == page && (lin & 0xFFF) &+ UInt64(size) <= 0x1000 else { return nil }
        return UnsafeMutableRawPointer(bitPattern: UInt(truncatingIfNeeded: lin &+ t.pointee.addend))
    }

    @inline(__always) mutating func readRm(_ i: IP, _ size: Int) throws(Fault) -> UInt64 {
        if !i.isMem { return getReg(i.rm, size) }
        if let h = fastHost(i, size, write: false) { return hostLoad(h, size) }
        return try readMem(i, size)
    }

    @inline(__always) mutating func writeRm(_ i: IP, _ size: Int, _ v: UInt64) throws(Fault) {
        if !i.isMem { setReg(i.rm, size, v); return }
        if let h = fastHost(i, size, write: true) { hostStore(h, v, size); return }
        try writeMem(i, size, v)
    }

    @inline(never) mutating func readMem(_ i: IP, _ size: Int) throws(Fault) -> UInt64 {
        try loadN(try opLinear(i, size), size)
    }

    @inline(never) mutating func writeMem(_ i: IP, _ size: Int, _ v: UInt64) throws(Fault) {
        try storeN(try opLinear(i, size, write: true), v, size)
    }

    /// Loads a value that will be written back: the write permission is checked first, so a fault on
    /// the store can never leave flags or registers half-updated.
    @inline(__always) mutating func loadRMW(_ lin: UInt64, _ size: Int) throws(Fault) -> UInt64 {
        let page = lin >> 12
        let e = tlb + Int(page & tlbMask)
        if e.pointee.wtag == page && (lin & 0xFFF) &+ UInt64(size) <= 0x1000 {
            let h = UnsafeRawPointer(bitPattern: UInt(truncatingIfNeeded: lin &+ e.pointee.addend)).unsafelyUnwrapped
            switch size {
            case 1: return UInt64(h.load(as: UInt8.self))
            case 2: return UInt64(h.loadUnaligned(as: UInt16.self))
            case 4: return UInt64(h.loadUnaligned(as: UInt32.self))
            default: return h.loadUnaligned(as: UInt64.self)
            }
        }
        try probeWrite(lin, size)
        return try loadSlow(lin, size, user: cpl == 3)
    }

    /// Host pointer for an atomic read-modify-write, when the operand is plain RAM in one page.
    @inline(__always) mutating func atomicPointer(_ lin: UInt64, _ size: Int) -> UnsafeMutableRawPointer? {
        let page = lin >> 12
        let e = tlb + Int(page & tlbMask)
        if e.pointee.wtag == page && (lin & 0xFFF) &+ UInt64(size) <= 0x1000 {
            return UnsafeMutableRawPointer(bitPattern: UInt(truncatingIfNeeded: lin &+ e.pointee.addend))
        }
        return nil
    }

    // MARK: stack

    /// Host address of 8 aligned-enough stack bytes at `sp` in 64-bit mode, from the TLB alone.
    @inline(__always) mutating func stackHost(_ sp: UInt64, write: Bool) -> UnsafeMutableRawPointer? {
        let page = sp >> 12
        let t = tlb + Int(page & tlbMask)
        let tag = write ? t.pointee.wtag : t.pointee.rtag
        guard tag == page && (sp & 0xFFF) <= 0xFF8 else { return nil }
        return UnsafeMutableRawPointer(bitPattern: UInt(truncatingIfNeeded: sp &+ t.pointee.addend))
    }

    @inline(__always) var stackMask: UInt64 {
        mutating get {
            if mode == .m64 { return .max }
            return segs[SegReg.ss].attr & 0x4000 != 0 ? 0xFFFF_FFFF : 0xFFFF
        }
    }

    @inline(__always) mutating func setSP(_ v: UInt64) {
        let m = stackMask
        if m == .max { r[4] = v } else if m == 0xFFFF { r[4] = (r[4] & ~0xFFFF) | (v & 0xFFFF) } else { r[4] = v & m }
    }

    @inline(__always) mutating func push(_ v: UInt64, _ size: Int) throws(Fault) {
        let m = stackMask
        let nsp = (r[4] &- UInt64(size)) & m
        try storeN(try linear(SegReg.ss, nsp, size, write: true), v, size)
        setSP(nsp)
    }

    @inline(__always) mutating func pop(_ size: Int) throws(Fault) -> UInt64 {
        let m = stackMask
        let sp = r[4] & m
        let v = try loadN(try linear(SegReg.ss, sp, size), size)
        setSP(sp &+ UInt64(size))
        return v
    }

    /// Reads the stack at `offset` bytes above SP without moving it.
    mutating func peek(_ offset: UInt64, _ size: Int) throws(Fault) -> UInt64 {
        let sp = (r[4] &+ offset) & stackMask
        return try loadN(try linear(SegReg.ss, sp, size), size)
    }
}

@inline(__always) func hostLoad(_ h: UnsafeMutableRawPointer, _ size: Int) -> UInt64 {
    switch size {
    case 1: return UInt64(h.load(as: UInt8.self))
    case 2: return UInt64(h.loadUnaligned(as: UInt16.self))
    case 4: return UInt64(h.loadUnaligned(as: UInt32.self))
    default: return h.loadUnaligned(as: UInt64.self)
    }
}

@inline(__always) func hostStore(_ h: UnsafeMutableRawPointer, _ v: UInt64, _ size: Int) {
    switch size {
    case 1: h.storeBytes(of: UInt8(truncatingIfNeeded: v), as: UInt8.self)
    case 2: h.storeBytes(of: UInt16(truncatingIfNeeded: v), as: UInt16.self)
    case 4: h.storeBytes(of: UInt32(truncatingIfNeeded: v), as: UInt32.self)
    default: h.storeBytes(of: v, as: UInt64.self)
    }
}
