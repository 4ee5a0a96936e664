// Opening a block graph from what a user typed: a filename, a format, options.
//
// The order follows QEMU's bdrv_open: json:{...} filenames become options; the "driver" option or
// -f names the format; the file child is opened from `file.*` options or the filename (a protocol
// chosen by the filename's prefix, `file` otherwise); without a format, the first bytes are probed.
// Formats open their own backing files through `openBacking`, which resolves relative names against
// the overlay's directory and refuses backing loops.
import Glibc

/// Known formats, in probe order.
public enum FormatRegistry {
    /// QEMU probes with the first 2048 bytes (BLOCK_PROBE_BUF_SIZE).
    public static let probeSize = 2048

    nonisolated(unsafe) private static var drivers: [any FormatDriver.Type] = [RawFormat.self, Qcow2Format.self, VDIFormat.self, VPCFormat.self, QEDFormat.self, VMDKFormat.self, VHDXFormat.self]
    private static let lock = NSLockLite()

    public static var all: [any FormatDriver.Type] { lock.withLock { drivers } }

    /// Adds a format (from another module, or a later-loaded one). Later registrations win ties.
    public static func register(_ driver: any FormatDriver.Type) {
        lock.withLock {
            drivers.removeAll { $0.name == driver.name }
            drivers.append(driver)
        }
    }

    public static func driver(named name: String) -> (any FormatDriver.Type)? {
        all.first { $0.name == name }
    }

    /// The name of the best-scoring format for these first bytes ("raw" when nothing else fits).
    public static func probe(_ head: [UInt8], filename: String) -> String {
        var best = "raw"
        var bestScore = 0
        for d in all {
            let s = d.probe(head, filename: filename)
            if s > bestScore {
                best = d.name
                bestScore = s
            }
        }
        return best
    }
}

/// Protocol drivers: where bytes come from (file, nbd, http, ...).
public protocol ProtocolDriver {
    static var name: String { get }
    /// URL-style prefixes this driver claims ("nbd", "nbd+unix", "http"...), without the colon.
    static var prefixes: [String] { get }
    /// Turns a filename with one of the prefixes into this driver's options (QEMU's parse_filename).
    static func parseFilename(_ filename: String) throws -> BlockOptions
    static func open(options: BlockOptions, context: OpenContext) throws -> any BlockNode
}

public enum ProtocolRegistry {
    nonisolated(unsafe) private static var drivers: [any ProtocolDriver.Type] = [FileProtocol.self, NullProtocol.self, NBDProtocol.self]
    private static let lock = NSLockLite()

    public static var all: [any ProtocolDriver.Type] { lock.withLock { drivers } }

    public static func register(_ driver: any ProtocolDriver.Type) {
        lock.withLock {
            drivers.removeAll { $0.name == driver.name }
            drivers.append(driver)
        }
    }

    public static func driver(named name: String) -> (any ProtocolDriver.Type)? {
        all.first { $0.name == name }
    }

    /// The driver whose prefix the filename starts with ("nbd://..." -> nbd), if any.
    public static func driver(forFilename filename: String) -> (any ProtocolDriver.Type)? {
        guard let colon = filename.firstIndex(of: ":") else { return nil }
        let prefix = String(filename[..<colon])
        if prefix.contains("/") { return nil }
        return all.first { $0.prefixes.contains(prefix) }
    }
}

public enum BlockGraph {
    /// A program-wide hook on the nodes a format opens beneath itself: its file child and its
    /// backing node pass through it, and the format keeps what it returns. vmrun installs one that
    /// wraps them in I/O-counting filters (query-blockstats for every node of a chain, feature B4).
    /// nil, the default, changes nothing. Set it once, before anything is opened.
    nonisolated(unsafe) public static var childInterposer: (@Sendable (_ node: any BlockNode, _ role: String) -> any BlockNode)?

