// MSI-X for a PCI function: the vector table and pending-bit array behind one BAR (table at 0,
// PBA at 0x800, as QEMU lays out virtio's), the capability in config space, and delivery.
//
// A vector fires as an MSI write (address, data) to the interrupt sink unless the function is
// masked or the vector's mask bit is set; then its pending bit is set and the message goes out when
// the guest unmasks. Vector numbers from the guest are checked against the table size.
import Synchronization

public final class MSIX: BusDevice, @unchecked Sendable {
    public static let pbaOffset: UInt64 = 0x800
    public static let barSize: UInt64 = 0x1000

    public let vectorCount: Int
    private struct Entry { var address: UInt64 = 0; var data: UInt32 = 0; var control: UInt32 = 1 }
    private let table: Mutex<(entries: [Entry], pending: [Bool])>
    private let sink: any InterruptSink
    /// Offset of the capability in config space (set by `addCapability`).
    public private(set) var capabilityOffset = 0
    /// Read from the config space on each delivery: (enabled, function masked).
    public var controlReader: (@Sendable () -> (Bool, Bool))?

    public init(vectors: Int, sink: any InterruptSink) {
        precondition(vectors >= 1 && vectors <= 128)
        vectorCount = vectors
        self.sink = sink
        table = Mutex(([Entry](repeating: Entry(), count: vectors), [Bool](repeating: false, count: vectors)))
    }

    /// Adds the MSI-X capability (table and PBA in `bar`).
    public func addCapability(to config: inout PCIConfigSpace, bar: UInt8) {
        let body = AML.le(UInt64(vectorCount - 1), 2) + AML.le(UInt64(bar), 4) + AML.le(MSIX.pbaOffset | UInt64(bar), 4)
        capabilityOffset = config.addCapability(id: 0x11, body: body)
        config.writeMask[capabilityOffset + 3] = 0xC0   // enable, function mask
    }

    public static func control(_ config: PCIConfigSpace, capability: Int) -> (enabled: Bool, masked: Bool) {
        let c = config.get16(capability + 2)
        return (c & 0x8000 != 0, c & 0x4000 != 0)
    }

    public var isEnabled: Bool { controlReader?().0 ?? false }

    /// Fires `vector`; returns false when it is out of range (the caller falls back to nothing).
    @discardableResult
    public func notify(vector: UInt16) -> Bool {
        guard Int(vector) < vectorCount else { return false }
        let (enabled, fnMasked) = controlReader?() ?? (false, true)
        guard enabled else { return false }
        let msg = table.withLock { t -> (UInt64, UInt32)? in
            let e = t.entries[Int(vector)]
            if fnMasked || e.control & 1 != 0 {
                t.pending[Int(vector)] = true
                return nil
            }
            return (e.address, e.data)
        }
        if let (a, d) = msg { sink.signalMSI(address: a, data: d) }
        return true
    }

    /// Delivers pending vectors that are no longer masked (after a mask bit or the function mask clears).
    public func deliverPending() {
        let (enabled, fnMasked) = controlReader?() ?? (false, true)
        guard enabled, !fnMasked else { return }
        let msgs = table.withLock { t -> [(UInt64, UInt32)] in
            var out: [(UInt64, UInt32)] = []
            for i in 0..<t.entries.count where t.pending[i] && t.entries[i].control & 1 == 0 {
                t.pending[i] = false
                out.append((t.entries[i].address, t.entries[i].data))
            }
            return out
        }
        for (a, d) in msgs { sink.signalMSI(address: a, data: d) }
    }

    public func reset() {
        table.withLock { t in
            t.entries = [Entry](repeating: Entry(), count: vectorCount)
            t.pending = [Bool](repeating: false, count: vectorCount)
        }
    }

    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        table.withLock { t in
            if offset >= MSIX.pbaOffset {
                var v: UInt64 = 0
                let first = Int(offset - MSIX.pbaOffset) * 8
                for bit in 0..<(size * 8) where first + bit < t.pending.count && t.pending[first + bit] { v |= 1 << UInt64(bit) }
                return v
            }
            var v: UInt64 = 0
            for i in 0..<size {
                let o = Int(offset) + i
                let idx = o / 16
                guard idx < t.entries.count else { return IOBus.allOnes(size) }
                let e = t.entries[idx]
                let field = o % 16
                let word: UInt32 = field < 4 ? UInt32(truncatingIfNeeded: e.address) : field < 8 ? UInt32(truncatingIfNeeded: e.address >> 32)
                    : field < 12 ? e.data : e.control
                v |= UInt64((word >> (8 * UInt32(field % 4))) & 0xFF) << (8 * UInt64(i))
            }
            return v
        }
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        guard offset < MSIX.pbaOffset else { return }   // the PBA is read-only
        table.withLock { t in
            for i in 0..<size {
                let o = Int(offset) + i
                let idx = o / 16
                guard idx < t.entries.count else { return }
                let b = UInt64((value >> (8 * UInt64(i))) & 0xFF)
                let field = o % 16
                let sh = UInt64(field % 4) * 8
                switch field {
                case 0..<8:
                    let s = UInt64(field) * 8
                    t.entries[idx].address = (t.entries[idx].address & ~(0xFF << s)) | (b << s)
                case 8..<12:
                    t.entries[idx].data = (t.entries[idx].data & ~(0xFF << UInt32(sh))) | UInt32(b << sh)
                default:
                    if field == 12 { t.entries[idx].control = (t.entries[idx].control & ~1) | UInt32(b & 1) }
                }
            }
        }
        deliverPending()
    }
}
