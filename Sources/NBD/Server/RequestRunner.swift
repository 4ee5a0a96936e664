// Doing one checked request: dispatch to the backend, then reply (QEMU's nbd_handle_request).
//
// Runs on a worker thread of the connection, several at once; everything per request lives in its
// slot, and every reply leaves through the ReplyWriter. `handle` only dispatches, and every reply
// leaves through `finish` (status replies) or the data/extent senders. A backend error becomes a
// wire errno in one place (`wireError`), after its cause has been logged.
import Glibc

final class RequestRunner: @unchecked Sendable {
    let session: NBDSession
    let backend: any NBDBackend
    let replies: ReplyWriter
    let log: (String) -> Void
    let trace: (@Sendable (String, String) -> Void)?
    private let mode: NBDMode

    init(session: NBDSession, replies: ReplyWriter, log: @escaping (String) -> Void,
         trace: (@Sendable (String, String) -> Void)?) {
        self.session = session
        self.backend = session.export.backend
        self.replies = replies
        self.log = log
        self.trace = trace
        self.mode = session.mode
    }

    enum Outcome {
        /// The reply was sent already (read data, block status).
        case sent
        case success
        case failure(Int32, String)
    }

    /// Runs the request in `slot` and replies. Only socket errors (and protocol breakage) throw.
    func run(_ slot: RequestSlot) throws {
        try finish(slot.request, try handle(slot))
    }

    // MARK: dispatch

    private func handle(_ slot: RequestSlot) throws -> Outcome {
        let r = slot.request
        let fua = r.flags.contains(.fua)
        switch r.command {
        case .read:
            return try read(slot)
        case .write:
            return attempt("writing to file failed") {
                try io(slot) { try backend.write(at: r.offset, from: UnsafeRawBufferPointer(start: slot.data, count: Int(r.length)), fua: fua) }
            }
        case .writeZeroes:
            return attempt("writing to file failed") {
                try io(slot) {
                    try backend.writeZeroes(at: r.offset, length: r.length, fua: fua, mayTrim: !r.flags.contains(.noHole),
                                            fast: r.flags.contains(.fastZero))
                }
            }
        case .flush:
            return attempt("flush failed") { try io(slot) { try backend.flush() } }
        case .trim:
            return attempt("discard failed") { try io(slot) { try backend.trim(at: r.offset, length: r.length, fua: fua) } }
        case .cache:
            return attempt("caching data failed") { try io(slot) { try backend.cache(at: r.offset, length: r.length) } }
        case .blockStatus:
            return try blockStatus(slot)
        default:
            return .failure(22, "invalid request type (\(r.command.rawValue)) received")
        }
    }

    /// A backend call, timed when the slot is sampled: did it wait (a voluntary context switch)
    /// for long? (Waits for the send lock or the socket are not counted: they say nothing
    /// about whether the backend blocks.)
    private func io<T>(_ slot: RequestSlot, _ body: () throws -> T) rethrows -> T {
        guard slot.sampled else { return try body() }
        let switches = voluntarySwitches(), start = Deadline.now()
        defer {
            let wall = Deadline.now() &- start
            if wall >= RequestWorkers.longWait && voluntarySwitches() != switches {
                slot.waited = true
                if wall >= 1_000_000 { slot.waitedLong = true }
            }
        }
        return try body()
    }

    /// Runs a backend call; its error becomes a failure with QEMU's message for the command.
    private func attempt(_ what: String, _ body: () throws -> Void) -> Outcome {
        do {
            try body()
            return .success
        } catch {
            return .failure(wireError(error), what)
        }
    }

    /// The one place a backend error becomes an errno for the wire (logged first).
    private func wireError(_ error: Error) -> Int32 {
        if let e = error as? NBDBackendError {
            log("backend error: \(e.message)")
            return e.errno
        }
        log("backend error: \(error)")
        return 5
    }

    // MARK: status replies

    /// The status reply of a request: simple, or a NONE/ERROR chunk (QEMU's nbd_send_generic_reply).
    func finish(_ r: NBDRequest, _ outcome: Outcome) throws {
        if let t = trace, case .failure(let e, let msg) = outcome {
            t("nbd_co_send_chunk_error", "Send error reply: cookie = \(r.cookie), error = \(NBDErrno.from(errno: e)), msg = '\(msg)'")
        }
        switch outcome {
        case .sent:
            return
        case .success:
            if mode == .extended {
                try replies.chunk(r, flags: NBDReplyFlag.done, type: .none, payload: [])
            } else {
                try replies.simple(r, error: 0)
            }
        case .failure(let e, let msg):
            let wire = NBDErrno.from(errno: e)
            if mode >= .structured {
                try replies.errorChunk(r, wire: wire, message: msg)
            } else {
                try replies.simple(r, error: wire)
            }
        }
    }

    // MARK: read

    private func read(_ slot: RequestSlot) throws -> Outcome {
        let r = slot.request
        if r.flags.contains(.fua) {
            do { try io(slot) { try backend.flush() } } catch { return .failure(wireError(error), "flush failed") }
        }
        let count = Int(r.length)
        if mode >= .structured && !r.flags.contains(.dontFragment) && count > 0 {
            return try sparseRead(r, slot)
        }
        let buf = try slot.buffer(count)
        do {
            try io(slot) { try backend.read(at: r.offset, into: UnsafeMutableRawBufferPointer(start: buf, count: count)) }
        } catch {
            return .failure(wireError(error), "reading from file failed")
        }
        if mode >= .structured && count == 0 {
            try replies.chunk(r, flags: NBDReplyFlag.done, type: .none, payload: [])
        } else {
            try replies.data(r, offset: r.offset, bytes: UnsafeRawBufferPointer(start: buf, count: count), last: true)
        }
        return .sent
    }

