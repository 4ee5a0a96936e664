// The one error type of the NBD module.
//
// A kind says what went wrong (the peer hung up, broke the protocol, refused an option, answered a
// command with an error, or the host failed a call); `message` is in QEMU's wording where QEMU has
// one, so the programs print it as is; `errno` is what a BlockError or an exit status needs.
import Glibc

public struct NBDError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// A system call failed (socket, TLS, file).
        case io
        /// The peer closed the connection.
        case eof
        /// A deadline passed (handshake limit).
        case timeout
        /// The peer sent something the protocol forbids.
        case protocolViolation
        /// The server refused an option with this reply type.
        case optionRefused(NBDOptionReplyType)
        /// The server answered a command with an error (errno is set).
        case commandFailed
        /// A local argument or configuration is wrong.
        case invalidArgument
        /// TLS setup or handshake failed.
        case tls
    }

    public var kind: Kind
    public var message: String
    public var errno: Int32

    public init(_ kind: Kind, _ message: String, errno: Int32 = EIO) {
        self.kind = kind
        self.message = message
        self.errno = errno
    }

    public var description: String { message }

    static func system(_ what: String, _ code: Int32) -> NBDError {
        NBDError(.io, "\(what): \(String(cString: strerror(code)))", errno: code)
    }

    static func violation(_ message: String) -> NBDError {
        NBDError(.protocolViolation, message, errno: EINVAL)
    }

    public func prepending(_ prefix: String) -> NBDError {
        var e = self
        e.message = prefix + message
        return e
    }
}
