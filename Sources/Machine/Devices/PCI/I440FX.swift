// The i440FX host bridge (00:00.0, 8086:1237): only its identity and the PAM/SMRAM registers.
//
// PAM registers (0x59-0x5F) say how 0xC0000-0xFFFFF decodes. This machine always backs that range
// with RAM, so the registers are plain storage; PAM0 starts as "F-segment read/write", which tells
// SeaBIOS that the BIOS area is already shadowed.
import Synchronization

public final class I440FXHostBridge: PCIDevice {
    public let pciName = "i440FX"
    public let config: Mutex<PCIConfigSpace>

    public init() {
        config = Mutex(I440FXHostBridge.initialConfig())
    }

    static func initialConfig() -> PCIConfigSpace {
        var c = PCIConfigSpace(vendor: 0x8086, device: 0x1237, classCode: 0x06_00_00, revision: 0x02,
                               subsystemVendor: 0x1AF4, subsystem: 0x1100)   // QEMU's: SeaBIOS looks for them
        for o in 0x59...0x5F { c.writeMask[o] = 0xFF; c.set8(o, 0x33) }
        c.set8(0x59, 0x30)
        c.writeMask[0x72] = 0xFF   // SMRAM
        c.set8(0x72, 0x02)
        return c
    }

    public func pciReset() { config.withLock { $0 = I440FXHostBridge.initialConfig() } }
}
