// The HPET (IA-PC HPET 1.0a) at 0xFED00000: a 100 MHz 64-bit main counter derived from the
// monotonic clock, three comparators (one-shot or periodic, 32- or 64-bit, edge or level), the
// legacy replacement route (timer 0 on IRQ 0, timer 1 on IRQ 8, which is how Linux uses it) and
// I/O APIC routes 16-23 otherwise. Expiries are scheduled on the machine's TimerService, so the
// interrupt is raised on time under KVM as well as under the interpreter.
import Synchronization

public final class HPET: BusDevice, @unchecked Sendable {
    public static let timers = 3
    public static let periodFs: UInt64 = 10_000_000          // 10 ns per tick
    static let capabilities: UInt64 = (HPET.periodFs << 32) | 0x8086_0000 | (1 << 15) | (1 << 13) | (UInt64(timers - 1) << 8) | 1
    static let routeCap: UInt64 = 0x00FF_0000                  // I/O APIC pins 16-23

    struct Timer {
        var config: UInt64 = (HPET.routeCap << 32) | (1 << 4) | (1 << 5)   // periodic capable, 64-bit
        var comparator: UInt64 = ~0
        var period: UInt64 = 0
    }
    struct State {
        var config: UInt64 = 0
        var isr: UInt64 = 0
        var counterAtStart: UInt64 = 0
        var startNs: UInt64 = 0
        var timers = [Timer](repeating: Timer(), count: HPET.timers)
    }

    private let state = Mutex(State())
    private let sink: any InterruptSink
    private let service: TimerService
    private let clock: @Sendable () -> UInt64
    private let idBase: Int

    public init(sink: any InterruptSink, service: TimerService, clock: @escaping @Sendable () -> UInt64 = PIIX4PM.monotonicNanos, idBase: Int = 0x4850) {
        self.sink = sink
        self.service = service
        self.clock = clock
        self.idBase = idBase
    }

    public func reset() {
        for i in 0..<HPET.timers { service.cancel(idBase + i) }
        state.withLock { $0 = State() }
    }

    private static func counter(_ s: State, now: UInt64) -> UInt64 {
        guard s.config & 1 != 0 else { return s.counterAtStart }
        return s.counterAtStart &+ (now &- s.startNs) / 10
    }

    private func gsi(_ s: State, _ i: Int) -> UInt32 {
        if s.config & 2 != 0 && i < 2 { return i == 0 ? 0 : 8 }
        return UInt32((s.timers[i].config >> 9) & 0x1F)
    }

    /// (Re)schedules timer `i` from the current state.
    private func arm(_ i: Int) {
        let now = clock()
        let deadline = state.withLock { s -> UInt64? in
            let t = s.timers[i]
            guard s.config & 1 != 0, t.config & (1 << 2) != 0 else { return nil }
            let c = HPET.counter(s, now: now)
            let mode32 = t.config & (1 << 8) != 0
            var delta: UInt64
            if mode32 {
                delta = UInt64(UInt32(truncatingIfNeeded: t.comparator) &- UInt32(truncatingIfNeeded: c))
            } else {
                delta = t.comparator &- c
                if delta > 1 << 62 { return nil }   // in the past and not periodic-wrapping: never
            }
            return now + delta * 10
        }
        if let deadline { service.schedule(idBase + i, at: deadline) { [weak self] in self?.fire(i) } } else { service.cancel(idBase + i) }
    }

    private func fire(_ i: Int) {
        let now = clock()
        let action = state.withLock { s -> (UInt32, Bool)? in
            var t = s.timers[i]
            guard s.config & 1 != 0, t.config & (1 << 2) != 0 else { return nil }
            if t.config & (1 << 3) != 0 && t.period > 0 {
                // Advance the comparator past the counter by whole periods (missed ones coalesce).
                let c = HPET.counter(s, now: now)
                if t.config & (1 << 8) != 0 {
                    let c32 = UInt32(truncatingIfNeeded: c), p32 = UInt32(truncatingIfNeeded: t.period)
                    var cmp = UInt32(truncatingIfNeeded: t.comparator)
                    let behind = c32 &- cmp
                    if p32 > 0 { cmp &+= (behind / p32 &+ 1) &* p32 }
                    t.comparator = UInt64(cmp)
                } else {
                    let behind = c &- t.comparator
                    t.comparator &+= (Int64(bitPattern: behind) >= 0 ? behind / t.period + 1 : 1) &* t.period
                }
            }
            s.timers[i] = t
            let level = t.config & (1 << 1) != 0
            if level { s.isr |= 1 << UInt64(i) }
            return (gsi(s, i), level)
        }
        guard let (g, level) = action else { return }
        if level { sink.setIRQ(g, level: true) } else { sink.setIRQ(g, level: true); sink.setIRQ(g, level: false) }
        let periodic = state.withLock { $0.timers[i].config & (1 << 3) != 0 && $0.timers[i].period > 0 }
        if periodic { arm(i) }
    }

