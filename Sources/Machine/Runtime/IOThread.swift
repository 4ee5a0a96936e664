// `-object iothread,id=NAME`: a dedicated thread that serves device queues (feature B5), so that
// block I/O runs off the vCPU threads. Work items run in submission order; `drain()` waits until
// everything submitted so far has run (used before a device reset).
import CLinux
import Glibc

public final class IOThread: @unchecked Sendable {
    public let id: String
    private let cond = Condition()
    private var work: [@Sendable () -> Void] = []
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

    public func submit(_ item: @escaping @Sendable () -> Void) {
        cond.lock()
        work.append(item)
        cond.broadcast()
        cond.unlock()
    }

    public func drain() {
        if let thread, pthread_equal(thread, pthread_self()) != 0 { return }
        cond.lock()
        while !work.isEmpty || running { cond.wait() }
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
            while work.isEmpty && !stopping { cond.wait() }
            if work.isEmpty && stopping { cond.unlock(); return }
            let item = work.removeFirst()
            running = true
            cond.unlock()
            item()
            cond.lock()
            running = false
            cond.broadcast()
        }
    }
}
