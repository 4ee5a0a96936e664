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
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()

    public init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    public func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }

    /// Waits (with the lock held by the caller inside `locked`) until signalled.
    public func wait() { pthread_cond_wait(&cond, &mutex) }
    public func broadcast() { pthread_cond_broadcast(&cond) }
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
