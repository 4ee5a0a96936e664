// A file descriptor with positional I/O only, looped until complete, EINTR retried in one place.
//
// Short reads at end of file are zero-filled (QEMU's file driver does the same: a format may read
// past the end of a file it is growing). Every failure names the operation and the offset.
import CLinux
import Glibc

public final class PosixFile: @unchecked Sendable {
    public let fd: Int32
    public let path: String
    private var closed = false

    public init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Opens `path`; the error is QEMU's "Could not open 'path': <strerror>".
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws -> PosixFile {
        var fd: Int32
        repeat { fd = Glibc.open(path, flags | O_CLOEXEC, mode) } while fd < 0 && errno == EINTR
        if fd < 0 {
            throw BlockError.system("Could not open '\(path)'", errno: errno)
        }
        return PosixFile(fd: fd, path: path)
    }

    deinit { if !closed { Glibc.close(fd) } }

    public func close() {
        if !closed {
            closed = true
            Glibc.close(fd)
        }
    }

    /// `offset + count` as a file offset, or EIO (QEMU's answer to a request past its maximum
    /// length) when it does not fit one: a corrupt image's tables can point anywhere in 64 bits.
    private func fileOffset(_ offset: UInt64, _ count: Int, _ what: @autoclosure () -> String) throws -> off_t {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= UInt64(Int64.max) else { throw BlockError.system(what(), errno: EIO) }
        return off_t(offset)
    }

    /// Reads exactly `buffer.count` bytes; bytes past end of file read as zero.
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let start = try fileOffset(offset, buffer.count, "Could not read \(buffer.count) bytes at offset \(offset) of '\(path)'")
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, start + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw BlockError.system("Could not read \(buffer.count) bytes at offset \(offset) of '\(path)'", errno: errno)
            }
            if n == 0 {
                (buffer.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - done)
                return
            }
            done += n
        }
    }

    /// Fills `buffers` in order from the consecutive bytes at `offset` with preadv (at most IOV_MAX
    /// pieces per call); bytes past end of file read as zero, as in `read`.
    public func readScattered(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer]) throws {
        let maxPieces = 1024   // IOV_MAX on Linux
        var first = 0, skip = 0   // the next piece to fill, and the bytes of it already filled
        _ = try fileOffset(offset, buffers.reduce(0) { $0 + $1.count }, "Could not read at offset \(offset) of '\(path)'")
        var at = offset
        try withUnsafeTemporaryAllocation(of: iovec.self, capacity: min(buffers.count, maxPieces)) { iov in
            while first < buffers.count {
                let n = min(buffers.count - first, maxPieces)
                for k in 0..<n {
                    let b = buffers[first + k], s = k == 0 ? skip : 0
                    iov[k] = iovec(iov_base: b.baseAddress.map { $0 + s }, iov_len: b.count - s)
                }
                var got = preadv(fd, iov.baseAddress, Int32(n), off_t(at))
                if got < 0 {
                    if errno == EINTR { continue }
                    throw BlockError.system("Could not read at offset \(at) of '\(path)'", errno: errno)
                }
                if got == 0 {   // end of file: the rest reads as zero
                    for k in first..<buffers.count {
                        let s = k == first ? skip : 0
                        if buffers[k].count > s { (buffers[k].baseAddress! + s).initializeMemory(as: UInt8.self, repeating: 0, count: buffers[k].count - s) }
                    }
                    return
                }
                at += UInt64(got)
                while got > 0 && first < buffers.count {
                    let left = buffers[first].count - skip
                    if got >= left { got -= left; first += 1; skip = 0 } else { skip += got; got = 0 }
                }
            }
        }
    }

    /// Reads exactly `buffer.count` bytes; a short read is an error naming the offset.
    public func readExactly(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let start = try fileOffset(offset, buffer.count, "Could not read \(buffer.count) bytes at offset \(offset) of '\(path)'")
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, start + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw BlockError.system("Could not read \(buffer.count) bytes at offset \(offset) of '\(path)'", errno: errno)
            }
            if n == 0 {
                throw BlockError(.invalidImage, "Unexpected end of file at offset \(offset + UInt64(done)) of '\(path)'", errno: EIO)
            }
            done += n
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        let start = try fileOffset(offset, buffer.count, "Could not write \(buffer.count) bytes at offset \(offset) of '\(path)'")
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, start + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw BlockError.system("Could not write \(buffer.count) bytes at offset \(offset) of '\(path)'", errno: errno)
            }
            done += n
        }
    }

    public func sync() throws {
        var r: Int32
        repeat { r = fdatasync(fd) } while r < 0 && errno == EINTR
        if r < 0 { throw BlockError.system("Could not flush '\(path)'", errno: errno) }
    }

    public func truncate(_ size: UInt64) throws {
        var r: Int32
        let length = try fileOffset(size, 0, "Failed to resize the file")
        repeat { r = ftruncate(fd, length) } while r < 0 && errno == EINTR
        if r < 0 { throw BlockError.system("Failed to resize the file", errno: errno) }
    }

    /// The size of a regular file, or of a block device.
    public func currentSize() throws -> UInt64 {
        if clinux_is_block_device(fd) != 0 {
            var size: UInt64 = 0
            if clinux_blk_getsize64(fd, &size) < 0 { throw BlockError.system("Failed to get the size of '\(path)'", errno: errno) }
            return size
        }
        var st = stat()
        if fstat(fd, &st) < 0 { throw BlockError.system("Could not stat '\(path)'", errno: errno) }
        return UInt64(max(0, st.st_size))
    }

    public var isBlockDevice: Bool { clinux_is_block_device(fd) != 0 }

    /// fallocate; returns the errno on failure (0 on success) so callers can degrade.
    public func fallocate(mode: Int32, offset: UInt64, length: UInt64) -> Int32 {
        guard length <= UInt64(Int64.max), offset <= UInt64(Int64.max) - length else { return EINVAL }
        return clinux_fallocate(fd, mode, Int64(offset), Int64(length)) == 0 ? 0 : errno
    }
}
