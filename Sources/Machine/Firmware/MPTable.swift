// The Intel MultiProcessor Specification 1.4 tables (floating pointer "_MP_" + "PCMP" configuration
// table), for guests booted with acpi=off or too old for ACPI: processors, the ISA and PCI buses,
// the I/O APIC, ISA IRQ routing (IRQ 0 on pin 2, as in the MADT), each PCI slot's INTA-D on the pins
// the PIIX links are steered to, and the local interrupts (ExtINT on LINT0, NMI on LINT1).
public enum MPTable {
    /// Bytes to place at `address` (16-byte aligned): the floating pointer, then the table.
    public static func build(cpuCount: Int, pciSlots: [Int], address: UInt32) -> [UInt8] {
        let ioapicID = UInt8(cpuCount)
        var entries: [[UInt8]] = []
        for i in 0..<cpuCount {
            entries.append([0, UInt8(i), 0x14, i == 0 ? 0x03 : 0x01] + AML.le(0x600, 4) + AML.le(0x201, 4) + [UInt8](repeating: 0, count: 8))
        }
        entries.append([1, 0] + Array("PCI   ".utf8))
        entries.append([1, 1] + Array("ISA   ".utf8))
        entries.append([2, ioapicID, 0x20, 1] + AML.le(PCMemoryMap.ioapicBase, 4))
        // ISA interrupts (bus 1): conforming polarity/trigger, IRQ 0 to pin 2.
        for irq in 0..<16 where irq != 2 {
            entries.append([3, 0] + AML.le(0, 2) + [1, UInt8(irq), ioapicID, irq == 0 ? 2 : UInt8(irq)])
        }
        // PCI interrupts (bus 0): level, active low, source = slot << 2 | pin.
        for slot in pciSlots where slot > 0 {
            for pin in 0..<4 {
                let gsi = PIIX3.defaultPIRQ[PCIBus.pirq(device: slot, pin: pin + 1)]
                entries.append([3, 0] + AML.le(0x0F, 2) + [0, UInt8(slot << 2 | pin), ioapicID, gsi])
            }
        }
        entries.append([4, 3] + AML.le(0, 2) + [1, 0, 0xFF, 0])   // ExtINT -> LINT0 of all
        entries.append([4, 1] + AML.le(0, 2) + [1, 0, 0xFF, 1])   // NMI -> LINT1 of all
        let body = entries.flatMap { $0 }
        var table = Array("PCMP".utf8) + AML.le(UInt64(44 + body.count), 2) + [4, 0] + Array("BOCHSCPU".utf8)
            + Array("0.1         ".utf8) + AML.le(0, 4) + AML.le(0, 2) + AML.le(UInt64(entries.count), 2)
            + AML.le(PCMemoryMap.lapicBase, 4) + AML.le(0, 2) + [0, 0]
        table += body
        table[7] = ACPITables.checksum(table)
        var fp = Array("_MP_".utf8) + AML.le(UInt64(address) + 16, 4) + [1, 4, 0, 0, 0, 0, 0, 0]
        fp[10] = ACPITables.checksum(fp)
        return fp + table
    }
}
