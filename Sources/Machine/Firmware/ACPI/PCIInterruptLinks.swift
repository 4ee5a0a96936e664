// PCI INTx routing as QEMU's pc machine describes it (the PIIX4 part of hw/i386/acpi-build.c):
// _PRT names an interrupt link device per slot and pin instead of a fixed GSI, and the links
// LNKA-LNKD read and write the PIIX3's PIRQ route registers (config 0x60-0x63 of 00:01.0, through
// a PCI_Config operation region in the ISA bridge) so the OS can see and steer them:
// _STA is IQST(PRQn) (0x0B enabled, 0x09 disabled by bit 7), _CRS is IQCR(PRQn) (an Interrupt
// descriptor holding the routed IRQ), _SRS stores the IRQ the OS picked from _PRS {5, 10, 11}, and
// _DIS sets bit 7. LNKS is the SCI (IRQ 9, fixed), which the PM function's INTA (00:01.0 pin A in
// the table, as QEMU lists it) goes to. Linux then reports "Interrupt link LNKA configured for
// IRQ 10" and, when a driver enables a device, "\_SB_.LNKB: Enabled at IRQ 10"; the PIIX3 moves
// the line when the register changes (PIIX3.configDidWrite).
enum PCIInterruptLinks {
    /// The IRQs a link may be steered to (QEMU's choice; the MADT has level overrides for them).
    static let possibleIRQs: [UInt32] = [5, 10, 11]
    static let links = ["LNKA", "LNKB", "LNKC", "LNKD"]

    /// The operation region over the PIRQ route registers, declared inside the ISA bridge device.
    static let regionName = "P40C"
    static func region() -> AML { AML.operationRegion(regionName, .pciConfig, offset: 0x60, length: 4) }

    /// Terms for \_SB: the PRQ0-3 fields over `bridgePath`.P40C, IQST, IQCR and the five links.
    static func terms(bridgePath: String) -> [AML] {
        var out: [AML] = [
            AML.field("\(bridgePath).\(regionName)", .byte, (0..<4).map { ("PRQ\($0)", 8) }),
            // IQST(route): bit 7 means the link is disabled (present but off).
            AML.method("IQST", args: 1, [
                AML.if(AML.and(AML.integer(0x80), AML.arg(0)), [AML.return(AML.integer(0x09))]),
                AML.return(AML.integer(0x0B)),
            ]),
            // IQCR(route): the current-resource template, with the IRQ filled in when enabled.
            AML.method("IQCR", args: 1, serialized: true, [
                AML.name("PRR0", AMLResource.template([AMLResource.interrupt([0])])),
                AML.createDWordField(AML.reference("PRR0"), byteIndex: AML.integer(5), "PRRI"),
                AML.if(AML.lLess(AML.arg(0), AML.integer(0x80)), [AML.store(AML.arg(0), AML.reference("PRRI"))]),
                AML.return(AML.reference("PRR0")),
            ]),
        ]
        for (i, name) in links.enumerated() {
            let reg = AML.reference("PRQ\(i)")
            out.append(AML.device(name, [
                AML.name("_HID", AML.eisaID("PNP0C0F")),
                AML.name("_UID", AML.integer(UInt64(i))),
                AML.name("_PRS", AMLResource.template([AMLResource.interrupt(possibleIRQs)])),
                AML.method("_STA", [AML.return(AML.call("IQST", [reg]))]),
                AML.method("_DIS", [AML.or(reg, AML.integer(0x80), reg)]),
                AML.method("_CRS", [AML.return(AML.call("IQCR", [reg]))]),
                AML.method("_SRS", args: 1, [
                    AML.createDWordField(AML.arg(0), byteIndex: AML.integer(5), "PRRI"),
                    AML.store(AML.reference("PRRI"), reg),
                ]),
            ]))
        }
        out.append(AML.device("LNKS", [
            AML.name("_HID", AML.eisaID("PNP0C0F")),
            AML.name("_UID", AML.integer(4)),
            AML.name("_PRS", AMLResource.template([AMLResource.interrupt([UInt32(PIIX4PM.sciIRQ)])])),
            AML.method("_STA", [AML.return(AML.integer(0x0B))]),
            AML.method("_DIS", []),
            AML.method("_CRS", [AML.return(AML.reference("_PRS"))]),
            AML.method("_SRS", args: 1, []),   // the SCI cannot move
        ]))
        return out
    }

    /// The link for `pin` (0 = INTA) of `slot`: the PIIX swizzle PIRQ (slot + pin - 1) & 3, except
    /// that slot 1's INTA (the PM function) is the SCI.
    static func link(slot: Int, pin: Int) -> String {
        if slot == 1 && pin == 0 { return "LNKS" }
        return links[PCIBus.pirq(device: slot, pin: pin + 1)]
    }

    /// _PRT: {slot << 16 | 0xFFFF, pin, link, 0} for all 32 slots and four pins, as QEMU's method
    /// builds it (a static package is equivalent, and simpler).
    static func routingTable() -> AML {
        var entries: [AML] = []
        for slot in 0..<32 {
            for pin in 0..<4 {
                entries.append(AML.package([AML.integer(UInt64(slot) << 16 | 0xFFFF), AML.integer(UInt64(pin)),
                                            AML.reference(link(slot: slot, pin: pin)), AML.zero]))
            }
        }
        return AML.package(entries)
    }
}
