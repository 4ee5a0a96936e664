// qemu-img compare: whether two images show the guest the same bytes, walking both block
// statuses so that unallocated and zero areas cost no reads. Mismatches are reported at 512-byte
// granularity, as qemu-img reports them.
import Glibc

public enum CompareOutcome: Equatable, Sendable {
    case identical(sizeMismatch: Bool)
    case contentMismatch(offset: UInt64, sizeMismatch: Bool)
    case strictSizeMismatch
    case strictStatusMismatch(offset: UInt64)
}

public struct CompareFailure: Error, Sendable {
    /// qemu-img's exit status for it: 3 for a block-status failure, 4 for a read failure.
    public var status: Int32
    public var message: String
}

public enum ImageCompare {
    static let chunk: UInt64 = 2 << 20

    public static func run(_ a: any BlockNode, _ b: any BlockNode, nameA: String, nameB: String, strict: Bool,
                           progress: ((Double) -> Void)? = nil) throws -> CompareOutcome {
        let sizeA = a.size, sizeB = b.size
        let total = min(sizeA, sizeB)
        let base = max(sizeA, sizeB)
        if strict && sizeA != sizeB { return .strictSizeMismatch }
        var bufA = [UInt8](repeating: 0, count: Int(chunk))
        var bufB = [UInt8](repeating: 0, count: Int(chunk))
        var offset: UInt64 = 0
        func status(_ n: any BlockNode, _ name: String, _ off: UInt64, _ len: UInt64) throws -> BlockExtent {
            do { return try n.blockStatusAbove(base: nil, at: off, length: len).extent } catch {
                throw CompareFailure(status: 3, message: "Sector allocation test failed for \(name)")
            }
        }
        func read(_ n: any BlockNode, _ name: String, _ off: UInt64, _ len: Int, _ buf: inout [UInt8]) throws {
            do {
                try buf.withUnsafeMutableBytes { try n.read(at: off, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<len])) }
            } catch let e as BlockError {
                throw CompareFailure(status: 4, message: "Error while reading offset \(off) of \(name): \(BlockError.strerror(e.errno))")
            }
        }
        func firstNonZeroSector(_ buf: [UInt8], _ len: Int) -> Int? {
            var i = 0
            while i < len {
                let n = min(512, len - i)
                let zero = buf.withUnsafeBytes { isZeroBuffer(UnsafeRawBufferPointer(rebasing: $0[i..<i + n])) }
                if !zero { return i }
                i += n
            }
            return nil
        }
        while offset < total {
            let sa = try status(a, nameA, offset, sizeA - offset)
            let sb = try status(b, nameB, offset, sizeB - offset)
            var n = min(sa.length, sb.length, total - offset)
            if strict && sa.flags.intersection([.data, .zero, .allocated]) != sb.flags.intersection([.data, .zero, .allocated]) {
                return .strictStatusMismatch(offset: offset)
            }
            let allocA = sa.flags.contains(.allocated), allocB = sb.flags.contains(.allocated)
            if sa.flags.contains(.zero) && sb.flags.contains(.zero) {
            } else if allocA == allocB {
                n = min(n, chunk)
                try read(a, nameA, offset, Int(n), &bufA)
                try read(b, nameB, offset, Int(n), &bufB)
                var i = 0
                let len = Int(n)
                let firstDiffers = bufA.withUnsafeBytes { pa in bufB.withUnsafeBytes { pb in memcmp(pa.baseAddress!, pb.baseAddress!, min(512, len)) != 0 } }
                if firstDiffers { return .contentMismatch(offset: offset, sizeMismatch: false) }
                i = min(512, len)
                while i < len {
                    let l = min(512, len - i)
                    let d = bufA.withUnsafeBytes { pa in bufB.withUnsafeBytes { pb in memcmp(pa.baseAddress! + i, pb.baseAddress! + i, l) != 0 } }
                    if d { return .contentMismatch(offset: offset + UInt64(i), sizeMismatch: false) }
                    i += l
                }
            } else {
                n = min(n, chunk)
                let (node, name) = allocA ? (a, nameA) : (b, nameB)
                try read(node, name, offset, Int(n), &bufA)
                if let z = firstNonZeroSector(bufA, Int(n)) { return .contentMismatch(offset: offset + UInt64(z), sizeMismatch: false) }
            }
            offset += n
            progress?(Double(offset) / Double(max(base, 1)))
        }
        if sizeA != sizeB {
            let (over, name) = sizeA > sizeB ? (a, nameA) : (b, nameB)
            while offset < base {
                let s = try status(over, name, offset, base - offset)
                var n = max(s.length, 1)
                if s.flags.contains(.allocated) && !s.flags.contains(.zero) {
                    n = min(n, chunk)
                    try read(over, name, offset, Int(n), &bufA)
                    if let z = firstNonZeroSector(bufA, Int(n)) { return .contentMismatch(offset: offset + UInt64(z), sizeMismatch: true) }
                }
                offset += n
            }
            return .identical(sizeMismatch: true)
        }
        return .identical(sizeMismatch: false)
    }
}
