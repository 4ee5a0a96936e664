// Reading one option's payload during the handshake, within the length the client announced.
//
// The payload is consumed as a stream and never buffered whole: a client may announce up to 32 MiB
// (QEMU's limit) and we allocate at most one bounded string at a time. Reading past the announced
// length is the client's fault: the rest is dropped and NBD_REP_ERR_INVALID "Inconsistent lengths
// in option ..." goes back (QEMU's nbd_opt_read), and the handshake continues.

/// Thrown inside an option handler when the option was answered with an error reply and the
/// handshake simply goes on.
struct OptionAnswered: Error {}

final class OptionReader {
    let stream: NBDStream
    let option: NBDOption
    private(set) var remaining: UInt64

    init(stream: NBDStream, option: NBDOption, length: UInt32) {
        self.stream = stream
        self.option = option
        self.remaining = UInt64(length)
    }

    // MARK: replies

    /// Sends one option reply (header and payload).
    func reply(_ type: NBDOptionReplyType, _ payload: [UInt8] = []) throws {
        var w = WireWriter(capacity: 20 + payload.count)
        w.u64(NBDMagic.optionReply)
        w.u32(option.rawValue)
        w.u32(type.rawValue)
        w.u32(UInt32(payload.count))
        w.raw(payload)
        try stream.cork(w.bytes)
        try stream.flush()
    }

    /// An error reply with QEMU's message as its payload.
    func replyError(_ type: NBDOptionReplyType, _ message: String) throws {
        try reply(type, Array(message.utf8.prefix(NBDLimits.maxString)))
    }

    /// Drops what is left of the payload, then answers with an error.
    func dropAndReply(_ type: NBDOptionReplyType, _ message: String) throws {
        try stream.discard(remaining)
        remaining = 0
        try replyError(type, message)
    }

    /// Drops the rest and answers NBD_REP_ERR_INVALID; the caller stops handling this option.
    func invalid(_ message: String) throws -> Never {
        try dropAndReply(.errInvalid, message)
        throw OptionAnswered()
    }

    // MARK: payload fields

    private func need(_ n: UInt64) throws {
        if n > remaining {
            try invalid("Inconsistent lengths in option \(option)")
        }
        remaining -= n
    }

    func u16() throws -> UInt16 {
        try need(2)
        return try stream.readU16()
    }

    func u32() throws -> UInt32 {
        try need(4)
        return try stream.readU32()
    }

    func bytes(_ n: Int) throws -> [UInt8] {
        try need(UInt64(n))
        return try stream.readBytes(n)
    }

    func skip(_ n: UInt64) throws {
        try need(n)
        try stream.discard(n)
    }

    /// A NUL-free string of `n` bytes (n already checked against the string limit).
    func string(_ n: Int) throws -> String {
        let b = try bytes(n)
        if b.containsNUL {
            try invalid("Unexpected embedded NUL in option \(option)")
        }
        return String(decoding: b, as: UTF8.self)
    }

    /// A 32-bit length followed by a name (QEMU's nbd_opt_read_name).
    func name() throws -> String {
        let len = try u32()
        if len > UInt32(NBDLimits.maxString) {
            try invalid("Invalid name length: \(len)")
        }
        return try string(Int(len))
    }

    /// Refuses a payload where none is expected (QEMU's nbd_reject_length).
    func rejectLength() throws {
        try dropAndReply(.errInvalid, "option '\(option)' has unexpected length")
    }
}

/// Export names in error replies are cut at 80 characters (QEMU's nbd_sanitize_name).
func sanitizedName(_ name: String) -> String {
    let u = Array(name.utf8)
    if u.count < 80 { return name }
    return String(decoding: u.prefix(80), as: UTF8.self) + "..."
}
