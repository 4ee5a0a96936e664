// The commit engine: everything allocated above `base` in `top`'s backing chain is written into
// `base`, which first grows if the top is larger (feature B2). imgtool commit uses it; a running
// VM's live commit (block-commit) is the same loop over the same graph.
import Glibc

public struct CommitOptions: Sendable {
    public var rateLimit: UInt64?
    public var progress: (@Sendable (Double) -> Void)?
    public init() {}
}

public enum CommitJob {
    static let chunk: UInt64 = 512 << 10

    /// Copies [0, top.size) where it is allocated above `base` into `base`. `base` must be writable
    /// and somewhere in `top`'s backing chain.
    public static func run(top: any BlockNode, base: any BlockNode, options: CommitOptions = CommitOptions()) throws {
        let length = top.size
        if base.size < length {
            try base.truncate(to: length, preallocation: .off, exact: false)
        }
        var buffer = [UInt8](repeating: 0, count: Int(chunk))
        var offset: UInt64 = 0
        while offset < length {
            let (allocated, n0) = try top.isAllocatedAbove(base: base, at: offset, length: min(chunk, length - offset))
            let n = max(1, n0)
            if allocated {
                let (e, _) = try top.blockStatusAbove(base: base, at: offset, length: n)
                let m = max(1, min(n, e.length))
                if e.flags.contains(.zero) {
                    try base.writeZeroes(at: offset, length: m, flags: .mayUnmap)
                } else {
                    try buffer.withUnsafeMutableBytes { b in
                        let part = UnsafeMutableRawBufferPointer(rebasing: b[0..<Int(m)])
                        try top.read(at: offset, into: part)
                        try base.write(at: offset, from: UnsafeRawBufferPointer(part), flags: [])
                    }
                }
                offset += m
            } else {
                offset += n
            }
            options.progress?(Double(offset) / Double(max(length, 1)))
            if let limit = options.rateLimit, limit > 0, allocated {
                usleepFor(bytes: n, limit: limit)
            }
        }
        try base.flush()
    }
}

func usleepFor(bytes: UInt64, limit: UInt64) {
    usleep(UInt32(min(Double(bytes) / Double(limit) * 1_000_000, 10_000_000)))
}

/// A format that can drop all its data at once (QEMU's bdrv_make_empty): commit empties the top.
public protocol EmptiableNode: BlockNode {
    func makeEmpty() throws
}

/// A format that records a backing file name in its header (qemu-img rebase, commit -b).
public protocol BackingChangeableNode: BlockNode {
    func changeBackingFile(_ name: String?, format: String?) throws
}
