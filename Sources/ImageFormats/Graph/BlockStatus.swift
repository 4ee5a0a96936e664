// Block status as QEMU's generic block layer computes it (bdrv_co_block_status and
// bdrv_co_common_block_status_above), built on each driver's `driverBlockStatus`.
//
// The generic rules: a pass-through driver (raw) answers with its file's status; data or zero means
// allocated in this layer; an unallocated range of a format without a backing file reads as zero,
// and so does one past the end of a shorter backing file; a format asking to "recurse" gets the
// zero information of its file where the file has a hole; and EOF is flagged at the node's end.
// `map`, convert, compare and NBD block status all read status through here.

extension BlockNode {
    /// QEMU's bdrv_block_status for this one node. `length` is capped at the node's end; the answer is
    /// at least one byte long unless `offset >= size` (then length 0 and `.eof`).
    public func blockStatus(at offset: UInt64, length: UInt64, wantZero: Bool = true) throws -> BlockExtent {
        let total = size
        if offset >= total { return BlockExtent(flags: .eof, length: 0) }
        if length == 0 { return BlockExtent(flags: [], length: 0) }
        let bytes = min(length, total - offset)
        var e = try driverBlockStatus(at: offset, length: bytes, wantZero: wantZero)
        e.length = max(1, min(e.length, bytes))

        if e.flags.contains(.raw) {
            guard let file = e.file else {
                throw BlockError(.io, "\(driverName): pass-through status without a file", errno: 5)
            }
            var inner = try file.blockStatus(at: e.hostOffset, length: e.length, wantZero: wantZero)
            if inner.length == 0 {
                // Past the end of the file: reads as zero (the format may be larger than its file).
                inner = BlockExtent(flags: [.zero, .allocated], length: e.length, hostOffset: e.hostOffset, file: file)
            }
            inner.flags.remove(.eof)
            if offset + inner.length == total { inner.flags.insert(.eof) }
            return inner
        }

        if !e.flags.intersection([.data, .zero]).isEmpty {
            e.flags.insert(.allocated)
        } else if supportsBacking {
            if let backing = backing {
                if wantZero && offset >= backing.size { e.flags.insert(.zero) }
            } else {
                e.flags.insert(.zero)
            }
        }

        if wantZero && e.flags.contains(.recurse), let file = e.file, file !== self,
           e.flags.contains(.data), !e.flags.contains(.zero), e.flags.contains(.offsetValid) {
            if let inner = try? file.blockStatus(at: e.hostOffset, length: e.length, wantZero: true) {
                if inner.flags.contains(.eof) && (inner.length == 0 || inner.flags.contains(.zero)) {
                    e.flags.insert(.zero)
                } else {
                    e.length = inner.length
                    if inner.flags.contains(.zero) { e.flags.insert(.zero) }
                }
            }
        }
        e.flags.remove(.recurse)
        if offset + e.length == total { e.flags.insert(.eof) } else { e.flags.remove(.eof) }
        return e
    }

    /// QEMU's bdrv_block_status_above: the status seen through this node's backing chain down to (not
    /// including) `base`; nil base walks the whole chain. `depth` is the layer that answered (0 = this).
    public func blockStatusAbove(base: (any BlockNode)?, at offset: UInt64, length: UInt64, wantZero: Bool = true)
        throws -> (extent: BlockExtent, depth: Int)
    {
        var node: any BlockNode = self
        var bytes = length
        var depth = 0
        var eof: UInt64? = nil
        var result = BlockExtent(flags: [], length: 0)
        while true {
            result = try node.blockStatus(at: offset, length: bytes, wantZero: wantZero)
            if result.length == 0 {
                // This layer is shorter than the one above: what lies past its end reads as zero and
                // counts as allocated here.
                result = BlockExtent(flags: [.zero, .allocated], length: bytes, file: node)
                break
            }
            if result.flags.contains(.eof) { eof = offset + result.length }
            if result.flags.contains(.allocated) {
                result.flags.remove(.eof)
                break
            }
            guard let next = node.backing, base.map({ $0 !== next }) ?? true else { break }
            bytes = result.length
            node = next
            depth += 1
        }
        if let eof, offset + result.length == eof, node === self || eof == size { result.flags.insert(.eof) }
        return (result, depth)
    }

    /// Whether [offset, offset+length) is allocated somewhere above `base` (QEMU's
    /// bdrv_is_allocated_above); returns the answer and how many bytes it holds for.
    public func isAllocatedAbove(base: (any BlockNode)?, at offset: UInt64, length: UInt64) throws -> (allocated: Bool, length: UInt64) {
        var node: any BlockNode = self
        var bytes = min(length, size > offset ? size - offset : 0)
        guard bytes > 0 else { return (false, 0) }
        while true {
            if let base, node === base { return (false, bytes) }
            let e = try node.blockStatus(at: offset, length: bytes, wantZero: false)
            if e.length == 0 {
                // Past this layer's end: the zeroes there belong to this layer.
                return (node !== self, bytes)
            }
            if e.flags.contains(.allocated) { return (true, e.length) }
            bytes = e.length
            guard let next = node.backing else { return (false, bytes) }
            node = next
        }
    }
}
