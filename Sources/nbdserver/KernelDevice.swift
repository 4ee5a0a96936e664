// -c/--connect and -d/--disconnect: hand the served image to the kernel's NBD client (/dev/nbdN).
//
// The kernel driver takes a connected socket after the handshake (NBD_SET_SOCK) and serves the
// device from it until NBD_DO_IT returns. Where /dev/nbdN does not exist (no nbd module), the open
// fails with qemu-nbd's message and status 1.
import Glibc
import NBD

enum KernelDevice {
    // _IO(0xab, n): the nbd ioctls.
    static let setSock: UInt = 0xab00
    static let setBlockSize: UInt = 0xab01
    static let doIt: UInt = 0xab03
    static let clearSock: UInt = 0xab04
    static let clearQueue: UInt = 0xab05
    static let setSizeBlocks: UInt = 0xab07
    static let disconnectIoctl: UInt = 0xab08
    static let setTimeout: UInt = 0xab09
    static let setFlags: UInt = 0xab0a
    static let blkROSet: UInt = 0x125d

    /// An ioctl whose argument is a plain unsigned long (passed in the pointer slot, full width).
    static func ioctlValue(_ fd: Int32, _ request: UInt, _ arg: UInt) -> Int32 {
        guard let p = UnsafeMutableRawPointer(bitPattern: arg) else { return ioctl(fd, request) }
        return ioctl(fd, request, p)
    }

    static func disconnect(_ a: ServerArguments) -> Int32 {
        let path = a.file ?? ""
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            Program.fail("Cannot open \(path): \(String(cString: strerror(errno)))")
        }
        _ = ioctl(fd, clearQueue)
        _ = ioctl(fd, disconnectIoctl)
        _ = ioctl(fd, clearSock)
        close(fd)
        print("\(path) disconnected")
        return 0
    }

    /// Starts the thread that connects `device` to our own server on `socketPath`.
    static func connect(device: String, socketPath: String, verbose: Bool, image: String) {
        // Fail early, before serving, when the device cannot be opened at all.
        let probe = open(device, O_RDWR | O_CLOEXEC)
        if probe < 0 {
            Program.fail("Failed to open \(device): \(String(cString: strerror(errno)))")
        }
        close(probe)
        try? Threads.spawn(stackSize: 256 * 1024) {
            let status = run(device: device, socketPath: socketPath, verbose: verbose, image: image)
            exit(status)
        }
    }

    private static func run(device: String, socketPath: String, verbose: Bool, image: String) -> Int32 {
        let sock: Int32
        let details: NBDExportDetails
        do {
            (sock, details) = try NBDClient.handshakeForHandoff(.unix(path: socketPath), config: NBDClientConfig())
        } catch {
            Program.report("\(error)")
            return 1
        }
        let fd = open(device, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            Program.report("Failed to open \(device): \(String(cString: strerror(errno)))")
            return 1
        }
        let blockSize: UInt = 512
        let steps: [(UInt, UInt, String)] = [
            (setBlockSize, blockSize, "Failed setting NBD block size"),
            (setSizeBlocks, UInt(details.size / UInt64(blockSize)), "Failed setting size (in blocks)"),
            (setFlags, UInt(details.flags.rawValue), "Failed setting flags"),
            (clearSock, 0, "Failed clearing NBD socket"),
            (setSock, UInt(sock), "Failed to set NBD socket"),
        ]
        for (req, arg, what) in steps where ioctlValue(fd, req, arg) < 0 {
            Program.report("\(what): \(String(cString: strerror(errno)))")
            return 1
        }
        var ro: Int32 = details.flags.contains(.readOnly) ? 1 : 0
        _ = ioctl(fd, blkROSet, &ro)
        if verbose {
            Program.writeStderr("NBD device \(device) is now connected to \(image)\n")
        } else {
            dup2(1, 2)
        }
        let r = ioctl(fd, doIt)
        _ = ioctl(fd, clearQueue)
        _ = ioctl(fd, clearSock)
        close(fd)
        return r < 0 && errno != EPIPE ? 1 : 0
    }
}
