// `-object iothread,id=NAME`: a dedicated thread that serves device queues (feature B5), so that
// block I/O runs off the vCPU threads.
//
// Devices register a coalescing `IOSource` per queue: `kick()` (from a vCPU's notify write) costs an
// atomic exchange and, only when the source was idle, a wake-up; however many kicks arrive before
// the handler runs, it runs once, and a kick that lands while it runs makes it run again. One-off
// work items (`submit`) run in submission order; `drain()` waits until everything submitted or
// kicked so far has run (used before a device reset).
import CLinux
import Glibc
import Synchronization

public final class IOSource: @unchecked Sendable {
    fileprivate let handler: @Sendable () -> Void
    fileprivate let pending = Atomic<Bool>(false)
    fileprivate unowned let thread: IOThread

    fileprivate init(thread: IOThread, handler: @escaping @Sendable () -> Void) {
        self.thread = thread
        self.handler = handler
    }

    /// Makes the handler run on the iothread (once for any number of kicks before it starts).
    public func kick() {
        if pending.exchange(true, ordering: .acquiringAndReleasing) { return }
        thread.enqueue(self)
    }
}

public final class IOThread: @unchecked Sendable {
    public let id: String
    private let cond = Condition()
    private var work: [@Sendable () -> Void] = []
    private var ready: [IOSource] = []
    private var batch: [IOSource] = []
    private var running = false
    private var stopping = false
    private var thread: pthread_t?
    /// The host thread id, for query-iothreads.
    public private(set) var threadID: Int32 = 0

    public init(id: String) {
        self.id = id
        thread = HostThread.start(name: "IO \(id)") { [unowned self] in self.loop() }
        cond.lock()
        while threadID == 0 { cond.wait() }
        cond.unlock()
    }

    /// A coalescing event source whose handler runs on this thread.
    public func makeSource(_ handler: @escaping @Sendable () -> Void) -> IOSource {
        IOSource(thread: self, handler: handler)
    }

    fileprivate func enqueue(_ source: IOSource) {
        cond.lock()
        ready.append(source)
        cond.signal()
        cond.unlock()
    }

    public func submit(_ item: @escaping @Sendable () -> Void) {
        cond.lock()
        work.append(item)
        cond.signal()
        cond.unlock()
    }

    public var isCurrent: Bool {
        guard let thread else { return false }
        return pthread_equal(thread, pthread_self()) != 0
    }

    public func drain() {
        if isCurrent { return }
        cond.lock()
        while !work.isEmpty || !ready.isEmpty || running { cond.wait() }
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
        threadID = clinux_gettid()
        cond.broadcast()
        while true {
            while work.isEmpty && ready.isEmpty && !stopping { cond.wait() }
            if work.isEmpty && ready.isEmpty && stopping { cond.unlock(); return }
            running = true
            if !ready.isEmpty {
                swap(&ready, &batch)
                cond.unlock()
                for s in batch {
                    // Cleared before the handler runs: a kick during the run queues it again.
                    s.pending.store(false, ordering: .sequentiallyConsistent)
                    s.handler()
                }
                batch.removeAll(keepingCapacity: true)
            } else {
                let item = work.removeFirst()
                cond.unlock()
                item()
            }
            cond.lock()
            running = false
            cond.broadcast()
        }
    }
}