    /// Opens a graph. `format` is -f (nil: the "driver" option or probing). `warn` receives QEMU's
    /// warnings (probed raw opened for writing).
    public static func open(filename: String?, format: String? = nil, options: BlockOptions = BlockOptions(),
                            context: OpenContext, warn: ((String) -> Void)? = nil) throws -> any BlockNode
    {
        var opts = options
        var name = filename
        if let f = filename, f.hasPrefix("json:") {
            opts = try BlockOptions.parseJSONFilename(f).merging(options)
            name = nil
        }
        var driverName = format
        if let d = opts.take("driver")?.description {
            if let f = format, f != d {
                throw BlockError(.invalidArgument, "Cannot specify both 'driver' and a format (\(d) / \(f))", errno: EINVAL)
            }
            driverName = d
        }
        if let explicit = opts.take("filename")?.description { name = explicit }
        if (opts.take("force-share").flatMap { BlockOptions.parseBool($0.description) }) == true {
            var c = context
            c.flags.insert(.forceShare)
            return try open(filename: name, driverName: driverName, opts: opts, context: c, warn: warn)
        }
        if (opts.take("read-only").flatMap { BlockOptions.parseBool($0.description) }) == true {
            var c = context
            c.flags.remove(.readWrite)
            return try open(filename: name, driverName: driverName, opts: opts, context: c, warn: warn)
        }
        return try open(filename: name, driverName: driverName, opts: opts, context: context, warn: warn)
    }

    private static func open(filename: String?, driverName: String?, opts: BlockOptions, context: OpenContext,
                             warn: ((String) -> Void)?) throws -> any BlockNode
    {
        if context.flags.contains(.forceShare) && context.writable {
            throw BlockError(.invalidArgument, "force-share=on can only be used with read-only images", errno: EINVAL)
        }
        // The whole request names a protocol driver: no format layer.
        if let d = driverName, let proto = ProtocolRegistry.driver(named: d) {
            var p = opts
            if let f = filename, p.string("filename") == nil { p.set("filename", f) }
            return try proto.open(options: p, context: context)
        }
        var format: (any FormatDriver.Type)? = nil
        if let d = driverName {
            guard let f = FormatRegistry.driver(named: d) else {
                throw BlockError(.invalidArgument, "Unknown driver '\(d)'", errno: EINVAL)
            }
            format = f
        }
        // The file child.
        var fileOpts = opts.sub("file")
        var nodeOpts = opts
        nodeOpts.removeSub("file")
        if let ref = nodeOpts.take("file") {
            fileOpts.set("filename", ref.description)
        }
        if fileOpts.string("filename") == nil, let f = filename { fileOpts.set("filename", f) }
        let file = try openProtocol(options: fileOpts, context: context, formatHasMetadata: format.map { $0.name != "raw" } ?? true)
        do {
            var probed = false
            if format == nil {
                let head = try file.read(at: 0, count: Int(min(UInt64(FormatRegistry.probeSize), file.size)))
                var padded = head
                if padded.count < FormatRegistry.probeSize { padded += [UInt8](repeating: 0, count: FormatRegistry.probeSize - padded.count) }
                let name = FormatRegistry.probe(head.isEmpty ? [] : padded, filename: file.filename)
                format = FormatRegistry.driver(named: name)
                probed = true
                if name == "raw", let f = file as? FileNode {
                    // Raw has no metadata: hold the permissions QEMU holds for raw, not a format's.
                    let p = BlockPermissions.forOpen(writable: context.writable, forceShare: context.flags.contains(.forceShare),
                                                     noShare: context.flags.contains(.noShare), metadata: false,
                                                     resize: context.flags.contains(.resize))
                    try f.updatePermissions(perm: p.perm, shared: p.shared)
                }
                if name == "raw" && context.writable {
                    warn?("WARNING: Image format was not specified for '\(file.filename)' and probing guessed raw.\n"
                        + "         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n"
                        + "         Specify the 'raw' format explicitly to remove the restrictions.")
                }
            }
            return try format!.open(file: childInterposer?(file, "file") ?? file, options: nodeOpts, context: context, probed: probed)
        } catch {
            try? file.close()
            throw error
        }
    }

