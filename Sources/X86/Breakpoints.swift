// Debug-register breakpoints (SDM vol. 3, chapter 18): DR0-DR3 hold linear addresses (or ports),
// DR7 enables them (L/G), picks a condition (R/W: 00 execute, 01 data write, 11 data read or write,
// 10 I/O with CR4.DE) and a length (LEN: 1, 2, 8, 4 bytes; the address's low bits are ignored), DR6
// reports what happened. MOV to/from DRn lives here too: DR4/DR5 alias DR6/DR7 (#UD with CR4.DE),
// DR7.GD turns any MOV DR into a fault-class #DB with DR6.BD, bits 63:32 of DR6/DR7 are reserved.
//
// The hot path pays nothing while DR7 enables no breakpoint; `refreshBreakpoints` summarises DR7 in
// `bp` after every change and moves the cost to where it is needed:
//  - Instruction breakpoints live in the decoded blocks: `buildBlock` ends a block with a
//    `.debugBreak` pseudo-instruction where an enabled breakpoint's address begins an instruction,
//    so a block started there is just the pseudo-instruction, and a block running into it stops
//    there. It always raises the #DB fault (RIP on the instruction, RF pushed as 0): RF = 1 sends
//    the run loop to `singleStep`, which decodes outside the cache and checks RF itself. Changing
//    the set of instruction breakpoints drops all decoded blocks (in both directions: stale
//    pseudo-instructions would fault, missing ones would not).
//  - Data breakpoints withhold fast TLB tags: `fill` gives a page holding a read/write breakpoint
//    neither a read nor a write tag, one holding a write breakpoint no write tag, so every access
//    to it takes `loadSlow`/`storeSlow`, which compare it with the breakpoints (`dataBreakpoint`).
//    Arming or moving one flushes the TLB; after disarming, the tags come back with the next miss.
//  - I/O breakpoints: IN/OUT/INS/OUTS ask `ioBreakpoint` when `bp.io` is set.
// A data or I/O match is a trap: it is recorded in `bp.hits` and the block stops after the
// instruction (`stopBlock`, `pollNow`); the run loop's poll path then raises the #DB, unless a MOV
// SS/POP SS shadow holds it for one more instruction. A REP string instruction stops after the
// iteration that hit and, with iterations left, sets RF (as for any event taken between
// iterations). A faulting instruction drops its matches. Under TF, `singleStep` reports the
// instruction's matches and BS in one #DB.
//
// DR6: B0-B3 are rewritten on every #DB (data/I/O matches, plus, for a trap, enabled instruction
// breakpoints at the next instruction, which the CPU detects at the same boundary, as QEMU reports
// them); BD, BS and BT are sticky; entering the #DB handler clears DR7.GD. Implicit accesses
// (descriptor tables, the TSS, interrupt frames) are checked like any other linear access, except
// those of delivering the #DB itself. A LOCKed read-modify-write on a watched page is not atomic
// against other vCPUs (as on a page holding decoded code: both lack the write tag that gives the
// host pointer for the CAS). Not modelled: DR7.LE/GE (exact breakpoints are always exact here),
// RTM and bus-lock bits, breakpoints on the linear addresses of 16/32-bit code aliasing another CS
// base at the same physical address.

struct Breakpoints {
    /// Enabled instruction breakpoints (bit n: DRn).
    var exec: UInt8 = 0
    /// Enabled data breakpoints (write or read/write), and the read/write ones among them.
    var data: UInt8 = 0
    var dataRead: UInt8 = 0
    /// Enabled I/O breakpoints (R/W = 10 with CR4.DE = 1).
    var io: UInt8 = 0
    /// First and last byte (address or port) of each breakpoint's range.
    var first = InlineArray<4, UInt64>(repeating: 0)
    var last = InlineArray<4, UInt64>(repeating: 0)
    /// Data and I/O matches of the current instruction, not reported yet (DR6.B0-B3 layout).
    var hits: UInt8 = 0
}

