// What the server serves: an export is a name, a description, the limits and flags it advertises,
// and a backend that does the I/O. The server knows nothing of image formats: nbdserver adapts a
// block node to `NBDBackend`, tests use an in-memory one.
//
// Backends throw `NBDBackendError` (an errno plus the cause, already logged or loggable); that errno
// is turned into a wire error in one place (`NBDErrno.from`). Anything else thrown becomes EIO.

/// A metadata context a client can select for NBD_CMD_BLOCK_STATUS.
public enum NBDMetaContext: Hashable, Sendable {
    case baseAllocation
    case allocationDepth
    case dirtyBitmap(String)

    public var name: String {
        switch self {
        case .baseAllocation: return "base:allocation"
        case .allocationDepth: return "qemu:allocation-depth"
        case .dirtyBitmap(let n): return "qemu:dirty-bitmap:\(n)"
        }
    }

    public init?(name: String) {
        if name == "base:allocation" { self = .baseAllocation }
        else if name == "qemu:allocation-depth" { self = .allocationDepth }
        else if name.hasPrefix("qemu:dirty-bitmap:") && name.count > 18 { self = .dirtyBitmap(String(name.dropFirst(18))) }
        else { return nil }
    }
}

/// One block-status descriptor: `length` bytes with `flags` (NBD_STATE_* or a depth, per context).
public struct NBDExtent: Sendable, Equatable {
    public var length: UInt64
    public var flags: UInt64
    public init(length: UInt64, flags: UInt64) {
        self.length = length
        self.flags = flags
    }
}

public struct NBDBackendError: Error, CustomStringConvertible, Sendable {
    public var errno: Int32
    public var message: String
    public init(errno: Int32, _ message: String) {
        self.errno = errno
        self.message = message
    }
    public var description: String { message }
}

/// What a sparse read needs to know about a run: zero or data, how long, and where the bytes live
/// when they sit unchanged in a host file (so they can go to the socket with sendfile, no copy).
public struct NBDReadStatus: Sendable {
    public var zero: Bool
    public var length: UInt64
    public var source: (fd: Int32, offset: UInt64)?
    public init(zero: Bool, length: UInt64, source: (fd: Int32, offset: UInt64)? = nil) {
        self.zero = zero
        self.length = length
        self.source = source
    }
}

public protocol NBDBackend: AnyObject, Sendable {
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws
    /// `mayTrim`: may deallocate (no NBD_CMD_FLAG_NO_HOLE); `fast`: fail with ENOTSUP rather than
    /// write zero buffers (NBD_CMD_FLAG_FAST_ZERO).
    func writeZeroes(at offset: UInt64, length: UInt64, fua: Bool, mayTrim: Bool, fast: Bool) throws
    func trim(at offset: UInt64, length: UInt64, fua: Bool) throws
    func flush() throws
    /// Prefetch (NBD_CMD_CACHE).
    func cache(at offset: UInt64, length: UInt64) throws
    /// For sparse reads: whether the run at `offset` reads as zeroes, and how long it is (>= 1).
    func zeroStatus(at offset: UInt64, length: UInt64) throws -> (zero: Bool, length: UInt64)
    /// zeroStatus plus, optionally, the host file range holding the data as is (default: none).
    func readStatus(at offset: UInt64, length: UInt64) throws -> NBDReadStatus
    /// Appends descriptors for `context` covering a prefix of [offset, offset+length), at most
    /// `limit` of them (the server merges neighbours with equal flags).
    func extents(_ context: NBDMetaContext, at offset: UInt64, length: UInt64, limit: Int,
                 into out: inout [NBDExtent]) throws
}

extension NBDBackend {
    public func readStatus(at offset: UInt64, length: UInt64) throws -> NBDReadStatus {
        let s = try zeroStatus(at: offset, length: length)
        return NBDReadStatus(zero: s.zero, length: s.length)
    }
}

/// One export and what it advertises.
public final class NBDExport: Sendable {
    public let name: String
    public let description: String?
    public let backend: any NBDBackend
    public let size: UInt64
    /// Transmission flags, without NBD_FLAG_SEND_DF (which depends on the session's mode).
    public let flags: NBDTransmissionFlags
    /// Block-size constraints: minimum (the request alignment), preferred, maximum payload.
    public let minimumBlock: UInt32
    public let preferredBlock: UInt32
    public let maximumBlock: UInt32
    /// Contexts offered besides base:allocation (always offered), in QEMU's order.
    public let extraContexts: [NBDMetaContext]

    public init(name: String, description: String?, backend: any NBDBackend, size: UInt64, flags: NBDTransmissionFlags,
                minimumBlock: UInt32 = 1, preferredBlock: UInt32 = 4096, maximumBlock: UInt32 = UInt32(NBDLimits.maxBuffer),
                extraContexts: [NBDMetaContext] = []) {
        self.name = name
        self.description = description
        self.backend = backend
        self.size = size
        self.flags = flags.union(.hasFlags)
        self.minimumBlock = minimumBlock
        self.preferredBlock = max(preferredBlock, minimumBlock)
        self.maximumBlock = maximumBlock
        self.extraContexts = extraContexts
    }

    public var isReadOnly: Bool { flags.contains(.readOnly) }

    /// Flags as sent to a client in `mode` (DF only with structured replies, as QEMU does).
    public func flags(for mode: NBDMode) -> NBDTransmissionFlags {
        var f = flags
        if mode >= .structured { f.insert(.sendDF) }
        return f
    }

    /// Every context this export has, in the order QEMU lists them (context id = index).
    public var allContexts: [NBDMetaContext] { [.baseAllocation] + extraContexts }

    /// QEMU's context ids: base:allocation 0, qemu:allocation-depth 1, bitmaps from 2.
    public func contextID(_ c: NBDMetaContext) -> UInt32 {
        switch c {
        case .baseAllocation: return 0
        case .allocationDepth: return 1
        case .dirtyBitmap:
            let bitmaps = extraContexts.filter { if case .dirtyBitmap = $0 { return true } else { return false } }
            return 2 + UInt32(bitmaps.firstIndex(of: c) ?? 0)
        }
    }
}

/// What the handshake produced: the export and how to talk about it.
public struct NBDSession: Sendable {
    public var export: NBDExport
    public var mode: NBDMode
    /// Selected contexts with their ids, in reply order.
    public var contexts: [(id: UInt32, context: NBDMetaContext)]
    /// Non-zero when the client promised to honour the minimum block size.
    public var checkAlignment: UInt32
    public var tls: Bool
}
