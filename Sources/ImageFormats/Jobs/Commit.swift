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
    /// Copies [0, top.size) where it is allocated above `base` into `base`. `base` must be writable
    /// and somewhere in `top`'s backing chain. The copy is convert's engine (reads on worker
    /// threads, writes in order) restricted to what lies above `base`, data copied as it is.
    public static func run(top: any BlockNode, base: any BlockNode, options: CommitOptions = CommitOptions()) throws {
        let length = top.size
        if base.size < length {
            try base.truncate(to: length, preallocation: .off, exact: false)
        }
        var conv = ConvertOptions()
        conv.copyAbove = base
        conv.detectZeroes = false
        conv.rateLimit = options.rateLimit
        conv.progress = options.progress
        do {
            try Converter(sources: [top], target: base, options: conv).run()
        } catch let e as ConvertError {
            throw BlockError(.io, e.message, errno: EIO)
        }
        try base.flush()
    }
}

/// A format that can drop all its data at once (QEMU's bdrv_make_empty): commit empties the top.
public protocol EmptiableNode: BlockNode {
    func makeEmpty() throws
}

/// A format that records a backing file name in its header (qemu-img rebase, commit -b).
public protocol BackingChangeableNode: BlockNode {
    func changeBackingFile(_ name: String?, format: String?) throws
}
