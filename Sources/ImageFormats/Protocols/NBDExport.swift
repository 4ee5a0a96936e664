// Serving a block node over NBD: the adapter from the graph's `BlockNode` to the NBD server's
// `NBDBackend`, and the export settings qemu-nbd derives from its flags.
//
// This is the one boundary where a `BlockError` becomes an NBD errno (the NBD module maps errno to
// the wire). It lives in the library, not in nbdserver, so that any program holding a graph (vmrun's
// NBD export of a running disk) serves it the same way.
//
// QEMU behaviours kept here: the export size is the node size rounded up to 512 bytes (QEMU's block
// layer counts whole sectors; the tail reads as zeroes); discard requests are ignored unless
// --discard=unmap (write-zeroes may still punch holes, as in qemu-nbd); --detect-zeroes turns
// all-zero writes into write-zeroes; block status is the
// status through the whole backing chain; qemu:allocation-depth is 0 for unallocated, else the
// layer (1 = top); a raw image whose format was guessed by probing wants 512-byte requests.
import Glibc
import NBD

public struct NBDExportSettings: Sendable {
    public enum Discard: String, Sendable { case ignore, unmap }
    public enum DetectZeroes: String, Sendable { case off, on, unmap }

    public var name = ""
    public var description: String?
    public var readOnly = false
    public var discard: Discard = .ignore
    public var detectZeroes: DetectZeroes = .off
    /// -A: offer qemu:allocation-depth.
    public var allocationDepth = false
    /// -e: how many clients may connect at once (0 = unlimited); decides multi-conn as QEMU does.
    public var maxConnections = 1
    /// --cache=writethrough/directsync: every write is made durable before it is acknowledged.
    public var writeThrough = false
    /// -B: persistent dirty bitmaps to offer as qemu:dirty-bitmap:NAME.
    public var bitmaps: [String] = []

    public init() {}
}

public final class BlockNodeNBDBackend: NBDBackend, @unchecked Sendable {
    public let node: any BlockNode
    public let settings: NBDExportSettings
    /// The size clients see (whole 512-byte sectors).
    public let exportSize: UInt64

    private let bitmaps: [String: PersistentBitmap]
    /// Zero-copy reads only where every layer stores guest bytes unchanged in its file.
    private let plainLayers: Bool

    /// Throws QEMU's errors for -B: "Bitmap 'X' is not found" or an inconsistent bitmap.
    public init(node: any BlockNode, settings: NBDExportSettings) throws {
        self.node = node
        self.settings = settings
        let s = node.size
        self.exportSize = s % 512 == 0 ? s : (s / 512 + 1) * 512
        var found: [String: PersistentBitmap] = [:]
        for name in settings.bitmaps {
            found[name] = try PersistentBitmap.find(name, in: node)
        }
        bitmaps = found
        var plain = true
        var stack: [any BlockNode] = [node]
        while let n = stack.popLast() {
            if !["raw", "qcow2", "file"].contains(n.driverName) { plain = false }
            stack.append(contentsOf: n.children.map(\.node))
        }
        plainLayers = plain
    }

    /// The NBD export for this node, with the flags and limits qemu-nbd advertises.
    public func makeExport() -> NBDExport {
        var flags: NBDTransmissionFlags = [.hasFlags, .sendFlush, .sendFUA, .sendCache]
        if settings.maxConnections != 1 { flags.insert(.canMultiConn) }
        if settings.readOnly || node.isReadOnly {
            flags.insert(.readOnly)
        } else {
            flags.formUnion([.sendTrim, .sendWriteZeroes, .sendFastZero])
        }
        var minimum = max(UInt32(1), UInt32(min(node.requestAlignment, 65536)))
        if let raw = node as? RawNode, raw.probed { minimum = max(minimum, 512) }
        var extra: [NBDMetaContext] = []
        if settings.allocationDepth { extra.append(.allocationDepth) }
        // qemu-nbd prepends each -B to its list, so the contexts come in reverse order.
        for name in settings.bitmaps.reversed() { extra.append(.dirtyBitmap(name)) }
        return NBDExport(name: settings.name, description: settings.description, backend: self, size: exportSize,
                         flags: flags, minimumBlock: minimum, preferredBlock: max(4096, minimum),
                         maximumBlock: UInt32(NBDLimits.maxBuffer), extraContexts: extra)
    }

    // MARK: the error boundary

