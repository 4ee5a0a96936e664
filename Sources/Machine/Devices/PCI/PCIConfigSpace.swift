// A PCI function's 256-byte configuration space: the standard type-0 header, BAR sizing, the
// capability list, and per-byte write masks, so that a device declares what is writable once and
// never hand-codes register semantics for the generic parts.
//
// BARs: the device declares kind and size; a write of all ones returns the size mask on the next
// read, as the PCI spec's sizing protocol needs. `decodedBARs()` says where each BAR is mapped now
// (nil while the command register's I/O or memory decode bit is off), which the bus uses to move the
// BAR's registers in port or MMIO space. Offsets and sizes from the guest are checked: an access
// outside the 256 bytes or not naturally aligned reads all ones and writes nothing.

public struct PCIBARSpec: Sendable {
    public enum Kind: Sendable, Equatable { case io, memory32, memory64 }
    public var kind: Kind
    /// Power of two; at least 4 for I/O and 16 for memory.
    public var size: UInt64
    public var prefetchable: Bool
    /// The registers behind the BAR.
    public var device: any BusDevice

    public init(kind: Kind, size: UInt64, prefetchable: Bool = false, device: any BusDevice) {
        precondition(size.nonzeroBitCount == 1 && size >= (kind == .io ? 4 : 16))
        self.kind = kind
        self.size = size
        self.prefetchable = prefetchable
        self.device = device
    }
}

public struct PCIConfigSpace: Sendable {
    public var bytes = [UInt8](repeating: 0, count: 256)
    /// Bits the guest may change.
    public var writeMask = [UInt8](repeating: 0, count: 256)
    /// Bits cleared by writing 1 (status register).
    public var w1cMask = [UInt8](repeating: 0, count: 256)
    public private(set) var bars = [PCIBARSpec?](repeating: nil, count: 6)
    private var lastCapability = 0
    private var nextCapabilityOffset = 0x40

    public static let command = 0x04, status = 0x06, interruptLine = 0x3C, interruptPin = 0x3D
    public static let commandIO: UInt16 = 0x1, commandMemory: UInt16 = 0x2, commandBusMaster: UInt16 = 0x4
    public static let commandIntxDisable: UInt16 = 0x400

    public init(vendor: UInt16, device: UInt16, classCode: UInt32, revision: UInt8 = 0,
                subsystemVendor: UInt16 = 0, subsystem: UInt16 = 0, headerType: UInt8 = 0, interruptPin: UInt8 = 0) {
        set16(0x00, vendor)
        set16(0x02, device)
        bytes[0x08] = revision
        bytes[0x09] = UInt8(classCode & 0xFF)
        bytes[0x0A] = UInt8((classCode >> 8) & 0xFF)
        bytes[0x0B] = UInt8((classCode >> 16) & 0xFF)
        bytes[0x0E] = headerType
        set16(0x2C, subsystemVendor)
        set16(0x2E, subsystem)
        bytes[0x3D] = interruptPin
        // command: I/O, memory, bus master, SERR, INTx disable
        writeMask[0x04] = 0x07 | 0x40
        writeMask[0x05] = 0x01 | 0x04
        w1cMask[0x07] = 0xF9        // status error bits
        writeMask[0x0C] = 0xFF      // cache line size
        writeMask[0x0D] = 0xFF      // latency timer
        writeMask[0x3C] = 0xFF      // interrupt line
    }

    // MARK: raw access (device set-up; not masked)

