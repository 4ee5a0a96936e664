// QED writes: in place where the cluster exists, otherwise QEMU's allocating write: the run of
// unallocated (or zero) clusters gets new clusters at the end of the file, written whole (the
// untouched head and tail copied from the backing file, or zeroes), then the L2 entries (and a new
// L2 table with its L1 entry when there was none). The need-check flag is set before the first
// allocation and cleared on a clean close.
import Glibc

extension QEDNode {
    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        try checkRequest(offset, UInt64(buffer.count))
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let rest = UInt64(buffer.count - done)
            let m = try metaLock.withLock { try meta.lookup(pos, maxLength: rest) }
            let part = UnsafeRawBufferPointer(rebasing: buffer[done..<done + Int(m.length)])
            if m.kind == .found {
                try rw.read { try file.write(at: m.hostOffset, from: part, flags: flags) }
                done += Int(m.length)
            } else {
                let n = try rw.write { try allocatingWrite(pos, UnsafeRawBufferPointer(rebasing: buffer[done...]), flags: flags) }
                done += Int(n)
            }
        }
    }

    /// Under the exclusive lock. Returns how many bytes of `data` it wrote.
    private func allocatingWrite(_ pos: UInt64, _ data: UnsafeRawBufferPointer, flags: WriteFlags) throws -> UInt64 {
        let cs = clusterSize
        let m = try metaLock.withLock { try meta.lookup(pos, maxLength: UInt64(data.count)) }
        let part = UnsafeRawBufferPointer(rebasing: data[0..<Int(m.length)])
        if m.kind == .found {
            // A concurrent writer allocated it meanwhile.
            try file.write(at: m.hostOffset, from: part, flags: flags)
            return m.length
        }
        let start = pos & ~(cs - 1)
        let head = Int(pos - start)
        let clusters = (UInt64(head) + m.length + cs - 1) / cs
        let total = Int(clusters * cs)
        let host = try metaLock.withLock { () -> UInt64 in
            let h = meta.fileSize
            meta.fileSize += clusters * cs
            if meta.header.features & QED.featureNeedCheck == 0 {
                meta.header.features |= QED.featureNeedCheck
                try meta.writeHeader()
                try file.flush()
            }
            return h
        }
        if head == 0 && part.count == total {
            try file.write(at: host, from: part, flags: [])
        } else {
            var buf = [UInt8](repeating: 0, count: total)
            try buf.withUnsafeMutableBytes { b in
                let fromBacking = m.kind != .zero && backingNode != nil
                if fromBacking && head > 0 {
                    try readBacking(start, UnsafeMutableRawBufferPointer(rebasing: b[0..<head]))
                }
                let tail = head + part.count
                if fromBacking && tail < total {
                    try readBacking(start + UInt64(tail), UnsafeMutableRawBufferPointer(rebasing: b[tail..<total]))
                }
                UnsafeMutableRawBufferPointer(rebasing: b[head..<tail]).copyMemory(from: part)
            }
            try file.write(at: host, bytes: buf)
        }
        if backingNode != nil { try file.flush() }
        try metaLock.withLock {
            try meta.updateL2(start, count: Int(clusters)) { host + UInt64($0) * cs }
        }
        if flags.contains(.fua) { try file.flush() }
        return m.length
    }

    /// Whole clusters become zero clusters (QEMU's QED_AIOCB_ZERO); anything unaligned is written
    /// as zeroes.
    public func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        try checkRequest(offset, length)
        let cs = clusterSize
        if offset % cs != 0 || length % cs != 0 {
            if flags.contains(.noFallback) {
                throw BlockError(.unsupported, "Write zeroes without fallback is not supported", errno: ENOTSUP)
            }
            let chunk = Int(min(length, 1 << 20))
            let zeroes = [UInt8](repeating: 0, count: chunk)
            var done: UInt64 = 0
            while done < length {
                let n = Int(min(UInt64(chunk), length - done))
                try zeroes.withUnsafeBytes { try write(at: offset + done, from: UnsafeRawBufferPointer(rebasing: $0[0..<n]), flags: flags) }
                done += UInt64(n)
            }
            return
        }
        var done: UInt64 = 0
        while done < length {
            let pos = offset + done
            let m = try metaLock.withLock { try meta.lookup(pos, maxLength: length - done) }
            switch m.kind {
            case .found:
                var f = flags
                f.remove(.noFallback)
                try rw.read { try file.writeZeroes(at: m.hostOffset, length: m.length, flags: f) }
            case .zero:
                break
            case .unallocatedL1, .unallocatedL2:
                try rw.write {
                    try metaLock.withLock {
                        if meta.header.features & QED.featureNeedCheck == 0 {
                            meta.header.features |= QED.featureNeedCheck
                            try meta.writeHeader()
                        }
                        try meta.updateL2(pos, count: Int(m.length / cs)) { _ in QED.zeroCluster }
                    }
                }
            }
            done += m.length
        }
    }

    /// QED has no discard (QEMU drops the request).
    public func discard(at offset: UInt64, length: UInt64) throws {}

    /// QEMU's bdrv_qed_co_truncate: grow only, no preallocation.
    public func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        if preallocation != .off {
            throw BlockError(.unsupported, "Unsupported preallocation mode '\(preallocation.rawValue)'", errno: ENOTSUP)
        }
        try rw.write {
            try metaLock.withLock {
                let h = meta.header
                guard QED.imageSizeValid(newSize, clusterSize: h.clusterSize, tableSize: h.tableSize) else {
                    throw BlockError(.invalidArgument, "Invalid image size specified", errno: EINVAL)
                }
                if newSize < h.imageSize {
                    throw BlockError(.unsupported, "Shrinking images is currently not supported", errno: ENOTSUP)
                }
                meta.header.imageSize = newSize
                try meta.writeHeader()
            }
        }
    }
}
