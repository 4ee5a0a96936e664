// The pc machine's DSDT, generated with the AML builder, laid out as QEMU 7.2's for `pc`:
// - \_SB.PCI0: the PCI root bridge (PNP0A03) with its resource windows (bus 0-255, I/O around
//   0xCF8, VGA memory, the 32-bit hole from the end of low RAM to the I/O APIC, and a 2 GiB 64-bit
//   window above RAM) and _PRT, which names the interrupt link of each slot's INTA-D
//   (PCIInterruptLinks.swift: LNKA-LNKD over the PIIX3's PIRQ route registers, LNKS for the SCI).
// - \_SB.PCI0.S08: the PIIX3 ISA bridge (00:01.0; QEMU 7.2 names PCI functions by slot, S08 is
//   slot 1 function 0) with the PIRQ route registers' operation region, and the ISA devices Linux
//   matches by PNP ID, in QEMU's order: the keyboard controller (PNP0303) and its PS/2 mouse
//   (PNP0F13, IRQ 12), the floppy controller (PNP0700, no drives), COM1 (PNP0501), the RTC (PNP0B00).
// - \_SB.PCI0.FWCF: fw_cfg at 0x510 (QEMU0002), and GPE0: the GPE block's ports, reserved.
// - \_SB.HPET (PNP0103) when present.
// - \_S4 = {2, 2} and \_S5 = {0, 0}: SLP_TYP 2 ends a hibernation and 0 is soft-off in our PIIX4
//   PM (as in QEMU), so `poweroff` and hibernation work. QEMU also has \_S3, which needs resume
//   firmware we do not have.
// - \_GPE with the GPE block's _HID (ACPI0006), as QEMU's. QEMU's _E01 (PCI hotplug) and _E02 (CPU
//   hotplug) handlers and their hardware are not here: we have no hotplug.
// The power button is the FADT's fixed hardware button, which needs no AML.
public enum DSDT {
    public static func build(_ cfg: ACPIConfig) -> [UInt8] {
        let map = cfg.memoryMap
        var pci: [AML] = [
            AML.name("_HID", AML.eisaID("PNP0A03")),
            AML.name("_ADR", AML.zero),
            AML.name("_UID", AML.zero),
        ]
        var crs: [[UInt8]] = [
            AMLResource.wordBusNumber(min: 0, max: 0xFF),
            AMLResource.io(min: 0xCF8, max: 0xCF8, align: 1, length: 8),
            AMLResource.wordIO(min: 0x0000, max: 0x0CF7),
            AMLResource.wordIO(min: 0x0D00, max: 0xFFFF),
            AMLResource.dwordMemory(min: 0x000A_0000, max: 0x000B_FFFF),
            AMLResource.dwordMemory(min: UInt32(map.below4G), max: UInt32(PCMemoryMap.ioapicBase - 1), cacheable: false),
        ]
        // QEMU's pci-hole64-size default: 2 GiB from the first GiB boundary above RAM.
        let highStart = PCMemoryMap.fourGiB + map.above4G
        let highBase = (highStart + (1 << 30) - 1) & ~((1 << 30) - 1)
        crs.append(AMLResource.qwordMemory(min: highBase, max: highBase + (1 << 31) - 1))
        pci.append(AML.name("_CRS", AMLResource.template(crs)))
        pci.append(AML.name("_PRT", PCIInterruptLinks.routingTable()))
        pci.append(AML.device("S08", [
            AML.name("_ADR", AML.integer(0x0001_0000)),
            PCIInterruptLinks.region(),
            AML.device("KBD", [
                AML.name("_HID", AML.eisaID("PNP0303")),
                AML.name("_STA", AML.integer(0x0F)),
                AML.name("_CRS", AMLResource.template([AMLResource.io(min: 0x60, max: 0x60, align: 1, length: 1),
                                                       AMLResource.io(min: 0x64, max: 0x64, align: 1, length: 1),
                                                       AMLResource.irqNoFlags(1)])),
            ]),
            AML.device("MOU", [
                AML.name("_HID", AML.eisaID("PNP0F13")),
                AML.name("_STA", AML.integer(0x0F)),
                AML.name("_CRS", AMLResource.template([AMLResource.irqNoFlags(12)])),
            ]),
            AML.device("FDC0", [
                AML.name("_HID", AML.eisaID("PNP0700")),
                AML.name("_CRS", AMLResource.template([AMLResource.io(min: 0x3F2, max: 0x3F2, align: 0, length: 4),
                                                       AMLResource.io(min: 0x3F7, max: 0x3F7, align: 0, length: 1),
                                                       AMLResource.irqNoFlags(6), AMLResource.dma(channel: 2)])),
                // _FDE: drives 0-3 absent, tape presence 2 ("unknown"), as QEMU with no drives.
                AML.name("_FDE", AML.buffer([UInt8](repeating: 0, count: 16) + [2, 0, 0, 0])),
            ]),
            AML.device("COM1", [
                AML.name("_HID", AML.eisaID("PNP0501")),
                AML.name("_UID", AML.one),
                AML.name("_STA", AML.integer(0x0F)),
                AML.name("_CRS", AMLResource.template([AMLResource.io(min: 0x3F8, max: 0x3F8, align: 0, length: 8),
                                                       AMLResource.irqNoFlags(4)])),
            ]),
            AML.device("RTC", [
                AML.name("_HID", AML.eisaID("PNP0B00")),
                AML.name("_CRS", AMLResource.template([AMLResource.io(min: 0x70, max: 0x70, align: 1, length: 8),
                                                       AMLResource.irqNoFlags(8)])),
            ]),
        ]))
        pci.append(AML.device("FWCF", [
            AML.name("_HID", AML.string("QEMU0002")),
            AML.name("_STA", AML.integer(0x0B)),
            AML.name("_CRS", AMLResource.template([AMLResource.io(min: 0x510, max: 0x510, align: 1, length: 0x0C)])),
        ]))
        pci.append(AML.device("GPE0", [
            AML.name("_HID", AML.string("PNP0A06")),
            AML.name("_UID", AML.string("GPE0 resources")),
            AML.name("_STA", AML.integer(0x0B)),
            AML.name("_CRS", AMLResource.template([AMLResource.io(min: PIIX4PM.gpeBase, max: PIIX4PM.gpeBase, align: 1,
                                                                  length: UInt8(PIIX4PM.gpeLength))])),
        ]))

        var sb: [AML] = [AML.device("PCI0", pci)]
        sb += PCIInterruptLinks.terms(bridgePath: "PCI0.S08")
        if cfg.hasHPET {
            sb.append(AML.device("HPET", [
                AML.name("_HID", AML.eisaID("PNP0103")),
                AML.name("_UID", AML.zero),
                AML.name("_STA", AML.integer(0x0F)),
                AML.name("_CRS", AMLResource.template([AMLResource.memory32Fixed(base: UInt32(PCMemoryMap.hpetBase), length: 0x400,
                                                                                 readOnly: true)])),
            ]))
        }
        let terms: [AML] = [
            AML.scope("\\_SB", sb),
            AML.scope("\\_GPE", [AML.name("_HID", AML.string("ACPI0006"))]),
            AML.name("\\_S4", AML.package([AML.integer(2), AML.integer(2), AML.zero, AML.zero])),
            AML.name("\\_S5", AML.package([AML.zero, AML.zero, AML.zero, AML.zero])),
        ]
        return ACPITables.table("DSDT", revision: 1, body: terms.flatMap(\.bytes))
    }
}