    public mutating func set8(_ o: Int, _ v: UInt8) { bytes[o] = v }
    public mutating func set16(_ o: Int, _ v: UInt16) { bytes[o] = UInt8(v & 0xFF); bytes[o + 1] = UInt8(v >> 8) }
    public mutating func set32(_ o: Int, _ v: UInt32) { for i in 0..<4 { bytes[o + i] = UInt8((v >> (8 * UInt32(i))) & 0xFF) } }
    public func get8(_ o: Int) -> UInt8 { bytes[o] }
    public func get16(_ o: Int) -> UInt16 { UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
    public func get32(_ o: Int) -> UInt32 { UInt32(get16(o)) | UInt32(get16(o + 2)) << 16 }
    public mutating func setWritable(_ o: Int, mask: [UInt8]) { for (i, m) in mask.enumerated() { writeMask[o + i] = m } }

    public var commandRegister: UInt16 { get16(PCIConfigSpace.command) }
    public var busMasterEnabled: Bool { commandRegister & PCIConfigSpace.commandBusMaster != 0 }
    public var intxDisabled: Bool { commandRegister & PCIConfigSpace.commandIntxDisable != 0 }

    // MARK: BARs

    /// Declares BAR `index` (a 64-bit BAR also takes `index + 1`), optionally with an initial address
    /// (what firmware would have assigned).
    public mutating func declareBAR(_ index: Int, _ spec: PCIBARSpec, address: UInt64 = 0) {
        precondition(index >= 0 && index < 6 && (spec.kind != .memory64 || index < 5))
        bars[index] = spec
        let off = 0x10 + 4 * index
        let low: UInt32
        switch spec.kind {
        case .io: low = 0x1
        case .memory32: low = spec.prefetchable ? 0x8 : 0
        case .memory64: low = 0x4 | (spec.prefetchable ? 0x8 : 0)
        }
        let mask = ~(spec.size - 1)
        set32(off, UInt32(truncatingIfNeeded: address & mask) | low)
        let lowMask = UInt32(truncatingIfNeeded: mask) & (spec.kind == .io ? ~0x3 : ~0xF)
        setWritable(off, mask: PCIConfigSpace.le32(lowMask))
        if spec.kind == .memory64 {
            set32(off + 4, UInt32(truncatingIfNeeded: address >> 32))
            setWritable(off + 4, mask: PCIConfigSpace.le32(UInt32(truncatingIfNeeded: mask >> 32)))
        }
    }

    public func barAddress(_ index: Int) -> UInt64? {
        guard let spec = bars[index] else { return nil }
        let off = 0x10 + 4 * index
        let low = UInt64(get32(off))
        switch spec.kind {
        case .io: return low & ~0x3
        case .memory32: return low & ~0xF
        case .memory64: return (low & ~0xF) | UInt64(get32(off + 4)) << 32
        }
    }

    /// Where each BAR decodes now: (index, base, spec), only for enabled and sane addresses.
    public func decodedBARs() -> [(Int, UInt64, PCIBARSpec)] {
        var out: [(Int, UInt64, PCIBARSpec)] = []
        let cmd = commandRegister
        for i in 0..<6 {
            guard let spec = bars[i], let base = barAddress(i) else { continue }
            let enabled = spec.kind == .io ? cmd & PCIConfigSpace.commandIO != 0 : cmd & PCIConfigSpace.commandMemory != 0
            guard enabled, base != 0 else { continue }
            if spec.kind == .io && base + spec.size > 0x10000 { continue }
            if base.addingReportingOverflow(spec.size).overflow { continue }
            // During sizing the BAR holds the size mask: never map that.
            if base == ~(spec.size - 1) & (spec.kind == .memory64 ? ~0 : 0xFFFF_FFF0) { continue }
            out.append((i, base, spec))
        }
        return out
    }

    // MARK: capabilities

    /// Appends a capability with `body` (bytes after the ID and next pointer); returns its offset.
    @discardableResult
    public mutating func addCapability(id: UInt8, body: [UInt8]) -> Int {
        let off = nextCapabilityOffset
        precondition(off + 2 + body.count <= 256)
        bytes[off] = id
        bytes[off + 1] = 0
        for (i, b) in body.enumerated() { bytes[off + 2 + i] = b }
        if lastCapability == 0 {
            bytes[0x34] = UInt8(off)
            bytes[PCIConfigSpace.status] |= 0x10   // capability list
        } else {
            bytes[lastCapability + 1] = UInt8(off)
        }
        lastCapability = off
        nextCapabilityOffset = (off + 2 + body.count + 3) & ~3
        return off
    }

    // MARK: guest access

    static func valid(_ offset: Int, _ size: Int) -> Bool {
        (size == 1 || size == 2 || size == 4) && offset >= 0 && offset + size <= 256 && offset % size == 0
    }

    public func read(_ offset: Int, size: Int) -> UInt32 {
        guard PCIConfigSpace.valid(offset, size) else { return UInt32(truncatingIfNeeded: IOBus.allOnes(size)) }
        var v: UInt32 = 0
        for i in 0..<size { v |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
        return v
    }

    /// Applies a guest write through the masks.
    public mutating func write(_ offset: Int, size: Int, value: UInt32) {
        guard PCIConfigSpace.valid(offset, size) else { return }
        for i in 0..<size {
            let o = offset + i
            let b = UInt8((value >> (8 * UInt32(i))) & 0xFF)
            bytes[o] = (bytes[o] & ~writeMask[o]) | (b & writeMask[o])
            bytes[o] &= ~(b & w1cMask[o])
        }
    }

    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * UInt32($0))) & 0xFF) } }
}
