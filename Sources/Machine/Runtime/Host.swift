// Host services without Foundation (it costs vmrun ~9 MiB of resident shared libraries): named
// pthreads, a mutex + condition variable with timed waits on CLOCK_MONOTONIC, the environment,
// whole-file reads and stderr. ImageFormats does the same (Util/Threads.swift).
import CLinux
import Glibc
import ImageFormats

/// Monotonic nanoseconds (CLOCK_MONOTONIC), the clock every device and timer here uses.
@inline(__always)
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

public enum HostThread {
    /// Starts a detached pthread named `name` (at most 15 bytes show in /proc) running `body`;
    /// the spawning itself is ImageFormats' `startThread`.
    @discardableResult
    public static func start(name: String, stackSize: Int = 1 << 20, _ body: @escaping @Sendable () -> Void) -> pthread_t {
        let label = String(name.utf8.prefix(15)) ?? "vmrun"
        let tid = startThread(stackSize: stackSize) {
            label.withCString { clinux_set_thread_name($0) }
            body()
        }
        pthread_detach(tid)
        return tid
    }

    /// The calling thread.
    public static var current: pthread_t { pthread_self() }
}

/// A mutex with one condition variable (NSCondition's job), whose timed waits use CLOCK_MONOTONIC.
public final class Condition: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    @inline(__always) public func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) public func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits (lock held) until signalled.
    public func wait() { pthread_cond_wait(cond, mutex) }

    /// Waits (lock held) until signalled or `nanoseconds` pass; false on timeout.
    @discardableResult
    public func wait(nanoseconds: UInt64) -> Bool {
        wait(untilMonotonic: monotonicNanos() &+ nanoseconds)
    }

    /// Waits (lock held) until signalled or CLOCK_MONOTONIC reaches `deadline`; false on timeout.
    @discardableResult
    public func wait(untilMonotonic deadline: UInt64) -> Bool {
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        return pthread_cond_timedwait(cond, mutex, &ts) != ETIMEDOUT
    }

    public func signal() { pthread_cond_signal(cond) }
    public func broadcast() { pthread_cond_broadcast(cond) }
}

/// A one-shot gate: `wait()` blocks until `open()` has been called (DispatchSemaphore's common use).
public final class Latch: @unchecked Sendable {
    private let cond = Condition()
    private var isOpen = false
    public init() {}
    public func open() { cond.withLock { isOpen = true; cond.broadcast() } }
    public func wait() { cond.withLock { while !isOpen { cond.wait() } } }
}

public enum HostEnvironment {
    public static func get(_ name: String) -> String? {
        guard let v = getenv(name) else { return nil }
        return String(cString: v)
    }
}

public enum HostFile {
    /// The whole file, or nil when it cannot be opened or read.
    public static func read(_ path: String, limit: Int = 1 << 30) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size >= 0, Int(st.st_size) <= limit else { return nil }
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        let ok = out.withUnsafeMutableBytes { b -> Bool in
            while done < b.count {
                let n = Glibc.read(fd, b.baseAddress! + done, b.count - done)
                if n < 0 { if errno == EINTR { continue }; return false }
                if n == 0 { break }
                done += n
            }
            return true
        }
        guard ok else { return nil }
        if done < out.count { out.removeLast(out.count - done) }
        return out
    }

    /// Writes all of `bytes` to `fd`; false on error.
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 { if errno == EINTR || errno == EAGAIN { continue }; return false }
            done += n
        }
        return true
    }

    @discardableResult
    public static func writeAll(_ fd: Int32, _ text: String) -> Bool {
        var s = text
        return s.withUTF8 { writeAll(fd, UnsafeRawBufferPointer($0)) }
    }

    /// Creates (or truncates) `path` with `text`; false on error.
    public static func create(_ path: String, contents text: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return writeAll(fd, text)
    }
}

extension String {
    /// Without leading and trailing spaces, tabs, CR and LF.
    public var trimmedWhitespace: String {
        let ws: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" || $0 == "\r\n" }
        guard let first = firstIndex(where: { !ws($0) }), let last = lastIndex(where: { !ws($0) }) else { return "" }
        return String(self[first...last])
    }
}
