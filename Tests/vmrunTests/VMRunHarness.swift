// Running the vmrun binary from tests: locating it next to the test bundle, assembling guest
// programs with nasm, and collecting exit status and output with a time limit.
import Foundation
import XCTest

enum VMRun {
    static var binary: URL {
        // The products directory holds both the test bundle and vmrun (on Linux the bundle URL may
        // be that directory itself or the .xctest inside it).
        let bundle = Bundle(for: Marker.self).bundleURL
        for dir in [bundle, bundle.deletingLastPathComponent()] {
            let candidate = dir.appendingPathComponent("vmrun")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return bundle.appendingPathComponent("vmrun")
    }

    final class Marker {}

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var timedOut: Bool
    }

    static func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("vmrun-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    /// Runs `executable` (vmrun by default) with a deadline; stdin is /dev/null unless given.
    static func run(_ args: [String], executable: URL? = nil, timeout: TimeInterval = 30,
                    environment: [String: String]? = nil) throws -> Result {
        let p = Process()
        p.executableURL = executable ?? binary
        p.arguments = args
        if let environment { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        let outData = LockedData(), errData = LockedData()
        out.fileHandleForReading.readabilityHandler = { outData.append($0.availableData) }
        err.fileHandleForReading.readabilityHandler = { errData.append($0.availableData) }
        try p.run()
        let deadline = Date(timeIntervalSinceNow: timeout)
        var timedOut = false
        while p.isRunning {
            if Date() > deadline { timedOut = true; p.terminate(); break }
            usleep(10_000)
        }
        p.waitUntilExit()
        usleep(50_000)
        out.fileHandleForReading.readabilityHandler = nil
        err.fileHandleForReading.readabilityHandler = nil
        outData.append(out.fileHandleForReading.readDataToEndOfFile())
        errData.append(err.fileHandleForReading.readDataToEndOfFile())
        return Result(status: p.terminationStatus, stdout: outData.string, stderr: errData.string, timedOut: timedOut)
    }

    /// Assembles a guest from Tests/vmrunTests/Guests with nasm; skips when nasm is missing.
    static func assemble(_ name: String, defines: [String] = [], into dir: URL) throws -> URL {
        let nasm = "/usr/bin/nasm"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: nasm), "nasm is not installed (apt-get install nasm)")
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Guests/\(name).asm")
        let output = dir.appendingPathComponent(name + (defines.isEmpty ? "" : "-" + defines.joined(separator: "-")) + ".bin")
        let r = try run(["-f", "bin"] + defines.map { "-D" + $0 } + ["-o", output.path, source.path],
                        executable: URL(fileURLWithPath: nasm))
        guard r.status == 0 else { throw NSError(domain: "nasm", code: Int(r.status), userInfo: [NSLocalizedDescriptionKey: r.stderr]) }
        return output
    }

    /// Whether KVM can run our small guests here (a /dev/kvm we may open).
    static var kvmUsable: Bool { access("/dev/kvm", R_OK | W_OK) == 0 }

    static let qemu = "/usr/bin/qemu-system-x86_64"
    static var qemuInstalled: Bool { FileManager.default.isExecutableFile(atPath: qemu) }
}

final class LockedData: @unchecked Sendable {
    private var data = Data()
    private let lock = NSLock()
    func append(_ d: Data) { lock.lock(); data.append(d); lock.unlock() }
    var string: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }
}
