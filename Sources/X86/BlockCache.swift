// Decoded blocks: runs of up to `maxBlockInsts` instructions on one page, decoded once and kept in
// a flat arena, found again through a two-way set-associative table keyed by virtual RIP. A block
// ends at an unconditional transfer of control; 64-bit blocks run on past conditional branches
// (a taken one leaves the block in the middle).
//
// A block is valid while (a) its virtual RIP and decode mode match, (b) RIP still translates to the
// same physical address, and (c) the generations of its physical page(s) are unchanged (CodeTracker
// bumps them on writes). When the arena fills up, everything is dropped and decoding starts over,
// as when the instruction breakpoints change (a block ends with a `.debugBreak` pseudo-instruction
// where one is armed: Breakpoints.swift).
//
// Running blocks chain into each other without returning to the run loop (see `execBlock`): a
// successor on the same virtual page is reached through the predecessor's links (checked once, when
// made), one on another page through `peekBlock` (TLB, table, generations; the fast tier first
// tries the block's remembered last successor on another page, checked the same way). A chain ends every few
// hundred blocks for interrupt polling, and at once after a write to a code page or anything that
// changes translation or mode; other vCPUs' and DMA writes to code are seen at the next chain start.
import CX86Fast

let maxBlockInsts = 48

struct BlockInfo {
    var vaddr: UInt64 = .max
    var phys: UInt64 = .max
    var phys2: UInt64 = .max
    var gen: UInt32 = 0
    var gen2: UInt32 = 0
    var first: Int32 = 0
    var count: Int32 = 0
    var mode: UInt8 = 0
    /// Guest instructions in the block (fused pairs count twice).
    var guestCount: Int32 = 0
    /// Direct links to successor blocks on the same virtual page (most recent first): the RIP each
    /// was entered at and its index in `infos`. A link is only a hint, checked by `linkedBlock`.
    var linkRIP0: UInt64 = .max
    var linkRIP1: UInt64 = .max
    var linkIdx0: Int32 = 0
    var linkIdx1: Int32 = 0
    /// The fast tier's one-entry cache of the last successor on another page (x86fast.h): the RIP
    /// and index, checked against the TLB and the page generations whenever it is used.
    var exitRIP: UInt64 = .max
    var exitIdx: Int32 = 0
}

struct BlockCache {
    static let arenaSize = 1 << 17
    static let infoSize = 1 << 14
    static let tableSize = 1 << 16  // a power of two (slot() takes the top bits of a product)
    var insts: UnsafeMutablePointer<DInst>
    var used = 0
    var infos: UnsafeMutablePointer<BlockInfo>
    var infoCount = 0
    var table: UnsafeMutablePointer<Int32>
    var seenEpoch: UInt64 = 0
    /// How many times the cache has been emptied (block indices reused).
    var flushes: UInt64 = 0

    init() {
        // Every block is followed by an end marker (buildBlock), which the fast tier dispatches to
        // instead of comparing each instruction's position with the block's end.
        insts = .allocate(capacity: Self.arenaSize)
        infos = .allocate(capacity: Self.infoSize)
        table = .allocate(capacity: Self.tableSize)
        table.initialize(repeating: -1, count: Self.tableSize)
    }

    func deallocate() {
        insts.deallocate(); infos.deallocate(); table.deallocate()
    }

    mutating func flush() {
        flushes &+= 1   // the fast tier's compiled blocks are named by index (x86jit.h)
        used = 0
        infoCount = 0
        table.update(repeating: -1, count: Self.tableSize)
    }

    /// The first of the two table slots (a two-way set) where the block at `rip` may be.
    @inline(__always) static func slot(_ rip: UInt64) -> Int {
        // Multiplicative hashing: kernel text is megabytes of code whose hot blocks collided often
        // under the old xor-fold (every collision is a decode).
        // The top log2(tableSize) bits of the product, made even.
        Int(truncatingIfNeeded: (rip &* 0x9E37_79B9_7F4A_7C15) >> UInt64(64 - tableSize.trailingZeroBitCount)) & ~1
    }

