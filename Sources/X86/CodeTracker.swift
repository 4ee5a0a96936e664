// Which guest-physical pages hold decoded code, shared by all vCPUs of one GuestMemory.
//
// Each page has a generation number; a decoded block remembers the generations of the pages it was
// decoded from and is stale once they differ. A page that holds code is marked in `codeMap`; CPUs
// never keep a fast write TLB entry for such a page, so every guest write to it takes the slow
// path, which bumps the generation. Marking a page publishes it in a small ring with an epoch
// counter; every vCPU drains the ring between blocks and drops its write entries for those pages.
// Writes from outside the CPUs (DMA, loaders) arrive through `GuestMemory.didWrite`, whose
// observer this tracker installs when the first vCPU on that memory is created.

import Synchronization

final class CodeTracker: @unchecked Sendable {
    let pageCount: Int
    let codeMap: UnsafeMutablePointer<UInt8>
    let gen: UnsafeMutablePointer<UInt32>
    /// Epoch and ring of recently marked pages (ring index = epoch % ringSize).
    let epoch: UnsafeMutablePointer<UInt64>
    static let ringSize = 64
    let ring: UnsafeMutablePointer<UInt64>
    let lock = Mutex<Void>(())

    init(memory: GuestMemory) {
        var end: UInt64 = 0x10_0000
        for r in memory.regions { end = Swift.max(end, r.guestPhysical &+ r.size) }
        pageCount = Int((end + 0xFFF) >> 12)
        codeMap = .allocate(capacity: pageCount); codeMap.initialize(repeating: 0, count: pageCount)
        gen = .allocate(capacity: pageCount); gen.initialize(repeating: 0, count: pageCount)
        epoch = .allocate(capacity: 1); epoch.initialize(to: 0)
        ring = .allocate(capacity: Self.ringSize); ring.initialize(repeating: 0, count: Self.ringSize)
    }

    private static let registry = Mutex<[ObjectIdentifier: CodeTracker]>([:])

    /// The tracker for `memory`, created (and hooked to `didWrite`) on first use.
    static func shared(for memory: GuestMemory) -> CodeTracker {
        registry.withLock { reg in
            if let t = reg[ObjectIdentifier(memory)] { return t }
            let t = CodeTracker(memory: memory)
            reg[ObjectIdentifier(memory)] = t
            if memory.writeObserver == nil {
                memory.writeObserver = { [t] phys, len in t.externalWrite(physical: phys, length: len) }
            }
            return t
        }
    }

    @inline(__always) func isCode(_ page: UInt64) -> Bool {
        page < UInt64(pageCount) && codeMap[Int(page)] != 0
    }

    @inline(__always) func generation(_ page: UInt64) -> UInt32 {
        page < UInt64(pageCount) ? gen[Int(page)] : 0
    }

    /// A CPU decoded code from `page`.
    func markCode(_ page: UInt64) {
        guard page < UInt64(pageCount), codeMap[Int(page)] == 0 else { return }
        lock.withLock { _ in
            codeMap[Int(page)] = 1
            let e = epoch.pointee &+ 1
            ring[Int(e % UInt64(Self.ringSize))] = page
            epoch.pointee = e
        }
    }

    /// A write hit a code page: blocks decoded from it become stale.
    @inline(__always) func invalidate(_ page: UInt64) {
        guard page < UInt64(pageCount) else { return }
        let i = Int(page)
        if codeMap[i] != 0 {
            codeMap[i] = 0
            gen[i] &+= 1
        }
    }

    func externalWrite(physical: UInt64, length: UInt64) {
        guard length > 0 else { return }
        var p = physical >> 12
        let last = (physical &+ length &- 1) >> 12
        while p <= last && p < UInt64(pageCount) {
            invalidate(p)
            p += 1
        }
    }
}
