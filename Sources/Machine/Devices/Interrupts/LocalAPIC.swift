// A local APIC for the interpreter (KVM has its own in the kernel): xAPIC registers at 0xFEE00000
// and the same registers as x2APIC MSRs 0x800-0x8FF, IRR/ISR/TMR, task and processor priority,
// EOI (with the I/O APIC's EOI broadcast for level-triggered vectors), the LVT, the timer
// (one-shot, periodic and TSC-deadline, at a 1 GHz bus clock like QEMU's), and IPIs through the
// interrupt controller hub. State is a value behind a lock; the timer is evaluated lazily against
// the monotonic clock whenever the CPU polls, and `nextDeadline` tells the HLT wait when to wake.
import Synchronization

public struct LocalAPICState: Sendable, Equatable {
    public var id: UInt32
    public var apicBase: UInt64
    public var tpr: UInt32 = 0
    public var ldr: UInt32 = 0
    public var dfr: UInt32 = 0xFFFF_FFFF
    public var svr: UInt32 = 0xFF
    public var esr: UInt32 = 0
    public var icrLow: UInt32 = 0
    public var icrHigh: UInt32 = 0
    public var lvt = [UInt32](repeating: 0x1_0000, count: 7)   // CMCI, timer, thermal, perf, LINT0, LINT1, error
    public var irr = [UInt32](repeating: 0, count: 8)
    public var isr = [UInt32](repeating: 0, count: 8)
    public var tmr = [UInt32](repeating: 0, count: 8)
    public var timerInitial: UInt32 = 0
    public var timerDivide: UInt32 = 0
    /// Monotonic ns when the current count was loaded / the next expiry (0: not armed).
    public var timerStart: UInt64 = 0
    public var timerExpiry: UInt64 = 0
    public var tscDeadline: UInt64 = 0
    init(id: UInt32, bsp: Bool) {
        self.id = id
        apicBase = 0xFEE0_0000 | 0x800 | (bsp ? 0x100 : 0)
    }
}

public final class LocalAPIC: @unchecked Sendable {
    public static let lvtTimer = 1, lvtLINT0 = 4, lvtLINT1 = 5, lvtError = 6
    public let index: Int
    let state: Mutex<LocalAPICState>
    /// Where IPIs and EOIs go (set by the hub).
    unowned(unsafe) var hub: InterruptHub!
    /// Nanoseconds of the monotonic clock (injectable for tests).
    let clock: @Sendable () -> UInt64
    /// Guest TSC for the deadline timer: ns + offset (the CPU's TSC is 1 GHz from the same clock).
    var tscOffset: Int64 = 0

    init(index: Int, clock: @escaping @Sendable () -> UInt64) {
        self.index = index
        self.clock = clock
        state = Mutex(LocalAPICState(id: UInt32(index), bsp: index == 0))
    }

    public func reset() {
        state.withLock { $0 = LocalAPICState(id: UInt32(index), bsp: index == 0) }
    }

    public var snapshot: LocalAPICState { state.withLock { $0 } }

    var enabled: Bool { state.withLock { $0.apicBase & 0x800 != 0 && $0.svr & 0x100 != 0 } }
    var hardwareEnabled: Bool { state.withLock { $0.apicBase & 0x800 != 0 } }
    var x2apic: Bool { state.withLock { $0.apicBase & 0xC00 == 0xC00 } }

    // MARK: vectors

    static func test(_ a: [UInt32], _ v: Int) -> Bool { a[v >> 5] & (1 << UInt32(v & 31)) != 0 }
    static func set(_ a: inout [UInt32], _ v: Int) { a[v >> 5] |= 1 << UInt32(v & 31) }
    static func clear(_ a: inout [UInt32], _ v: Int) { a[v >> 5] &= ~(1 << UInt32(v & 31)) }
    static func highest(_ a: [UInt32]) -> Int? {
        for i in stride(from: 7, through: 0, by: -1) where a[i] != 0 { return i * 32 + 31 - a[i].leadingZeroBitCount }
        return nil
    }

    static func ppr(_ s: LocalAPICState) -> UInt32 {
        let isrv = UInt32(highest(s.isr) ?? 0)
        return (s.tpr >> 4) >= (isrv >> 4) ? s.tpr & 0xFF : isrv & 0xF0
    }

    /// Accepts a fixed interrupt (from the I/O APIC, an MSI, an IPI or the LVT).
    func accept(vector: UInt8, level: Bool) {
        guard vector >= 16 else {
            state.withLock { $0.esr |= 0x40 }   // received illegal vector
            return
        }
        state.withLock { s in
            LocalAPIC.set(&s.irr, Int(vector))
            if level { LocalAPIC.set(&s.tmr, Int(vector)) } else { LocalAPIC.clear(&s.tmr, Int(vector)) }
        }
    }