    /// The block entered at `rip` in its two-way set, or -1 (the caller checks it is still valid).
    /// Two ways, because in a direct-mapped table two hot blocks of one slot evict each other on
    /// every pass of a loop that runs both, and each eviction is a decode that also fills the
    /// arena towards the next flush (x86fast.c's peek_block probes the same two slots).
    @inline(__always) func lookup(_ rip: UInt64) -> Int32 {
        let s = BlockCache.slot(rip)
        let a = table[s]
        if a >= 0 && infos[Int(a)].vaddr == rip { return a }
        let b = table[s + 1]
        if b >= 0 && infos[Int(b)].vaddr == rip { return b }
        return -1
    }

    /// Enters block `idx` (entered at `rip`) in its set's first way; the block there moves to the
    /// second unless it is an older block at the same RIP, which is simply replaced.
    @inline(__always) mutating func insert(_ rip: UInt64, _ idx: Int32) {
        let s = BlockCache.slot(rip)
        let a = table[s]
        if a >= 0 && infos[Int(a)].vaddr != rip { table[s + 1] = a }
        table[s] = idx
    }
}

extension CPUCore {
    /// Linear address of RIP, with the code segment's limit checked outside long mode.
    @inline(__always) mutating func codeLinear() throws(Fault) -> UInt64 {
        if mode == .m64 { return rip }
        if rip > UInt64(segs[SegReg.cs].limit) { throw Fault.gp(0) }
        return (segs[SegReg.cs].base &+ rip) & 0xFFFF_FFFF
    }

    /// Physical page and host address for instruction fetch at `lin`.
    @inline(__always) mutating func fetchPage(_ lin: UInt64) throws(Fault) -> (phys: UInt64, host: UnsafeRawPointer?) {
        let page = lin >> 12
        let e = tlb + Int(page & tlbMask)
        if e.pointee.xtag == page {
            return (e.pointee.physPage << 12 | (lin & 0xFFF), UnsafeRawPointer(bitPattern: UInt(truncatingIfNeeded: lin &+ e.pointee.addend)))
        }
        let p = try translate(lin, .exec, user: cpl == 3)
        if e.pointee.xtag == page {
            return (p, UnsafeRawPointer(bitPattern: UInt(truncatingIfNeeded: lin &+ e.pointee.addend)))
        }
        return (p, nil)   // MMIO: not executable from our cache
    }

    /// The already-decoded, still valid block at RIP, found without translating or decoding (64-bit
    /// code whose page is in the instruction TLB); nil sends the caller to the full lookup.
    @inline(__always) mutating func peekBlock() -> UnsafeMutablePointer<BlockInfo>? {
        guard mode == .m64 else { return nil }
        let page = rip >> 12
        let e = tlb + Int(page & tlbMask)
        guard e.pointee.xtag == page else { return nil }
        let phys = e.pointee.physPage << 12 | (rip & 0xFFF)
        let idx = blocks.lookup(rip)
        guard idx >= 0 else { return nil }
        let b = blocks.infos + Int(idx)
        guard b.pointee.vaddr == rip && b.pointee.phys == phys && b.pointee.mode == mode.rawValue
            && code.generation(phys >> 12) == b.pointee.gen
            && (b.pointee.phys2 == .max || code.generation(b.pointee.phys2) == b.pointee.gen2) else { return nil }
        return b
    }

    /// The successor of `cur` at `pc` when both lie on the same virtual page, through `cur`'s links or
    /// else the lookup table (then remembered as a link); nil sends the caller to `peekBlock`.
    ///
    /// No translation is needed: inside one `execBlock` run nothing changes the mapping of the code
    /// page (INVLPG, CR writes, mode and privilege changes end the run), so `pc` lies in the physical
    /// page of `cur`; and a write to that page ends the run too, so the page still has `cur`'s
    /// generation. 64-bit code only, like `peekBlock` (elsewhere a CS base or limit would matter).
    ///
    /// A link is checked once, when it is made; afterwards it stays right for as long as `cur` is
    /// valid: blocks never change after they are built, a block with `cur`'s page generation is as
    /// current as `cur`, and a cache flush (the only thing that reuses `infos` slots) happens only
    /// outside `execBlock`, after which `cur` and its links are unreachable.
    @inline(__always) mutating func linkedBlock(_ cur: UnsafeMutablePointer<BlockInfo>, _ pc: UInt64) -> UnsafeMutablePointer<BlockInfo>? {
        if cur.pointee.linkRIP0 == pc { return blocks.infos + Int(cur.pointee.linkIdx0) }
        if cur.pointee.linkRIP1 == pc { return blocks.infos + Int(cur.pointee.linkIdx1) }
        return linkBlock(cur, pc)
    }

