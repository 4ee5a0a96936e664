// Dedicated threads for blocking I/O, and the lock/condition pair they wait on.
//
// Connections run on plain pthreads with a small stack (the Swift concurrency pool has one thread
// per core and must never block on a socket). A connection thread's stack only ever holds a few
// frames of parsing and a system call, so 256 KiB is plenty; the pages it never touches cost nothing.
import Glibc

public enum Threads {
    public static let connectionStackSize = 256 * 1024

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts a detached thread running `body`. Throws when the system refuses (EAGAIN at the
    /// thread limit): the caller then drops the connection instead of crashing.
    public static func spawn(stackSize: Int = connectionStackSize, _ body: @escaping () -> Void) throws {
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        pthread_attr_setstacksize(&attr, stackSize)
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, &attr, { arg in
            let b = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            b.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw NBDError.system("Failed to create thread", rc)
        }
    }
}

/// A mutex with a condition variable; `withLock` and `wait` as the usual monitor.
public final class Monitor: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()

    public init() {
        pthread_mutex_init(&mutex, nil)
        var ca = pthread_condattr_t()
        pthread_condattr_init(&ca)
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)
        pthread_cond_init(&cond, &ca)
        pthread_condattr_destroy(&ca)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    public func lock() { pthread_mutex_lock(&mutex) }
    public func unlock() { pthread_mutex_unlock(&mutex) }

    @discardableResult
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }

    /// Waits for a signal; the lock must be held.
    public func wait() { pthread_cond_wait(&cond, &mutex) }

    /// Waits for a signal or the deadline; false on timeout. The lock must be held.
    public func wait(until deadline: Deadline) -> Bool {
        var ts = timespec(tv_sec: Int(deadline.nanoseconds / 1_000_000_000), tv_nsec: Int(deadline.nanoseconds % 1_000_000_000))
        return pthread_cond_timedwait(&cond, &mutex, &ts) == 0
    }

    public func signal() { pthread_cond_signal(&cond) }
    public func broadcast() { pthread_cond_broadcast(&cond) }

    /// A second condition on the same lock, for one thread that waits for something else than
    /// the others do (so that waking it does not wake them all, nor the other way round).
    public final class Condition: @unchecked Sendable {
        fileprivate var cond = pthread_cond_t()
        public init() {
            var ca = pthread_condattr_t()
            pthread_condattr_init(&ca)
            pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)
            pthread_cond_init(&cond, &ca)
            pthread_condattr_destroy(&ca)
        }
        deinit { pthread_cond_destroy(&cond) }
        public func signal() { pthread_cond_signal(&cond) }
        public func broadcast() { pthread_cond_broadcast(&cond) }
    }

    /// Waits on `condition` (the lock must be held).
    public func wait(_ condition: Condition) { pthread_cond_wait(&condition.cond, &mutex) }
}
