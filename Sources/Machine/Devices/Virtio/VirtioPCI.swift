// The virtio-pci transport, modern interface (virtio 1.x section 4.1), as QEMU lays it out:
// BAR1 = MSI-X table/PBA (4 KiB), BAR4 = 64-bit memory, 16 KiB: common config at 0x0000, ISR at
// 0x1000, device config at 0x2000, notifications at 0x3000 (multiplier 4, queue i at 4*i).
// The capabilities (vendor-specific, cfg_type 1-4) point there. Device ID 0x1040 + type,
// revision 1, subsystem = type, so Linux's virtio_pci binds with the modern driver.
//
// Guest-supplied values are checked: queue_select beyond the queue count reads as size 0 and
// ignores writes, a queue is only enabled when its rings lie in RAM, FEATURES_OK is refused for
// features we did not offer or without VERSION_1, MSI-X vectors beyond the table read back as
// NO_VECTOR (0xFFFF), and writing status 0 resets everything.
import Synchronization

public final class VirtioPCI: PCIDevice, VirtioInterrupts, @unchecked Sendable {
    public let pciName: String
    public let config: Mutex<PCIConfigSpace>
    public let device: any VirtioDeviceType
    public let queues: [Virtqueue]
    let msix: MSIX
    private var intx: IRQLine?

    public static let commonOffset: UInt64 = 0x0000, isrOffset: UInt64 = 0x1000
    public static let deviceOffset: UInt64 = 0x2000, notifyOffset: UInt64 = 0x3000
    public static let notifyMultiplier: UInt64 = 4
    public static let modernBARSize: UInt64 = 0x4000
    public static let noVector: UInt16 = 0xFFFF

    struct State {
        var deviceFeatureSelect: UInt32 = 0
        var driverFeatureSelect: UInt32 = 0
        var driverFeatures: UInt64 = 0
        var configVector: UInt16 = VirtioPCI.noVector
        var status: UInt8 = 0
        var configGeneration: UInt8 = 0
        var queueSelect: UInt16 = 0
        var isr: UInt8 = 0
    }
    let state = Mutex(State())
    private let warnedBroken = Atomic<Bool>(false)
    let initialConfig: PCIConfigSpace

    /// `bar1`/`bar4`: addresses to pre-assign (as firmware would); 0 leaves them for the guest.
    /// Transitional (legacy + modern, QEMU's default on the pc machine) or modern only (disable-legacy=on).
    public let legacy: Bool

    public init(name: String, device: any VirtioDeviceType, ram: GuestRAM, sink: any InterruptSink,
                bar1: UInt64, bar4: UInt64, legacy: Bool = false, bar0: UInt64 = 0) {
        self.legacy = legacy
        pciName = name
        self.device = device
        queues = (0..<device.queueCount).map { _ in Virtqueue(ram: ram, maxSize: device.queueMaxSize) }
        msix = MSIX(vectors: device.queueCount + 1, sink: sink)
        let type = device.virtioDeviceID
        var c = PCIConfigSpace(vendor: 0x1AF4, device: legacy ? VirtioPCI.transitionalID(type) : 0x1040 + type,
                               classCode: VirtioPCI.classCode(type), revision: legacy ? 0 : 1,
                               subsystemVendor: 0x1AF4, subsystem: type, interruptPin: 1)
        let regs = ModernRegisters()
        let legacyRegs = LegacyRegisters()
        if legacy {
            c.declareBAR(0, PCIBARSpec(kind: .io, size: VirtioPCI.legacyBARSize, device: legacyRegs), address: bar0)
        }
        c.declareBAR(1, PCIBARSpec(kind: .memory32, size: MSIX.barSize, device: msix), address: bar1)
        c.declareBAR(4, PCIBARSpec(kind: .memory64, size: VirtioPCI.modernBARSize, prefetchable: true, device: regs), address: bar4)
        msix.addCapability(to: &c, bar: 1)
        func vendorCap(_ type: UInt8, _ offset: UInt64, _ length: UInt64, extra: [UInt8] = []) {
            let body: [UInt8] = [UInt8(16 + extra.count), type, 4, 0, 0, 0] + AML.le(offset, 4) + AML.le(length, 4) + extra
            c.addCapability(id: 0x09, body: body)
        }
        vendorCap(1, VirtioPCI.commonOffset, 0x38)
        vendorCap(3, VirtioPCI.isrOffset, 1)
        vendorCap(4, VirtioPCI.deviceOffset, 0x1000)
        vendorCap(2, VirtioPCI.notifyOffset, UInt64(device.queueCount) * VirtioPCI.notifyMultiplier,
                  extra: AML.le(VirtioPCI.notifyMultiplier, 4))
        initialConfig = c
        config = Mutex(c)
        regs.transport = self
        legacyRegs.transport = self
        let capOffset = msix.capabilityOffset
        msix.controlReader = { [unowned self] in
            let c = self.config.withLock { MSIX.control($0, capability: capOffset) }
            return (c.enabled, c.masked)
        }
    }

