// The `file` and `null-co` protocol drivers' entry points: options in, node out.
import Glibc

public enum FileProtocol: ProtocolDriver {
    public static let name = "file"
    public static let prefixes = ["file"]

    public static func parseFilename(_ filename: String) throws -> BlockOptions {
        var o = BlockOptions()
        o.set("filename", filename.hasPrefix("file:") ? String(filename.dropFirst(5)) : filename)
        return o
    }

    /// The -o options of the file protocol (merged after a format's in create's option list).
    public static let createOptions: [CreateOptionSpec] = [
        CreateOptionSpec("size", .size, "Virtual disk size"),
        CreateOptionSpec("nocow", .bool, "Turn off copy-on-write (valid only on btrfs)"),
        CreateOptionSpec("preallocation", .string, "Preallocation mode (allowed values: off, falloc, full)"),
        CreateOptionSpec("extent_size_hint", .size, "Extent size hint for the image file, 0 to disable"),
    ]

    public static func open(options: BlockOptions, context: OpenContext) throws -> any BlockNode {
        guard let path = options.string("filename"), !path.isEmpty else {
            throw BlockError(.invalidArgument, "The 'file' block driver requires a file name", errno: EINVAL)
        }
        var o = FileNode.Options()
        o.writable = context.writable
        o.direct = context.cache.direct
        if let d = try options.bool("cache.direct") { o.direct = d }
        o.noFlush = context.cache.noFlush
        if let nf = try options.bool("cache.no-flush") { o.noFlush = nf }
        o.forceShare = context.flags.contains(.forceShare)
        o.resize = context.flags.contains(.resize)
        o.noShare = context.flags.contains(.noShare)
        o.metadata = context.flags.contains(.metadataFormat)
        o.locking = context.locking
        if let l = options.string("locking") {
            guard let mode = FileNode.Locking(rawValue: l) else {
                throw BlockError(.invalidArgument, "Parameter 'locking' does not accept value '\(l)'", errno: EINVAL)
            }
            o.locking = mode
        }
        if let aio = options.string("aio"), !["threads", "native", "io_uring"].contains(aio) {
            throw BlockError(.invalidArgument, "Parameter 'aio' does not accept value '\(aio)'", errno: EINVAL)
        }
        return try FileNode(path: path, options: o)
    }

    /// Creates (or truncates) a file of `size` bytes with the requested preallocation.
    public static func create(filename: String, size requested: UInt64, preallocation: Preallocation) throws {
        let size = (requested + 511) & ~511   // QEMU's file driver rounds up to whole sectors
        var fd: Int32
        repeat { fd = Glibc.open(filename, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) } while fd < 0 && errno == EINTR
        if fd < 0 {
            throw BlockError.system("Could not create '\(filename)'", errno: errno)
        }
        let f = PosixFile(fd: fd, path: filename)
        defer { f.close() }
        // Take QEMU's write lock while we write, so a concurrent user notices.
        let (perm, shared) = BlockPermissions.forOpen(writable: true, forceShare: false, metadata: true, resize: true)
        do {
            try ImageLock.acquire(fd: fd, perm: perm, shared: shared, filename: filename)
        } catch let e as BlockError {
            throw e
        }
        do {
            try f.truncate(size)
        } catch let e as BlockError {
            throw BlockError(e.kind, "Could not resize file: \(BlockError.strerror(e.errno))", errno: e.errno)
        }
        switch preallocation {
        case .off, .metadata: break
        case .falloc:
            if size > 0 {
                let r = f.fallocate(mode: 0, offset: 0, length: size)
                if r != 0 { throw BlockError.system("Could not preallocate data for the new file", errno: r) }
            }
        case .full:
            var done: UInt64 = 0
            while done < size {
                let n = Int(min(UInt64(ZeroBuffer.chunk), size - done))
                try f.write(at: done, from: UnsafeRawBufferPointer(start: ZeroBuffer.zeroes, count: n))
                done += UInt64(n)
            }
            try f.sync()
        }
    }
}

/// `null-co`: reads zeroes (or garbage with read-zeroes=off in QEMU; we always zero), drops writes.
/// Useful as a benchmark sink and in tests.
public enum NullProtocol: ProtocolDriver {
    public static let name = "null-co"
    public static let prefixes = ["null-co"]

    public static func parseFilename(_ filename: String) throws -> BlockOptions { BlockOptions() }

    public static func open(options: BlockOptions, context: OpenContext) throws -> any BlockNode {
        NullNode(size: try options.size("size") ?? (1 << 30), readOnly: !context.writable)
    }
}

public final class NullNode: BlockNode, @unchecked Sendable {
    public let driverName = "null-co"
    public var filename: String { "null-co://" }
    public let size: UInt64
    public let isReadOnly: Bool
    public var children: [BlockChild] { [] }
    public var hasZeroInit: Bool { true }

    public init(size: UInt64, readOnly: Bool) {
        self.size = size
        self.isReadOnly = readOnly
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRequest(offset, UInt64(buffer.count))
        if buffer.count > 0 { buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count) }
    }
    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        try checkRequest(offset, UInt64(buffer.count))
    }
    public func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws { try checkRequest(offset, length) }
    public func discard(at offset: UInt64, length: UInt64) throws {}
    public func flush() throws {}
    public func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws {
        throw BlockError(.unsupported, "null-co does not support resizing", errno: ENOTSUP)
    }
    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        BlockExtent(flags: [.zero, .offsetValid], length: length, hostOffset: offset, file: self)
    }
    public func close() throws {}
}
