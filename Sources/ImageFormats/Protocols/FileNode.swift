// The `file` protocol driver: a host file or block device.
//
// Positional I/O only; write-zeroes and discard through fallocate (punch hole, then zero range),
// BLKZEROOUT/BLKDISCARD on block devices, each capability dropped for good the first time the host
// refuses it (nbdkit's "degrade and remember"); block status through SEEK_DATA/SEEK_HOLE as QEMU's
// file-posix reports it; QEMU-compatible image locking (ImageLocking.swift).
import CLinux
import Glibc
import Synchronization

public final class FileNode: BlockNode, @unchecked Sendable {
    public let driverName = "file"
    public let filename: String
    public let isReadOnly: Bool
    public var children: [BlockChild] { [] }
    public let requestAlignment: UInt64
    public let file: PosixFile
    public let isBlockDevice: Bool

    private let currentSize: Atomic<UInt64>
    private let canPunchHole = Atomic<Bool>(true)
    private let canZeroRange = Atomic<Bool>(true)
    private let canDeviceZero = Atomic<Bool>(true)
    /// Large writes allocate their host blocks first (fallocate, keeping the size). On ext4 a
    /// buffered write into allocated blocks skips delayed allocation's per-block reservations,
    /// about a third of the kernel's time in a big copy; the blocks are the ones the write would
    /// have allocated anyway. Convert and commit turn this on for their targets' files. Only on
    /// ext4, where it was measured: on btrfs, for one, preallocated extents are never compressed.
    public let allocatesBeforeWrite = Atomic<Bool>(false)
    private let onExt4: Bool
    private let lockState = Mutex<(perm: BlockPermissions, shared: BlockPermissions, locked: Bool)>((.init(), .init(), false))
    /// QEMU's block-status cache (file-posix): the last data extent SEEK_DATA/SEEK_HOLE found, so
    /// that reads in one big data run do not cost two lseeks each. Plain writes only turn holes
    /// into data, so they keep it; anything that may make holes (write-zeroes, discard, truncate,
    /// copy_file_range) bumps the generation, and a lookup that raced with one stores nothing.
    private let dataCache = Mutex<(generation: UInt64, start: UInt64, end: UInt64)>((0, 0, 0))
    private let noFlush: Bool
    private let closed = Atomic<Bool>(false)

    public struct Options: Sendable {
        public var writable = false
        public var direct = false         // cache.direct / cache=none: O_DIRECT
        public var noFlush = false        // cache=unsafe: flushes are dropped
        public var locking: Locking = .auto
        public var forceShare = false     // -U
        public var resize = false         // the opener may resize (qemu-img resize)
        public var noShare = false        // share only reads (qemu-img convert's source)
        public var metadata = false       // a format with metadata (not raw) sits on this file
        public var create = false         // O_CREAT
        public init() {}
    }

    public enum Locking: String, Sendable { case on, off, auto }

    /// The length in bytes, rounded up to 512 as QEMU's block layer reports every node's length
    /// (reads past the real end of the file return zeroes).
    public var size: UInt64 { (currentSize.load(ordering: .acquiring) + 511) & ~511 }
    public var hasZeroInit: Bool { !isBlockDevice }

    public init(path: String, options: Options) throws {
        var flags: Int32 = options.writable ? O_RDWR : O_RDONLY
        if options.create { flags |= O_CREAT }
        if options.direct { flags |= clinux_O_DIRECT }
        let f = try PosixFile.open(path, flags: flags)
        self.file = f
        self.filename = path
        self.isReadOnly = !options.writable
        self.isBlockDevice = f.isBlockDevice
        self.noFlush = options.noFlush
        self.requestAlignment = options.direct ? 4096 : 1
        self.currentSize = Atomic(try f.currentSize())
        self.onExt4 = clinux_on_ext4(f.fd) != 0
        if options.locking != .off {
            let (perm, shared) = BlockPermissions.forOpen(writable: options.writable, forceShare: options.forceShare,
                                                         noShare: options.noShare, metadata: options.metadata,
                                                         resize: options.resize)
            try ImageLock.acquire(fd: f.fd, perm: perm, shared: shared, filename: path)
            lockState.withLock { $0 = (perm, shared, true) }
        }
    }