enum DR6 {
    static let fixed: UInt64 = 0xFFFF_0FF0, bd: UInt64 = 0x2000, bs: UInt64 = 0x4000, bt: UInt64 = 0x8000
    static let writable: UInt64 = 0xE00F
}

enum DR7 {
    static let fixed: UInt64 = 0x400, gd: UInt64 = 0x2000, localEnables: UInt64 = 0x55
    static let writable: UInt64 = 0xFFFF_2FFF
}

extension CPUCore {
    // MARK: MOV to/from DRn

    /// DR4/DR5 are DR6/DR7 unless CR4.DE makes them reserved; DR7.GD faults first (CPL 0 is
    /// checked by the caller).
    private mutating func debugRegisterIndex(_ n: Int) throws(Fault) -> Int {
        if n > 7 { throw Fault.ud }
        var k = n
        if n == 4 || n == 5 {
            if cr4 & 8 != 0 { throw Fault.ud }
            k += 2
        }
        if dr.5 & DR7.gd != 0 {
            // General detect: a fault (RF = 1 in the image) on the MOV, with BD.
            flags |= RFlag.rf
            throw debugException(hits: 0, status: DR6.bd)
        }
        return k
    }

    mutating func readDR(_ n: Int) throws(Fault) -> UInt64 {
        switch try debugRegisterIndex(n) {
        case 0: return dr.0
        case 1: return dr.1
        case 2: return dr.2
        case 3: return dr.3
        case 6: return dr.4
        default: return dr.5
        }
    }

    mutating func writeDR(_ n: Int, _ v: UInt64) throws(Fault) {
        let k = try debugRegisterIndex(n)
        if k >= 6 && v >> 32 != 0 { throw Fault.gp(0) }
        switch k {
        case 0: dr.0 = v
        case 1: dr.1 = v
        case 2: dr.2 = v
        case 3: dr.3 = v
        case 6: dr.4 = (v & DR6.writable) | DR6.fixed; return
        default: dr.5 = (v & DR7.writable) | DR7.fixed
        }
        refreshBreakpoints()
    }

    private mutating func breakpointAddress(_ k: Int) -> UInt64 {
        switch k {
        case 0: return dr.0
        case 1: return dr.1
        case 2: return dr.2
        default: return dr.3
        }
    }

    // MARK: arming

    /// Recomputes `bp` after a change of DR0-DR3, DR7 or CR4.DE (and clears L0-L3 on a task switch
    /// through `clearLocalBreakpoints`); drops decoded blocks when the instruction breakpoints
    /// changed and the TLB when data breakpoints are armed somewhere new.
    mutating func refreshBreakpoints() {
        var n = Breakpoints()
        n.hits = bp.hits
        let dr7 = dr.5
        for k in 0..<4 where (dr7 >> UInt64(2 * k)) & 3 != 0 {
            let rw = (dr7 >> UInt64(16 + 4 * k)) & 3
            let lenBits = (dr7 >> UInt64(18 + 4 * k)) & 3
            let len: UInt64 = rw == 0 ? 1 : (lenBits == 2 ? 8 : lenBits + 1)
            let a = breakpointAddress(k) & ~(len - 1)
            let bit = UInt8(1) << UInt8(k)
            switch rw {
            case 0: n.exec |= bit
            case 1: n.data |= bit
            case 3: n.data |= bit; n.dataRead |= bit
            default:
                if cr4 & 8 == 0 { continue }   // R/W = 10 is undefined without CR4.DE
                n.io |= bit
            }
            n.first[k] = a
            n.last[k] = a &+ len &- 1
        }
        let execChanged = n.exec != bp.exec || (0..<4).contains { n.exec & (1 << $0) != 0 && n.first[$0] != bp.first[$0] }
        let dataChanged = n.data != bp.data || n.dataRead != bp.dataRead
            || (0..<4).contains { n.data & (1 << $0) != 0 && (n.first[$0] != bp.first[$0] || n.last[$0] != bp.last[$0]) }
        bp = n
        if execChanged {
            blocks.flush()
            // Chained blocks must not run on into the dropped ones.
            stopBlock = true
            pollNow = true
        }
        if dataChanged && n.data != 0 { flushTLB(keepGlobal: false) }
    }

