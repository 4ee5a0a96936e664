// One request in flight and the memory it works in: the header, a data buffer (the write payload
// the reader received, or the read data a worker sends) and the block-status extents. A
// connection has at most 16 slots and reuses them, so a busy connection allocates nothing per
// request once its buffers have grown.
//
// Data buffers are mapped pages of their own (mmap), not malloc'd: freeing one gives its memory
// back to the system at once. (glibc would serve a large allocation from its heap after the first
// large free raised its mmap threshold, and a freed heap chunk stays resident.)
import Glibc

final class RequestSlot {
    var request = NBDRequest(command: .read, cookie: 0, offset: 0, length: 0)
    /// Data-buffer bytes the request may need, as counted against the connection's cap.
    var charge = 0
    /// When it was queued for a worker (monotonic nanoseconds).
    var queuedAt: UInt64 = 0
    /// Runs on a worker (not inline on the reader).
    var onWorker = false
    /// Its backend calls are timed (RequestRunner.io); `waited`: one of them waited at least
    /// RequestWorkers.longWait, `waitedLong`: at least a millisecond.
    var sampled = false
    var waited = false
    var waitedLong = false
    var extents: [NBDExtent] = []
    private(set) var data: UnsafeMutableRawPointer?
    private(set) var capacity = 0

    deinit { release() }

    /// A page-aligned buffer of at least `n` bytes (so that O_DIRECT backends can use it as is).
    func buffer(_ n: Int) throws -> UnsafeMutableRawPointer {
        if n <= capacity, let d = data { return d }
        release()
        let cap = (max(n, 64 * 1024) + 4095) & ~4095
        guard let p = mmap(nil, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            throw NBDError(.io, "No memory", errno: ENOMEM)
        }
        data = p
        capacity = cap
        return p
    }

    /// Frees the data buffer (it comes back on next use).
    func release() {
        if let d = data { munmap(d, capacity) }
        data = nil
        capacity = 0
    }

    /// Drops a large extents array after a big block-status reply.
    func trimExtents() {
        if extents.capacity > 4096 { extents = [] }
    }
}