    static func classCode(_ type: UInt16) -> UInt32 {
        switch type {
        case 1: return 0x02_00_00     // network
        case 2: return 0x01_00_00     // SCSI storage (what QEMU reports for virtio-blk)
        default: return 0xFF_00_00
        }
    }

    public func attachInterrupt(_ line: IRQLine) { intx = line }

    public func configDidWrite(offset: Int, size: Int) {
        let cap = msix.capabilityOffset
        if offset <= cap + 3 && offset + size > cap + 2 { msix.deliverPending() }
    }

    public func pciReset() {
        config.withLock { $0 = initialConfig }
        resetTransport()
        msix.reset()
    }

    func resetTransport() {
        device.deviceReset()
        for q in queues { q.lock.withLock { _ in q.reset() } }
        state.withLock { $0 = State() }
        intx?.lower()
    }

    // MARK: VirtioInterrupts

    public func usedBuffers(queue: Int) {
        guard queue >= 0 && queue < queues.count else { return }
        if msix.isEnabled {
            let v = queues[queue].config.msixVector
            if v != VirtioPCI.noVector { msix.notify(vector: v) }
            return
        }
        state.withLock { $0.isr |= 1 }
        if !(config.withLock { $0.intxDisabled }) { intx?.raise() }
    }

    public func configChanged() {
        state.withLock { $0.configGeneration &+= 1 }
        if msix.isEnabled {
            let v = state.withLock { $0.configVector }
            if v != VirtioPCI.noVector { msix.notify(vector: v) }
            return
        }
        state.withLock { $0.isr |= 2 }
        if !(config.withLock { $0.intxDisabled }) { intx?.raise() }
    }

    public func deviceNeedsReset(_ reason: String) {
        if !warnedBroken.exchange(true, ordering: .relaxed) {
            Diagnostics.warn("\(pciName): \(reason); the device needs a reset")
        }
        state.withLock { $0.status |= VirtioStatus.needsReset }
        configChanged()
    }

    // MARK: registers

    fileprivate func commonRead(_ off: UInt64, _ size: Int) -> UInt64 {
        state.withLock { s in
            let qs = Int(s.queueSelect)
            let q = qs < queues.count ? queues[qs] : nil
            switch (off, size) {
            case (0x00, 4): return UInt64(s.deviceFeatureSelect)
            case (0x04, 4):
                return s.deviceFeatureSelect < 2 ? (device.deviceFeatures >> (32 * UInt64(s.deviceFeatureSelect))) & 0xFFFF_FFFF : 0
            case (0x08, 4): return UInt64(s.driverFeatureSelect)
            case (0x0C, 4):
                return s.driverFeatureSelect < 2 ? (s.driverFeatures >> (32 * UInt64(s.driverFeatureSelect))) & 0xFFFF_FFFF : 0
            case (0x10, 2): return UInt64(s.configVector)
            case (0x12, 2): return UInt64(queues.count)
            case (0x14, 1): return UInt64(s.status)
            case (0x15, 1): return UInt64(s.configGeneration)
            case (0x16, 2): return UInt64(s.queueSelect)
            case (0x18, 2): return UInt64(q?.config.size ?? 0)
            case (0x1A, 2): return UInt64(q?.config.msixVector ?? VirtioPCI.noVector)
            case (0x1C, 2): return q?.config.ready == true ? 1 : 0
            case (0x1E, 2): return UInt64(qs < queues.count ? qs : 0)
            case (0x20, 4): return (q?.config.descTable ?? 0) & 0xFFFF_FFFF
            case (0x24, 4): return (q?.config.descTable ?? 0) >> 32
            case (0x28, 4): return (q?.config.availRing ?? 0) & 0xFFFF_FFFF
            case (0x2C, 4): return (q?.config.availRing ?? 0) >> 32
            case (0x30, 4): return (q?.config.usedRing ?? 0) & 0xFFFF_FFFF
            case (0x34, 4): return (q?.config.usedRing ?? 0) >> 32
            default: return 0
            }
        }
    }