    /// A task switch clears L0-L3 (SDM 18.2.4).
    mutating func clearLocalBreakpoints() {
        if dr.5 & DR7.localEnables == 0 { return }
        dr.5 &= ~DR7.localEnables
        refreshBreakpoints()
    }

    // MARK: conditions

    /// The enabled instruction breakpoints at linear address `lin`.
    mutating func instructionBreakpoints(at lin: UInt64) -> UInt8 {
        var m: UInt8 = 0
        for k in 0..<4 where bp.exec & (1 << UInt8(k)) != 0 && bp.first[k] == lin { m |= 1 << UInt8(k) }
        return m
    }

    /// The linear address of RIP, or nil when CS's limit excludes it.
    mutating func linearRIP() -> UInt64? {
        try? codeLinear()
    }

    /// Records the data breakpoints an access of `size` bytes at `lin` matches (the slow path of
    /// every load and store calls this while `bp.data` is set).
    @inline(never)
    mutating func dataBreakpoint(_ lin: UInt64, _ size: Int, write: Bool) {
        let m = write ? bp.data : bp.dataRead
        let end = lin &+ UInt64(size) &- 1
        var hit: UInt8 = 0
        for k in 0..<4 where m & (1 << UInt8(k)) != 0 && lin <= bp.last[k] && bp.first[k] <= end { hit |= 1 << UInt8(k) }
        if hit != 0 { recordHits(hit) }
    }

    /// Records the I/O breakpoints an access of `size` bytes at `port` matches.
    @inline(never)
    mutating func ioBreakpoint(_ port: UInt16, _ size: Int) {
        let p = UInt64(port), end = p + UInt64(size) - 1
        var hit: UInt8 = 0
        for k in 0..<4 where bp.io & (1 << UInt8(k)) != 0 && p <= bp.last[k] && bp.first[k] <= end { hit |= 1 << UInt8(k) }
        if hit != 0 { recordHits(hit) }
    }

    private mutating func recordHits(_ hit: UInt8) {
        bp.hits |= hit
        stopBlock = true
        pollNow = true
    }

    /// Which fast TLB tags a linear page must go without: (read, write).
    mutating func breakpointWatch(page: UInt64) -> (read: Bool, write: Bool) {
        var r = false, w = false
        for k in 0..<4 where bp.data & (1 << UInt8(k)) != 0 && bp.first[k] >> 12 == page {
            w = true
            if bp.dataRead & (1 << UInt8(k)) != 0 { r = true }
        }
        return (r, w)
    }

    // MARK: raising #DB

    /// Sets DR6 for a debug exception (B0-B3 rewritten, `status` ORed into the sticky bits), clears
    /// DR7.GD as entering the handler does, and returns the fault to raise.
    mutating func debugException(hits: UInt8, status: UInt64) -> Fault {
        dr.4 = (dr.4 & ~0xF) | UInt64(hits & 0xF) | status | DR6.fixed
        dr.5 &= ~DR7.gd
        return Fault(vector: 1, code: 0, hasCode: false)
    }

    /// The #DB fault of the instruction breakpoints at RIP (the `.debugBreak` pseudo-instruction).
    mutating func instructionBreakpointFault() -> Fault {
        let m = linearRIP().map { instructionBreakpoints(at: $0) } ?? 0
        return debugException(hits: m, status: 0)
    }

    /// Raises the trap-class #DB after an instruction: its data/I/O matches, `status` (BS for a
    /// single-step trap, BT), and the instruction breakpoints at the next instruction when RF does
    /// not mask them. Accesses made while delivering it are not reported.
    mutating func raiseDebugTrap(status: UInt64) {
        var hits = bp.hits
        bp.hits = 0
        if bp.exec != 0 && flags & RFlag.rf == 0, let lin = linearRIP() { hits |= instructionBreakpoints(at: lin) }
        stopBlock = false
        raise(debugException(hits: hits, status: status))
        bp.hits = 0
    }
}
