// The memory types SeaBIOS gives the pc machine before it boots anything (its mtrr_setup): RAM
// write-back by default, the VGA window uncached, the option-ROM/BIOS area below 1 MiB
// write-protected, and the PCI hole, from where SeaBIOS starts 32-bit PCI memory up to 4 GiB,
// uncached. A kernel booted directly, without SeaBIOS, gets the same on every vCPU, so that Linux
// finds MTRRs enabled and sets up PAT as it does under QEMU.

/// One MSR a firmware writes before the kernel starts.
public struct FirmwareMSR: Sendable, Equatable {
    public var index: UInt32
    public var value: UInt64
    public init(_ index: UInt32, _ value: UInt64) { self.index = index; self.value = value }
}

public enum FirmwareMTRRs {
    static let defType: UInt32 = 0x2FF
    static let fix64K: UInt32 = 0x250, fix16K80000: UInt32 = 0x258, fix16KA0000: UInt32 = 0x259
    static let fix4KC0000: UInt32 = 0x268
    static let variablePairs = 8   // MTRRCAP.VCNT of our CPU models (and KVM's)
    static let writeBack: UInt8 = 6, writeProtect: UInt8 = 5

    /// Where SeaBIOS places 32-bit PCI memory on the i440FX for this much RAM below 4 GiB.
    static func pciMemoryStart(ramBelow4G: UInt64) -> UInt64 {
        if ramBelow4G <= 0x8000_0000 { return 0x8000_0000 }
        if ramBelow4G <= 0xC000_0000 { return 0xC000_0000 }
        return 0xE000_0000
    }

    /// A fixed-range MTRR: byte `i` covers [start + i * unit, start + (i + 1) * unit) and gets
    /// `type` where RAM reaches the end of that piece (uncached, 0, elsewhere).
    static func fixed(start: UInt64, unit: UInt64, type: UInt8, ramBelow4G: UInt64) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 where ramBelow4G >= start + unit * UInt64(i + 1) { v |= UInt64(type) << (8 * UInt64(i)) }
        return v
    }

    public static func msrs(ramBelow4G: UInt64, physicalAddressBits: Int) -> [FirmwareMSR] {
        var m: [FirmwareMSR] = [FirmwareMSR(defType, 0)]   // off while they change, as SeaBIOS does
        m.append(FirmwareMSR(fix64K, fixed(start: 0, unit: 0x1_0000, type: writeBack, ramBelow4G: ramBelow4G)))
        m.append(FirmwareMSR(fix16K80000, fixed(start: 0x8_0000, unit: 0x4000, type: writeBack, ramBelow4G: ramBelow4G)))
        m.append(FirmwareMSR(fix16KA0000, 0))
        for j in 0..<8 {
            m.append(FirmwareMSR(fix4KC0000 + UInt32(j), fixed(start: 0xC_0000 + UInt64(j) * 0x8000, unit: 0x1000,
                                                           type: writeProtect, ramBelow4G: ramBelow4G)))
        }
        for i in 0..<variablePairs {
            m.append(FirmwareMSR(0x200 + UInt32(2 * i), 0))
            m.append(FirmwareMSR(0x201 + UInt32(2 * i), 0))
        }
        let start = pciMemoryStart(ramBelow4G: ramBelow4G)
        let physMask: UInt64 = physicalAddressBits >= 64 ? .max : (1 << UInt64(physicalAddressBits)) - 1
        m.append(FirmwareMSR(0x200, start))   // type 0: uncached
        m.append(FirmwareMSR(0x201, ((0 &- (PCMemoryMap.fourGiB - start)) & physMask) | 0x800))
        m.append(FirmwareMSR(defType, 0xC00 | UInt64(writeBack)))
        return m
    }
}