    /// Changes the held permissions (e.g. a read-only opener becoming a writer), with QEMU's checks.
    public func updatePermissions(perm: BlockPermissions, shared: BlockPermissions) throws {
        try lockState.withLock { state in
            guard state.locked else { return }
            try ImageLock.apply(fd: file.fd, perm: perm, shared: shared, filename: filename)
            do {
                try ImageLock.check(fd: file.fd, perm: perm, shared: shared, filename: filename)
            } catch {
                try? ImageLock.apply(fd: file.fd, perm: state.perm, shared: state.shared, filename: filename)
                throw error
            }
            state.perm = perm
            state.shared = shared
        }
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try file.read(at: offset, into: buffer)
    }

    /// One preadv; with O_DIRECT only when every piece keeps its alignment rules.
    public func readScattered(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer]) throws {
        let a = requestAlignment
        if a > 1 && (offset % a != 0 || buffers.contains { UInt64(UInt(bitPattern: $0.baseAddress)) % a != 0 || UInt64($0.count) % a != 0 }) {
            return try readThroughBounce(at: offset, into: buffers)
        }
        try file.readScattered(at: offset, into: buffers)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        if buffer.count >= 64 << 10, allocatesBeforeWrite.load(ordering: .relaxed) { allocate(at: offset, length: UInt64(buffer.count)) }
        try file.write(at: offset, from: buffer)
        noteEnd(offset + UInt64(buffer.count))
        if flags.contains(.fua) { try file.sync() }
    }

    /// fallocate ahead of a write (`allocatesBeforeWrite`). A host that refuses it turns it off; any
    /// other failure (ENOSPC) is left for the write itself to report.
    private func allocate(at offset: UInt64, length: UInt64) {
        guard onExt4, !isBlockDevice, requestAlignment == 1 else { return }
        let r = file.fallocate(mode: clinux_FALLOC_FL_KEEP_SIZE, offset: offset, length: length)
        if r == EOPNOTSUPP || r == ENOSYS || r == EINVAL { allocatesBeforeWrite.store(false, ordering: .relaxed) }
    }

    private func noteEnd(_ end: UInt64) {
        guard !isBlockDevice else { return }
        var cur = currentSize.load(ordering: .relaxed)
        while end > cur {
            let (exchanged, original) = currentSize.compareExchange(expected: cur, desired: end, ordering: .acquiringAndReleasing)
            if exchanged { break }
            cur = original
        }
    }

    /// Forgets the cached data extent, after anything that may have punched holes (a lookup that
    /// ran meanwhile finds the generation changed and keeps nothing).
    private func invalidateDataCache() {
        dataCache.withLock { $0 = ($0.generation &+ 1, 0, 0) }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        defer { invalidateDataCache() }
        guard length > 0 else { return }
        if isBlockDevice {
            if flags.contains(.mayUnmap), clinux_blk_discard(file.fd, offset, length) == 0 {
                // BLKDISCARD does not guarantee zeroes on every device; only trust it with zeroout below.
            }
            if canDeviceZero.load(ordering: .relaxed) {
                if clinux_blk_zeroout(file.fd, offset, length) == 0 { return try finishZero(flags) }
                canDeviceZero.store(false, ordering: .relaxed)
            }
        } else {
            let end = offset + length
            let oldSize = size
            if offset >= oldSize {
                // Past the end: growing the file reads as zeroes already.
                try file.truncate(end)
                noteEnd(end)
                return try finishZero(flags)
            }
            if flags.contains(.mayUnmap) && canPunchHole.load(ordering: .relaxed) && end <= oldSize {
                let r = file.fallocate(mode: clinux_FALLOC_FL_PUNCH_HOLE | clinux_FALLOC_FL_KEEP_SIZE, offset: offset, length: length)
                if r == 0 { return try finishZero(flags) }
                if r == EOPNOTSUPP || r == ENOTSUP || r == ENOSYS { canPunchHole.store(false, ordering: .relaxed) }
            }
            if canZeroRange.load(ordering: .relaxed) {
                let r = file.fallocate(mode: clinux_FALLOC_FL_ZERO_RANGE, offset: offset, length: length)
                if r == 0 { noteEnd(end); return try finishZero(flags) }
                if r == EOPNOTSUPP || r == ENOTSUP || r == ENOSYS { canZeroRange.store(false, ordering: .relaxed) }
                else if r != EINVAL { throw BlockError.system("Could not write zeroes", errno: r) }
            }
        }
        if flags.contains(.noFallback) {
            throw BlockError(.unsupported, "Write zeroes without fallback is not supported", errno: ENOTSUP)
        }
        try ZeroBuffer.writeZeroes(to: self, at: offset, length: length)
        try finishZero(flags)
    }

    private func finishZero(_ flags: WriteFlags) throws {
        if flags.contains(.fua) { try file.sync() }
    }

    public func discard(at offset: UInt64, length: UInt64) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        defer { invalidateDataCache() }
        guard length > 0 else { return }
        if isBlockDevice {
            _ = clinux_blk_discard(file.fd, offset, length)
            return
        }
        // Discard is a hint; a host that cannot punch holes simply keeps the data.
        if canPunchHole.load(ordering: .relaxed) {
            let r = file.fallocate(mode: clinux_FALLOC_FL_PUNCH_HOLE | clinux_FALLOC_FL_KEEP_SIZE, offset: offset, length: length)
            if r == EOPNOTSUPP || r == ENOTSUP || r == ENOSYS { canPunchHole.store(false, ordering: .relaxed) }
        }
    }

    public func flush() throws {
        if noFlush || isReadOnly { return }
        try file.sync()
    }

    public func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        defer { invalidateDataCache() }
        if isBlockDevice {
            if newSize > size { throw BlockError(.unsupported, "Cannot grow device files", errno: EINVAL) }
            if exact && newSize != size { throw BlockError(.unsupported, "Cannot resize device files", errno: ENOTSUP) }
            return
        }
        let old = size
        if !exact && newSize <= old && preallocation == .off { return }
        switch preallocation {
        case .off, .metadata:
            try file.truncate(newSize)
        case .falloc:
            try file.truncate(newSize)
            if newSize > old {
                let r = file.fallocate(mode: 0, offset: old, length: newSize - old)
                if r != 0 { throw BlockError.system("Could not preallocate new data", errno: r) }
            }
        case .full:
            try file.truncate(newSize)
            if newSize > old {
                try ZeroBuffer.writeZeroes(to: self, at: old, length: newSize - old, force: true)
            }
        }
        currentSize.store(newSize, ordering: .releasing)
    }

    /// Allocates host space for a range that already reads as zero: fallocate, or zero writes.
    public func preallocate(offset: UInt64, length: UInt64, writeZeroes: Bool) throws {
        if writeZeroes {
            try ZeroBuffer.writeZeroes(to: self, at: offset, length: length, force: true)
        } else {
            let r = file.fallocate(mode: 0, offset: offset, length: length)
            if r != 0 { throw BlockError.system("Could not preallocate data", errno: r) }
        }
        noteEnd(offset + length)
    }

    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        if !wantZero || isBlockDevice {
            return BlockExtent(flags: [.data, .offsetValid], length: length, hostOffset: offset, file: self)
        }
        let cached = dataCache.withLock { $0 }
        if offset >= cached.start && offset < cached.end {
            return BlockExtent(flags: [.data, .offsetValid], length: min(length, cached.end - offset), hostOffset: offset, file: self)
        }
        let fd = file.fd
        // Offsets past what lseek takes (a corrupt image's table entry): no information.
        guard length <= UInt64(Int64.max), offset <= UInt64(Int64.max) - length else {
            return BlockExtent(flags: [.data, .offsetValid], length: length, hostOffset: offset, file: self)
        }
        let data = clinux_lseek(fd, Int64(offset), clinux_SEEK_DATA)
        if data < 0 {
            if errno == ENXIO {
                // Nothing but a hole up to the end of the file.
                return BlockExtent(flags: [.zero, .offsetValid], length: length, hostOffset: offset, file: self)
            }
            // No information: pretend it is all data.
            return BlockExtent(flags: [.data, .offsetValid], length: length, hostOffset: offset, file: self)
        }
        if UInt64(data) > offset {
            let n = min(length, UInt64(data) - offset)
            return BlockExtent(flags: [.zero, .offsetValid], length: n, hostOffset: offset, file: self)
        }
        var hole = clinux_lseek(fd, Int64(offset), clinux_SEEK_HOLE)
        if hole < 0 || UInt64(hole) <= offset {
            hole = Int64(offset + length)
        } else {
            dataCache.withLock { c in
                if c.generation == cached.generation { c = (c.generation, offset, UInt64(hole)) }
            }
        }
        let n = min(length, UInt64(hole) - offset)
        return BlockExtent(flags: [.data, .offsetValid], length: n, hostOffset: offset, file: self)
    }

    public func allocatedHostBytes() -> UInt64? {
        let n = clinux_allocated_bytes(file.fd)
        return n < 0 ? nil : UInt64(n)
    }

    public func formatSpecificInfo() -> JSONValue? {
        .object([("type", .string("file")), ("data", .object([]))])
    }

    public func driverInfo() -> DriverInfo? { DriverInfo() }

    public func close() throws {
        if closed.exchange(true, ordering: .acquiringAndReleasing) { return }
        lockState.withLock { state in
            if state.locked { ImageLock.release(fd: file.fd) }
            state.locked = false
        }
        file.close()
    }
}

