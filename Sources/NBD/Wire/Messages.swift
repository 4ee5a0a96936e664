// Transmission-phase messages: request headers (compact and extended) and reply headers (simple,
// structured and extended), encoded into caller storage and parsed from bytes.
//
// These are pure functions of bytes: no I/O, no allocation. The server reads a fixed-size header
// and hands it to `NBDRequest.parse`; the client writes one with `encode`. Which header style is on
// the wire is the session's `NBDMode`, fixed by the handshake.

/// What the handshake agreed on for the transmission phase (QEMU's NBDMode).
public enum NBDMode: Int, Sendable, Comparable {
    /// Simple replies only, entered with NBD_OPT_EXPORT_NAME on an old-fashioned client.
    case exportName = 0
    /// Fixed newstyle, simple replies.
    case simple
    /// Structured replies.
    case structured
    /// Extended headers (64-bit lengths, one 32-byte reply header for everything).
    case extended

    public static func < (a: NBDMode, b: NBDMode) -> Bool { a.rawValue < b.rawValue }

    public var requestHeaderSize: Int { self == .extended ? 32 : 28 }
}

public struct NBDRequest: Sendable, Equatable {
    public var flags: NBDCommandFlags
    public var command: NBDCommand
    public var cookie: UInt64
    public var offset: UInt64
    /// Effect length, or payload length for a write (64 bits only with extended headers).
    public var length: UInt64

    public init(flags: NBDCommandFlags = [], command: NBDCommand, cookie: UInt64, offset: UInt64, length: UInt64) {
        self.flags = flags
        self.command = command
        self.cookie = cookie
        self.offset = offset
        self.length = length
    }

    public enum ParseError: Error, Equatable {
        case badMagic(UInt32)
        case short
    }

    /// Parses one request header of `mode`'s size from the start of `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer, mode: NBDMode) -> Result<NBDRequest, ParseError> {
        let size = mode.requestHeaderSize
        guard bytes.count >= size else { return .failure(.short) }
        let magic = loadBE32(bytes, 0)
        let expected = mode == .extended ? NBDMagic.extendedRequest : NBDMagic.request
        guard magic == expected else { return .failure(.badMagic(magic)) }
        let length = mode == .extended ? loadBE64(bytes, 24) : UInt64(loadBE32(bytes, 24))
        return .success(NBDRequest(flags: NBDCommandFlags(rawValue: loadBE16(bytes, 4)),
                                   command: NBDCommand(rawValue: loadBE16(bytes, 6)),
                                   cookie: loadBE64(bytes, 8), offset: loadBE64(bytes, 16), length: length))
    }

    /// Writes the header into `p` (at least 32 bytes) and returns its size.
    public func encode(into p: UnsafeMutableRawPointer, mode: NBDMode) -> Int {
        storeBE32(p, 0, mode == .extended ? NBDMagic.extendedRequest : NBDMagic.request)
        storeBE16(p, 4, flags.rawValue)
        storeBE16(p, 6, command.rawValue)
        storeBE64(p, 8, cookie)
        storeBE64(p, 16, offset)
        if mode == .extended {
            storeBE64(p, 24, length)
            return 32
        }
        storeBE32(p, 24, UInt32(truncatingIfNeeded: length))
        return 28
    }
}

/// A reply header as it arrives: simple (error, no length) or a chunk (type, flags, payload length).
public struct NBDReplyHeader: Sendable, Equatable {
    public var isSimple: Bool
    public var error: UInt32          // simple replies
    public var flags: UInt16          // chunks
    public var type: NBDReplyType     // chunks
    public var cookie: UInt64
    public var offset: UInt64         // extended chunks
    public var length: UInt64         // chunks: payload length

    public static let simpleSize = 16
    public static let structuredSize = 20
    public static let extendedSize = 32
    public static let maxSize = 32

    public var isDone: Bool { isSimple || flags & NBDReplyFlag.done != 0 }

    /// The header size implied by a reply's magic in `mode`, or nil when the magic is wrong there.
    public static func size(forMagic magic: UInt32, mode: NBDMode) -> Int? {
        switch (magic, mode) {
        case (NBDMagic.simpleReply, .exportName), (NBDMagic.simpleReply, .simple), (NBDMagic.simpleReply, .structured):
            return simpleSize
        case (NBDMagic.structuredReply, .structured):
            return structuredSize
        case (NBDMagic.extendedReply, .extended):
            return extendedSize
        default:
            return nil
        }
    }

    /// Parses a complete header (its size from `size(forMagic:mode:)`).
    public static func parse(_ b: UnsafeRawBufferPointer) -> NBDReplyHeader? {
        guard b.count >= 4 else { return nil }
        switch loadBE32(b, 0) {
        case NBDMagic.simpleReply:
            guard b.count >= simpleSize else { return nil }
            return NBDReplyHeader(isSimple: true, error: loadBE32(b, 4), flags: NBDReplyFlag.done, type: .none,
                                  cookie: loadBE64(b, 8), offset: 0, length: 0)
        case NBDMagic.structuredReply:
            guard b.count >= structuredSize else { return nil }
            return NBDReplyHeader(isSimple: false, error: 0, flags: loadBE16(b, 4), type: NBDReplyType(rawValue: loadBE16(b, 6)),
                                  cookie: loadBE64(b, 8), offset: 0, length: UInt64(loadBE32(b, 16)))
        case NBDMagic.extendedReply:
            guard b.count >= extendedSize else { return nil }
            return NBDReplyHeader(isSimple: false, error: 0, flags: loadBE16(b, 4), type: NBDReplyType(rawValue: loadBE16(b, 6)),
                                  cookie: loadBE64(b, 8), offset: loadBE64(b, 16), length: loadBE64(b, 24))
        default:
            return nil
        }
    }
}

/// Encoders for what the server sends.
public enum NBDReplyEncoder {
    /// A simple reply header (16 bytes).
    @inline(__always)
    public static func simple(into p: UnsafeMutableRawPointer, error: UInt32, cookie: UInt64) -> Int {
        storeBE32(p, 0, NBDMagic.simpleReply)
        storeBE32(p, 4, error)
        storeBE64(p, 8, cookie)
        return 16
    }

    /// A chunk header, structured (20 bytes) or extended (32 bytes) by `mode`. `offset` is the
    /// request's offset (extended headers carry it).
    @inline(__always)
    public static func chunk(into p: UnsafeMutableRawPointer, mode: NBDMode, flags: UInt16, type: NBDReplyType,
                             cookie: UInt64, offset: UInt64, payloadLength: UInt64) -> Int {
        if mode == .extended {
            storeBE32(p, 0, NBDMagic.extendedReply)
            storeBE16(p, 4, flags)
            storeBE16(p, 6, type.rawValue)
            storeBE64(p, 8, cookie)
            storeBE64(p, 16, offset)
            storeBE64(p, 24, payloadLength)
            return 32
        }
        storeBE32(p, 0, NBDMagic.structuredReply)
        storeBE16(p, 4, flags)
        storeBE16(p, 6, type.rawValue)
        storeBE64(p, 8, cookie)
        storeBE32(p, 16, UInt32(truncatingIfNeeded: payloadLength))
        return 20
    }
}
