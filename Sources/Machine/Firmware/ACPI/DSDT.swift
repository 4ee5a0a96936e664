// The pc machine's DSDT, generated with the AML builder:
// - \_SB.PCI0: the PCI root bridge (PNP0A03) with its resource windows (bus 0-255, I/O around
//   0xCF8, VGA memory, the 32-bit hole from the end of low RAM to the I/O APIC, and a 64-bit window
//   above RAM) and _PRT, which hard-wires each slot's INTA-D to the GSIs the PIIX3 links are steered
//   to (PIRQ defaults 10, 10, 11, 11, swizzled by slot as the PIIX does).
// - ISA devices Linux matches by PNP ID: COM1 (PNP0501), the RTC (PNP0B00), the keyboard controller
//   (PNP0303), and HPET (PNP0103) when present.
// - \_S5 = {0, 0}: SLP_TYP 0 is soft-off in our PIIX4 PM (as in QEMU), so `poweroff` works.
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
            AMLResource.dwordMemory(min: UInt32(map.pciHoleStart), max: UInt32(PCMemoryMap.ioapicBase - 1)),
        ]
        let highStart = PCMemoryMap.fourGiB + map.above4G
        let highBase = (highStart + (1 << 30) - 1) & ~((1 << 30) - 1)
        crs.append(AMLResource.qwordMemory(min: highBase, max: highBase + (1 << 36) - 1))
        pci.append(AML.name("_CRS", AMLResource.template(crs)))
        pci.append(AML.name("_PRT", AML.package(routingTable(slots: cfg.pciSlots))))

        var sb: [AML] = [AML.device("PCI0", pci)]
        sb.append(isaDevice("COM1", hid: "PNP0501", uid: 1,
                            AMLResource.template([AMLResource.io(min: 0x3F8, max: 0x3F8, align: 0, length: 8),
                                                  AMLResource.irqNoFlags(4)])))
        sb.append(isaDevice("RTC", hid: "PNP0B00", uid: 0,
                            AMLResource.template([AMLResource.io(min: 0x70, max: 0x70, align: 1, length: 8),
                                                  AMLResource.irqNoFlags(8)])))
        sb.append(isaDevice("KBD", hid: "PNP0303", uid: 0,
                            AMLResource.template([AMLResource.io(min: 0x60, max: 0x60, align: 1, length: 1),
                                                  AMLResource.io(min: 0x64, max: 0x64, align: 1, length: 1),
                                                  AMLResource.irqNoFlags(1)])))
        if cfg.hasHPET {
            sb.append(isaDevice("HPET", hid: "PNP0103", uid: 0,
                                AMLResource.template([AMLResource.memory32Fixed(base: UInt32(PCMemoryMap.hpetBase), length: 0x400)])))
        }
        let terms: [AML] = [
            AML.scope("\\_SB", sb),
            AML.name("\\_S5", AML.package([AML.zero, AML.zero, AML.zero, AML.zero])),
        ]
        return ACPITables.table("DSDT", revision: 2, body: terms.flatMap(\.bytes))
    }

    static func isaDevice(_ name: String, hid: String, uid: UInt64, _ crs: AML) -> AML {
        AML.device(name, [
            AML.name("_HID", AML.eisaID(hid)),
            AML.name("_UID", AML.integer(uid)),
            AML.name("_STA", AML.integer(0x0F)),
            AML.name("_CRS", crs),
        ])
    }

    /// _PRT entries {slot<<16 | 0xFFFF, pin, 0, GSI} for every slot 1-31 (so hot-added or unlisted
    /// functions route too).
    static func routingTable(slots: [Int]) -> [AML] {
        var out: [AML] = []
        for slot in 1..<32 {
            for pin in 0..<4 {
                let pirq = PCIBus.pirq(device: slot, pin: pin + 1)
                let gsi = PIIX3.defaultPIRQ[pirq]
                out.append(AML.package([AML.integer(UInt64(slot) << 16 | 0xFFFF), AML.integer(UInt64(pin)),
                                        AML.zero, AML.integer(UInt64(gsi))]))
            }
        }
        return out
    }
}