    /// The vector the CPU would take now, if any (checks the timer first).
    func pendingVector() -> UInt8? {
        pollTimer()
        return state.withLock { s -> UInt8? in
            guard s.apicBase & 0x800 != 0, let v = LocalAPIC.highest(s.irr) else { return nil }
            return UInt32(v) & 0xF0 > LocalAPIC.ppr(s) & 0xF0 ? UInt8(v) : nil
        }
    }

    /// Interrupt acknowledge: IRR -> ISR for the highest deliverable vector.
    func acknowledge() -> UInt8? {
        pollTimer()
        return state.withLock { s -> UInt8? in
            guard let v = LocalAPIC.highest(s.irr), UInt32(v) & 0xF0 > LocalAPIC.ppr(s) & 0xF0 else { return nil }
            LocalAPIC.clear(&s.irr, v)
            LocalAPIC.set(&s.isr, v)
            return UInt8(v)
        }
    }

    private func eoi() {
        let vector = state.withLock { s -> Int? in
            guard let v = LocalAPIC.highest(s.isr) else { return nil }
            LocalAPIC.clear(&s.isr, v)
            return LocalAPIC.test(s.tmr, v) ? v : nil
        }
        if let v = vector { hub.endOfInterrupt(vector: UInt8(v)) }
    }

    // MARK: timer

    static func divide(_ d: UInt32) -> UInt64 {
        let code = (d & 3) | ((d & 8) >> 1)
        return code == 7 ? 1 : UInt64(2) << UInt64(code)
    }

    private func timerMode(_ s: LocalAPICState) -> UInt32 { (s.lvt[LocalAPIC.lvtTimer] >> 17) & 3 }

    /// Fires the timer if it expired; re-arms a periodic one.
    func pollTimer() {
        let now = clock()
        let fire = state.withLock { s -> UInt8? in
            let lvt = s.lvt[LocalAPIC.lvtTimer]
            if timerMode(s) == 2 {   // TSC-deadline
                guard s.tscDeadline != 0 else { return nil }
                let tsc = UInt64(bitPattern: Int64(bitPattern: now) &+ tscOffset)
                guard tsc >= s.tscDeadline else { return nil }
                s.tscDeadline = 0
                return lvt & 0x1_0000 == 0 ? UInt8(lvt & 0xFF) : nil
            }
            guard s.timerExpiry != 0, now >= s.timerExpiry else { return nil }
            if timerMode(s) == 1, s.timerInitial > 0 {
                let period = UInt64(s.timerInitial) * LocalAPIC.divide(s.timerDivide)
                let missed = (now - s.timerExpiry) / period + 1
                s.timerStart = s.timerExpiry + (missed - 1) * period
                s.timerExpiry = s.timerStart + period
            } else {
                s.timerExpiry = 0
            }
            return lvt & 0x1_0000 == 0 ? UInt8(lvt & 0xFF) : nil
        }
        if let v = fire { accept(vector: v, level: false) }
    }

    /// When the timer next needs attention (monotonic ns), nil when idle.
    func nextDeadline() -> UInt64? {
        state.withLock { s in
            if timerMode(s) == 2 {
                guard s.tscDeadline != 0 else { return nil }
                return UInt64(bitPattern: Int64(bitPattern: s.tscDeadline) &- tscOffset)
            }
            return s.timerExpiry == 0 ? nil : s.timerExpiry
        }
    }

    private func currentCount(_ s: LocalAPICState, now: UInt64) -> UInt32 {
        guard s.timerExpiry != 0, now < s.timerExpiry else { return 0 }
        return UInt32(truncatingIfNeeded: (s.timerExpiry - now) / LocalAPIC.divide(s.timerDivide))
    }

    // MARK: registers (offsets as in the xAPIC page; x2APIC MSR n is offset (n - 0x800) << 4)

    func read(offset: Int) -> UInt32 {
        let now = clock()
        return state.withLock { s in
            switch offset {
            case 0x20: return s.apicBase & 0x400 != 0 ? s.id : s.id << 24
            case 0x30: return 0x0005_0014   // version 0x14, 6 LVT entries (max LVT index 5)
            case 0x80: return s.tpr
            case 0xA0: return LocalAPIC.ppr(s)
            case 0xD0: return s.apicBase & 0x400 != 0 ? ((s.id >> 4) << 16) | (1 << (s.id & 0xF)) : s.ldr
            case 0xE0: return s.dfr
            case 0xF0: return s.svr
            case 0x100..<0x180: return s.isr[(offset - 0x100) >> 4]
            case 0x180..<0x200: return s.tmr[(offset - 0x180) >> 4]
            case 0x200..<0x280: return s.irr[(offset - 0x200) >> 4]
            case 0x280: return s.esr
            case 0x300: return s.icrLow
            case 0x310: return s.icrHigh
            case 0x2F0: return s.lvt[0]
            case 0x320...0x370: return s.lvt[1 + (offset - 0x320) >> 4]
            case 0x380: return s.timerInitial
            case 0x390: return currentCount(s, now: now)
            case 0x3E0: return s.timerDivide
            default: return 0
            }
        }
    }

