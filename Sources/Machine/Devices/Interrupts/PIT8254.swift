// The 8254 PIT (ports 0x40-0x43) and port 0x61's timer bits, for the interpreter (KVM's in-kernel
// PIT does this there). Counters are computed from the monotonic clock at 1.193182 MHz, so nothing
// ticks in the background: reads derive the count, and `poll(now:)` raises IRQ 0 when channel 0's
// next edge is due (missed periods coalesce into one interrupt, which Linux tolerates).
// Modes 0 (interrupt on terminal count), 2 (rate generator) and 3 (square wave) are exact; 1, 4 and 5
// behave as 0. Latch, read-back, lo/hi/lohi access and the channel 2 gate (port 0x61 bit 0) with OUT2
// on bit 5 are implemented, which is what Linux's TSC calibration reads.
import Synchronization

public struct PITChannel: Sendable, Equatable {
    var mode: UInt8 = 0
    var access: UInt8 = 3
    var reload: UInt32 = 0x1_0000
    var loadTime: UInt64 = 0
    var armed = false
    var gate = true
    var latched: [UInt8] = []
    var status: UInt8? = nil
    var writeLowNext = true
    var readLowNext = true
    var pendingLow: UInt8 = 0
    var nextIRQ: UInt64 = 0

    static let hz: UInt64 = 1_193_182

    func ticks(_ now: UInt64) -> UInt64 {
        guard armed, now > loadTime else { return 0 }
        let d = now - loadTime
        return d.multipliedFullWidth(by: PITChannel.hz).high == 0 ? d * PITChannel.hz / 1_000_000_000 : UInt64.max
    }

    func count(_ now: UInt64) -> UInt16 {
        guard armed else { return UInt16(truncatingIfNeeded: reload) }
        let t = ticks(now)
        switch mode {
        case 2, 3, 6, 7:
            return UInt16(truncatingIfNeeded: UInt64(reload) - t % UInt64(reload))
        default:
            return UInt16(truncatingIfNeeded: UInt64(reload) &- t)
        }
    }

    func output(_ now: UInt64) -> Bool {
        guard armed else { return mode != 0 }
        let t = ticks(now)
        switch mode {
        case 2, 6: return t % UInt64(reload) != UInt64(reload) - 1
        case 3, 7: return t % UInt64(reload) < (UInt64(reload) + 1) / 2
        default: return t >= UInt64(reload)
        }
    }

    func nanos(ticks: UInt64) -> UInt64 { ticks * 1_000_000_000 / PITChannel.hz }
}

public final class PIT8254: BusDevice, @unchecked Sendable {
    private let channels = Mutex<[PITChannel]>([PITChannel(), PITChannel(), PITChannel()])
    private let speaker = Mutex<UInt8>(0)
    private let irq0: @Sendable () -> Void
    private let clock: @Sendable () -> UInt64

    /// `irq0` pulses ISA IRQ 0.
    public init(irq0: @escaping @Sendable () -> Void, clock: @escaping @Sendable () -> UInt64 = PIIX4PM.monotonicNanos) {
        self.irq0 = irq0
        self.clock = clock
    }

    public func reset() {
        channels.withLock { $0 = [PITChannel(), PITChannel(), PITChannel()] }
        speaker.withLock { $0 = 0 }
    }

    /// Raises IRQ 0 if channel 0's edge is due.
    public func poll(now: UInt64? = nil) {
        let t = now ?? clock()
        let fire = channels.withLock { ch -> Bool in
            var c = ch[0]
            guard c.armed, c.nextIRQ != 0, t >= c.nextIRQ else { return false }
            if c.mode == 2 || c.mode == 3 || c.mode >= 6 {
                let period = max(c.nanos(ticks: UInt64(c.reload)), 1)
                c.nextIRQ += ((t - c.nextIRQ) / period + 1) * period
            } else {
                c.nextIRQ = 0
            }
            ch[0] = c
            return true
        }
        if fire { irq0() }
    }

