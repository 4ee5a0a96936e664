// The numbers of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md), as plain values.
//
// Options, replies, commands and flags are small structs over their raw integers rather than enums:
// a peer may send any value, and an unknown one must survive parsing so that it can be answered
// (NBD_REP_ERR_UNSUP, NBD_EINVAL) instead of trapping. Names are the ones QEMU prints in its
// messages ("Unsupported option 12 (unknown)"), so our messages read the same.

/// Magic numbers.
public enum NBDMagic {
    public static let initPassword: UInt64 = 0x4e42_444d_4147_4943       // "NBDMAGIC"
    public static let haveOptions: UInt64 = 0x4948_4156_454F_5054        // "IHAVEOPT"
    public static let oldstyle: UInt64 = 0x0042_0281_8612_53
    public static let optionReply: UInt64 = 0x0003_e889_0455_65a9
    public static let request: UInt32 = 0x2560_9513
    public static let extendedRequest: UInt32 = 0x21e4_1c71
    public static let simpleReply: UInt32 = 0x6744_6698
    public static let structuredReply: UInt32 = 0x668e_33ef
    public static let extendedReply: UInt32 = 0x6e8a_278c
}

/// Limits that every implementation agrees on.
public enum NBDLimits {
    /// Longest string (export name, description, context name, error message) on the wire.
    public static let maxString = 4096
    /// Largest payload QEMU accepts or sends in one message (NBD_MAX_BUFFER_SIZE).
    public static let maxBuffer = 32 * 1024 * 1024
    /// QEMU caps one block-status reply at 1 MiB of 8-byte descriptors.
    public static let maxExtents = 1024 * 1024 / 8
    public static let defaultPort: UInt16 = 10809
}

/// Handshake flags (server, 16 bits) and client flags (32 bits).
public struct NBDHandshakeFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let fixedNewstyle = NBDHandshakeFlags(rawValue: 1 << 0)
    public static let noZeroes = NBDHandshakeFlags(rawValue: 1 << 1)
}

/// Transmission flags of an export (16 bits).
public struct NBDTransmissionFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let hasFlags = NBDTransmissionFlags(rawValue: 1 << 0)
    public static let readOnly = NBDTransmissionFlags(rawValue: 1 << 1)
    public static let sendFlush = NBDTransmissionFlags(rawValue: 1 << 2)
    public static let sendFUA = NBDTransmissionFlags(rawValue: 1 << 3)
    public static let rotational = NBDTransmissionFlags(rawValue: 1 << 4)
    public static let sendTrim = NBDTransmissionFlags(rawValue: 1 << 5)
    public static let sendWriteZeroes = NBDTransmissionFlags(rawValue: 1 << 6)
    public static let sendDF = NBDTransmissionFlags(rawValue: 1 << 7)
    public static let canMultiConn = NBDTransmissionFlags(rawValue: 1 << 8)
    public static let sendResize = NBDTransmissionFlags(rawValue: 1 << 9)
    public static let sendCache = NBDTransmissionFlags(rawValue: 1 << 10)
    public static let sendFastZero = NBDTransmissionFlags(rawValue: 1 << 11)
    public static let blockStatusPayload = NBDTransmissionFlags(rawValue: 1 << 12)
}

/// Option codes of the handshake.
public struct NBDOption: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let exportName = NBDOption(rawValue: 1)
    public static let abort = NBDOption(rawValue: 2)
    public static let list = NBDOption(rawValue: 3)
    public static let peekExport = NBDOption(rawValue: 4)
    public static let startTLS = NBDOption(rawValue: 5)
    public static let info = NBDOption(rawValue: 6)
    public static let go = NBDOption(rawValue: 7)
    public static let structuredReply = NBDOption(rawValue: 8)
    public static let listMetaContext = NBDOption(rawValue: 9)
    public static let setMetaContext = NBDOption(rawValue: 10)
    public static let extendedHeaders = NBDOption(rawValue: 11)

    /// QEMU's nbd_opt_lookup names.
    public var description: String {
        switch rawValue {
        case 1: return "export name"
        case 2: return "abort"
        case 3: return "list"
        case 4: return "peek export"
        case 5: return "starttls"
        case 6: return "info"
        case 7: return "go"
        case 8: return "structured reply"
        case 9: return "list meta context"
        case 10: return "set meta context"
        case 11: return "extended headers"
        default: return "<unknown>"
        }
    }
}

