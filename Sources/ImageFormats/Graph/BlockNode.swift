// The block node contract: every protocol, format and filter driver is a BlockNode.
//
// Everything above the drivers (sparse convert, map, compare, commit, NBD block status, virtio-blk)
// is built from these few operations. Nodes are thread-safe: callers (convert workers, NBD
// connections, vCPUs) call them concurrently from their own threads; all calls are blocking.
//
// Block status follows QEMU's model (bdrv_co_block_status): a driver answers for the longest run at
// `offset` that has one status, and the generic layer in BlockStatus.swift adds what QEMU's generic
// layer adds (recursing into the file for raw, zero past the end of a short backing file, ...), so
// that `map` and convert see exactly what qemu-img sees.

/// Flags of one block-status extent; the names are QEMU's BDRV_BLOCK_* flags.
public struct BlockStatusFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Reads return data from this node (or from `file` at `hostOffset`).
    public static let data = BlockStatusFlags(rawValue: 1 << 0)
    /// Reads return zeroes.
    public static let zero = BlockStatusFlags(rawValue: 1 << 1)
    /// `hostOffset` is valid: the bytes live at that offset of `file`.
    public static let offsetValid = BlockStatusFlags(rawValue: 1 << 2)
    /// The content is defined by this node, not by its backing chain.
    public static let allocated = BlockStatusFlags(rawValue: 1 << 4)
    /// The extent reaches the end of the node.
    public static let eof = BlockStatusFlags(rawValue: 1 << 5)
    /// Ask the `file` node for a finer answer (QEMU's BDRV_BLOCK_RECURSE).
    public static let recurse = BlockStatusFlags(rawValue: 1 << 6)
    /// The data is stored compressed (no host offset).
    public static let compressed = BlockStatusFlags(rawValue: 1 << 7)
    /// A pass-through driver (raw): the answer is that of `file` at `hostOffset` (QEMU's BDRV_BLOCK_RAW).
    public static let raw = BlockStatusFlags(rawValue: 1 << 3)
}

/// One block-status answer: `length` bytes from the queried offset share `flags`.
public struct BlockExtent: Sendable {
    public var flags: BlockStatusFlags
    public var length: UInt64
    /// Offset in `file` where the data lives, when `flags` has `.offsetValid`.
    public var hostOffset: UInt64
    /// The node that holds the bytes (for map's "filename"), when known.
    public var file: (any BlockNode)?

    public init(flags: BlockStatusFlags, length: UInt64, hostOffset: UInt64 = 0, file: (any BlockNode)? = nil) {
        self.flags = flags
        self.length = length
        self.hostOffset = hostOffset
        self.file = file
    }
}

/// Flags for writes and write-zeroes requests.
public struct WriteFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Force unit access: the data is on stable storage when the call returns.
    public static let fua = WriteFlags(rawValue: 1 << 0)
    /// write-zeroes may deallocate (punch a hole) instead of writing.
    public static let mayUnmap = WriteFlags(rawValue: 1 << 1)
    /// write-zeroes must fail with ENOTSUP rather than fall back to writing zero buffers.
    public static let noFallback = WriteFlags(rawValue: 1 << 2)
}

/// Preallocation modes, QEMU's names.
public enum Preallocation: String, Sendable, CaseIterable {
    case off, metadata, falloc, full
}

/// The role of a child edge, as QEMU names them in `qemu-img info` ("file", "backing", "data-file").
public struct BlockChild: Sendable {
    public var name: String
    public var node: any BlockNode
    public init(name: String, node: any BlockNode) {
        self.name = name
        self.node = node
    }
}

/// QEMU's BlockDriverInfo subset that `info` shows.
public struct DriverInfo: Sendable {
    public var clusterSize: UInt64?
    public var isDirty: Bool
    public init(clusterSize: UInt64? = nil, isDirty: Bool = false) {
        self.clusterSize = clusterSize
        self.isDirty = isDirty
    }
}

