// The pc machine's guest-physical layout, as QEMU's pc_piix builds it (pure arithmetic, no memory).
//
// Feature S4: RAM up to the 3.5 GiB limit (max-ram-below-4g) sits below 4 GiB; a guest with at
// least that much gets 3 GiB below 4 GiB (gigabyte alignment, so huge pages line up) and the rest
// above 4 GiB. Between the end of low RAM and 4 GiB lie the PCI hole, the I/O APIC (0xFEC00000),
// HPET (0xFED00000), local APIC (0xFEE00000) and the BIOS ROM at the top.
public struct PCMemoryMap: Sendable, Equatable {
    public static let maxRAMBelow4G: UInt64 = 0xE000_0000
    public static let gigabyteAlignedLowMem: UInt64 = 0xC000_0000
    public static let fourGiB: UInt64 = 0x1_0000_0000
    public static let ioapicBase: UInt64 = 0xFEC0_0000
    public static let hpetBase: UInt64 = 0xFED0_0000
    public static let lapicBase: UInt64 = 0xFEE0_0000
    /// Where BARs are placed when we assign them (below the I/O APIC).
    public static let pciMMIOTop: UInt64 = 0xFEC0_0000
    /// KVM's TSS and identity-map pages (QEMU's choice), reserved in e820.
    public static let kvmIdentityMap: UInt64 = 0xFEFF_C000
    public static let kvmTSS: UInt64 = 0xFEFF_D000
    /// The VGA window / ISA hole that is not RAM.
    public static let vgaHoleStart: UInt64 = 0xA_0000
    public static let vgaHoleEnd: UInt64 = 0xC_0000
    /// Conventional memory ends here (the EBDA follows).
    public static let ebdaStart: UInt64 = 0x9_FC00

    public let ramSize: UInt64
    public let below4G: UInt64
    public let above4G: UInt64

    public init(ramSize: UInt64) {
        self.ramSize = ramSize
        var lowmem = PCMemoryMap.maxRAMBelow4G
        if ramSize >= lowmem { lowmem = min(lowmem, PCMemoryMap.gigabyteAlignedLowMem) }
        if ramSize >= lowmem {
            below4G = lowmem
            above4G = ramSize - lowmem
        } else {
            below4G = ramSize
            above4G = 0
        }
    }

    /// Start of the 32-bit PCI memory window (QEMU: the end of low RAM, at least 0xE0000000 here
    /// so that small guests get their BARs at the usual place).
    public var pciHoleStart: UInt64 { max(below4G, 0xE000_0000) }
}
