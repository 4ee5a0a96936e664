// Runs a test guest (assembled with nasm at test time) on our CPU and on QEMU's TCG, and returns
// both serial outputs for comparison. Guests are the prelude in guest/prelude.asm plus a body.

import Foundation
import XCTest
@testable import X86

enum GuestMode: String { case real = "MODE_REAL", pm32 = "MODE_PM32", lm64 = "MODE_LM64" }

enum GuestHarness {
    static let guestDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("guest")

    static func which(_ tool: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    static var nasm: String? { which("nasm") }
    static var qemu: String? { which("qemu-system-x86_64") }

    static func tempDir() -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("x86tests-\(getpid())-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    @discardableResult
    static func run(_ exe: String, _ args: [String], timeout: Double = 60) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning { p.terminate() }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Assembles prelude + body for `mode` into a 64 KiB BIOS image.
    static func assemble(_ body: String, mode: GuestMode) throws -> [UInt8] {
        guard let nasm else { throw XCTSkip("nasm is not installed (apt-get install nasm)") }
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bits = mode == .lm64 ? 64 : (mode == .pm32 ? 32 : 16)
        let src = """
        %define \(mode.rawValue)
        %include "\(guestDir.path)/prelude.asm"
        bits \(bits)
        test_main:
        \(body)
        EXIT
        %include "\(guestDir.path)/epilogue.asm"
        """
        let asm = dir.appendingPathComponent("t.asm"), bin = dir.appendingPathComponent("t.bin")
        try src.write(to: asm, atomically: true, encoding: .utf8)
        let (st, out) = try run(nasm, ["-f", "bin", "-o", bin.path, asm.path])
        guard st == 0 else { throw NSError(domain: "nasm", code: Int(st), userInfo: [NSLocalizedDescriptionKey: out]) }
        return [UInt8](try Data(contentsOf: bin))
    }

    /// Runs the image on our CPU.
    static func runOurs(_ image: [UInt8], model: CPUModel = .qemu64, seconds: Double = 20) -> (String, X86VCPU, TestPlatform) {
        let plat = TestPlatform(bios: image, seconds: seconds)
        let cpu = X86VCPU(index: 0, platform: plat, model: model)
        _ = cpu.run()
        return (plat.text, cpu, plat)
    }

    /// Runs the image on QEMU TCG, or nil when QEMU is not installed.
    static func runQEMU(_ image: [UInt8], cpu: String = "qemu64") throws -> String? {
        guard let qemu else { return nil }
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bin = dir.appendingPathComponent("bios.bin"), out = dir.appendingPathComponent("serial.txt")
        try Data(image).write(to: bin)
        _ = try run(qemu, ["-accel", "tcg", "-cpu", cpu, "-M", "pc", "-m", "32", "-nodefaults", "-display", "none",
                           "-bios", bin.path, "-serial", "file:\(out.path)", "-monitor", "none", "-no-reboot",
                           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"], timeout: 30)
        return (try? String(contentsOf: out, encoding: .utf8)) ?? ""
    }
}

/// Base class: assemble a body, run it on both CPUs, compare serial output.
class GuestTestCase: XCTestCase {
    /// `cpu` is a -cpu model both CPUs run (QEMU's TCG and ours raise #UD for what it leaves out).
    func compare(_ body: String, mode: GuestMode = .lm64, cpu: String = "qemu64", expectContains: [String] = [],
                 file: StaticString = #filePath, line: UInt = #line) throws {
        let image = try GuestHarness.assemble(body, mode: mode)
        let (ours, _, plat) = GuestHarness.runOurs(image, model: try CPUModel(parsing: cpu))
        if ProcessInfo.processInfo.environment["X86_TEST_VERBOSE"] != nil { print("--- ours ---\n\(ours)") }
        XCTAssertNotNil(plat.exitCode, "guest did not reach EXIT; output:\n\(ours)", file: file, line: line)
        for s in expectContains {
            XCTAssertTrue(ours.contains(s), "output lacks \(s):\n\(ours)", file: file, line: line)
        }
        guard let ref = try GuestHarness.runQEMU(image, cpu: cpu) else {
            throw XCTSkip("qemu-system-x86_64 not installed: compared only the expected markers")
        }
        if ours != ref {
            let a = ours.split(separator: "\n", omittingEmptySubsequences: false)
            let b = ref.split(separator: "\n", omittingEmptySubsequences: false)
            var diff = ""
            for k in 0..<max(a.count, b.count) {
                let x = k < a.count ? String(a[k]) : "<none>", y = k < b.count ? String(b[k]) : "<none>"
                if x != y { diff += "line \(k): ours \(x) | qemu \(y)\n" }
            }
            XCTFail("output differs from QEMU:\n\(diff)\n--- ours ---\n\(ours)\n--- qemu ---\n\(ref)", file: file, line: line)
        }
    }
}
