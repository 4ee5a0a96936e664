// One request in flight and the memory it works in: the header, a data buffer (the write payload
// the reader received, or the read data a worker sends) and the block-status extents. A
// connection has at most 16 slots and reuses them, so a busy connection allocates nothing per
// request once its buffers have grown.
import Glibc

final class RequestSlot {
    var request = NBDRequest(command: .read, cookie: 0, offset: 0, length: 0)
    /// Data-buffer bytes the request may need, as counted against the connection's cap.
    var charge = 0
    var extents: [NBDExtent] = []
    private(set) var data: UnsafeMutableRawPointer?
    private(set) var capacity = 0

    deinit { free(data) }

    /// A page-aligned buffer of at least `n` bytes (so that O_DIRECT backends can use it as is).
    func buffer(_ n: Int) throws -> UnsafeMutableRawPointer {
        if n <= capacity, let d = data { return d }
        release()
        let cap = max(n, 64 * 1024)
        var raw: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&raw, 4096, cap) == 0, let p = raw else {
            throw NBDError(.io, "No memory", errno: ENOMEM)
        }
        data = p
        capacity = cap
        return p
    }

    /// Frees the data buffer (it comes back on next use).
    func release() {
        free(data)
        data = nil
        capacity = 0
    }

    /// Drops a large extents array after a big block-status reply.
    func trimExtents() {
        if extents.capacity > 4096 { extents = [] }
    }
}
