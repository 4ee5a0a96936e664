// `-object iothread,id=NAME`: a dedicated thread that serves device queues (feature B5), so that
// block I/O runs off the vCPU threads. Work items run in submission order; `drain()` waits until
// everything submitted so far has run (used before a device reset).
import CLinux
import Foundation

public final class IOThread: @unchecked Sendable {
    public let id: String
    private let cond = NSCondition()
    private var work: [@Sendable () -> Void] = []
    private var running = false
    private var stopping = false
    private var thread: Thread?
    /// The host thread id, for query-iothreads.
    public private(set) var threadID: Int32 = 0

    public init(id: String) {
        self.id = id
        let t = Thread { [unowned self] in self.loop() }
        t.name = "IO \(id)"
        thread = t
        t.start()
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
        if Thread.current == thread { return }
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
