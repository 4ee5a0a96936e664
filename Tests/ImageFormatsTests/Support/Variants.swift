import Foundation
import XCTest

/// The qcow2 variants made by testimages/make-variants.sh (once per test process).
final class QemuVariants: @unchecked Sendable {
    let dir: TempDir
    let names: [String]

    private init() throws {
        dir = TempDir()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("testimages/make-variants.sh").path
        let r = try runProcess("bash", [script, dir.path])
        guard r.status == 0 else { throw NSError(domain: "variants", code: Int(r.status), userInfo: [NSLocalizedDescriptionKey: r.stderr]) }
        names = r.stdout.split(separator: "\n").map(String.init)
    }

    nonisolated(unsafe) private static var cached: QemuVariants?
    private static let lock = NSLock()

    static func shared() throws -> QemuVariants {
        try requireQemuImg()
        lock.lock()
        defer { lock.unlock() }
        if let c = cached { return c }
        let v = try QemuVariants()
        cached = v
        return v
    }

    func image(_ name: String) -> String { dir.file(name + ".qcow2") }
    func raw(_ name: String) -> String { dir.file(name + ".raw") }
}