/// A block node: a protocol (file, nbd, ...), a format (raw, qcow2, ...) or a filter.
public protocol BlockNode: AnyObject, Sendable {
    /// QEMU's driver name ("file", "raw", "qcow2").
    var driverName: String { get }
    /// QEMU's bs->filename: a path, a URL, or a json:{...} description.
    var filename: String { get }
    /// Virtual size in bytes.
    var size: UInt64 { get }
    var isReadOnly: Bool { get }
    /// Child edges in QEMU's order: file first, then backing, then data-file and others.
    var children: [BlockChild] { get }
    /// Smallest request granularity the node wants (1 for most; 512 or 4096 with O_DIRECT).
    var requestAlignment: UInt64 { get }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws
    /// Reads the consecutive bytes from `offset` into `buffers`, in order (a scatter read, as
    /// QEMU's preadv with an I/O vector): one host call where the driver can, so that a guest's
    /// scattered pages are filled without a bounce buffer. The default is one `read` into a
    /// temporary buffer, copied out (callers keep the total to a bounce buffer's size).
    func readScattered(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer]) throws
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws
    func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws
    func discard(at offset: UInt64, length: UInt64) throws
    func flush() throws
    func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws

    /// The driver's own status for the run starting at `offset` (at most `length` bytes, at least one
    /// byte; `offset < size`). Callers normally use `blockStatus(at:length:wantZero:)` from
    /// BlockStatus.swift, which adds QEMU's generic rules on top.
    func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent

    /// Whether the node reads as all zeroes right after creation/truncation (QEMU's has_zero_init).
    var hasZeroInit: Bool { get }
    /// Whether the format can have a backing file (unallocated ranges fall through to it).
    var supportsBacking: Bool { get }
    /// Bytes the node takes on the host (qemu-img's "disk size"), nil when unknown.
    func allocatedHostBytes() -> UInt64?
    /// `format-specific` data for `qemu-img info`, nil when the driver has none.
    func formatSpecificInfo() -> JSONValue?
    /// What QEMU's bdrv_get_info gives `info` (cluster size, dirty flag), nil when the driver has
    /// no such call.
    func driverInfo() -> DriverInfo?
    /// The backing file as recorded in the image (not resolved), and its recorded format.
    var recordedBacking: (name: String, format: String?)? { get }
    /// Internal snapshots, for `info`.
    var snapshots: [SnapshotInfo] { get }
    /// Releases locks and descriptors. Idempotent. Flushes dirty metadata first where the format has any.
    func close() throws
}

extension BlockNode {
    public func readScattered(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer]) throws {
        try readThroughBounce(at: offset, into: buffers)
    }

    /// `readScattered` as one `read` into a temporary page-aligned buffer, copied out.
    public func readThroughBounce(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer]) throws {
        if buffers.count == 1 { return try read(at: offset, into: buffers[0]) }
        let total = buffers.reduce(0) { $0 + $1.count }
        let bounce = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 4096)
        defer { bounce.deallocate() }
        try read(at: offset, into: bounce)
        var pos = 0
        for b in buffers where b.count > 0 {
            b.baseAddress!.copyMemory(from: bounce.baseAddress! + pos, byteCount: b.count)
            pos += b.count
        }
    }

    public var requestAlignment: UInt64 { 1 }
    public var hasZeroInit: Bool { false }
    public var supportsBacking: Bool { false }
    public func allocatedHostBytes() -> UInt64? { nil }
    public func formatSpecificInfo() -> JSONValue? { nil }
    public func driverInfo() -> DriverInfo? { nil }
    public var recordedBacking: (name: String, format: String?)? { nil }
    public var snapshots: [SnapshotInfo] { [] }

    /// Closes every child (all of them, even after a failure), then throws `firstError` or the
    /// first child's error: the end of a format's close().
    public func closeChildren(after firstError: Error?) throws {
        var first = firstError
        for c in children {
            do { try c.node.close() } catch { if first == nil { first = error } }
        }
        if let e = first { throw e }
    }

    /// The child with the given role name.
    public func child(_ name: String) -> (any BlockNode)? {
        children.first { $0.name == name }?.node
    }
    /// The "file" child (where a format keeps its bytes).
    public var fileChild: (any BlockNode)? { child("file") }
    /// The "backing" child (copy-on-write source).
    public var backing: (any BlockNode)? { child("backing") }

    /// Checks `offset`/`length` against the node size, as QEMU's bdrv_check_request does.
    public func checkRequest(_ offset: UInt64, _ length: UInt64) throws {
        let (end, overflow) = offset.addingReportingOverflow(length)
        if overflow || end > size {
            throw BlockError(.outOfRange, "Request past the end of the image (offset \(offset), length \(length), size \(size))",
                             errno: 5 /* EIO */)
        }
    }

    /// Reads into a fresh array; convenient for small metadata reads and tests.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(at: offset, into: $0) }
        return bytes
    }

    public func write(at offset: UInt64, bytes: [UInt8], flags: WriteFlags = []) throws {
        try bytes.withUnsafeBytes { try write(at: offset, from: $0, flags: flags) }
    }
}