    /// Looks up and validates a same-page successor of `cur` and records it as `cur`'s first link.
    @inline(never)
    mutating func linkBlock(_ cur: UnsafeMutablePointer<BlockInfo>, _ pc: UInt64) -> UnsafeMutablePointer<BlockInfo>? {
        guard (pc ^ cur.pointee.vaddr) >> 12 == 0 && mode == .m64 && cur.pointee.mode == mode.rawValue else { return nil }
        let phys = (cur.pointee.phys & ~0xFFF) | (pc & 0xFFF)
        let idx = blocks.lookup(pc)
        guard idx >= 0 && Int(idx) < blocks.infoCount else { return nil }
        let b = blocks.infos + Int(idx)
        guard b.pointee.vaddr == pc && b.pointee.phys == phys && b.pointee.mode == cur.pointee.mode
            && b.pointee.gen == cur.pointee.gen && b.pointee.phys2 == .max else { return nil }
        cur.pointee.linkRIP1 = cur.pointee.linkRIP0; cur.pointee.linkIdx1 = cur.pointee.linkIdx0
        cur.pointee.linkRIP0 = pc; cur.pointee.linkIdx0 = idx
        return b
    }

    /// The block starting at RIP, decoding it if needed.
    @inline(__always) mutating func currentBlock() throws(Fault) -> UnsafeMutablePointer<BlockInfo> {
        let lin = try codeLinear()
        let (phys, _) = try fetchPage(lin)
        let idx = blocks.lookup(rip)
        if idx >= 0 {
            let b = blocks.infos + Int(idx)
            if b.pointee.vaddr == rip && b.pointee.phys == phys && b.pointee.mode == mode.rawValue
                && code.generation(phys >> 12) == b.pointee.gen
                && (b.pointee.phys2 == .max || code.generation(b.pointee.phys2) == b.pointee.gen2) {
                return b
            }
        }
        return try buildBlock(lin: lin, phys: phys)
    }

