// I/O accounting below the devices (feature B4): a filter node that forwards every call to the node
// it wraps and counts what passes, in QEMU's BlockDeviceStats terms. vmrun installs
// `CountedNode.install()` before opening drives: the block graph then hands every file child and
// backing node through it (`BlockGraph.childInterposer`), so a qcow2 overlay reads its own file and
// its backing image through counters, and query-blockstats shows real numbers for each "parent" and
// "backing" entry of a chain instead of zeroes. The filter is transparent: driver name, filename,
// children, size and block status are the wrapped node's, so query-block and `info block` see the
// same graph as before.
import ImageFormats

public final class CountedNode: BlockNode, @unchecked Sendable {
    public let inner: any BlockNode
    public let role: String
    public let stats = BlockStats()

    public init(_ inner: any BlockNode, role: String) {
        self.inner = inner
        self.role = role
    }

    /// Wraps every file child and backing node the graph opens from now on (idempotent).
    public static func install() {
        BlockGraph.childInterposer = { node, role in
            node is CountedNode ? node : CountedNode(node, role: role)
        }
    }

    /// The counters of `node` when it is a counted node.
    public static func stats(of node: any BlockNode) -> BlockStats.Snapshot? {
        (node as? CountedNode)?.stats.snapshot
    }

    public var driverName: String { inner.driverName }
    public var filename: String { inner.filename }
    public var size: UInt64 { inner.size }
    public var isReadOnly: Bool { inner.isReadOnly }
    public var children: [BlockChild] { inner.children }
    public var requestAlignment: UInt64 { inner.requestAlignment }
    public var hasZeroInit: Bool { inner.hasZeroInit }
    public var supportsBacking: Bool { inner.supportsBacking }
    public var recordedBacking: (name: String, format: String?)? { inner.recordedBacking }
    public var snapshots: [SnapshotInfo] { inner.snapshots }

    public func allocatedHostBytes() -> UInt64? { inner.allocatedHostBytes() }
    public func formatSpecificInfo() -> JSONValue? { inner.formatSpecificInfo() }
    public func driverInfo() -> DriverInfo? { inner.driverInfo() }
    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        try inner.driverBlockStatus(at: offset, length: length, wantZero: wantZero)
    }
    public func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws {
        try inner.truncate(to: newSize, preallocation: preallocation, exact: exact)
    }
    public func close() throws { try inner.close() }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try countedRead(bytes: UInt64(buffer.count)) { try inner.read(at: offset, into: buffer) }
    }

    public func readScattered(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer]) throws {
        try countedRead(bytes: buffers.reduce(UInt64(0)) { $0 + UInt64($1.count) }) {
            try inner.readScattered(at: offset, into: buffers)
        }
    }

    /// Runs one read of `n` bytes and counts it (time, bytes, or a failure).
    private func countedRead(bytes n: UInt64, _ body: () throws -> Void) throws {
        let start = monotonicNanos()
        do {
            try body()
        } catch {
            stats.update { $0.failedReadOps += 1 }
            throw error
        }
        let t = monotonicNanos() - start
        stats.update { s in s.readOps += 1; s.readBytes += n; s.readTimeNs += t }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        let start = monotonicNanos()
        do {
            try inner.write(at: offset, from: buffer, flags: flags)
        } catch {
            stats.update { $0.failedWriteOps += 1 }
            throw error
        }
        let t = monotonicNanos() - start, n = UInt64(buffer.count), end = offset + n
        stats.update { s in
            s.writeOps += 1; s.writeBytes += n; s.writeTimeNs += t
            s.wrHighestOffset = max(s.wrHighestOffset, end)
        }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws {
        let start = monotonicNanos()
        do {
            try inner.writeZeroes(at: offset, length: length, flags: flags)
        } catch {
            stats.update { $0.failedWriteOps += 1 }
            throw error
        }
        let t = monotonicNanos() - start, end = offset + length
        stats.update { s in
            s.writeOps += 1; s.writeBytes += length; s.writeTimeNs += t
            s.wrHighestOffset = max(s.wrHighestOffset, end)
        }
    }

    public func discard(at offset: UInt64, length: UInt64) throws {
        do {
            try inner.discard(at: offset, length: length)
        } catch {
            stats.update { $0.failedUnmapOps += 1 }
            throw error
        }
        stats.update { s in s.unmapOps += 1; s.unmapBytes += length }
    }

    public func flush() throws {
        let start = monotonicNanos()
        do {
            try inner.flush()
        } catch {
            stats.update { $0.failedFlushOps += 1 }
            throw error
        }
        let t = monotonicNanos() - start
        stats.update { s in s.flushOps += 1; s.flushTimeNs += t }
    }
}
