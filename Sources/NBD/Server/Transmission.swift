// The transmission phase of one connection: read requests, check them, and have them run.
//
// Shape (nbdkit's protocol.c): `RequestCheck.check` only judges, the RequestRunner only dispatches
// to the backend and replies, and every reply leaves through the ReplyWriter.
//
// This thread is the connection's only reader: it takes request headers (and write payloads, into
// the slot of the request that will use them) in order, answers refusals itself, and hands the
// rest to the connection's workers (RequestWorkers), which run up to 16 at once as qemu-nbd does,
// so a deep client queue reaches a slow disk instead of waiting behind one request. Requests that
// must end the connection (NBD_CMD_DISC, a protocol violation) first wait for those in flight.
// While the requests are ones that never block (page-cache hits), this thread runs them itself
// and no worker is involved (see RequestWorkers); if one of them blocks after all, another thread
// takes over the reading (InlineWatchdog).
import Glibc

public final class NBDTransmission {
    let stream: NBDStream
    let session: NBDSession
    let trace: (@Sendable (String, String) -> Void)?
    private let mode: NBDMode
    private let replies: ReplyWriter
    private let runner: RequestRunner
    private let workers: RequestWorkers

    public init(stream: NBDStream, session: NBDSession, log: @escaping (String) -> Void,
                trace: (@Sendable (String, String) -> Void)? = nil) {
        self.trace = trace
        self.stream = stream
        self.session = session
        self.mode = session.mode
        let replies = ReplyWriter(stream: stream, mode: session.mode)
        let runner = RequestRunner(session: session, replies: replies, log: log, trace: trace)
        self.replies = replies
        self.runner = runner
        // A worker that cannot reply leaves the connection broken: wake the reader to end it.
        workers = RequestWorkers(execute: { try runner.run($0) }, failed: { [stream] in stream.transport.shutdown() },
                                 idle: { [replies] in replies.releaseIdleBuffer() })
    }

    /// Serves requests until the client disconnects. Throws on a hard disconnect (the message says
    /// why). Returns only when every request it took has replied and the workers are gone.
    ///
    /// The reading may move to another thread (InlineWatchdog: this one got stuck in a request it
    /// ran itself); this thread then waits for whichever reader ends the connection.
    public func run() throws {
        workers.takeOver = { [weak self] in self?.readerRole() }
        readerRole()
        let e: Error? = roles.withLock {
            while !ended { roles.wait() }
            return endError
        }
        workers.takeOver = {}
        if let e { throw e }
    }

    private let roles = Monitor()
    private var ended = false
    private var endError: Error?

    /// Reads and serves requests on the calling thread until the connection ends (then ends it:
    /// waits for the requests in flight, records how it ended) or another thread takes over.
    private func readerRole() {
        var failure: Error?
        do {
            if try !serveRequests() { return }
        } catch {
            failure = error
        }
        workers.stop()
        var e = failure.map { workers.error ?? $0 } ?? workers.error
        if e == nil {
            do { try replies.flush() } catch { e = error }
        }
        roles.withLock {
            ended = true
            endError = e
            roles.broadcast()
        }
    }

    /// True when the connection ended (EOF, NBD_CMD_DISC), false when another thread took over
    /// the reading.
    private func serveRequests() throws -> Bool {
        let headerSize = mode.requestHeaderSize
        var header = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while true {
            if !stream.hasBuffered(headerSize) {
                workers.trimIfIdle()
                if try !stream.waitForData() { return true }
            }
            let request: NBDRequest = try withUnsafeMutableBytes(of: &header) { raw in
                let h = UnsafeMutableRawBufferPointer(rebasing: raw[0..<headerSize])
                try stream.readExactly(into: h)
                switch NBDRequest.parse(UnsafeRawBufferPointer(h), mode: mode) {
                case .success(let r): return r
                case .failure(.badMagic(let m)):
                    // qemu-nbd still answers the garbage (EINVAL, under whatever cookie the bytes
                    // hold) before hanging up; so do we, after the requests in flight.
                    let msg = "invalid magic (got 0x\(String(m, radix: 16)))"
                    let bogus = NBDRequest(command: .read, cookie: loadBE64(UnsafeRawBufferPointer(h), 8),
                                           offset: mode == .extended ? loadBE64(UnsafeRawBufferPointer(h), 16) : 0, length: 0)
                    workers.drain()
                    try? runner.finish(bogus, .failure(22, msg))
                    throw NBDError.violation(msg)
                case .failure(.short): throw NBDError.violation("short request")
                }
            }
            switch try serve(request) {
            case .next: continue
            case .end: return true
            case .replaced: return false
            }
        }
    }

    enum Next { case next, end, replaced }

    /// One request; `.end` when the connection must end (after NBD_CMD_DISC), `.replaced` when
    /// another thread reads now.
    private func serve(_ r: NBDRequest) throws -> Next {
        trace?("nbd_co_receive_request_decode_type",
               "Decoding type: cookie = \(r.cookie), type = \(r.command.rawValue) (\(r.command))")
        let check = RequestCheck.check(r, mode: mode, exportSize: session.export.size, readOnly: session.export.isReadOnly)
        var request = r
        request.length = check.effectLength
        if case .drop(let n) = check.payload { try stream.discard(n) }
        switch check.verdict {
        case .disconnect:
            return .end
        case .refuse(let e, let msg):
            if check.payload == .unreadable {
                workers.drain()
                try runner.finish(request, .failure(e, msg))
                throw NBDError.violation("Request handling failed in intermediate state")
            }
            try runner.finish(request, .failure(e, msg))
        case .proceed:
            var charge = 0
            if case .read(let n) = check.payload { charge = n }
            if request.command == .read { charge = Int(request.length) }
            let slot = workers.admit(charge: charge)
            slot.request = request
            if case .read(let n) = check.payload {
                do {
                    let buf = try slot.buffer(n)
                    try stream.readExactly(into: UnsafeMutableRawBufferPointer(start: buf, count: n))
                } catch {
                    workers.abandon(slot)
                    throw error
                }
            }
            if workers.runsInline {
                if !workers.runInline(slot) { return .replaced }
            } else {
                workers.start(slot)
            }
        }
        return .next
    }
}
