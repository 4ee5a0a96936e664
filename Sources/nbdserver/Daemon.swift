// --fork and --pid-file, as qemu-nbd does them: the parent waits on a pipe that is the child's
// stderr until the server is ready; anything the child printed meanwhile is relayed and makes the
// parent exit 1, silence makes it exit 0. The child detaches (setsid, stdio to /dev/null) but keeps
// the original stderr for later messages.
import Glibc

enum Daemon {
    nonisolated(unsafe) private static var savedStderr: Int32 = -1

    /// Closes descriptors the daemon inherited but does not use (a parent's pipes and sockets would
    /// otherwise stay open for the server's whole life), keeping stdio, `keep` and those from 3
    /// up to `3 + activation` (socket activation).
    static func closeInherited(keep: Set<Int32>, activation: Int) {
        guard let d = opendir("/proc/self/fd") else { return }
        var fds: [Int32] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if let fd = Int32(name) { fds.append(fd) }
        }
        let own = dirfd(d)
        closedir(d)
        for fd in fds where fd > 2 && fd != own && !keep.contains(fd) && !(fd >= 3 && fd < 3 + Int32(activation)) {
            close(fd)
        }
    }

    static func forkWithErrorPipe(keepStderr: Bool, activation: Int) {
        var fds: [Int32] = [0, 0]
        if pipe(&fds) < 0 {
            Program.fail("Error setting up communication pipe: \(String(cString: strerror(errno)))")
        }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let pid = fork()
        if pid < 0 {
            Program.fail("Failed to fork: \(String(cString: strerror(errno)))")
        }
        if pid > 0 {
            close(fds[1])
            var errors = false
            var buf = [UInt8](repeating: 0, count: 1024)
            while true {
                let n = buf.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, 1024) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                errors = true
                _ = buf.withUnsafeBytes { write(2, $0.baseAddress, n) }
            }
            exit(errors ? 1 : 0)
        }
        close(fds[0])
        closeInherited(keep: [fds[1], Trace.output], activation: activation)
        if keepStderr { savedStderr = fcntl(2, F_DUPFD_CLOEXEC, 3) }
        // Detach: a second fork so the server is not a session leader, then stdio to /dev/null.
        let p2 = fork()
        if p2 < 0 {
            dup2(fds[1], 2)
            Program.fail("Failed to daemonize: \(String(cString: strerror(errno)))")
        }
        if p2 > 0 { _exit(0) }
        setsid()
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            dup2(null, 0)
            dup2(null, 1)
            close(null)
        }
        dup2(fds[1], 2)
        close(fds[1])
    }

    /// The server is up: give stderr back (closing the pipe lets the parent exit 0).
    static func serverReady() {
        if savedStderr >= 0 {
            dup2(savedStderr, 2)
            close(savedStderr)
            savedStderr = -1
        }
    }

    static func writePidFile(_ path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        if fd < 0 {
            Program.fail("Could not create '\(path)': \(String(cString: strerror(errno)))")
        }
        if lockf(fd, F_TLOCK, 0) < 0 {
            Program.fail("Cannot lock pid file '\(path)': \(String(cString: strerror(errno)))")
        }
        _ = ftruncate(fd, 0)
        let s = "\(getpid())\n"
        _ = s.withCString { write(fd, $0, strlen($0)) }
        // The descriptor stays open (and locked) for the life of the server, as QEMU's does.
    }
}