    fileprivate func commonWrite(_ off: UInt64, _ size: Int, _ value: UInt64) {
        var activate = false
        var reset = false
        state.withLock { s in
            let qs = Int(s.queueSelect)
            let q = qs < queues.count ? queues[qs] : nil
            // Queue registers may only change while the queue is disabled.
            let qWritable = q != nil && q!.config.ready == false
            func setHalf(_ v: inout UInt64, high: Bool) {
                v = high ? (v & 0xFFFF_FFFF) | (value << 32) : (v & ~0xFFFF_FFFF) | (value & 0xFFFF_FFFF)
            }
            switch (off, size) {
            case (0x00, 4): s.deviceFeatureSelect = UInt32(truncatingIfNeeded: value)
            case (0x08, 4): s.driverFeatureSelect = UInt32(truncatingIfNeeded: value)
            case (0x0C, 4):
                guard s.status & VirtioStatus.featuresOK == 0, s.driverFeatureSelect < 2 else { break }
                let sh = 32 * UInt64(s.driverFeatureSelect)
                s.driverFeatures = (s.driverFeatures & ~(0xFFFF_FFFF << sh)) | ((value & 0xFFFF_FFFF) << sh)
            case (0x10, 2):
                let v = UInt16(truncatingIfNeeded: value)
                s.configVector = Int(v) < msix.vectorCount ? v : VirtioPCI.noVector
            case (0x14, 1):
                let v = UInt8(truncatingIfNeeded: value)
                if v == 0 { reset = true; break }
                var new = v
                if v & VirtioStatus.featuresOK != 0 && s.status & VirtioStatus.featuresOK == 0 {
                    let ok = s.driverFeatures & ~device.deviceFeatures == 0 && s.driverFeatures & VirtioFeature.version1 != 0
                    if !ok { new &= ~VirtioStatus.featuresOK }
                }
                if v & VirtioStatus.driverOK != 0 && s.status & VirtioStatus.driverOK == 0
                    && new & VirtioStatus.featuresOK != 0 { activate = true }
                s.status = new | (s.status & VirtioStatus.needsReset)
            case (0x16, 2): s.queueSelect = UInt16(truncatingIfNeeded: value)
            case (0x18, 2):
                let v = UInt16(truncatingIfNeeded: value)
                if qWritable, v != 0, v.nonzeroBitCount == 1, v <= q!.maxSize { q!.config.size = v }
            case (0x1A, 2):
                let v = UInt16(truncatingIfNeeded: value)
                q?.config.msixVector = Int(v) < msix.vectorCount ? v : VirtioPCI.noVector
            case (0x1C, 2):
                if value == 1, let q, qWritable {
                    q.config.ready = true
                    if (try? q.validate()) == nil { q.config.ready = false }
                }
            case (0x20, 4), (0x24, 4): if qWritable { setHalf(&q!.config.descTable, high: off == 0x24) }
            case (0x28, 4), (0x2C, 4): if qWritable { setHalf(&q!.config.availRing, high: off == 0x2C) }
            case (0x30, 4), (0x34, 4): if qWritable { setHalf(&q!.config.usedRing, high: off == 0x34) }
            default: break
            }
        }
        if reset { resetTransport() }
        if activate {
            let features = state.withLock { $0.driverFeatures }
            device.activate(features: features, queues: queues, interrupts: self)
        }
    }

    func isrRead() -> UInt64 {
        let v = state.withLock { s -> UInt8 in
            let v = s.isr
            s.isr = 0
            return v
        }
        intx?.lower()
        return UInt64(v)
    }

    func notifyWrite(_ off: UInt64) {
        let index = Int(off / VirtioPCI.notifyMultiplier)
        guard index < queues.count else { return }
        let ok = state.withLock { $0.status & VirtioStatus.driverOK != 0 }
        if ok && queues[index].config.ready { device.notify(queue: index) }
    }

    fileprivate var deviceStatus: UInt8 { state.withLock { $0.status } }
}

/// BAR4's register window, dispatching by region.
private final class ModernRegisters: BusDevice, @unchecked Sendable {
    unowned(unsafe) var transport: VirtioPCI!

    func busRead(offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case VirtioPCI.commonOffset..<VirtioPCI.isrOffset: return transport.commonRead(offset, size)
        case VirtioPCI.isrOffset: return transport.isrRead()
        case VirtioPCI.deviceOffset..<VirtioPCI.notifyOffset:
            return transport.device.readConfig(offset: Int(offset - VirtioPCI.deviceOffset), size: size)
        default: return 0
        }
    }

    func busWrite(offset: UInt64, size: Int, value: UInt64) {
        switch offset {
        case VirtioPCI.commonOffset..<VirtioPCI.isrOffset: transport.commonWrite(offset, size, value)
        case VirtioPCI.deviceOffset..<VirtioPCI.notifyOffset:
            transport.device.writeConfig(offset: Int(offset - VirtioPCI.deviceOffset), size: size, value: value)
        case VirtioPCI.notifyOffset..<VirtioPCI.modernBARSize: transport.notifyWrite(offset - VirtioPCI.notifyOffset)
        default: break
        }
    }
}