    /// When channel 0 next wants attention (monotonic ns).
    public var nextDeadline: UInt64? {
        channels.withLock { $0[0].armed && $0[0].nextIRQ != 0 ? $0[0].nextIRQ : nil }
    }

    private func load(_ c: inout PITChannel, value: UInt16, now: UInt64) {
        c.reload = value == 0 ? 0x1_0000 : UInt32(value)
        c.loadTime = now
        c.armed = c.gate || c.mode != 0
        let first = c.nanos(ticks: UInt64(c.reload))
        c.nextIRQ = now + max(first, 1)
    }

    /// Offsets 0-3 = ports 0x40-0x43; offset 0x21 = port 0x61.
    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        let now = clock()
        if offset == 0x21 {
            let out2 = channels.withLock { $0[2].output(now) }
            let refresh: UInt8 = (now / 15_000) & 1 == 0 ? 0 : 0x10   // toggles every 15 us
            return UInt64(speaker.withLock { $0 & 0x0F } | refresh | (out2 ? 0x20 : 0))
        }
        guard offset < 3 else { return 0xFF }
        return UInt64(channels.withLock { ch -> UInt8 in
            var c = ch[Int(offset)]
            defer { ch[Int(offset)] = c }
            if let s = c.status { c.status = nil; return s }
            if !c.latched.isEmpty { return c.latched.removeFirst() }
            let v = c.count(now)
            switch c.access {
            case 1: return UInt8(v & 0xFF)
            case 2: return UInt8(v >> 8)
            default:
                let low = c.readLowNext
                c.readLowNext.toggle()
                return low ? UInt8(v & 0xFF) : UInt8(v >> 8)
            }
        })
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        let now = clock()
        let b = UInt8(truncatingIfNeeded: value)
        if offset == 0x21 {
            let old = speaker.withLock { s -> UInt8 in let o = s; s = b & 0x0F; return o }
            if old & 1 == 0 && b & 1 != 0 {   // gate 2 rising edge restarts the counter
                channels.withLock { ch in
                    ch[2].gate = true
                    if ch[2].reload != 0 { let r = UInt16(truncatingIfNeeded: ch[2].reload); load(&ch[2], value: r, now: now) }
                }
            } else if b & 1 == 0 {
                channels.withLock { $0[2].gate = false }
            }
            return
        }
        channels.withLock { ch in
            if offset == 3 {
                let sel = Int(b >> 6)
                if sel == 3 {   // read-back
                    for i in 0..<3 where b & (2 << UInt8(i)) != 0 {
                        if b & 0x10 == 0 {
                            let c = ch[i]
                            ch[i].status = (c.output(now) ? 0x80 : 0) | (c.access << 4) | (c.mode << 1)
                        }
                        if b & 0x20 == 0 {
                            let v = ch[i].count(now)
                            ch[i].latched = [UInt8(v & 0xFF), UInt8(v >> 8)]
                        }
                    }
                    return
                }
                let access = (b >> 4) & 3
                if access == 0 {   // counter latch
                    let v = ch[sel].count(now)
                    ch[sel].latched = ch[sel].access == 1 ? [UInt8(v & 0xFF)] : ch[sel].access == 2 ? [UInt8(v >> 8)] : [UInt8(v & 0xFF), UInt8(v >> 8)]
                    return
                }
                ch[sel].access = access
                ch[sel].mode = (b >> 1) & 7
                ch[sel].armed = false
                ch[sel].nextIRQ = 0
                ch[sel].writeLowNext = true
                ch[sel].readLowNext = true
                return
            }
            guard offset < 3 else { return }
            var c = ch[Int(offset)]
            switch c.access {
            case 1: load(&c, value: UInt16(b), now: now)
            case 2: load(&c, value: UInt16(b) << 8, now: now)
            default:
                if c.writeLowNext { c.pendingLow = b } else { load(&c, value: UInt16(b) << 8 | UInt16(c.pendingLow), now: now) }
                c.writeLowNext.toggle()
            }
            ch[Int(offset)] = c
        }
    }
}
