// Rescue for a connection whose reader is stuck in a request it runs itself.
//
// While a connection's requests do not block, its reader runs them inline (RequestWorkers). When
// one of them blocks after all (a page-cache miss, a stuck network backend), nobody reads that
// connection's next requests until it returns. This process-wide thread looks at the readers in
// inline requests every millisecond; one inside the same request for `stall` gets a substitute:
// a new thread takes over reading the connection (the stuck one, when its request returns, sees
// that it has been replaced and stops reading), and the connection turns to workers.
//
// Cost when nothing is stuck: readers bump one shared counter per inline request; the watchdog
// wakes every millisecond while that counter moves, and sleeps untimed once it has stood still for
// 100 checks (an idle server does not wake up). The first inline request after that wakes it.
import Glibc
import Synchronization

final class InlineWatchdog: @unchecked Sendable {
    static let shared = InlineWatchdog()
    /// An inline request running this long (nanoseconds) gets its reader replaced.
    static let stall: UInt64 = 2_000_000

    private let monitor = Monitor()
    private var watched: [ObjectIdentifier: RequestWorkers] = [:]
    private var started = false
    /// Inline requests started, by all connections.
    private let starts = Atomic<Int>(0)
    private let asleep = Atomic<Bool>(false)

    /// A connection that may run requests inline; until `unwatch`.
    func watch(_ w: RequestWorkers) {
        var spawn = false
        monitor.withLock {
            watched[ObjectIdentifier(w)] = w
            if !started {
                started = true
                spawn = true
            }
        }
        if spawn {
            do {
                try Threads.spawn(stackSize: 64 * 1024) { [self] in loop() }
            } catch {
                monitor.withLock { started = false }
            }
        }
    }

    func unwatch(_ w: RequestWorkers) {
        monitor.withLock { _ = watched.removeValue(forKey: ObjectIdentifier(w)) }
    }

    /// Called as an inline request starts (no lock held).
    func inlineStarted() {
        starts.add(1, ordering: .sequentiallyConsistent)
        if asleep.load(ordering: .sequentiallyConsistent) {
            monitor.withLock { monitor.signal() }
        }
    }

    private func loop() {
        var last = starts.load(ordering: .relaxed)
        var still = 0
        monitor.lock()
        while true {
            if still >= 100 || watched.isEmpty {
                asleep.store(true, ordering: .sequentiallyConsistent)
                // Seen by inlineStarted (it bumps the counter, then looks at `asleep`) or here.
                if starts.load(ordering: .sequentiallyConsistent) == last && !watched.isEmpty || watched.isEmpty {
                    monitor.wait()
                }
                asleep.store(false, ordering: .sequentiallyConsistent)
                still = 0
            } else {
                _ = monitor.wait(until: Deadline(nanoseconds: Deadline.now() &+ 1_000_000))
            }
            let now = starts.load(ordering: .relaxed)
            still = now == last ? still + 1 : 0
            last = now
            let all = Array(watched.values)
            monitor.unlock()
            let t = Deadline.now()
            for w in all { w.rescueIfStalled(now: t) }
            monitor.lock()
        }
    }
}
