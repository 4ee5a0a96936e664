// One thread that fires device timers at monotonic deadlines (the HPET's comparators), for both
// accelerators: on KVM nothing polls user-space devices, so a timer must raise its interrupt on its
// own. Clients schedule and cancel by id; callbacks run on the timer thread, outside its lock.

public final class TimerService: @unchecked Sendable {
    private let cond = Condition()
    private var deadlines: [Int: (UInt64, @Sendable () -> Void)] = [:]
    private var stopping = false
        private let clock: @Sendable () -> UInt64

    public init(clock: @escaping @Sendable () -> UInt64 = PIIX4PM.monotonicNanos) {
        self.clock = clock
        HostThread.start(name: "timers") { [unowned self] in self.loop() }
    }

    /// Fires `callback` once at `deadline` (monotonic ns), replacing any earlier schedule of `id`.
    public func schedule(_ id: Int, at deadline: UInt64, _ callback: @escaping @Sendable () -> Void) {
        cond.lock()
        deadlines[id] = (deadline, callback)
        cond.broadcast()
        cond.unlock()
    }

    public func cancel(_ id: Int) {
        cond.lock()
        deadlines[id] = nil
        cond.unlock()
    }

    public func stop() {
        cond.lock()
        stopping = true
        cond.broadcast()
        cond.unlock()
    }

    private func loop() {
        cond.lock()
        while !stopping {
            let now = clock()
            let due = deadlines.filter { $0.value.0 <= now }
            if !due.isEmpty {
                for id in due.keys { deadlines[id] = nil }
                cond.unlock()
                for (_, (_, cb)) in due.sorted(by: { $0.value.0 < $1.value.0 }) { cb() }
                cond.lock()
                continue
            }
            if let next = deadlines.values.map(\.0).min() {
                cond.wait(untilMonotonic: next)
            } else {
                cond.wait()
            }
        }
        cond.unlock()
    }
}
