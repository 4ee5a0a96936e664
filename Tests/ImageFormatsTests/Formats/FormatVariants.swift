// Shared helpers for the vmdk/vdi/vhdx/vpc/qed tests: the variants qemu-img makes
// (testimages/make-format-variants.sh, once per test process), opening, whole-image reads.
import Foundation
import XCTest
@testable import ImageFormats

final class FormatVariants: @unchecked Sendable {
    struct Variant {
        var name: String
        var format: String
        var file: String
    }
    let dir: TempDir
    let variants: [Variant]

    private init() throws {
        dir = TempDir()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("testimages/make-format-variants.sh").path
        let r = try runProcess("bash", [script, dir.path])
        guard r.status == 0 else { throw NSError(domain: "variants", code: Int(r.status), userInfo: [NSLocalizedDescriptionKey: r.stderr]) }
        variants = r.stdout.split(separator: "\n").map {
            let p = $0.split(separator: " ").map(String.init)
            return Variant(name: p[0], format: p[1], file: p[2])
        }
    }

    nonisolated(unsafe) private static var cached: FormatVariants?
    private static let lock = NSLock()

    static func shared() throws -> FormatVariants {
        try requireQemuImg()
        lock.lock()
        defer { lock.unlock() }
        if let c = cached { return c }
        let v = try FormatVariants()
        cached = v
        return v
    }

    func path(_ file: String) -> String { dir.file(file) }
}

/// Opens an image with an explicit format.
func openImage(_ path: String, _ format: String?, writable: Bool = false) throws -> any BlockNode {
    try BlockGraph.open(filename: path, format: format, context: OpenContext(flags: writable ? .readWrite : []))
}

/// The whole guest view, read in `chunk`-byte requests.
func readAll(_ node: any BlockNode, chunk: Int = 1 << 20) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: Int(node.size))
    var off = 0
    while off < out.count {
        let n = min(chunk, out.count - off)
        try out.withUnsafeMutableBytes { try node.read(at: UInt64(off), into: UnsafeMutableRawBufferPointer(rebasing: $0[off..<off + n])) }
        off += n
    }
    return out
}

func fileBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// A small deterministic generator for offsets and sizes.
struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: UInt64) -> UInt64 { n == 0 ? 0 : next() % n }
}

/// Byte equality with memcmp (debug builds compare large images element by element otherwise).
func assertBytesEqual(_ a: [UInt8], _ b: [UInt8], _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    let same = a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 } }
    if !same { assertSameBytes(a, b, message, file: file, line: line) }
}

extension Array where Element == UInt8 {
    /// Sets [off, off+len) to `value` without a per-byte loop.
    mutating func fill(_ off: Int, _ len: Int, _ value: UInt8) {
        withUnsafeMutableBytes { p in
            memset(p.baseAddress! + off, Int32(value), len)
        }
    }
}
