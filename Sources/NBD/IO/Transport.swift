// A byte stream under the protocol: a plain socket, or a TLS session on top of one.
//
// Receives return what is there (0 at end of stream); sends write everything or throw. A deadline,
// when set, bounds every blocking wait (the server's handshake limit): the socket polls with the
// time left before each read, so one slow client cannot hold a thread forever. EINTR is retried
// here and nowhere else.
import Glibc

/// An absolute point on the monotonic clock.
public struct Deadline: Sendable {
    public let nanoseconds: UInt64

    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// At `nanoseconds` on the monotonic clock (`Deadline.now()`).
    public init(nanoseconds: UInt64) {
        self.nanoseconds = nanoseconds
    }

    public init(secondsFromNow s: Double) {
        nanoseconds = Deadline.now() &+ UInt64(max(0, s) * 1e9)
    }

    /// Milliseconds left for poll(2), at least 0.
    var remainingMilliseconds: Int32 {
        let n = Deadline.now()
        if n >= nanoseconds { return 0 }
        return Int32(min(UInt64(Int32.max), (nanoseconds - n + 999_999) / 1_000_000))
    }
}

public protocol NBDTransport: AnyObject {
    /// Reads what is available, at most `buffer.count` bytes; 0 means the peer closed the stream.
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// Writes all of `a`, then `b`, then `c` (empty ones are skipped), as one gather write if it can.
    func send(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ c: UnsafeRawBufferPointer) throws
    /// Bounds blocking waits; nil waits forever.
    var deadline: Deadline? { get set }
    /// Stops both directions (wakes a thread blocked in receive), without closing the descriptor.
    func shutdown()
    /// Ends the session (TLS close_notify when there is one) and closes the descriptor. Idempotent.
    func close()
    /// The socket under it.
    var fd: Int32 { get }
}

extension UnsafeRawBufferPointer {
    public static var empty: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: nil, count: 0) }
}

/// A connected stream socket (TCP or Unix).
public final class SocketTransport: NBDTransport, @unchecked Sendable {
    public let fd: Int32
    public var deadline: Deadline?
    private var closed = false

    public init(fd: Int32) {
        self.fd = fd
    }

    deinit { close() }

    /// Waits until `fd` is readable or writable within the deadline.
    private func wait(events: Int16) throws {
        guard let d = deadline else { return }
        while true {
            var p = pollfd(fd: fd, events: events, revents: 0)
            let ms = d.remainingMilliseconds
            if ms == 0 {
                throw NBDError(.timeout, "timed out", errno: ETIMEDOUT)
            }
            let r = poll(&p, 1, ms)
            if r > 0 { return }
            if r == 0 { throw NBDError(.timeout, "timed out", errno: ETIMEDOUT) }
            if errno != EINTR { throw NBDError.system("poll", errno) }
        }
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        while true {
            try wait(events: Int16(POLLIN))
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            if e == ECONNRESET { return 0 }
            throw NBDError.system("Unable to read from socket", e)
        }
    }

    public func send(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ c: UnsafeRawBufferPointer) throws {
        var iov = (iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count),
                   iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count),
                   iovec(iov_base: UnsafeMutableRawPointer(mutating: c.baseAddress), iov_len: c.count))
        try withUnsafeMutableBytes(of: &iov) { raw in
            let v = raw.bindMemory(to: iovec.self)
            var first = 0
            while first < 3 && v[first].iov_len == 0 { first += 1 }
            while first < 3 {
                try wait(events: Int16(POLLOUT))
                var msg = msghdr()
                msg.msg_iov = v.baseAddress! + first
                msg.msg_iovlen = 3 - first
                let n = sendmsg(fd, &msg, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    throw NBDError.system("Unable to write to socket", e)
                }
                var left = n
                while first < 3 && left >= v[first].iov_len {
                    left -= v[first].iov_len
                    first += 1
                }
                if first < 3 && left > 0 {
                    v[first].iov_base = v[first].iov_base! + left
                    v[first].iov_len -= left
                }
                while first < 3 && v[first].iov_len == 0 { first += 1 }
            }
        }
    }

    /// Sends `prefix` (with MSG_MORE) then `length` bytes of file `source` from `offset` with
    /// sendfile(2), copying nothing through user space. Returns how many file bytes went out: fewer
    /// than `length` when the file ended or sendfile cannot handle it (the caller sends the rest).
    public func sendFile(prefix: UnsafeRawBufferPointer, source: Int32, offset: UInt64, length: Int) throws -> Int {
        var p = 0
        while p < prefix.count {
            let n = Glibc.send(fd, prefix.baseAddress! + p, prefix.count - p, Int32(MSG_NOSIGNAL) | Int32(MSG_MORE))
            if n < 0 {
                if errno == EINTR { continue }
                throw NBDError.system("Unable to write to socket", errno)
            }
            p += n
        }
        guard offset <= UInt64(Int64.max) - UInt64(length) else { return 0 }   // the caller's path reports it
        var off = off_t(offset)
        var done = 0
        while done < length {
            let n = sendfile(fd, source, &off, length - done)
            if n < 0 {
                let e = errno
                if e == EINTR || e == EAGAIN { continue }
                if e == EINVAL || e == ENOSYS || e == EOVERFLOW { return done }
                throw NBDError.system("Unable to write to socket", e)
            }
            if n == 0 { return done }
            done += n
        }
        return done
    }

    public func shutdown() {
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    public func close() {
        if !closed {
            closed = true
            _ = Glibc.close(fd)
        }
    }
}
