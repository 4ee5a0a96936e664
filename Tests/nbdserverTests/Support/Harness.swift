// Test harness: run nbdserver, qemu-nbd and nbdkit on Unix sockets in a temporary directory, run
// the real clients (nbdinfo, nbdcopy, qemu-img, qemu-io, python3-libnbd) against them, and skip
// with a reason when a tool is missing (CI installs them all, so a skip there is a bug).
@_exported import TestSupport
import Foundation
import XCTest

/// Runs a program to completion (the shared runner, with a two-minute deadline by default).
@discardableResult
func runTool(_ program: String, _ args: [String], stdin: String? = nil, env: [String: String]? = nil,
             timeout: TimeInterval = 120) throws -> ProcessResult {
    try runProcess(program, args, stdin: stdin, env: env, timeout: timeout)
}

func require(_ tools: String...) throws {
    for t in tools {
        try XCTSkipUnless(which(t), "\(t) is not installed (CI installs it: scripts/setup.sh)")
    }
}

/// python3 that has the libnbd bindings (Debian's, not a pyenv one).
func pythonWithLibnbd() throws -> String {
    for py in ["/usr/bin/python3", "python3"] {
        if (try? runTool(py, ["-c", "import nbd"]).status) == 0 { return py }
    }
    throw XCTSkip("python3-libnbd is not installed (CI installs it: scripts/setup.sh)")
}

/// The nbdserver binary SwiftPM built next to the test bundle.
var nbdserverPath: String {
    let candidates = [
        Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("nbdserver").path,
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("nbdserver").path,
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/nbdserver").path,
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
}

/// A server process listening on a Unix socket.
final class ServerProcess {
    let process = Process()
    let socket: String
    let errPipe = Pipe()
    private var stderrData = Data()

    /// Starts `program args` and waits until `socket` accepts connections.
    init(_ program: String, _ args: [String], socket: String, waitForSocket: Bool = true) throws {
        self.socket = socket
        setProgram(of: process, program, args)
        process.standardError = errPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        guard waitForSocket else { return }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: socket) && canConnect(socket) { return }
            if !process.isRunning { break }
            usleep(20_000)
        }
        stop()
        throw NSError(domain: "ServerProcess", code: 1,
                      userInfo: [NSLocalizedDescriptionKey: "\(program) did not start: \(stderr)"])
    }

    var uri: String { "nbd+unix:///?socket=\(socket)" }
    func uri(export: String) -> String { "nbd+unix:///\(export)?socket=\(socket)" }
    /// QEMU's legacy form, which qemu-img and qemu-io take.
    var qemuFilename: String { "nbd:unix:\(socket)" }

    var pid: Int32 { process.processIdentifier }

    /// Everything the server wrote to stderr (after it exited or was stopped).
    var stderr: String {
        if !process.isRunning {
            stderrData.append(errPipe.fileHandleForReading.readDataToEndOfFile())
        }
        return String(decoding: stderrData, as: UTF8.self)
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    func kill9() {
        if process.isRunning {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Waits for the server to exit on its own; false on timeout.
    func waitForExit(timeout: TimeInterval = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return !process.isRunning
    }

    deinit { stop() }
}

func canConnect(_ path: String) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var sa = sockaddr_un()
    sa.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    withUnsafeMutableBytes(of: &sa.sun_path) { raw in
        for (i, b) in bytes.enumerated() where i < raw.count - 1 { raw[i] = b }
    }
    return withUnsafePointer(to: &sa) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
        }
    }
}

/// Our server and qemu-nbd with the same arguments on the same image, side by side.
struct ServerPair {
    let ours: ServerProcess
    let qemu: ServerProcess

    init(dir: TempDir, args: [String], image: String, tag: String = "") throws {
        ours = try ServerProcess(nbdserverPath, ["-k", dir.file("ours\(tag).sock")] + args + [image],
                                 socket: dir.file("ours\(tag).sock"))
        qemu = try ServerProcess("qemu-nbd", ["-k", dir.file("qemu\(tag).sock")] + args + [image],
                                 socket: dir.file("qemu\(tag).sock"))
    }
}

/// Writes a sparse raw test image: `size` bytes, with data at the given (offset, length, seed) runs.
func makeRawImage(_ path: String, size: UInt64, data: [(UInt64, Int, UInt8)]) throws {
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0)
    defer { close(fd) }
    XCTAssertEqual(ftruncate(fd, off_t(size)), 0)
    for (off, len, seed) in data {
        var bytes = [UInt8](repeating: 0, count: len)
        var x = UInt32(seed) &* 2654435761 | 1
        for i in 0..<len {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5
            bytes[i] = UInt8(truncatingIfNeeded: x) | 1
        }
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, len, off_t(off)) }
    }
}