    @inline(never)
    mutating func buildBlock(lin: UInt64, phys: UInt64) throws(Fault) -> UnsafeMutablePointer<BlockInfo> {
        if blocks.used + maxBlockInsts + 1 > BlockCache.arenaSize || blocks.infoCount >= BlockCache.infoSize {
            blocks.flush()
            #if X86_PROFILE
            profWhy[3] += 1
            #endif
        }
        let page = phys >> 12
        code.markCode(page)
        #if X86_PROFILE
        profBuilt &+= 1
        profBuiltAt[rip, default: 0] += 1
        let slot = BlockCache.slot(rip)
        if blocks.lookup(rip) >= 0 { profWhy[2] += 1 } else if blocks.table[slot] < 0 || blocks.table[slot + 1] < 0 { profWhy[0] += 1 } else { profWhy[1] += 1 }
        #endif
        var info = BlockInfo(vaddr: rip, phys: phys, phys2: .max, gen: code.generation(page), gen2: 0,
                             first: Int32(blocks.used), count: 0, mode: mode.rawValue)
        var pc = rip
        var l = lin
        var buf = (UInt64(0), UInt64(0))
        var n = 0
        var guestInsts = 0
        while n < maxBlockInsts {
            if bp.exec != 0 && instructionBreakpoints(at: l) != 0 {
                // An instruction breakpoint: the block ends with the pseudo-instruction raising it.
                blocks.insts[blocks.used + n] = DInst(op: .debugBreak, len: 0)
                n += 1
                break
            }
            let (_, host) = try fetchPage(l)
            guard let host else {
                if n == 0 { throw Fault.gp(0) }
                break
            }
            let room = Int(0x1000 - (l & 0xFFF))
            var d: DInst
            if room >= 15 {
                var dec = Decoder(host.assumingMemoryBound(to: UInt8.self), avail: 15, mode: mode, features: decoderFeatures)
                d = dec.decode(rip: pc)
            } else {
                // The instruction may cross into the next page: gather bytes from both.
                d = try withUnsafeMutableBytes(of: &buf) { raw throws(Fault) -> DInst in
                    let b = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    for k in 0..<room { b[k] = host.load(fromByteOffset: k, as: UInt8.self) }
                    var dec = Decoder(UnsafePointer(b), avail: room, mode: mode, features: decoderFeatures)
                    let first = dec.decode(rip: pc)
                    if first.len != 0 { return first }
                    // Needs the next page.
                    let nextLin = (l | 0xFFF) &+ 1
                    let nextHost: UnsafeRawPointer?
                    let nextPhys: UInt64
                    do throws(Fault) {
                        (nextPhys, nextHost) = try fetchPage(mode == .m64 ? nextLin : nextLin & 0xFFFF_FFFF)
                    } catch {
                        if n == 0 { throw error }
                        return DInst(op: .ud, len: 0)
                    }
                    guard let nextHost else { return DInst(op: .ud, len: 0) }
                    for k in room..<15 { b[k] = nextHost.load(fromByteOffset: k - room, as: UInt8.self) }
                    var dec2 = Decoder(UnsafePointer(b), avail: 15, mode: mode, features: decoderFeatures)
                    let d2 = dec2.decode(rip: pc)
                    if d2.len != 0 {
                        code.markCode(nextPhys >> 12)
                        info.phys2 = nextPhys >> 12
                        info.gen2 = code.generation(nextPhys >> 12)
                    }
                    return d2
                }
                if d.len == 0 { break }
            }
            guestInsts += 1
            // Each entry's `tail` holds its guest instruction count until the block is complete.
            let prev = n > 0 ? blocks.insts + blocks.used + n - 1 : nil
            if let prev, d.op == .jcc, fuse(&prev.pointee, d) {
                prev.pointee.tail += 1
            } else if let prev, d.op == .nop, absorbsNop(prev.pointee, d), guestInsts < 200 {
                // A NOP (the ENDBR64 and ftrace NOP that open every kernel function, padding)
                // becomes part of the instruction before it: one dispatch fewer, same effect.
                prev.pointee.len &+= d.len
                prev.pointee.tail += 1
            } else {
                d.tail = 1
                blocks.insts[blocks.used + n] = d
                n += 1
            }
            pc &+= UInt64(d.len)
            if mode != .m64 { pc &= 0xFFFF_FFFF }
            // A direct CALL carries its return address in its (otherwise unused) disp: the fast
            // tier does not track RIP instruction by instruction.
            if d.op == .call { blocks.insts[blocks.used + n - 1].disp = pc }
            l &+= UInt64(d.len)
            // 64-bit blocks run on past a conditional branch (a taken one leaves the block there,
            // see execBlock and the fast tier): fewer, longer blocks, fewer block transitions.
            if (isTerminator(d.op) && !(d.op == .jcc && mode == .m64)) || info.phys2 != .max { break }
            if (l >> 12) != (lin >> 12) { break }  // blocks stay on their first page
        }
        var after = 0
        for k in stride(from: blocks.used + n - 1, through: blocks.used, by: -1) {
            let count = Int(blocks.insts[k].tail)
            blocks.insts[k].tail = UInt8(after)
            after += count
        }
        if fastOps != nil {
            for k in blocks.used..<(blocks.used + n) {
                blocks.insts[k].fast = x86fast_handler(blocks.insts[k].op.rawValue, blocks.insts[k].flags, blocks.insts[k].asz)
            }
        }
        // The end marker after the block: never executed (the executor stops at `count`), it sends
        // the fast tier's dispatch to its block-end code.
        var marker = DInst(op: .ud, len: 0)
        marker.fast = UInt8(X86F_END)
        marker.imm = pc   // the RIP after the block's last instruction, where it falls through to
        blocks.insts[blocks.used + n] = marker
        info.count = Int32(n)
        info.guestCount = Int32(guestInsts)
        blocks.used += n + 1
        let idx = blocks.infoCount
        blocks.infos[idx] = info
        blocks.infoCount += 1
        blocks.insert(rip, Int32(idx))
        syncCodeEpoch()
        return blocks.infos + idx
    }