/// Option reply types; errors have bit 31 set.
public struct NBDOptionReplyType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let ack = NBDOptionReplyType(rawValue: 1)
    public static let server = NBDOptionReplyType(rawValue: 2)
    public static let info = NBDOptionReplyType(rawValue: 3)
    public static let metaContext = NBDOptionReplyType(rawValue: 4)
    public static let errUnsup = NBDOptionReplyType(rawValue: 0x8000_0001)
    public static let errPolicy = NBDOptionReplyType(rawValue: 0x8000_0002)
    public static let errInvalid = NBDOptionReplyType(rawValue: 0x8000_0003)
    public static let errPlatform = NBDOptionReplyType(rawValue: 0x8000_0004)
    public static let errTLSRequired = NBDOptionReplyType(rawValue: 0x8000_0005)
    public static let errUnknown = NBDOptionReplyType(rawValue: 0x8000_0006)
    public static let errShutdown = NBDOptionReplyType(rawValue: 0x8000_0007)
    public static let errBlockSizeRequired = NBDOptionReplyType(rawValue: 0x8000_0008)
    public static let errTooBig = NBDOptionReplyType(rawValue: 0x8000_0009)
    public static let errExtHeaderRequired = NBDOptionReplyType(rawValue: 0x8000_000a)

    public var isError: Bool { rawValue & 0x8000_0000 != 0 }

    /// QEMU's nbd_rep_lookup names.
    public var description: String {
        switch rawValue {
        case 1: return "ack"
        case 2: return "server"
        case 3: return "info"
        case 4: return "meta context"
        case 0x8000_0001: return "unsupported"
        case 0x8000_0002: return "denied by policy"
        case 0x8000_0003: return "invalid"
        case 0x8000_0004: return "platform lacks support"
        case 0x8000_0005: return "TLS required"
        case 0x8000_0006: return "export unknown"
        case 0x8000_0007: return "server shutting down"
        case 0x8000_0008: return "block size required"
        case 0x8000_0009: return "option payload too big"
        case 0x8000_000a: return "extended headers required"
        default: return "<unknown>"
        }
    }
}

/// NBD_INFO_* items of NBD_REP_INFO.
public enum NBDInfo {
    public static let export: UInt16 = 0
    public static let name: UInt16 = 1
    public static let description: UInt16 = 2
    public static let blockSize: UInt16 = 3
}

/// Transmission commands.
public struct NBDCommand: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let read = NBDCommand(rawValue: 0)
    public static let write = NBDCommand(rawValue: 1)
    public static let disconnect = NBDCommand(rawValue: 2)
    public static let flush = NBDCommand(rawValue: 3)
    public static let trim = NBDCommand(rawValue: 4)
    public static let cache = NBDCommand(rawValue: 5)
    public static let writeZeroes = NBDCommand(rawValue: 6)
    public static let blockStatus = NBDCommand(rawValue: 7)
    public static let resize = NBDCommand(rawValue: 8)

    /// QEMU's nbd_cmd_lookup names.
    public var description: String {
        switch rawValue {
        case 0: return "read"
        case 1: return "write"
        case 2: return "disconnect"
        case 3: return "flush"
        case 4: return "trim"
        case 5: return "cache"
        case 6: return "write zeroes"
        case 7: return "block status"
        case 8: return "resize"
        default: return "<unknown>"
        }
    }
}

/// Command flags (16 bits).
public struct NBDCommandFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let fua = NBDCommandFlags(rawValue: 1 << 0)
    public static let noHole = NBDCommandFlags(rawValue: 1 << 1)
    public static let dontFragment = NBDCommandFlags(rawValue: 1 << 2)
    public static let reqOne = NBDCommandFlags(rawValue: 1 << 3)
    public static let fastZero = NBDCommandFlags(rawValue: 1 << 4)
    public static let payloadLength = NBDCommandFlags(rawValue: 1 << 5)
}

/// Structured/extended reply chunk types.
public struct NBDReplyType: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let none = NBDReplyType(rawValue: 0)
    public static let offsetData = NBDReplyType(rawValue: 1)
    public static let offsetHole = NBDReplyType(rawValue: 2)
    public static let blockStatus = NBDReplyType(rawValue: 5)
    public static let blockStatusExt = NBDReplyType(rawValue: 6)
    public static let error = NBDReplyType(rawValue: 0x8001)
    public static let errorOffset = NBDReplyType(rawValue: 0x8002)

    public var isError: Bool { rawValue & 0x8000 != 0 }
}

/// Reply chunk flags.
public enum NBDReplyFlag {
    public static let done: UInt16 = 1 << 0
}

/// base:allocation states.
public enum NBDState {
    public static let hole: UInt32 = 1 << 0
    public static let zero: UInt32 = 1 << 1
    /// qemu:dirty-bitmap:NAME
    public static let dirty: UInt32 = 1 << 0
}

/// Error values on the wire (they are Linux errno numbers, but only these may be sent).
public enum NBDErrno {
    public static let eperm: UInt32 = 1
    public static let eio: UInt32 = 5
    public static let enomem: UInt32 = 12
    public static let einval: UInt32 = 22
    public static let enospc: UInt32 = 28
    public static let eoverflow: UInt32 = 75
    public static let enotsup: UInt32 = 95
    public static let eshutdown: UInt32 = 108

    /// The one mapping from a host errno to the wire (QEMU's system_errno_to_nbd_errno).
    public static func from(errno e: Int32) -> UInt32 {
        switch e {
        case 0: return 0
        case 1 /* EPERM */, 30 /* EROFS */: return eperm
        case 5: return eio
        case 12: return enomem
        case 122 /* EDQUOT */, 27 /* EFBIG */, 28 /* ENOSPC */: return enospc
        case 75: return eoverflow
        case 95 /* ENOTSUP == EOPNOTSUPP on Linux */: return enotsup
        case 108: return eshutdown
        default: return einval
        }
    }

    /// Wire error to a host errno (the client side); unknown values become EINVAL, as libnbd does.
    public static func toErrno(_ wire: UInt32) -> Int32 {
        switch wire {
        case eperm, eio, enomem, einval, enospc, eoverflow, enotsup, eshutdown: return Int32(wire)
        default: return 22
        }
    }
}