    func write(offset: Int, value: UInt32) {
        let now = clock()
        switch offset {
        case 0xB0: eoi(); return
        case 0x300:
            let high = state.withLock { s -> UInt32 in s.icrLow = value & ~0x1000; return s.icrHigh }
            hub.sendIPI(from: index, low: value, destination: x2apic ? high : high >> 24)
            return
        default: break
        }
        state.withLock { s in
            switch offset {
            case 0x20: if s.apicBase & 0x400 == 0 { s.id = value >> 24 }
            case 0x80: s.tpr = value & 0xFF
            case 0xD0: s.ldr = value & 0xFF00_0000
            case 0xE0: s.dfr = value | 0x0FFF_FFFF
            case 0xF0:
                s.svr = value & 0x13FF
                if value & 0x100 == 0 { for i in 0..<7 { s.lvt[i] |= 0x1_0000 } }
            case 0x280: s.esr = 0
            case 0x310: s.icrHigh = value
            case 0x2F0: s.lvt[0] = value & 0x1_07FF
            case 0x320...0x370:
                let i = 1 + (offset - 0x320) >> 4
                var v = value
                if s.svr & 0x100 == 0 { v |= 0x1_0000 }
                let masks: [UInt32] = [0, 0x7_10FF, 0x1_07FF, 0x1_07FF, 0x1_A7FF, 0x1_A7FF, 0x1_00FF]
                let old = s.lvt[i]
                s.lvt[i] = v & masks[i]
                if i == LocalAPIC.lvtTimer && (old >> 17) & 3 != (v >> 17) & 3 {
                    s.timerExpiry = 0
                    s.tscDeadline = 0
                }
            case 0x380:
                s.timerInitial = value
                guard timerMode(s) != 2 else { break }
                s.timerStart = now
                s.timerExpiry = value == 0 ? 0 : now + UInt64(value) * LocalAPIC.divide(s.timerDivide)
            case 0x3E0: s.timerDivide = value & 0xB
            default: break
            }
        }
    }

    // MARK: MSRs

    func readMSR(_ index: UInt32) -> UInt64? {
        switch index {
        case 0x1B: return state.withLock { $0.apicBase }
        case 0x6E0: return state.withLock { $0.tscDeadline }
        case 0x800...0x8FF:
            guard x2apic else { return nil }
            let off = Int(index - 0x800) << 4
            if off == 0x300 { return state.withLock { UInt64($0.icrHigh) << 32 | UInt64($0.icrLow) } }
            return UInt64(read(offset: off))
        default: return nil
        }
    }

    func writeMSR(_ index: UInt32, _ value: UInt64) -> Bool {
        switch index {
        case 0x1B:
            state.withLock { s in
                let wasX2 = s.apicBase & 0x400 != 0
                s.apicBase = (value & 0xFFFF_F000 | value & 0xC00) | (s.apicBase & 0x100)
                if !wasX2 && s.apicBase & 0x400 != 0 { s.ldr = ((s.id >> 4) << 16) | (1 << (s.id & 0xF)) }
            }
            return true
        case 0x6E0:
            state.withLock { s in if timerMode(s) == 2 { s.tscDeadline = value } }
            return true
        case 0x800...0x8FF:
            guard x2apic else { return false }
            let off = Int(index - 0x800) << 4
            if off == 0x300 {
                state.withLock { $0.icrHigh = UInt32(value >> 32) }
                write(offset: 0x300, value: UInt32(truncatingIfNeeded: value))
            } else if off == 0x3F0 {   // SELF IPI
                accept(vector: UInt8(truncatingIfNeeded: value), level: false)
            } else {
                write(offset: off, value: UInt32(truncatingIfNeeded: value))
            }
            return true
        default: return false
        }
    }

    /// LINT0 in ExtINT mode (virtual wire) or APIC disabled: the PIC's INTR reaches this CPU.
    var acceptsPICInterrupts: Bool {
        state.withLock { s in
            if s.apicBase & 0x800 == 0 { return true }
            let l = s.lvt[LocalAPIC.lvtLINT0]
            return l & 0x1_0000 == 0 && (l >> 8) & 7 == 7
        }
    }

    /// Logical destination match (flat or cluster model; x2APIC cluster).
    func matchesLogical(_ dest: UInt32) -> Bool {
        state.withLock { s in
            if s.apicBase & 0x400 != 0 {
                let ldr = ((s.id >> 4) << 16) | (1 << (s.id & 0xF))
                return dest >> 16 == ldr >> 16 && (dest & ldr & 0xFFFF) != 0
            }
            let ldr = s.ldr >> 24
            if s.dfr >> 28 == 0xF { return dest & ldr != 0 }
            return dest >> 4 == ldr >> 4 && (dest & ldr & 0xF) != 0
        }
    }

    var apicID: UInt32 { state.withLock { $0.id } }
}
