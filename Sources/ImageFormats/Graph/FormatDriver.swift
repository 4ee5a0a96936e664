// How format and protocol drivers plug into the graph: probing, opening and creating.
//
// A format driver is a type with static entry points (no state): `probe` scores the first bytes of a
// file as QEMU's drivers do (raw scores 1 as the fallback), `open` wraps an already opened file
// node, `create` writes a new image. `createOptions` lists the -o options in QEMU's order: that order
// is what qemu-img's "Formatting ..." line and `-o help` print.
import Glibc

/// One -o option a driver accepts at creation (QEMU's QemuOptDesc).
public struct CreateOptionSpec: Sendable {
    public enum Kind: Sendable { case string, size, bool, number }
    public var name: String
    public var kind: Kind
    public var help: String
    /// The default printed on the "Formatting" line when the user gave none (QEMU's def_value_str).
    public var defaultValue: String?

    public init(_ name: String, _ kind: Kind, _ help: String, default defaultValue: String? = nil) {
        self.name = name
        self.kind = kind
        self.help = help
        self.defaultValue = defaultValue
    }

    /// `<str>`, `<size>`, `<bool (on/off)>`, `<num>` as in `-o help`.
    public var typeLabel: String {
        switch kind {
        case .string: return "<str>"
        case .size: return "<size>"
        case .bool: return "<bool (on/off)>"
        case .number: return "<num>"
        }
    }
}

/// What an opener asks for.
public struct OpenFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let readWrite = OpenFlags(rawValue: 1 << 0)
    /// -U: share all permissions with other users (read-only opens only).
    public static let forceShare = OpenFlags(rawValue: 1 << 1)
    /// Do not open backing files (info of one layer, rebase -u, create's size lookup).
    public static let noBacking = OpenFlags(rawValue: 1 << 2)
    /// The opener will resize the image (qemu-img resize).
    public static let resize = OpenFlags(rawValue: 1 << 3)
    /// Metadata only; no guest data I/O (qemu-img info). Relaxes checks QEMU relaxes with BDRV_O_NO_IO.
    public static let noIO = OpenFlags(rawValue: 1 << 4)
    /// Repair mode for `check -r`: open images QEMU would refuse as corrupt.
    public static let checkRepair = OpenFlags(rawValue: 1 << 5)
    /// Share only reads with other users (qemu-img convert's source, QEMU's BDRV_O_NO_SHARE).
    public static let noShare = OpenFlags(rawValue: 1 << 6)
    /// Set by the graph on a protocol open under a format with metadata (qcow2, not raw): the file
    /// is then never shared for writing (image locking).
    public static let metadataFormat = OpenFlags(rawValue: 1 << 7)
}

/// QEMU's cache modes (-t / -T / cache=), mapped to O_DIRECT, flush and write-through behaviour.
public enum CacheMode: String, Sendable, CaseIterable {
    case writeback, none, writethrough, directsync, unsafe

    public var direct: Bool { self == .none || self == .directsync }
    public var noFlush: Bool { self == .unsafe }
    public var writeThrough: Bool { self == .writethrough || self == .directsync }

    /// Parses a -t/-T argument with QEMU's error text.
    public static func parse(_ s: String) throws -> CacheMode {
        if s == "off" { return .none }
        if let m = CacheMode(rawValue: s) { return m }
        throw BlockError(.invalidArgument, "Invalid cache option: \(s)", errno: EINVAL)
    }
}

/// Everything an open needs besides the filename and options.
public struct OpenContext: Sendable {
    public var flags: OpenFlags
    /// Backing files (by identity, see `FileIdentity`) to open writable: the base of a commit.
    public var writableBacking: Set<FileIdentity> = []
    public var cache: CacheMode
    public var locking: FileNode.Locking

    public init(flags: OpenFlags = [], cache: CacheMode = .writeback, locking: FileNode.Locking = .auto) {
        self.flags = flags
        self.cache = cache
        self.locking = locking
    }

    public var writable: Bool { flags.contains(.readWrite) }

    /// The context for a backing file: read-only, same cache and locking.
    public var forBacking: OpenContext {
        var c = self
        c.flags.remove(.readWrite)
        c.flags.remove(.resize)
        c.flags.remove(.checkRepair)
        c.flags.remove(.metadataFormat)
        return c
    }
}

public protocol FormatDriver {
    static var name: String { get }
    /// How sure this driver is that `head` (the first bytes of the file) is its format: 0 = not,
    /// 100 = certain. QEMU's raw answers 1.
    static func probe(_ head: [UInt8], filename: String) -> Int
    /// Opens the format on top of `file`. `options` are this node's own options (not the file's).
    static func open(file: any BlockNode, options: BlockOptions, context: OpenContext, probed: Bool) throws -> any BlockNode
    /// The -o options in QEMU's order.
    static var createOptions: [CreateOptionSpec] { get }
    /// Writes a new image of `size` bytes to `filename` (already created empty by the protocol).
    static func create(filename: String, size: UInt64, options: BlockOptions) throws
    /// Whether `create` needs a size (false when a backing file can supply it).
    static var supportsBacking: Bool { get }
}

extension FormatDriver {
    public static var supportsBacking: Bool { false }
}
