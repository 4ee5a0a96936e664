// Image locking, compatible with QEMU's file driver, so that our tools and QEMU's refuse each other's
// conflicting opens.
//
// QEMU locks single bytes of the image file with open-file-description (OFD) locks: byte 100+i is
// held (shared) while this opener uses permission i, byte 200+i while it does NOT let others have
// permission i. Before taking a permission we test that nobody else holds byte 200+i; before refusing
// to share one, that nobody holds byte 100+i. The permission bits and their names are QEMU's
// (BLK_PERM_*), and so are the messages.
import CLinux
import Glibc

public struct BlockPermissions: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let consistentRead = BlockPermissions(rawValue: 1 << 0)
    public static let write = BlockPermissions(rawValue: 1 << 1)
    public static let writeUnchanged = BlockPermissions(rawValue: 1 << 2)
    public static let resize = BlockPermissions(rawValue: 1 << 3)
    public static let all: BlockPermissions = [.consistentRead, .write, .writeUnchanged, .resize]

    static let names = ["consistent read", "write", "write unchanged", "resize"]
    static let count = 4

    /// The permissions QEMU's tools end up holding on an image file.
    /// - Every opener takes consistent read; writers take write, and resize when a format with
    ///   metadata sits on the file or the opener resizes.
    /// - The opener shares everything, except `noShare` (qemu-img convert's source) shares only reads;
    ///   a format with metadata never lets others write or resize its file (QEMU's
    ///   bdrv_default_perms_for_storage), unless force-share (-U, read-only) overrides all of it.
    public static func forOpen(writable: Bool, forceShare: Bool, noShare: Bool = false, metadata: Bool = false,
                               resize: Bool = false) -> (perm: BlockPermissions, shared: BlockPermissions) {
        var perm: BlockPermissions = [.consistentRead]
        if writable { perm.insert(.write) }
        if writable && (resize || metadata) { perm.insert(.resize) }
        if forceShare { return (perm, .all) }
        var shared: BlockPermissions = noShare ? [.consistentRead, .writeUnchanged] : .all
        if metadata { shared.subtract([.write, .resize]) }
        return (perm, shared)
    }
}

/// The lock bytes one opener holds on one file descriptor.
struct ImageLock {
    static let permBase: Int64 = 100
    static let sharedBase: Int64 = 200

    /// Takes the bytes for `perm`/`shared` and checks nobody conflicts; on conflict, releases what it
    /// took and throws QEMU's message.
    static func acquire(fd: Int32, perm: BlockPermissions, shared: BlockPermissions, filename: String) throws {
        try apply(fd: fd, perm: perm, shared: shared, filename: filename)
        do {
            try check(fd: fd, perm: perm, shared: shared, filename: filename)
        } catch {
            release(fd: fd)
            throw error
        }
    }

    static func apply(fd: Int32, perm: BlockPermissions, shared: BlockPermissions, filename: String) throws {
        for i in 0..<BlockPermissions.count {
            let bit = BlockPermissions(rawValue: 1 << UInt64(i))
            let permType = perm.contains(bit) ? clinux_F_RDLCK : clinux_F_UNLCK
            if clinux_ofd_setlk(fd, permBase + Int64(i), 1, permType) < 0 {
                throw lockError("Failed to lock byte \(permBase + Int64(i))", errno: errno, filename: filename)
            }
            let sharedType = shared.contains(bit) ? clinux_F_UNLCK : clinux_F_RDLCK
            if clinux_ofd_setlk(fd, sharedBase + Int64(i), 1, sharedType) < 0 {
                throw lockError("Failed to lock byte \(sharedBase + Int64(i))", errno: errno, filename: filename)
            }
        }
    }

    static func check(fd: Int32, perm: BlockPermissions, shared: BlockPermissions, filename: String) throws {
        for i in 0..<BlockPermissions.count where perm.contains(BlockPermissions(rawValue: 1 << UInt64(i))) {
            if isLockedByOthers(fd: fd, byte: sharedBase + Int64(i)) {
                throw lockError("Failed to get \"\(BlockPermissions.names[i])\" lock", errno: EAGAIN, filename: filename)
            }
        }
        for i in 0..<BlockPermissions.count where !shared.contains(BlockPermissions(rawValue: 1 << UInt64(i))) {
            if isLockedByOthers(fd: fd, byte: permBase + Int64(i)) {
                throw lockError("Failed to get shared \"\(BlockPermissions.names[i])\" lock", errno: EAGAIN, filename: filename)
            }
        }
    }

    static func release(fd: Int32) {
        _ = clinux_ofd_setlk(fd, permBase, Int64(BlockPermissions.count), clinux_F_UNLCK)
        _ = clinux_ofd_setlk(fd, sharedBase, Int64(BlockPermissions.count), clinux_F_UNLCK)
    }

    /// Whether another open file description holds any lock on `byte` (our own never conflicts).
    static func isLockedByOthers(fd: Int32, byte: Int64) -> Bool {
        var conflict: Int16 = clinux_F_UNLCK
        if clinux_ofd_getlk(fd, byte, 1, clinux_F_WRLCK, &conflict) < 0 { return false }
        return conflict != clinux_F_UNLCK
    }

    static func lockError(_ message: String, errno code: Int32, filename: String) -> BlockError {
        BlockError(.lockConflict, message, errno: code, hint: "Is another process using the image [\(filename)]?")
    }
}