    /// Opens the protocol layer from its options ("filename" plus driver-specific keys).
    static func openProtocol(options: BlockOptions, context: OpenContext, formatHasMetadata: Bool) throws -> any BlockNode {
        var o = options
        var proto: (any ProtocolDriver.Type)? = nil
        if let d = o.take("driver")?.description {
            guard let p = ProtocolRegistry.driver(named: d) else {
                if FormatRegistry.driver(named: d) != nil {
                    // A format as the file child (qcow2 on top of raw on top of file, ...).
                    return try open(filename: nil, driverName: d, opts: o, context: context, warn: nil)
                }
                throw BlockError(.invalidArgument, "Unknown driver '\(d)'", errno: EINVAL)
            }
            proto = p
        }
        guard let filename = o.string("filename") ?? (proto != nil && proto!.name != "file" ? "" : nil) else {
            throw BlockError(.invalidArgument, "The 'file' block driver requires a file name", errno: EINVAL)
        }
        if proto == nil, let p = ProtocolRegistry.driver(forFilename: filename) {
            proto = p
            o = try p.parseFilename(filename).merging({ var x = o; x.remove("filename"); return x }())
        }
        var c = context
        if formatHasMetadata { c.flags.insert(.metadataFormat) }
        return try (proto ?? FileProtocol.self).open(options: o, context: c)
    }

    /// Opens the backing file of `overlayFilename` (a format calls this while opening).
    /// `chain` holds the (device, inode) pairs already open below the top, to refuse loops.
    public static func openBacking(name backing: String, format: String?, overlayFilename: String,
                                   context: OpenContext) throws -> any BlockNode
    {
        let path = resolveBackingPath(backing, relativeTo: overlayFilename)
        var ctx = context.forBacking
        ctx.flags.remove(.noIO)
        if let id = FileIdentity(path: path), context.writableBacking.contains(id) {
            ctx.flags.insert(.readWrite)
        }
        do {
            try BackingLoopGuard.enter(path)
            defer { BackingLoopGuard.leave(path) }
            let node = try open(filename: path, format: format, context: ctx)
            return childInterposer?(node, "backing") ?? node
        }
    }

    /// QEMU's bdrv_get_full_backing_filename: a relative backing name is relative to the overlay's
    /// directory; protocol names and json: are taken as they are.
    public static func resolveBackingPath(_ backing: String, relativeTo overlay: String) -> String {
        if backing.hasPrefix("/") || backing.hasPrefix("json:") || ProtocolRegistry.driver(forFilename: backing) != nil {
            return backing
        }
        if overlay.hasPrefix("json:") { return backing }
        guard let slash = overlay.lastIndex(of: "/") else { return backing }
        return String(overlay[...slash]) + backing
    }
}

/// Refuses backing chains that loop (a -> b -> a), per thread of opening.
enum BackingLoopGuard {
    private static let lock = NSLockLite()
    nonisolated(unsafe) private static var open: [UInt64: [String]] = [:]

    private static func key(_ path: String) -> String {
        var st = stat()
        if stat(path, &st) == 0 { return "\(st.st_dev):\(st.st_ino)" }
        return path
    }

    static func enter(_ path: String) throws {
        let tid = UInt64(pthread_self())
        let k = key(path)
        try lock.withLock {
            var list = open[tid] ?? []
            if list.contains(k) {
                throw BlockError(.invalidImage, "Backing file '\(path)' creates an infinite loop.", errno: ELOOP)
            }
            if list.count >= 4096 {
                throw BlockError(.invalidImage, "Backing chain of '\(path)' is too deep", errno: ELOOP)
            }
            list.append(k)
            open[tid] = list
        }
    }

    static func leave(_ path: String) {
        let tid = UInt64(pthread_self())
        lock.withLock {
            var list = open[tid] ?? []
            if !list.isEmpty { list.removeLast() }
            open[tid] = list.isEmpty ? nil : list
        }
    }
}

/// A pthread mutex usable from static contexts (Synchronization.Mutex is not copyable into statics
/// of this shape).
final class NSLockLite: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return try body()
    }
}

/// A file's identity (device and inode), to recognise one file under different names.
public struct FileIdentity: Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64

    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}
