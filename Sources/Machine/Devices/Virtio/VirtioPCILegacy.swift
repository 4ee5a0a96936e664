// The legacy virtio-pci interface (virtio 1.x section 4.1.4.8, "virtio 0.9.5") in I/O BAR 0, which
// makes a function transitional as QEMU's default virtio-blk-pci on the pc machine is: device ID
// 0x1000-0x103F, revision 0, and this register block next to the modern capabilities. Drivers that
// only know legacy (old kernels, SeaBIOS) use it; Linux's virtio_pci prefers the modern interface.
//
// Layout: 0x00 host features, 0x04 guest features, 0x08 queue PFN, 0x0C queue size, 0x0E queue
// select, 0x10 queue notify, 0x12 status, 0x13 ISR, then with MSI-X enabled 0x14 config vector and
// 0x16 queue vector before the device configuration (at 0x18, else at 0x14). A queue PFN places the
// descriptor table at PFN * 4096, the available ring right after it and the used ring at the next
// 4 KiB boundary; a PFN whose rings are not RAM leaves the queue disabled.

extension VirtioPCI {
    static let legacyBARSize: UInt64 = 0x80

    static func transitionalID(_ type: UInt16) -> UInt16 {
        switch type {
        case 1: return 0x1000
        case 2: return 0x1001
        case 3: return 0x1003
        case 4: return 0x1005
        case 5: return 0x1002
        case 8: return 0x1004
        case 9: return 0x1009
        default: return 0x1040 + type
        }
    }

    private var legacyConfigOffset: UInt64 { msix.isEnabled ? 0x18 : 0x14 }

    func legacyRead(_ off: UInt64, _ size: Int) -> UInt64 {
        if off >= legacyConfigOffset {
            return device.readConfig(offset: Int(off - legacyConfigOffset), size: size)
        }
        if off == 0x13 && size == 1 { return isrRead() }
        return state.withLock { s in
            let qs = Int(s.queueSelect)
            let q = qs < queues.count ? queues[qs] : nil
            switch (off, size) {
            case (0x00, 4): return device.deviceFeatures & 0xFFFF_FFFF
            case (0x04, 4): return s.driverFeatures & 0xFFFF_FFFF
            case (0x08, 4): return q.map { $0.config.ready ? $0.config.descTable >> 12 : 0 } ?? 0
            case (0x0C, 2): return UInt64(q?.maxSize ?? 0)
            case (0x0E, 2): return UInt64(s.queueSelect)
            case (0x12, 1): return UInt64(s.status)
            case (0x14, 2): return UInt64(s.configVector)
            case (0x16, 2): return UInt64(q?.config.msixVector ?? VirtioPCI.noVector)
            default: return 0
            }
        }
    }

    func legacyWrite(_ off: UInt64, _ size: Int, _ value: UInt64) {
        if off >= legacyConfigOffset {
            device.writeConfig(offset: Int(off - legacyConfigOffset), size: size, value: value)
            return
        }
        var activate = false
        var reset = false
        var notify: Int? = nil
        state.withLock { s in
            let qs = Int(s.queueSelect)
            let q = qs < queues.count ? queues[qs] : nil
            switch (off, size) {
            case (0x04, 4):
                if s.status & VirtioStatus.driverOK == 0 { s.driverFeatures = value & device.deviceFeatures & 0xFFFF_FFFF }
            case (0x08, 4):
                guard let q else { break }
                if value == 0 {
                    q.config.ready = false
                    break
                }
                guard !q.config.ready, value < 1 << 52 else { break }
                let n = UInt64(q.maxSize)
                q.config.size = q.maxSize
                q.config.descTable = value << 12
                q.config.availRing = q.config.descTable + 16 * n
                q.config.usedRing = (q.config.availRing + 6 + 2 * n + 0xFFF) & ~0xFFF
                q.config.ready = (try? q.validate()) != nil
            case (0x0E, 2): s.queueSelect = UInt16(truncatingIfNeeded: value)
            case (0x10, 2): notify = Int(value & 0xFFFF)
            case (0x12, 1):
                let v = UInt8(truncatingIfNeeded: value)
                if v == 0 { reset = true; break }
                if v & VirtioStatus.driverOK != 0 && s.status & VirtioStatus.driverOK == 0 { activate = true }
                s.status = v
            case (0x14, 2):
                let v = UInt16(truncatingIfNeeded: value)
                s.configVector = Int(v) < msix.vectorCount ? v : VirtioPCI.noVector
            case (0x16, 2):
                let v = UInt16(truncatingIfNeeded: value)
                q?.config.msixVector = Int(v) < msix.vectorCount ? v : VirtioPCI.noVector
            default: break
            }
        }
        if reset { resetTransport() }
        if activate {
            let features = state.withLock { $0.driverFeatures }
            device.activate(features: features, queues: queues, interrupts: self)
        }
        if let notify { notifyWrite(UInt64(notify) * VirtioPCI.notifyMultiplier) }
    }
}

/// BAR0's register window.
final class LegacyRegisters: BusDevice, @unchecked Sendable {
    unowned(unsafe) var transport: VirtioPCI!
    func busRead(offset: UInt64, size: Int) -> UInt64 { transport.legacyRead(offset, size) }
    func busWrite(offset: UInt64, size: Int, value: UInt64) { transport.legacyWrite(offset, size, value) }
}