/// Writing zero buffers, the fallback when the host cannot zero a range by itself.
enum ZeroBuffer {
    static let chunk = 1 << 20
    nonisolated(unsafe) static let zeroes: UnsafeMutableRawPointer = {
        let p = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 4096)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: chunk)
        return p
    }()

    static func writeZeroes(to node: FileNode, at offset: UInt64, length: UInt64, force: Bool = false) throws {
        var done: UInt64 = 0
        while done < length {
            let n = Int(min(UInt64(chunk), length - done))
            try node.file.write(at: offset + done, from: UnsafeRawBufferPointer(start: zeroes, count: n))
            done += UInt64(n)
        }
    }
}

extension FileNode: HostMappedNode {
    /// A regular file opened without O_DIRECT maps one to one. (Block devices and O_DIRECT files
    /// take the ordinary path: copy_file_range would bypass their alignment rules.)
    public var canWriteDirect: Bool { !isReadOnly && !isBlockDevice && requestAlignment == 1 }

    public func hostExtent(at offset: UInt64, length: UInt64) throws -> HostExtent? {
        guard !isBlockDevice, requestAlignment == 1 else { return nil }
        let end = currentSize.load(ordering: .acquiring)
        guard offset < end, length > 0 else { return nil }
        return HostExtent(file: file, offset: offset, length: min(length, end - offset))
    }

    public func writeDirect(at offset: UInt64, length: UInt64, fill: (HostExtent) throws -> Void) throws -> UInt64 {
        defer { invalidateDataCache() }
        guard canWriteDirect, length > 0 else { return 0 }
        if length >= 64 << 10, allocatesBeforeWrite.load(ordering: .relaxed) { allocate(at: offset, length: length) }
        try fill(HostExtent(file: file, offset: offset, length: length))
        noteEnd(offset + length)
        return length
    }
}
