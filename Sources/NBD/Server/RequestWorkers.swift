// The requests of one connection in flight, and the threads that run them.
//
// qemu-nbd runs up to 16 requests per client at once (MAX_NBD_REQUESTS), so a client with a deep
// queue keeps a slow disk busy. Here the connection's reader admits a request (waiting while 16 are
// in flight, or while their data buffers would pass `maxCharge`: 16 x 32 MiB is too much to let a
// client pin), fills its slot and queues it; a worker runs it, replies, and gives the slot back.
//
// Workers are plain threads with the connection stack size, started only when a queued request
// finds none free, and gone after `idleSeconds` without work: an idle connection has no worker,
// and a connection whose requests are quick gets by with one or two.
import Glibc

final class RequestWorkers: @unchecked Sendable {
    static let maxInFlight = 16
    /// Data-buffer bytes the requests in flight may need together (one request may always run).
    static let maxCharge = 64 * 1024 * 1024
    /// Buffers kept in free slots while busy, and when the client pauses.
    static let maxRetained = 16 * 1024 * 1024
    static let idleRetained = 4 * 1024 * 1024
    static let idleSeconds = 10.0
    static let maxWorkers: Int = { if let p = getenv("NBD_MAXW") { return Int(atoi(p)) }; return 16 }()

    private let monitor = Monitor()
    private let execute: (RequestSlot) throws -> Void
    private let failed: () -> Void

    private var queue: [RequestSlot] = []
    private var free: [RequestSlot] = []
    private var retained = 0
    private var inFlight = 0
    private var charged = 0
    private var workers = 0
    private var running = 0
    private var sleepers = 0
    private var wakeups = 0
    private var stopping = false
    /// The reader waits until `inFlight` and `charged` are at most these (nil: not waiting).
    private var readerWaits: (inFlight: Int, charged: Int)?
    private var failure: Error?

    /// `execute` runs a request and sends its reply; when it throws (the connection is broken),
    /// the error is kept for the reader and `failed` wakes it.
    init(execute: @escaping (RequestSlot) throws -> Void, failed: @escaping () -> Void) {
        self.execute = execute
        self.failed = failed
    }

    /// The first error a worker hit, if any.
    var error: Error? { monitor.withLock { failure } }

    // MARK: the reader's side

    /// A free slot for a request needing `charge` buffer bytes; waits for room.
    func admit(charge: Int) -> RequestSlot {
        monitor.lock()
        defer { monitor.unlock() }
        while inFlight >= RequestWorkers.maxInFlight || (inFlight > 0 && charged + charge > RequestWorkers.maxCharge) {
            // Wake up for a few free slots at once, not for each one.
            let count = inFlight >= RequestWorkers.maxInFlight ? RequestWorkers.maxInFlight - 4 : inFlight - 1
            waitReader(inFlight: count, charged: RequestWorkers.maxCharge - charge)
        }
        inFlight += 1
        charged += charge
        let slot = takeFreeSlot(fitting: charge)
        slot.charge = charge
        return slot
    }

    /// Gives back an admitted slot that will not run (its payload could not be read).
    func abandon(_ slot: RequestSlot) {
        monitor.withLock { finished(slot) }
    }

    /// Queues an admitted request for a worker.
    func start(_ slot: RequestSlot) {
        var spawn = false
        monitor.withLock {
            queue.append(slot)
            // Workers that will look at the queue without being woken.
            let free = workers - running - sleepers + wakeups
            if queue.count > free {
                if sleepers > wakeups {
                    wakeups += 1
                    monitor.signal()
                } else if workers < RequestWorkers.maxWorkers {
                    workers += 1
                    spawn = true
                }
            }
        }
        if spawn {
            do {
                try Threads.spawn { [self] in work() }
            } catch {
                // No thread to be had: run what is queued here rather than strand it.
                let alone = monitor.withLock { workers -= 1; return workers == 0 }
                if alone { runQueued() }
            }
        }
    }

    /// Waits until every admitted request has replied.
    func drain() {
        monitor.withLock {
            while inFlight > 0 { waitReader(inFlight: 0, charged: 0) }
        }
    }

    /// Drains, then ends the workers and waits for them to go.
    func stop() {
        drain()
        monitor.withLock {
            stopping = true
            monitor.broadcast()
            while workers > 0 { waitReader(inFlight: 0, charged: 0) }
        }
    }

    /// When the client pauses and nothing is in flight: keep at most `idleRetained` of buffers.
    func trimIfIdle() {
        monitor.withLock {
            guard inFlight == 0, retained > RequestWorkers.idleRetained || free.contains(where: { $0.extents.capacity > 4096 })
            else { return }
            var kept = 0
            for s in free {
                s.trimExtents()
                if kept + s.capacity > RequestWorkers.idleRetained { s.release() }
                kept += s.capacity
            }
            retained = kept
        }
    }

    // MARK: workers

    private func work() {
        monitor.lock()
        while true {
            if !queue.isEmpty {
                let slot = queue.removeFirst()
                running += 1
                monitor.unlock()
                run(slot)
                monitor.lock()
                running -= 1
                finished(slot)
                continue
            }
            if stopping { break }
            let deadline = Deadline(secondsFromNow: RequestWorkers.idleSeconds)
            sleepers += 1
            let woken = monitor.wait(until: deadline)
            sleepers -= 1
            if wakeups > 0 { wakeups -= 1 }
            if !woken && queue.isEmpty && Deadline.now() >= deadline.nanoseconds { break }
        }
        workers -= 1
        if readerWaits != nil { monitor.broadcast() }
        monitor.unlock()
    }

    private func run(_ slot: RequestSlot) {
        do {
            try execute(slot)
        } catch {
            let first = monitor.withLock {
                if failure != nil { return false }
                failure = error
                return true
            }
            if first { failed() }
        }
    }

    private func runQueued() {
        monitor.lock()
        while !queue.isEmpty {
            let slot = queue.removeFirst()
            monitor.unlock()
            run(slot)
            monitor.lock()
            finished(slot)
        }
        monitor.unlock()
    }

    // MARK: slots (the lock is held)

    private func takeFreeSlot(fitting charge: Int) -> RequestSlot {
        guard !free.isEmpty else { return RequestSlot() }
        // The smallest buffer that fits, else the biggest (it grows least).
        var best = 0
        for i in free.indices {
            let c = free[i].capacity, b = free[best].capacity
            if c >= charge ? (b < charge || c < b) : (b < charge && c > b) { best = i }
        }
        let slot = free.remove(at: best)
        retained -= slot.capacity
        return slot
    }

    private func finished(_ slot: RequestSlot) {
        inFlight -= 1
        charged -= slot.charge
        slot.charge = 0
        if retained + slot.capacity > RequestWorkers.maxRetained { slot.release() }
        retained += slot.capacity
        free.append(slot)
        if let w = readerWaits, inFlight <= w.inFlight && charged <= w.charged {
            readerWaits = nil
            monitor.broadcast()
        }
    }

    private func waitReader(inFlight count: Int, charged bytes: Int) {
        readerWaits = (count, bytes)
        monitor.wait()
        readerWaits = nil
    }
}
