// imgtool's test helpers on top of the shared ones (Tests/Support): running imgtool and qemu-img,
// output normalization, and the qcow2 variant images.
@_exported import TestSupport
import Foundation
import XCTest

/// The directory holding the built products (the test bundle sits next to them).
let productsDirectory: String = {
    let a0 = ProcessInfo.processInfo.arguments.first { $0.hasSuffix(".xctest") } ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: a0).deletingLastPathComponent().path
}()

func imgtool(_ args: [String], cwd: String? = nil) throws -> ProcessResult {
    try runProcess(productsDirectory + "/imgtool", args, cwd: cwd)
}

func qemuImg(_ args: [String], cwd: String? = nil) throws -> ProcessResult {
    try runProcess("qemu-img", args, cwd: cwd)
}

/// qemu-img's output with its program name replaced by ours.
func asOurs(_ s: String) -> String {
    s.replacingOccurrences(of: "qemu-img", with: "imgtool")
}

/// Drops the "Child node" sections (QEMU 8.0+ shape; the local oracle is 7.2) from human info.
func withoutChildNodes(_ s: String) -> String {
    var out: [Substring] = []
    var skipping = false
    for line in s.split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix("Child node") { skipping = true; continue }
        if skipping && (line.hasPrefix("    ") ) { continue }
        skipping = false
        out.append(line)
    }
    return out.joined(separator: "\n")
}

/// Runs the qcow2 variant script once per process.
final class Variants: @unchecked Sendable {
    let dir = TempDir()
    let names: [String]
    nonisolated(unsafe) static var cached: Variants?
    static let lock = NSLock()
    private init() throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("testimages/make-variants.sh").path
        let r = try runProcess("bash", [script, dir.path])
        names = r.stdout.split(separator: "\n").map(String.init)
    }
    static func shared() throws -> Variants {
        try requireQemuImg()
        lock.lock(); defer { lock.unlock() }
        if let c = cached { return c }
        let v = try Variants()
        cached = v
        return v
    }
}