    /// Holes become OFFSET_HOLE chunks; runs of data become one OFFSET_DATA chunk each, sent
    /// straight from the host file with sendfile when the backend says where the bytes are, else
    /// read into the buffer first (which is only allocated then: sendfile needs none).
    private func sparseRead(_ r: NBDRequest, _ slot: RequestSlot) throws -> Outcome {
        let total = r.length
        // sendfile reads the file while holding the send lock: fine from the page cache, but
        // on a worker (requests that block) it would queue every other reply behind the disk.
        let zeroCopy = replies.stream.canSendFile && !slot.onWorker
        var done: UInt64 = 0
        var next: NBDReadStatus? = nil
        while done < total {
            let status: NBDReadStatus
            do {
                status = try next ?? io(slot) { try backend.readStatus(at: r.offset + done, length: total - done) }
            } catch {
                let e = wireError(error)
                return .failure(e, "unable to check for holes: \(String(cString: strerror(e)))")
            }
            next = nil
            let n = max(1, min(status.length, total - done))
            if status.zero {
                var w = WireWriter(capacity: 12)
                w.u64(r.offset + done)
                w.u32(UInt32(n))
                try replies.chunk(r, flags: done + n == total ? NBDReplyFlag.done : 0, type: .offsetHole, payload: w.bytes)
                done += n
                continue
            }
            // Extend the data run over following data extents (contiguous in the file for sendfile).
            var run = n
            let source = zeroCopy ? status.source : nil
            while done + run < total {
                guard let s = try? backend.readStatus(at: r.offset + done + run, length: total - done - run) else { break }
                if s.zero {
                    next = s
                    break
                }
                if let src = source, s.source?.fd != src.fd || s.source?.offset != src.offset + run {
                    next = s
                    break
                }
                run += max(1, min(s.length, total - done - run))
            }
            let last = done + run == total
            if let src = source {
                let at = r.offset + done
                try replies.fileData(r, offset: at, source: src, count: Int(run), last: last) { sent in
                    let rest = UnsafeMutableRawBufferPointer(start: try slot.buffer(Int(run) - sent), count: Int(run) - sent)
                    do {
                        try backend.read(at: at + UInt64(sent), into: rest)
                    } catch {
                        throw NBDError.violation("read failed in the middle of a reply: \(error)")
                    }
                    return UnsafeRawBufferPointer(rest)
                }
                done += run
                continue
            }
            let buf = try slot.buffer(Int(total))
            do {
                try io(slot) {
                    try backend.read(at: r.offset + done, into: UnsafeMutableRawBufferPointer(start: buf + Int(done), count: Int(run)))
                }
            } catch {
                return .failure(wireError(error), "reading from file failed")
            }
            try replies.data(r, offset: r.offset + done, bytes: UnsafeRawBufferPointer(start: buf + Int(done), count: Int(run)),
                             last: last)
            done += run
        }
        return .sent
    }

    // MARK: block status

    private func blockStatus(_ slot: RequestSlot) throws -> Outcome {
        let r = slot.request
        if r.length == 0 {
            return .failure(22, "need non-zero length")
        }
        if session.contexts.isEmpty {
            return .failure(22, "CMD_BLOCK_STATUS not negotiated")
        }
        let limit = r.flags.contains(.reqOne) ? 1 : NBDLimits.maxExtents
        for (i, c) in session.contexts.enumerated() {
            slot.extents.removeAll(keepingCapacity: true)
            do {
                try collectExtents(c.context, r, limit: limit, into: &slot.extents)
            } catch {
                return .failure(wireError(error), "can't get block status")
            }
            try sendExtents(r, slot.extents, contextID: c.id, last: i == session.contexts.count - 1)
        }
        return .sent
    }

    /// Fills `extents` for one context: merged, clipped to the request, within the limits.
    private func collectExtents(_ context: NBDMetaContext, _ r: NBDRequest, limit: Int, into extents: inout [NBDExtent]) throws {
        var offset = r.offset
        let end = r.offset + r.length
        let maxLength: UInt64 = mode == .extended ? UInt64.max : UInt64(UInt32.max)
        var batch: [NBDExtent] = []
        while offset < end && extents.count <= limit {
            batch.removeAll(keepingCapacity: true)
            try backend.extents(context, at: offset, length: end - offset, limit: limit - extents.count + 1, into: &batch)
            if batch.isEmpty { break }
            for e in batch where e.length > 0 {
                let len = min(e.length, end - offset)
                if let last = extents.last, last.flags == e.flags, last.length + len <= maxLength {
                    extents[extents.count - 1].length += len
                } else {
                    if extents.count == limit { return }
                    extents.append(NBDExtent(length: len, flags: e.flags))
                }
                offset += len
                if offset >= end { break }
            }
        }
    }

    private func sendExtents(_ r: NBDRequest, _ extents: [NBDExtent], contextID: UInt32, last: Bool) throws {
        let wide = mode == .extended
        var w = WireWriter(capacity: 8 + extents.count * (wide ? 16 : 8))
        w.u32(contextID)
        if wide { w.u32(UInt32(extents.count)) }
        for e in extents {
            if wide {
                w.u64(e.length)
                w.u64(e.flags)
            } else {
                w.u32(UInt32(truncatingIfNeeded: e.length))
                w.u32(UInt32(truncatingIfNeeded: e.flags))
            }
        }
        try replies.chunk(r, flags: last ? NBDReplyFlag.done : 0, type: wide ? .blockStatusExt : .blockStatus, payload: w.bytes)
    }
}