    private func read64(_ off: UInt64, now: UInt64) -> UInt64 {
        state.withLock { s in
            switch off {
            case 0x000: return HPET.capabilities
            case 0x010: return s.config
            case 0x020: return s.isr
            case 0x0F0: return HPET.counter(s, now: now)
            case 0x100..<0x100 + 0x20 * UInt64(HPET.timers):
                let i = Int((off - 0x100) / 0x20)
                switch (off - 0x100) % 0x20 {
                case 0x00: return s.timers[i].config
                case 0x08: return s.timers[i].comparator
                default: return 0
                }
            default: return 0
            }
        }
    }

    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        let v = read64(offset & ~7, now: clock())
        return size == 8 ? v : (v >> (8 * (offset & 7))) & IOBus.mask(size)
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        let now = clock()
        let base = offset & ~7
        let old = read64(base, now: now)
        let new: UInt64
        if size == 8 { new = value } else {
            let sh = 8 * (offset & 7)
            new = (old & ~(IOBus.mask(size) << sh)) | ((value & IOBus.mask(size)) << sh)
        }
        var rearm: [Int] = []
        var lower: [UInt32] = []
        state.withLock { s in
            switch base {
            case 0x010:
                let wasOn = s.config & 1 != 0
                let c = HPET.counter(s, now: now)
                s.config = new & 3
                if !wasOn && s.config & 1 != 0 { s.startNs = now } else if wasOn && s.config & 1 == 0 { s.counterAtStart = c }
                rearm = Array(0..<HPET.timers)
            case 0x020:
                let cleared = s.isr & new
                s.isr &= ~new
                for i in 0..<HPET.timers where cleared & (1 << UInt64(i)) != 0 { lower.append(gsi(s, i)) }
            case 0x0F0:
                guard s.config & 1 == 0 else { break }   // writable only while halted
                s.counterAtStart = new
            case 0x100..<0x100 + 0x20 * UInt64(HPET.timers):
                let i = Int((base - 0x100) / 0x20)
                switch (base - 0x100) % 0x20 {
                case 0x00:
                    let writable: UInt64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 8) | (0x1F << 9)
                    var cfg = (s.timers[i].config & ~writable) | (new & writable)
                    let route = (cfg >> 9) & 0x1F
                    if HPET.routeCap & (1 << route) == 0 { cfg = (cfg & ~(0x1F << 9)) | (16 << 9) }
                    s.timers[i].config = cfg
                    if s.timers[i].config & (1 << 1) == 0 && s.isr & (1 << UInt64(i)) != 0 {
                        s.isr &= ~(1 << UInt64(i)); lower.append(gsi(s, i))
                    }
                case 0x08:
                    // Periodic timers: the comparator changes only with VAL_SET (the accumulator);
                    // every write sets the period. 32-bit writes replace their half only.
                    var t = s.timers[i]
                    let mode32 = t.config & (1 << 8) != 0
                    let sh = size == 8 ? 0 : 8 * (offset & 7)
                    let mask = size == 8 ? ~UInt64(0) : IOBus.mask(size) << sh
                    let part = (value & IOBus.mask(size)) << sh
                    if t.config & (1 << 3) == 0 || t.config & (1 << 6) != 0 {
                        t.comparator = (t.comparator & ~mask) | part
                        if mode32 { t.comparator &= 0xFFFF_FFFF }
                    }
                    t.period = (t.period & ~mask) | part
                    if mode32 { t.period &= 0xFFFF_FFFF }
                    t.config &= ~(1 << 6)
                    s.timers[i] = t
                default: break
                }
                rearm = [i]
            default: break
            }
        }
        for g in lower { sink.setIRQ(g, level: false) }
        for i in rearm { arm(i) }
    }
}
