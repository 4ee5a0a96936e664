// Dedicated threads for blocking work (pread/pwrite), not the Swift concurrency pool, which has
// only as many threads as cores and must never block (see SWIFT-LINUX.md). Plain pthreads: the
// library does not pull in Foundation (it costs every program a few MiB of memory).
import CLinux
import Glibc

private final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

/// Starts a detached-from-Swift pthread running `body`; returns its handle for `join`.
public func startThread(stackSize: Int = 1 << 20, _ body: @escaping @Sendable () -> Void) -> pthread_t {
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    pthread_attr_setstacksize(&attr, stackSize)
    defer { pthread_attr_destroy(&attr) }
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var tid = pthread_t()
    let r = pthread_create(&tid, &attr, { arg in
        let b = Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue()
        b.run()
        return nil
    }, box)
    precondition(r == 0, "pthread_create failed: \(r)")
    return tid
}

/// Runs `count` copies of `body(index)` on their own threads and waits for all of them.
public func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let tids = (0..<count).map { i in startThread { body(i) } }
    for t in tids { pthread_join(t, nil) }
}

/// A mutex with a condition variable, for hand-offs between worker threads.
public final class Monitor: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// One condition per slot: waiters on different slots (convert's writers, each waiting for its
    /// own turn) wake only when their slot is signalled, not on every change.
    private let conds: UnsafeMutablePointer<pthread_cond_t>
    private let slots: Int

    public init(conditions: Int = 1) {
        slots = max(conditions, 1)
        conds = .allocate(capacity: slots)
        pthread_mutex_init(mutex, nil)
        for i in 0..<slots { pthread_cond_init(conds + i, nil) }
    }

    deinit {
        for i in 0..<slots { pthread_cond_destroy(conds + i) }
        pthread_mutex_destroy(mutex)
        conds.deallocate()
        mutex.deallocate()
    }

    public func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits (with the lock held by the caller inside `locked`) until signalled.
    public func wait(slot: Int = 0) { pthread_cond_wait(conds + slot % slots, mutex) }
    /// Wakes the waiters of one slot.
    public func signal(slot: Int) { pthread_cond_broadcast(conds + slot % slots) }
    /// Wakes every waiter.
    public func broadcast() { for i in 0..<slots { pthread_cond_broadcast(conds + i) } }
}

/// printf-style formatting without Foundation ("%0.3g", "%02d"...).
public func cFormat(_ format: String, _ args: CVarArg...) -> String {
    withVaList(args) { va in
        var buf = [CChar](repeating: 0, count: 512)
        let n = vsnprintf(&buf, buf.count, format, va)
        if n >= buf.count {
            buf = [CChar](repeating: 0, count: Int(n) + 1)
            return withVaList(args) { va2 in
                _ = vsnprintf(&buf, buf.count, format, va2)
                return String(cString: buf)
            }
        }
        return String(cString: buf)
    }
}

/// CPUs online now (at least 1): how many workers CPU-bound jobs (compression) can keep busy.
/// (Through the C shim: _SC_NPROCESSORS_ONLN is not always visible through Glibc in release builds.)
public var onlineCPUCount: Int { Int(clinux_online_cpus()) }
