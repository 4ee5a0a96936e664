// qemu-img map's view of an image: extents with their allocation depth in the backing chain,
// merged exactly as qemu-img merges them (entry_mergeable). imgtool prints them; NBD's
// qemu:allocation-depth context can reuse `status(of:at:length:)`.

public struct MapEntry: Equatable, Sendable {
    public var start: UInt64
    public var length: UInt64
    public var depth: Int
    public var present: Bool
    public var zero: Bool
    public var data: Bool
    public var compressed: Bool
    /// Host offset in `filename`, when the bytes have one.
    public var offset: UInt64?
    public var filename: String?

    /// qemu-img's entry_mergeable.
    public func canMerge(_ next: MapEntry) -> Bool {
        guard length > 0 else { return false }
        if zero != next.zero || data != next.data || depth != next.depth || present != next.present || compressed != next.compressed { return false }
        if (filename == nil) != (next.filename == nil) || (offset == nil) != (next.offset == nil) { return false }
        if let f = filename, f != next.filename { return false }
        if let o = offset, o + length != next.offset { return false }
        return true
    }
}

public enum ImageMap {
    /// qemu-img's get_block_status: the status at `offset`, found by walking down the backing chain
    /// until some layer says data or zero.
    public static func status(of top: any BlockNode, at offset: UInt64, length: UInt64) throws -> MapEntry {
        var node = top
        var bytes = length
        var depth = 0
        var e: BlockExtent
        while true {
            e = try node.blockStatus(at: offset, length: bytes, wantZero: true)
            if e.length == 0 {
                // Past the end of a shorter backing file: zeroes, counted as that layer's.
                e = BlockExtent(flags: [.zero, .allocated], length: bytes)
                break
            }
            bytes = e.length
            if !e.flags.intersection([.zero, .data]).isEmpty { break }
            guard let next = node.backing else {
                e.flags = []
                break
            }
            node = next
            depth += 1
        }
        let hasOffset = e.flags.contains(.offsetValid)
        return MapEntry(start: offset, length: bytes, depth: depth, present: e.flags.contains(.allocated),
                        zero: e.flags.contains(.zero), data: e.flags.contains(.data),
                        compressed: e.flags.contains(.compressed),
                        offset: hasOffset ? e.hostOffset : nil,
                        filename: hasOffset ? e.file?.filename : nil)
    }

    /// Visits the merged entries of [start, end). `emit(entry, next)` may adjust `next` before it is
    /// merged further (qemu-img's human output folds zero and data-less entries together).
    public static func walk(_ node: any BlockNode, start: UInt64, end: UInt64,
                            emit: (MapEntry, inout MapEntry?) throws -> Void) throws {
        var curr = MapEntry(start: start, length: 0, depth: 0, present: false, zero: false, data: false, compressed: false)
        while curr.start + curr.length < end {
            let off = curr.start + curr.length
            let next = try status(of: node, at: off, length: end - off)
            if curr.canMerge(next) {
                curr.length += next.length
                continue
            }
            var n: MapEntry? = next
            if curr.length > 0 { try emit(curr, &n) }
            curr = n!
        }
        var none: MapEntry? = nil
        try emit(curr, &none)
    }
}