    private func run<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as BlockError {
            throw NBDBackendError(errno: e.errno, e.message)
        } catch let e as NBDBackendError {
            throw e
        } catch {
            throw NBDBackendError(errno: EIO, "\(error)")
        }
    }

    // MARK: I/O

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try run {
            let size = node.size
            let inside = offset >= size ? 0 : Int(min(UInt64(buffer.count), size - offset))
            if inside > 0 { try node.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<inside])) }
            if inside < buffer.count {
                (buffer.baseAddress! + inside).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - inside)
            }
        }
    }

    private func writeFlags(fua: Bool) -> WriteFlags {
        fua || settings.writeThrough ? [.fua] : []
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws {
        try run {
            if settings.detectZeroes != .off && isAllZero(buffer) {
                var f = writeFlags(fua: fua)
                if settings.detectZeroes == .unmap { f.insert(.mayUnmap) }
                try node.writeZeroes(at: offset, length: UInt64(buffer.count), flags: f)
                return
            }
            try node.write(at: offset, from: buffer, flags: writeFlags(fua: fua))
        }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, fua: Bool, mayTrim: Bool, fast: Bool) throws {
        try run {
            var f = writeFlags(fua: fua)
            // qemu-nbd honours "may punch a hole" on write-zeroes whatever --discard says (only
            // NBD_CMD_TRIM depends on it).
            if mayTrim { f.insert(.mayUnmap) }
            if fast { f.insert(.noFallback) }
            try node.writeZeroes(at: offset, length: length, flags: f)
        }
    }

    public func trim(at offset: UInt64, length: UInt64, fua: Bool) throws {
        try run {
            guard settings.discard == .unmap else { return }
            try node.discard(at: offset, length: min(length, node.size > offset ? node.size - offset : 0))
            if fua { try node.flush() }
        }
    }

    public func flush() throws {
        try run { try node.flush() }
    }

    public func cache(at offset: UInt64, length: UInt64) throws {
        // Prefetch: read the data once (into a small scratch buffer) so the host caches it.
        try run {
            let chunk = 256 * 1024
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
            defer { scratch.deallocate() }
            var done: UInt64 = 0
            let end = min(offset + length, node.size)
            while offset + done < end {
                let n = Int(min(UInt64(chunk), end - offset - done))
                try node.read(at: offset + done, into: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n]))
                done += UInt64(n)
            }
        }
    }

    // MARK: status

    public func zeroStatus(at offset: UInt64, length: UInt64) throws -> (zero: Bool, length: UInt64) {
        try run {
            let size = node.size
            if offset >= size { return (true, length) }
            let (e, _) = try node.blockStatusAbove(base: nil, at: offset, length: min(length, size - offset))
            return (e.flags.contains(.zero), max(1, e.length))
        }
    }

    /// zeroStatus, plus the host file range for data stored as is (raw, or qcow2 data clusters), so
    /// the server can send it with sendfile. Not for O_DIRECT files, nor for compressed clusters.
    public func readStatus(at offset: UInt64, length: UInt64) throws -> NBDReadStatus {
        try run {
            let size = node.size
            if offset >= size { return NBDReadStatus(zero: true, length: length) }
            let (e, _) = try node.blockStatusAbove(base: nil, at: offset, length: min(length, size - offset))
            let len = max(1, e.length)
            var source: (fd: Int32, offset: UInt64)? = nil
            if plainLayers, e.flags.contains(.data) && e.flags.contains(.offsetValid) && !e.flags.contains(.compressed),
               let f = e.file as? FileNode, f.requestAlignment == 1, e.hostOffset + len <= f.size {
                source = (f.file.fd, e.hostOffset)
            }
            return NBDReadStatus(zero: e.flags.contains(.zero), length: len, source: source)
        }
    }

    public func extents(_ context: NBDMetaContext, at offset: UInt64, length: UInt64, limit: Int,
                        into out: inout [NBDExtent]) throws {
        try run {
            let size = node.size
            var pos = offset
            let end = offset + length
            while pos < end && out.count < limit {
                if case .dirtyBitmap(let name) = context {
                    guard let b = bitmaps[name] else { throw BlockError(.notFound, "Bitmap '\(name)' is not found", errno: ENOENT) }
                    let r = b.run(at: pos, maxLength: end - pos)
                    out.append(NBDExtent(length: r.length, flags: r.dirty ? UInt64(NBDState.dirty) : 0))
                    pos += r.length
                    continue
                }
                if pos >= size {
                    // The zero tail up to the next 512-byte boundary.
                    let flags: UInt64 = context == .baseAllocation ? UInt64(NBDState.hole | NBDState.zero) : 1
                    out.append(NBDExtent(length: end - pos, flags: flags))
                    return
                }
                let (e, depth) = try node.blockStatusAbove(base: nil, at: pos, length: min(end, size) - pos)
                let len = max(1, e.length)
                let flags: UInt64
                switch context {
                case .baseAllocation:
                    flags = UInt64((e.flags.contains(.data) ? 0 : NBDState.hole) | (e.flags.contains(.zero) ? NBDState.zero : 0))
                case .allocationDepth:
                    flags = e.flags.contains(.allocated) ? UInt64(depth + 1) : 0
                case .dirtyBitmap:
                    flags = 0   // answered above
                }
                out.append(NBDExtent(length: len, flags: flags))
                pos += len
            }
        }
    }

    private func isAllZero(_ b: UnsafeRawBufferPointer) -> Bool {
        guard let base = b.baseAddress, b.count > 0 else { return true }
        var i = 0
        let words = b.count / 8
        while i < words {
            if base.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
            i += 1
        }
        var j = words * 8
        while j < b.count {
            if b[j] != 0 { return false }
            j += 1
        }
        return true
    }
}

extension BlockNodeNBDBackend {
    /// qemu-nbd forbids resizing the image while it is exported (QEMU's nbd_export_create drops
    /// BLK_PERM_RESIZE from the shared permissions): take the lock byte that says so on the file.
    public func holdExportPermissions(writable: Bool) throws {
        var parent: (any BlockNode)? = nil
        var n: any BlockNode = node
        while !(n is FileNode), let f = n.fileChild {
            parent = n
            n = f
        }
        guard let file = n as? FileNode else { return }
        let metadata = !(parent == nil || parent is RawNode)
        var (perm, shared) = BlockPermissions.forOpen(writable: writable && !file.isReadOnly, forceShare: false,
                                                      metadata: metadata)
        shared.remove(.resize)
        try file.updatePermissions(perm: perm, shared: shared)
        _ = perm
    }
}