    /// Fuses a register CMP/TEST, or a memory one with a byte-sized immediate, with the Jcc that
    /// follows it into `prev`. The flags are still recorded for later readers; only the dispatch
    /// and the flag decoding disappear. (A fault reading the memory operand reports the CMP/TEST,
    /// where the fused instruction begins, as it should.)
    mutating func fuse(_ prev: inout DInst, _ j: DInst) -> Bool {
        var f = prev
        if prev.isMem {
            guard prev.flags & DInst.fLock == 0 else { return false }   // LOCK CMP/TEST: #UD, Swift's
            switch prev.op {
            case .cmpRmI, .cmpRmI4, .cmpRmI8: f.op = .cmpjMI
            case .testRmI, .testRmI4, .testRmI8: f.op = .testjMI
            default: return false
            }
            let m = sizeMask(Int(prev.osz))
            let byte = UInt8(truncatingIfNeeded: prev.imm)
            guard UInt64(bitPattern: Int64(Int8(bitPattern: byte))) & m == prev.imm & m else { return false }
            f.reg = byte
            f.imm = j.imm
            f.aux = j.aux
            f.len = prev.len &+ j.len
            prev = f
            return true
        }
        switch prev.op {
        case .cmpRmR4: f.op = .cmpjRR4
        case .cmpRmR8: f.op = .cmpjRR8
        case .cmpRRm4: f.op = .cmpjRR4; f.rm = prev.reg; f.reg = prev.rm
        case .cmpRRm8: f.op = .cmpjRR8; f.rm = prev.reg; f.reg = prev.rm
        case .cmpRmI4: f.op = .cmpjRI4; f.disp = prev.imm
        case .cmpRmI8: f.op = .cmpjRI8; f.disp = prev.imm
        case .testRmR4: f.op = .testjRR4
        case .testRmR8: f.op = .testjRR8
        case .testRmR: f.op = .testjRR
        case .testRmI, .testRmI4, .testRmI8: f.op = .testjRI; f.disp = prev.imm
        default: return false
        }
        f.imm = j.imm
        f.aux = j.aux
        f.len = prev.len &+ j.len
        prev = f
        return true
    }

    /// Whether NOP `nop` may be folded into `prev`, the instruction before it in a 64-bit block
    /// (prev's length grows by the NOP's, so prev's next RIP is the one after the NOP). Not into
    /// a control transfer (its fall-through or return address would skip the NOP), nor into MOV SS
    /// or POP SS (whose interrupt shadow covers exactly the next instruction).
    mutating func absorbsNop(_ prev: DInst, _ nop: DInst) -> Bool {
        guard mode == .m64, Int(prev.len) + Int(nop.len) <= 255, prev.tail < 200 else { return false }
        switch prev.op {
        case .movSegRm, .popSeg, .debugBreak: return false
        default: return !isTerminator(prev.op)
        }
    }

    mutating func isTerminator(_ op: Op) -> Bool {
        switch op {
        case .jcc, .jmp, .jmpRm, .call, .callRm, .ret, .jcxz, .loop, .loope, .loopne,
             .jmpFarI, .jmpFarM, .callFarI, .callFarM, .retf, .int, .int3, .into, .int1, .iret, .hlt,
             .syscall, .sysret, .sysenter, .sysexit, .ud, .unimpl, .movToCR, .lmsw, .wrmsr, .popf, .sti,
             .cmpjRR4, .cmpjRR8, .cmpjRI4, .cmpjRI8, .testjRR4, .testjRR8, .testjRI, .testjRR, .cmpjMI, .testjMI:
            return true
        default:
            return false
        }
    }
}
