// The result of a consistency check (QEMU's BdrvCheckResult) and the repair modes.

public struct CheckFix: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let leaks = CheckFix(rawValue: 1)
    public static let errors = CheckFix(rawValue: 2)
}

public struct CheckResult: Sendable, Equatable {
    public var corruptions: Int64 = 0
    public var leaks: Int64 = 0
    public var checkErrors: Int64 = 0
    public var corruptionsFixed: Int64 = 0
    public var leaksFixed: Int64 = 0
    public var imageEndOffset: UInt64 = 0
    public var totalClusters: UInt64 = 0
    public var allocatedClusters: UInt64 = 0
    public var fragmentedClusters: UInt64 = 0
    public var compressedClusters: UInt64 = 0
    public init() {}
}

/// A node whose format can be checked (qemu-img check); others answer "does not support checks".
public protocol CheckableNode: BlockNode {
    /// Checks (and with `fix`, repairs) the image. `log` receives QEMU's per-problem lines
    /// ("Leaked cluster 5 refcount=1 reference=0"), which qemu-img prints on stderr.
    func check(fix: CheckFix, log: (String) -> Void) throws -> CheckResult
}
