// Dedicated threads for blocking work (pread/pwrite), not the Swift concurrency pool, which has
// only as many threads as cores and must never block (see SWIFT-LINUX.md).
import Foundation
import Glibc

/// Runs `count` copies of `body(index)` on their own threads and waits for all of them.
public func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    var threads: [Thread] = []
    for i in 0..<count {
        group.enter()
        let t = Thread {
            body(i)
            group.leave()
        }
        t.stackSize = 1 << 20
        threads.append(t)
        t.start()
    }
    group.wait()
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
