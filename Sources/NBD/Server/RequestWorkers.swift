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
//
// How many run at once follows what the requests do. Requests that block (a disk read that misses
// the page cache, O_DIRECT, a slow network backend) get up to 16 workers, so that many reach the
// backend together. Requests that only burn CPU (page-cache hits) gain nothing from more threads
// than cores, and 16 threads passing requests around on 2 cores cost more than the requests
// themselves (random 4 KiB reads from the page cache ran at less than half the speed): then only
// as many workers as cores take requests, and the rest of the queue waits for them. The two are
// told apart by sampling requests: did a backend call wait (a voluntary context switch) for
// 50 us or more? Preemption does not count, so a loaded host does not look like a slow disk, nor
// do waits for the send lock or the socket, so that workers contending for it do not keep the
// connection in this mode. The mode starts
// out "blocking", and a queue head that waits longer than `stallNanoseconds` switches back to it
// (a request stuck in the backend cannot report itself), so a stuck request never holds up the
// others for long. When requests do not block, the reader runs them itself (`runInline`), as the
// sequential server did: no thread switch at all. Its requests are sampled too, and one that
// blocks for long turns the connection back to workers. The last worker to go gives
// back every data buffer and calls `idle` (the reply writer frees its output buffer), so a
// connection that did I/O and then idles costs what a fresh one does.
import Glibc

final class RequestWorkers: @unchecked Sendable {
    static let maxInFlight = 16
    /// Data-buffer bytes the requests in flight may need together (one request may always run).
    static let maxCharge = 64 * 1024 * 1024
    /// Buffers kept in free slots while busy, and when the client pauses.
    static let maxRetained = 16 * 1024 * 1024
    static let idleRetained = 4 * 1024 * 1024
    static let idleSeconds = 10.0
    static let maxWorkers = maxInFlight
    /// Workers for requests that do not block.
    /// (84 is glibc's _SC_NPROCESSORS_ONLN, which some builds of the Glibc module do not show.)
    static let cpuWorkers = max(2, sysconf(84))
    /// A queued request waiting this long means the running ones are stuck or slow.
    static let stallNanoseconds: UInt64 = 5_000_000
    /// A request counts as blocking when it waited and took at least this long (nanoseconds):
    /// handing requests to other threads costs a few microseconds each on a busy host, which
    /// only pays when they wait for much longer than that. (Reads from a virtual disk the host
    /// caches take ~25 us with O_DIRECT, and run faster one after another than spread on threads.)
    static let longWait: UInt64 = 50_000
    /// One request in this many on a worker is sampled (two getrusage calls per backend call).
    static let samplePeriod = 4

    private let monitor = Monitor()
    /// The reader waits on this one; the workers on the monitor's own condition.
    private let readerCondition = Monitor.Condition()
    private let execute: (RequestSlot) throws -> Void
    private let failed: () -> Void
    private let idle: () -> Void

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
    /// How often recent requests blocked, 0...1024 (a moving average of the samples).
    private var blocking = 1024
    /// The reader's current inline request (a number per request) and when it began (nil: none
    /// running, or its reader was replaced already).
    private var inlineToken = 0
    private var inlineSince: UInt64?
    /// Inline requests whose reader the watchdog replaced: a new thread reads now, and the stuck
    /// reader must not go on once its request returns.
    private var replaced: Set<Int> = []
    private var watchedByWatchdog = false
    /// A sleeping worker waits for the queue head to stall.
    private var watching = false
    /// Runs the connection's reader loop on a new thread (set once by the connection).
    var takeOver: () -> Void = {}
    /// The reader waits until `inFlight` and `charged` are at most these (nil: not waiting).
    private var readerWaits: (inFlight: Int, charged: Int)?
    private var failure: Error?

