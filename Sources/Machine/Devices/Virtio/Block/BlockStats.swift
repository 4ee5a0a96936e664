// Per-device I/O counters in QEMU's BlockDeviceStats terms (query-blockstats, info blockstats).
import Synchronization

public final class BlockStats: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var readBytes: UInt64 = 0, writeBytes: UInt64 = 0
        public var readOps: UInt64 = 0, writeOps: UInt64 = 0, flushOps: UInt64 = 0
        public var unmapOps: UInt64 = 0, unmapBytes: UInt64 = 0
        public var failedReadOps: UInt64 = 0, failedWriteOps: UInt64 = 0, failedFlushOps: UInt64 = 0
        public var failedUnmapOps: UInt64 = 0, invalidOps: UInt64 = 0
        public var readTimeNs: UInt64 = 0, writeTimeNs: UInt64 = 0, flushTimeNs: UInt64 = 0
        public var wrHighestOffset: UInt64 = 0
        public init() {}
    }
    private let s = Mutex(Snapshot())
    public init() {}
    public var snapshot: Snapshot { s.withLock { $0 } }
    public func update(_ body: (inout Snapshot) -> Void) { s.withLock { body(&$0) } }
}
