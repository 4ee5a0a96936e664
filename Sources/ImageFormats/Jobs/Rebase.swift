// Safe rebase (qemu-img rebase without -u): before an image's backing file changes, every range
// the image does not allocate itself and where the old and new backing files differ is copied
// into the image, so that the guest sees the same bytes afterwards. Rebasing onto an image further
// down the current chain only needs to look at what lies between.
import Glibc

public enum RebaseJob {
    static let chunk = 2 << 20

    /// - Parameters:
    ///   - image: the overlay, writable, opened with its current backing chain.
    ///   - newBacking: the new backing node (nil for none).
    ///   - newIsInChain: `newBacking` is a node of `image`'s current chain.
    public static func copyDifferences(image: any BlockNode, oldBacking: (any BlockNode)?, newBacking: (any BlockNode)?,
                                       newIsInChain: Bool, compress: Bool = false,
                                       progress: ((Double) -> Void)? = nil) throws {
        let size = image.size
        let oldSize = oldBacking?.size ?? 0
        let newSize = newBacking?.size ?? 0
        var bufOld = [UInt8](repeating: 0, count: chunk)
        var bufNew = [UInt8](repeating: 0, count: chunk)
        var offset: UInt64 = 0
        while offset < size {
            var n = min(UInt64(chunk), size - offset)
            // Allocated in the image itself: nothing to do.
            let own = try image.blockStatus(at: offset, length: n, wantZero: false)
            n = max(1, own.length)
            if own.flags.contains(.allocated) { offset += n; continue }
            if newIsInChain, let nb = newBacking, let ob = oldBacking {
                let (changed, m) = try ob.isAllocatedAbove(base: nb, at: offset, length: n)
                n = max(1, m)
                if !changed { offset += n; continue }
            }
            var oldIsZero = false
            if offset >= oldSize {
                bufOld.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) }
                oldIsZero = true
            } else {
                n = min(n, oldSize - offset)
                try bufOld.withUnsafeMutableBytes { try oldBacking!.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<Int(n)])) }
            }
            if offset >= newSize || newBacking == nil {
                bufNew.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) }
            } else {
                n = min(n, newSize - offset)
                try bufNew.withUnsafeMutableBytes { try newBacking!.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<Int(n)])) }
            }
            var written = 0
            while written < Int(n) {
                let (differs, run) = compareRun(bufOld, bufNew, from: written, to: Int(n))
                if differs {
                    if oldIsZero {
                        try image.writeZeroes(at: offset + UInt64(written), length: UInt64(run), flags: [])
                    } else {
                        try bufOld.withUnsafeBytes {
                            try image.write(at: offset + UInt64(written), from: UnsafeRawBufferPointer(rebasing: $0[written..<written + run]), flags: [])
                        }
                    }
                }
                written += run
            }
            offset += n
            progress?(Double(offset) / Double(max(size, 1)))
        }
    }

    /// qemu-img's compare_buffers: whether the first sector differs, and how many bytes (in
    /// 512-byte steps) share that state.
    static func compareRun(_ a: [UInt8], _ b: [UInt8], from: Int, to: Int) -> (Bool, Int) {
        func differs(_ s: Int) -> Bool {
            let e = min(s + 512, to)
            return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in memcmp(pa.baseAddress! + s, pb.baseAddress! + s, e - s) != 0 } }
        }
        let first = differs(from)
        var i = min(from + 512, to)
        while i < to && differs(i) == first { i = min(i + 512, to) }
        return (first, i - from)
    }
}


