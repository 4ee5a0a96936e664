// Guest bytes that sit verbatim in a local host file, for copies that never pass through a buffer
// (convert's copy_file_range path, T4): a raw image over a file, a qcow2 data cluster run.
//
// Reading: `hostExtent` says where a guest range lives (the caller then reads the descriptor
// directly). Writing: `writeDirect` makes room for a guest range (a qcow2 allocates clusters) and
// lets the caller fill the host bytes itself, then finishes the metadata (qcow2 links the L2
// entries only after the data is in place, as its ordinary allocating write does).
import CLinux
import Glibc

/// Bytes of a host file: the file, offset, length.
public struct HostExtent: Sendable {
    public let file: PosixFile
    public let offset: UInt64
    public let length: UInt64
    public init(file: PosixFile, offset: UInt64, length: UInt64) {
        self.file = file
        self.offset = offset
        self.length = length
    }
    public var fd: Int32 { file.fd }
}

public protocol HostMappedNode: BlockNode {
    /// Whether `writeDirect` can take writes at all (so a format knows before it allocates).
    var canWriteDirect: Bool { get }

    /// Where the guest bytes from `offset` (at most `length`) are stored verbatim in a host file,
    /// and how many of them are contiguous there; nil when they are not (zero, unallocated,
    /// compressed, from a backing file, not a local regular file).
    func hostExtent(at offset: UInt64, length: UInt64) throws -> HostExtent?

    /// Writes guest bytes from `offset` (at most `length`) by calling `fill` with the host extent
    /// they must be put in (once). Returns the guest bytes so written: 0 when this node cannot take
    /// the range this way (the caller writes from a buffer instead).
    func writeDirect(at offset: UInt64, length: UInt64, fill: (HostExtent) throws -> Void) throws -> UInt64
}

/// Copies `length` bytes between two host files in the kernel (copy_file_range). Where the kernel
/// cannot (another filesystem, an old kernel, a special file), copies through `bounce` instead and
/// returns false, so the caller can stop asking.
public func copyHostBytes(from src: HostExtent, to dst: HostExtent, bounce: UnsafeMutableRawBufferPointer,
                          useKernel: Bool) throws -> Bool {
    precondition(src.length == dst.length)
    var done: UInt64 = 0
    var kernel = useKernel
    var pastEnd = false
    while done < src.length {
        let want = src.length - done
        if kernel && !pastEnd {
            let r = clinux_copy_file_range(src.fd, Int64(src.offset + done), dst.fd, Int64(dst.offset + done), want)
            if r > 0 { done += UInt64(r); continue }
            let e = errno
            if r == 0 {
                pastEnd = true     // the source ends early: the rest reads as zeroes, as in read()
            } else {
                guard e == EXDEV || e == EINVAL || e == EOPNOTSUPP || e == ENOSYS || e == EBADF else {
                    throw BlockError.system("Could not copy \(want) bytes from offset \(src.offset + done) of '\(src.file.path)'", errno: e)
                }
                kernel = false
            }
        }
        let n = Int(min(want, UInt64(bounce.count)))
        let part = UnsafeMutableRawBufferPointer(rebasing: bounce[0..<n])
        try src.file.read(at: src.offset + done, into: part)
        try dst.file.write(at: dst.offset + done, from: UnsafeRawBufferPointer(part))
        done += UInt64(n)
    }
    return kernel
}
