// A split virtqueue (virtio 1.x section 2.7) over guest RAM, for the device side.
//
// Everything here is guest-controlled, so nothing is trusted: ring addresses and sizes are checked
// when the queue is enabled, `avail.idx` may jump arbitrarily (at most `size` new heads are taken per
// pop, and a jump larger than the ring is reported as a broken queue), descriptor indices are checked
// against the table, chains are bounded by the table size (a loop cannot spin forever), indirect
// tables must be a multiple of 16 bytes, not nested, and inside RAM, and every buffer's
// [addr, addr+len) must lie within one RAM window before a host pointer is handed out.
import Synchronization

/// One buffer of a descriptor chain, already translated to host memory.
public struct VirtqBuffer: @unchecked Sendable {
    public var guestAddress: UInt64
    public var host: UnsafeMutableRawPointer
    public var length: Int
    /// Device-writable (VIRTQ_DESC_F_WRITE).
    public var writable: Bool
}

/// A chain popped from the available ring. Device-readable buffers come first (a readable buffer
/// after a writable one is refused), so `buffers[..<firstWritable]` are readable and the rest
/// writable. A device keeps one chain per queue and pops into it (`pop(into:)`), so the buffer
/// array's storage is reused rather than allocated per request.
public struct VirtqChain: Sendable {
    public var head: UInt16
    public var buffers: [VirtqBuffer]
    public var firstWritable: Int

    public init(head: UInt16 = 0, buffers: [VirtqBuffer] = [], firstWritable: Int = 0) {
        self.head = head
        self.buffers = buffers
        self.firstWritable = firstWritable
    }

    public var readable: ArraySlice<VirtqBuffer> { buffers[..<firstWritable] }
    public var writableBuffers: ArraySlice<VirtqBuffer> { buffers[firstWritable...] }
}

public enum VirtqueueError: Error, Equatable, CustomStringConvertible {
    case notReady
    case ringOutsideRAM
    case availIndexJump(UInt16)
    case descriptorIndex(UInt16)
    case chainTooLong
    case bufferOutsideRAM(UInt64, UInt32)
    case badIndirect
    case readableAfterWritable
    public var description: String {
        switch self {
        case .notReady: return "virtqueue not ready"
        case .ringOutsideRAM: return "virtqueue rings outside guest RAM"
        case .availIndexJump(let n): return "guest moved avail.idx by \(n), more than the queue size"
        case .descriptorIndex(let i): return "descriptor index \(i) out of range"
        case .chainTooLong: return "descriptor chain longer than the queue (loop?)"
        case let .bufferOutsideRAM(a, l): return "buffer 0x\(String(a, radix: 16))+\(l) outside guest RAM"
        case .badIndirect: return "malformed indirect descriptor table"
        case .readableAfterWritable: return "device-readable descriptor after a writable one"
        }
    }
}

public struct VirtqueueConfig: Sendable, Equatable {
    public var size: UInt16
    public var ready = false
    public var descTable: UInt64 = 0
    public var availRing: UInt64 = 0
    public var usedRing: UInt64 = 0
    public var msixVector: UInt16 = 0xFFFF
    public init(size: UInt16) { self.size = size }
}

public final class Virtqueue: @unchecked Sendable {
    public static let descNext: UInt16 = 1, descWrite: UInt16 = 2, descIndirect: UInt16 = 4
    public static let availNoInterrupt: UInt16 = 1

    public let maxSize: UInt16
    public var config: VirtqueueConfig
    private(set) var lastAvail: UInt16 = 0
    private(set) var usedIdx: UInt16 = 0
    let ram: GuestRAM
    /// Serializes pops and pushes (a queue is served by one thread at a time, but a reset may race).
    let lock = Mutex<Void>(())

    public init(ram: GuestRAM, maxSize: UInt16) {
        precondition(maxSize.nonzeroBitCount == 1)
        self.ram = ram
        self.maxSize = maxSize
        self.config = VirtqueueConfig(size: maxSize)
    }

    public func reset() {
        config = VirtqueueConfig(size: maxSize)
        lastAvail = 0
        usedIdx = 0
    }

    /// Checks the rings lie in RAM; called when the driver enables the queue.
    public func validate() throws {
        let n = UInt64(config.size)
        guard n > 0, n <= UInt64(maxSize), config.size.nonzeroBitCount == 1 else { throw VirtqueueError.notReady }
        guard ram.pointer(config.descTable, 16 * n) != nil,
              ram.pointer(config.availRing, 6 + 2 * n) != nil,
              ram.pointer(config.usedRing, 6 + 8 * n) != nil else { throw VirtqueueError.ringOutsideRAM }
    }

    private func ring16(_ base: UInt64, _ offset: UInt64) -> UInt16? { ram.load(base &+ offset, as: UInt16.self) }

    /// The next available chain, nil when the ring is empty.
    public func pop() throws -> VirtqChain? {
        var chain = VirtqChain()
        return try pop(into: &chain) ? chain : nil
    }

