// The server: accept connections, give each its own thread for the handshake and transmission,
// and decide when to stop, as qemu-nbd does.
//
// - At most `maxConnections` clients at a time (qemu-nbd's -e, 0 = unlimited): beyond that the
//   server stops accepting and new clients wait in the listen backlog.
// - Without `persistent` (-t) the server stops after the last client that completed a handshake
//   goes away; clients that fail or abort the handshake do not count.
// - A client that has not finished its handshake within `handshakeLimit` seconds is dropped, so
//   idle or slow handshakes cannot pin threads (--handshake-limit).
// - `shutdown()` (signals, tests) stops accepting and wakes every connection thread; `run()` then
//   returns once the connections have ended (their requests in flight finished, as QEMU drains
//   before it closes the image), so the caller may close the backend. A backend stuck for more
//   than `drainLimit` seconds does not keep the server from ending.
import Glibc

public final class NBDServer: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var policy: NBDServerPolicy
        public var maxConnections: Int = 1
        public var persistent = false
        /// Seconds; 0 disables the limit.
        public var handshakeLimit: Double = 10
        /// Error and event messages (the program prefixes its name).
        public var log: @Sendable (String) -> Void = { _ in }
        /// -v: also log connections coming and going.
        public var verbose = false
        /// Seconds `run()` waits for connections to end after a shutdown.
        public var drainLimit: Double = 30

        public init(policy: NBDServerPolicy) {
            self.policy = policy
        }
    }

    public let config: Configuration
    private let listeners: [Int32]
    private let monitor = Monitor()
    private var active = 0
    private var stopping = false
    private var stopped = false
    private var transports: [ObjectIdentifier: NBDTransport] = [:]
    /// Connections served since start (tests).
    public private(set) var accepted = 0

    public init(listeners: [Int32], config: Configuration) {
        self.listeners = listeners
        self.config = config
    }

    /// Accepts and serves until the server decides to stop (or `shutdown()`); returns then.
    public func run() {
        do {
            try Threads.spawn(stackSize: 128 * 1024) { [self] in acceptLoop() }
        } catch {
            config.log("\(error)")
            return
        }
        monitor.withLock {
            while !stopped { monitor.wait() }
            let deadline = Deadline(secondsFromNow: config.drainLimit)
            while active > 0 {
                if !monitor.wait(until: deadline) && Deadline.now() >= deadline.nanoseconds { break }
            }
        }
    }

    /// Stops accepting, disconnects every client, and makes `run()` return.
    public func shutdown() {
        let all: [NBDTransport] = monitor.withLock {
            stopping = true
            stopped = true
            monitor.broadcast()
            return Array(transports.values)
        }
        for t in all { t.shutdown() }
        for fd in listeners { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    public var activeConnections: Int { monitor.withLock { active } }

    private func canAccept() -> Bool {
        !stopping && (config.maxConnections == 0 || active < config.maxConnections)
    }

    private func acceptLoop() {
        var fds = listeners.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        while true {
            let go: Bool = monitor.withLock {
                while !stopping && !canAccept() { monitor.wait() }
                return !stopping
            }
            if !go { break }
            let r = poll(&fds, nfds_t(fds.count), 200)
            if r < 0 && errno != EINTR { break }
            if r <= 0 { continue }
            for i in fds.indices where fds[i].revents != 0 {
                fds[i].revents = 0
                if monitor.withLock({ !canAccept() }) { break }
                guard let fd = try? Sockets.accept(fds[i].fd) else { continue }
                start(fd)
            }
        }
        for fd in listeners { Glibc.close(fd) }
    }

    private func start(_ fd: Int32) {
        let transport = SocketTransport(fd: fd)
        let id = ObjectIdentifier(transport)
        let go: Bool = monitor.withLock {
            // Accepted just as shutdown() ran: it did not see this one, so drop it here.
            if stopping { return false }
            active += 1
            accepted += 1
            transports[id] = transport
            return true
        }
        if !go {
            transport.close()
            return
        }
        do {
            try Threads.spawn { [self] in serve(transport) }
        } catch {
            config.log("\(error)")
            transport.close()
            closed(id, negotiated: false)
        }
    }

    private func serve(_ transport: SocketTransport) {
        let id = ObjectIdentifier(transport)
        let stream = NBDStream(transport: transport)
        var negotiated = false
        if config.handshakeLimit > 0 { stream.deadline = Deadline(secondsFromNow: config.handshakeLimit) }
        do {
            let result = try NBDServerHandshake(stream: stream, policy: config.policy).run()
            if case .transmission(let session) = result {
                config.policy.trace?("nbd_negotiate_success", "Negotiation succeeded")
                negotiated = true
                stream.deadline = nil
                if config.verbose { config.log("client connected to export '\(session.export.name)'") }
                try NBDTransmission(stream: stream, session: session, log: config.log, trace: config.policy.trace).run()
            }
        } catch let e as NBDError {
            if negotiated {
                if e.kind != .eof { config.log("Disconnect client, due to: \(e.message)") }
            } else if e.kind == .timeout {
                config.log("option negotiation failed: handshake timed out")
            } else if !isQuietHandshakeEnd(e) {
                config.log("option negotiation failed: \(e.message)")
            }
        } catch {
            config.log("Disconnect client, due to: \(error)")
        }
        stream.transport.close()
        closed(id, negotiated: negotiated)
    }

    /// Hang-ups before the first byte of the handshake are not worth a message.
    private func isQuietHandshakeEnd(_ e: NBDError) -> Bool {
        stopping && (e.kind == .eof || e.kind == .io)
    }

    private func closed(_ id: ObjectIdentifier, negotiated: Bool) {
        monitor.withLock {
            transports[id] = nil
            active -= 1
            if negotiated && active == 0 && !config.persistent {
                stopping = true
                stopped = true
            }
            monitor.broadcast()
        }
    }
}
