// PCI bus 0 and its configuration mechanism #1 (0xCF8 address, 0xCFC-0xCFF data), as the i440FX
// host bridge implements it.
//
// The bus owns the plugged functions and keeps each function's BARs mapped where its config space
// says, in the port or MMIO bus: after every config write it compares the decoded BARs with what it
// mapped before and moves only what changed. A BAR that would overlap another mapping stays unmapped
// (a guest programming nonsense must not crash anything). INTx: function at device d, pin p (1-4)
// asserts PIIX PIRQ (d + p - 2) & 3 through the router the board supplies.
import Synchronization

public final class PCIBus: @unchecked Sendable {
    private struct Mapped: Equatable {
        var index: Int
        var base: UInt64
        var io: Bool
        static func == (a: Mapped, b: Mapped) -> Bool { a.index == b.index && a.base == b.base && a.io == b.io }
    }

    private let ports: IOBus
    private let mmio: IOBus
    private let lock = Mutex<[PCIAddress: [Mapped]]>([:])
    private var devices: [PCIAddress: any PCIDevice] = [:]
    /// INTx sink per PIRQ (A-D), set by the board (the PIIX3 router).
    private let intxRouter: (@Sendable (_ pirq: Int) -> IRQLine)?

    public init(ports: IOBus, mmio: IOBus, intxRouter: (@Sendable (Int) -> IRQLine)?) {
        self.ports = ports
        self.mmio = mmio
        self.intxRouter = intxRouter
    }

    /// Plugs a function (before the guest runs) and maps its pre-assigned BARs.
    public func plug(_ device: any PCIDevice, at address: PCIAddress) {
        precondition(devices[address] == nil, "PCI slot \(address) taken")
        devices[address] = device
        let pin = Int(device.config.withLock { $0.get8(PCIConfigSpace.interruptPin) })
        if pin >= 1 && pin <= 4, let intxRouter {
            device.attachInterrupt(intxRouter(PCIBus.pirq(device: address.device, pin: pin)))
        }
        updateMappings(address)
    }

    /// PIIX3 swizzle: PIRQ index (0 = A) for `pin` (1 = INTA) of device number `device`.
    public static func pirq(device: Int, pin: Int) -> Int { (device + pin - 2) & 3 }

    public var plugged: [(PCIAddress, any PCIDevice)] { devices.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }

    public func device(at address: PCIAddress) -> (any PCIDevice)? { devices[address] }

    /// The first free device number from `start`.
    public func freeSlot(from start: Int = 2) -> Int? {
        (start..<32).first { d in devices[PCIAddress(device: d)] == nil }
    }

    public func configRead(_ address: PCIAddress, offset: Int, size: Int) -> UInt32 {
        guard let d = devices[address] else { return UInt32(truncatingIfNeeded: IOBus.allOnes(size)) }
        return d.config.withLock { $0.read(offset, size: size) }
    }

    public func configWrite(_ address: PCIAddress, offset: Int, size: Int, value: UInt32) {
        guard let d = devices[address] else { return }
        d.config.withLock { $0.write(offset, size: size, value: value) }
        d.configDidWrite(offset: offset, size: size)
        if offset < 0x28 || (offset <= 0x30 && offset + size > 0x30) { updateMappings(address) }
    }

    /// Resets every function and re-maps its BARs.
    public func reset() {
        for (a, d) in devices {
            d.pciReset()
            updateMappings(a)
        }
    }

    private func updateMappings(_ address: PCIAddress) {
        guard let d = devices[address] else { return }
        let decoded = d.config.withLock { $0.decodedBARs() }
        lock.withLock { table in
            let old = table[address] ?? []
            let new = decoded.map { Mapped(index: $0.0, base: $0.1, io: $0.2.kind == .io) }
            guard old != new else { return }
            let specs = d.config.withLock { $0.bars }
            for m in old where !new.contains(m) {
                if let spec = specs[m.index] { (m.io ? ports : mmio).unregister(spec.device, base: m.base) }
            }
            var kept: [Mapped] = old.filter { new.contains($0) }
            for (i, base, spec) in decoded where !old.contains(Mapped(index: i, base: base, io: spec.kind == .io)) {
                let bus = spec.kind == .io ? ports : mmio
                if (try? bus.register(spec.device, base: base, length: spec.size, name: "\(d.pciName) BAR\(i)")) != nil {
                    kept.append(Mapped(index: i, base: base, io: spec.kind == .io))
                }
            }
            table[address] = kept
        }
    }
}

/// The 0xCF8/0xCFC configuration mechanism #1, registered at 0xCF8 for 8 ports.
/// Byte accesses to 0xCF9 go to the PIIX reset control register, as on the real chipset.
public final class PCIConfigPorts: BusDevice {
    private let bus: PCIBus
    private let address = Mutex<UInt32>(0)
    private let resetControl: (any BusDevice)?

    public init(bus: PCIBus, resetControl: (any BusDevice)? = nil) {
        self.bus = bus
        self.resetControl = resetControl
    }

    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        if offset == 0 && size == 4 { return UInt64(address.withLock { $0 }) }
        if offset == 1 && size == 1, let resetControl { return resetControl.busRead(offset: 0, size: 1) }
        guard offset >= 4, let (a, reg) = target(byteOffset: Int(offset) - 4) else { return IOBus.allOnes(size) }
        return UInt64(bus.configRead(a, offset: reg, size: size))
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        if offset == 0 && size == 4 {
            address.withLock { $0 = UInt32(truncatingIfNeeded: value) & 0x80FF_FFFC }
            return
        }
        if offset == 1 && size == 1, let resetControl { resetControl.busWrite(offset: 0, size: 1, value: value); return }
        guard offset >= 4, let (a, reg) = target(byteOffset: Int(offset) - 4) else { return }
        bus.configWrite(a, offset: reg, size: size, value: UInt32(truncatingIfNeeded: value))
    }

    /// The function and register the latched address selects (bus 0, enable bit set).
    private func target(byteOffset: Int) -> (PCIAddress, Int)? {
        let a = address.withLock { $0 }
        guard a & 0x8000_0000 != 0, (a >> 16) & 0xFF == 0 else { return nil }
        let dev = Int((a >> 11) & 0x1F), fn = Int((a >> 8) & 0x7)
        return (PCIAddress(device: dev, function: fn), Int(a & 0xFC) + byteOffset)
    }
}