    /// Pops the next available chain into `chain` (reusing its storage); false when the ring is empty.
    public func pop(into chain: inout VirtqChain) throws -> Bool {
        guard config.ready else { throw VirtqueueError.notReady }
        guard let availIdx = ring16(config.availRing, 2) else { throw VirtqueueError.ringOutsideRAM }
        let pending = availIdx &- lastAvail
        if pending == 0 { return false }
        if pending > config.size { throw VirtqueueError.availIndexJump(pending) }
        let slot = UInt64(lastAvail % config.size)
        guard let head = ring16(config.availRing, 4 + 2 * slot) else { throw VirtqueueError.ringOutsideRAM }
        lastAvail &+= 1
        chain.head = head
        chain.buffers.removeAll(keepingCapacity: true)
        chain.firstWritable = try walk(head: head, into: &chain.buffers)
        return true
    }

    /// Whether the driver has made buffers available that were not popped yet.
    public var hasAvailable: Bool {
        guard config.ready, let availIdx = ring16(config.availRing, 2) else { return false }
        return availIdx != lastAvail
    }

    /// Sets or clears VIRTQ_USED_F_NO_NOTIFY: while a device thread is draining the queue anyway,
    /// the driver need not notify (a hint; drivers may notify regardless).
    public func suppressNotifications(_ on: Bool) {
        guard config.ready else { return }
        ram.store(config.usedRing, UInt16(on ? 1 : 0))
        // Re-enabling is followed by a look at avail.idx (`hasAvailable`): same pattern as in push.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Undoes the last pop (a request that must wait, e.g. when throttled).
    public func unpop() { lastAvail &-= 1 }

    private struct Desc { var addr: UInt64; var len: UInt32; var flags: UInt16; var next: UInt16 }

    private func readDesc(table: UInt64, index: UInt16, count: UInt64) throws -> Desc {
        guard UInt64(index) < count else { throw VirtqueueError.descriptorIndex(index) }
        let a = table &+ 16 * UInt64(index)
        guard let p = ram.pointer(a, 16) else { throw VirtqueueError.ringOutsideRAM }
        return Desc(addr: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)),
                    len: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                    flags: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
                    next: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
    }

    /// Appends the chain's buffers to `out`; returns the index of the first writable one.
    private func walk(head: UInt16, into out: inout [VirtqBuffer]) throws -> Int {
        var firstWritable = -1
        var table = config.descTable
        var count = UInt64(config.size)
        var index = head
        var steps: UInt64 = 0
        var indirect = false
        var seenWritable = false
        while true {
            steps += 1
            guard steps <= count else { throw VirtqueueError.chainTooLong }
            let d = try readDesc(table: table, index: index, count: count)
            if d.flags & Virtqueue.descIndirect != 0 {
                // An indirect table replaces the rest of the chain; no nesting, no NEXT alongside.
                guard !indirect, d.len > 0, d.len % 16 == 0, d.flags & Virtqueue.descNext == 0,
                      ram.pointer(d.addr, UInt64(d.len)) != nil else { throw VirtqueueError.badIndirect }
                indirect = true
                table = d.addr
                count = UInt64(d.len) / 16
                index = 0
                steps = 0
                continue
            }
            let writable = d.flags & Virtqueue.descWrite != 0
            if !writable && seenWritable { throw VirtqueueError.readableAfterWritable }
            seenWritable = seenWritable || writable
            if d.len > 0 {
                guard let p = ram.pointer(d.addr, UInt64(d.len)) else { throw VirtqueueError.bufferOutsideRAM(d.addr, d.len) }
                if writable && firstWritable < 0 { firstWritable = out.count }
                out.append(VirtqBuffer(guestAddress: d.addr, host: p, length: Int(d.len), writable: writable))
            }
            guard d.flags & Virtqueue.descNext != 0 else { return firstWritable < 0 ? out.count : firstWritable }
            index = d.next
        }
    }

    /// Returns a chain to the driver with `written` bytes written to its writable buffers.
    /// Returns whether the driver wants an interrupt.
    @discardableResult
    public func push(head: UInt16, written: UInt32) -> Bool {
        let slot = UInt64(usedIdx % config.size)
        let entry = config.usedRing &+ 4 + 8 * slot
        ram.store(entry, UInt32(head))
        ram.store(entry &+ 4, written)
        usedIdx &+= 1
        ram.store(config.usedRing &+ 2, usedIdx)   // x86 is TSO: the entry is visible before idx
        // The driver stores avail.flags and then reads used.idx; we store used.idx and then read
        // avail.flags. Without a full fence on both sides (the driver has its mb()), both can see
        // the old value, and the driver waits for an interrupt that never comes.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let flags = ring16(config.availRing, 0) ?? 0
        return flags & Virtqueue.availNoInterrupt == 0
    }
}
