// The one error type of the block library.
//
// `message` is already in QEMU's wording (what follows "qemu-img: " on stderr), so the programs print it
// as is. `errno` is kept for the boundaries that need a number (NBD error codes, exit statuses).
// `hint` carries QEMU's extra lines (error_append_hint), printed after the message.
import Glibc

public struct BlockError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case io             // the host said no (EIO, ENOSPC, ...)
        case notFound
        case permission
        case invalidImage   // a header or table that cannot be right
        case corrupt        // QEMU would mark the image corrupt
        case unsupported    // a valid feature we (or this driver) do not do
        case invalidArgument
        case lockConflict
        case readOnly
        case outOfRange     // request past the end of the node
    }

    public var kind: Kind
    public var message: String
    public var errno: Int32
    public var hint: String?

    public init(_ kind: Kind, _ message: String, errno: Int32 = EIO, hint: String? = nil) {
        self.kind = kind
        self.message = message
        self.errno = errno
        self.hint = hint
    }

    public var description: String { message }

    /// A new error whose message is `prefix` followed by this one's, as QEMU's error_prepend does.
    public func prepending(_ prefix: String) -> BlockError {
        var e = self
        e.message = prefix + message
        return e
    }

    /// `strerror` text for an errno, as QEMU prints it (e.g. "No such file or directory").
    public static func strerror(_ code: Int32) -> String {
        String(cString: Glibc.strerror(code))
    }

    /// An error from a failed system call, worded "<what>: <strerror>".
    public static func system(_ what: String, errno code: Int32) -> BlockError {
        let kind: Kind
        switch code {
        case ENOENT: kind = .notFound
        case EACCES, EPERM: kind = .permission
        case EROFS: kind = .readOnly
        case EINVAL: kind = .invalidArgument
        case ENOTSUP: kind = .unsupported
        default: kind = .io
        }
        return BlockError(kind, "\(what): \(strerror(code))", errno: code)
    }

    public static func invalid(_ message: String) -> BlockError {
        BlockError(.invalidImage, message, errno: EINVAL)
    }

    public static func unsupported(_ message: String) -> BlockError {
        BlockError(.unsupported, message, errno: ENOTSUP)
    }

    public static func corrupt(_ message: String) -> BlockError {
        BlockError(.corrupt, message, errno: EIO)
    }
}