    /// `execute` runs a request and sends its reply; when it throws (the connection is broken),
    /// the error is kept for the reader and `failed` wakes it. `idle` runs (on the last worker,
    /// no lock held) when the connection has had nothing to do for `idleSeconds`.
    init(execute: @escaping (RequestSlot) throws -> Void, failed: @escaping () -> Void,
         idle: @escaping () -> Void = {}) {
        self.execute = execute
        self.failed = failed
        self.idle = idle
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

    /// Workers that may take requests at once, by what the recent requests did.
    private var wanted: Int { blocking >= 256 ? RequestWorkers.maxWorkers : RequestWorkers.cpuWorkers }

    /// Queues an admitted request for a worker.
    func start(_ slot: RequestSlot) {
        var spawn = false
        monitor.withLock {
            slot.queuedAt = Deadline.now()
            slot.onWorker = true
            queue.append(slot)
            if let head = queue.first, slot.queuedAt &- head.queuedAt >= RequestWorkers.stallNanoseconds {
                blocking = 1024
            }
            // Workers that will look at the queue without being woken.
            let free = workers - running - sleepers + wakeups
            let awake = workers - sleepers + wakeups
            // Beyond what the mode wants, one sleeping worker still watches the queue head (with
            // a timed wait), so that requests stuck in the backend cannot hold up the queue for
            // long even when no further request arrives to notice it.
            if queue.count > free && (awake < wanted || !watching) {
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
        if monitor.withLock({ watchedByWatchdog }) { InlineWatchdog.shared.unwatch(self) }
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
        var count = 0
        let idleNanoseconds = UInt64(RequestWorkers.idleSeconds * 1e9)
        /// The worker goes when it has taken no request until then (and none waits).
        var idleUntil = Deadline.now() &+ idleNanoseconds
        monitor.lock()
        while true {
            // Take a request unless more workers are busy than the mode wants (then the running
            // ones get to it); a stalled queue head is taken whatever the mode.
            if let head = queue.first,
               running < wanted || Deadline.now() &- head.queuedAt >= RequestWorkers.stallNanoseconds {
                let slot = queue.removeFirst()
                if running >= wanted { blocking = 1024 }
                running += 1
                monitor.unlock()
                count += 1
                slot.sampled = count % RequestWorkers.samplePeriod == 0
                run(slot)
                monitor.lock()
                if slot.sampled { note(slot) }
                running -= 1
                finished(slot)
                idleUntil = Deadline.now() &+ idleNanoseconds
                continue
            }
            if queue.isEmpty && (stopping || Deadline.now() >= idleUntil) { break }
            // While requests wait, one worker (the watcher) looks again when the head would count
            // as stalled.
            var deadline = Deadline(nanoseconds: idleUntil)
            var watches = false
            if let head = queue.first, !watching {
                deadline = Deadline(nanoseconds: head.queuedAt &+ RequestWorkers.stallNanoseconds)
                watches = true
                watching = true
            }
            sleepers += 1
            _ = monitor.wait(until: deadline)
            sleepers -= 1
            if watches { watching = false }
            if wakeups > 0 { wakeups -= 1 }
        }
        workers -= 1
        // The last worker leaving an idle connection (not one being stopped) frees the buffers.
        let wentIdle = workers == 0 && inFlight == 0 && !stopping
        if wentIdle {
            for s in free {
                s.release()
                s.extents = []
            }
            free.removeAll()
            retained = 0
        }
        if readerWaits != nil { readerCondition.signal() }
        monitor.unlock()
        if wentIdle { idle() }
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

    /// Folds a sampled request into `blocking` (the lock is held). A request whose backend
    /// call waited for a millisecond or more turns the mode to "blocking" at once.
    private func note(_ slot: RequestSlot) {
        if slot.waitedLong {
            blocking = 1024
        } else {
            blocking += ((slot.waited ? 1024 : 0) - blocking) / 8
        }
    }

    /// Whether the reader should run its next request itself: the recent requests did not block,
    /// so handing them to a worker would only cost a thread switch each.
    var runsInline: Bool { monitor.withLock { blocking < 256 && queue.isEmpty && !stopping } }

    /// Runs an admitted request on the calling thread (the reader), as `start` would on a worker.
    /// False when the request stalled and another thread took over reading meanwhile (see
    /// InlineWatchdog): the caller must then stop reading.
    func runInline(_ slot: RequestSlot) -> Bool {
        slot.onWorker = false
        slot.sampled = true
        let (token, first): (Int, Bool) = monitor.withLock {
            inlineToken += 1
            inlineSince = Deadline.now()
            defer { watchedByWatchdog = true }
            return (inlineToken, !watchedByWatchdog)
        }
        if first { InlineWatchdog.shared.watch(self) }
        InlineWatchdog.shared.inlineStarted()
        run(slot)
        return monitor.withLock {
            if inlineToken == token { inlineSince = nil }
            note(slot)
            finished(slot)
            return replaced.remove(token) == nil
        }
    }

    /// From the watchdog: when the reader has been in one inline request for too long, hands the
    /// reading to a new thread (`takeOver`) and turns the connection to workers.
    func rescueIfStalled(now: UInt64) {
        let rescue: Bool = monitor.withLock {
            guard let since = inlineSince, now &- since >= InlineWatchdog.stall, !stopping else { return false }
            replaced.insert(inlineToken)
            inlineSince = nil
            blocking = 1024
            return true
        }
        if rescue {
            do {
                try Threads.spawn { [takeOver] in takeOver() }
            } catch {
                // No thread: the stuck reader goes on reading when its request returns.
                monitor.withLock { _ = replaced.remove(inlineToken) }
            }
        }
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
        slot.sampled = false
        slot.waited = false
        slot.waitedLong = false
        if retained + slot.capacity > RequestWorkers.maxRetained { slot.release() }
        retained += slot.capacity
        free.append(slot)
        if let w = readerWaits, inFlight <= w.inFlight && charged <= w.charged {
            readerWaits = nil
            readerCondition.signal()
        }
    }

    private func waitReader(inFlight count: Int, charged bytes: Int) {
        readerWaits = (count, bytes)
        monitor.wait(readerCondition)
        readerWaits = nil
    }
}

/// Times this thread gave up the CPU to wait (I/O, a lock), not counting preemption (a loaded
/// host preempts requests that never wait): getrusage(RUSAGE_THREAD).ru_nvcsw.
func voluntarySwitches() -> Int {
    var u = rusage()
    getrusage(__rusage_who_t(1), &u)   // RUSAGE_THREAD (a _GNU_SOURCE name)
    return u.ru_nvcsw
}
