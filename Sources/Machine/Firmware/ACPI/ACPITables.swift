// The ACPI tables of the pc machine as QEMU 7.2 builds them for `pc` (ACPI 1.0 style, which is
// what Linux reports under QEMU): RSDP revision 0 pointing at an RSDT, FADT revision 1 (PIIX4 PM
// blocks; no reset register, so guests reboot through the i8042 as under QEMU), FACS, DSDT
// (revision 1: 32-bit AML integers) from DSDT.swift, MADT (local APICs, the I/O APIC, QEMU's
// interrupt source overrides), HPET (when present) and WAET. Tables are laid out one after the other
// with the alignment each needs, and every checksum is computed over the final bytes, so the result
// can be copied into RAM as is.

public struct ACPIConfig: Sendable {
    public var cpuCount: Int
    public var memoryMap: PCMemoryMap
    public var hasHPET: Bool
    /// The plugged PCI device numbers on bus 0 (the DSDT's _PRT covers all 32 slots regardless).
    public var pciSlots: [Int]
    public init(cpuCount: Int, memoryMap: PCMemoryMap, hasHPET: Bool, pciSlots: [Int]) {
        self.cpuCount = cpuCount
        self.memoryMap = memoryMap
        self.hasHPET = hasHPET
        self.pciSlots = pciSlots
    }
}

public struct ACPITables: Sendable {
    /// The bytes to copy to `base`.
    public var blob: [UInt8]
    public var base: UInt64
    /// Where the RSDP is (inside the blob, 16-byte aligned).
    public var rsdpAddress: UInt64

    public static let oemID = Array("BOCHS ".utf8)
    public static let oemTableID = Array("BXPC    ".utf8)

    /// Builds all tables for a blob placed at `base` (direct kernel boot: copied into RAM as is).
    public static func build(_ cfg: ACPIConfig, base: UInt64) -> ACPITables {
        let l = layout(cfg, base: base, rsdpInBlob: true)
        return ACPITables(blob: l.blob, base: base, rsdpAddress: base)
    }

    /// The tables as QEMU hands them to firmware: "etc/acpi/tables" (every pointer an offset into
    /// that file), "etc/acpi/rsdp", and the "etc/table-loader" commands that place and link them.
    public static func buildForLoader(_ cfg: ACPIConfig) -> (tables: [UInt8], rsdp: [UInt8], loader: [UInt8]) {
        let tablesFile = "etc/acpi/tables", rsdpFile = "etc/acpi/rsdp"
        let l = layout(cfg, base: 0, rsdpInBlob: false)
        var loader = TableLoader()
        loader.allocate(tablesFile, align: 64, zone: .high)
        for p in l.pointers { loader.addPointer(in: tablesFile, to: tablesFile, offset: p.offset, size: p.size) }
        for t in l.linkedTables { loader.addChecksum(in: tablesFile, offset: t.offset + 9, start: t.offset, length: t.length) }
        let rsdp = rsdpTable(rsdt: l.rsdt)
        loader.allocate(rsdpFile, align: 16, zone: .fseg)
        loader.addPointer(in: rsdpFile, to: tablesFile, offset: 16, size: 4)
        loader.addChecksum(in: rsdpFile, offset: 8, start: 0, length: rsdpLength)
        return (l.blob, rsdp, loader.bytes)
    }

    /// An ACPI 1.0 RSDP: signature, checksum, OEM ID, revision 0, RSDT address.
    public static let rsdpLength = 20

    /// Tables one after the other from `base`; `pointers` are the fields holding table addresses
    /// and `linkedTables` the tables containing them (whose checksums change when they move).
    static func layout(_ cfg: ACPIConfig, base: UInt64, rsdpInBlob: Bool)
        -> (blob: [UInt8], pointers: [(offset: Int, size: Int)], linkedTables: [(offset: Int, length: Int)], rsdt: UInt64) {
        var blob: [UInt8] = []
        var pointers: [(offset: Int, size: Int)] = []
        var linked: [(offset: Int, length: Int)] = []
        func place(_ table: [UInt8], align: Int) -> UInt64 {
            while blob.count % align != 0 { blob.append(0) }
            let at = base + UInt64(blob.count)
            blob += table
            return at
        }
        if rsdpInBlob { blob += [UInt8](repeating: 0, count: rsdpLength) }   // RSDP, filled in last
        let facs = place(facsTable(), align: 64)
        let dsdt = place(DSDT.build(cfg), align: 16)
        let fadtTableBytes = fadtTable(facs: facs, dsdt: dsdt)
        let fadt = place(fadtTableBytes, align: 16)
        let fadtOff = Int(fadt - base)
        pointers += [(fadtOff + 36, 4), (fadtOff + 40, 4)]
        linked.append((fadtOff, fadtTableBytes.count))
        let madt = place(madtTable(cfg), align: 16)
        var entries = [fadt, madt]
        if cfg.hasHPET { entries.append(place(hpetTable(), align: 16)) }
        entries.append(place(waetTable(), align: 16))
        let rsdtBytes = table("RSDT", revision: 1, body: entries.flatMap { AML.le($0, 4) })
        let rsdt = place(rsdtBytes, align: 16)
        let rsdtOff = Int(rsdt - base)
        for i in entries.indices { pointers.append((rsdtOff + 36 + 4 * i, 4)) }
        linked.append((rsdtOff, rsdtBytes.count))
        if rsdpInBlob { blob.replaceSubrange(0..<rsdpLength, with: rsdpTable(rsdt: rsdt)) }
        return (blob, pointers, linked, rsdt)
    }

    /// A table: the 36-byte header then `body`, checksummed.
    static func table(_ sig: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var t = Array(sig.utf8) + AML.le(UInt64(36 + body.count), 4) + [revision, 0] + oemID + oemTableID
            + AML.le(1, 4) + Array("BXPC".utf8) + AML.le(1, 4)
        t += body
        t[9] = checksum(t)
        return t
    }

    static func checksum(_ bytes: some Collection<UInt8>) -> UInt8 {
        0 &- bytes.reduce(0, &+)
    }

    static func rsdpTable(rsdt: UInt64) -> [UInt8] {
        var r = Array("RSD PTR ".utf8) + [0] + oemID + [0] + AML.le(rsdt, 4)
        r[8] = checksum(r)
        return r
    }

    static func facsTable() -> [UInt8] {
        var f = Array("FACS".utf8) + AML.le(64, 4)
        f += [UInt8](repeating: 0, count: 64 - f.count)
        return f
    }

    /// Generic Address Structure (12 bytes).
    static func gas(space: UInt8, bits: UInt8, access: UInt8, address: UInt64) -> [UInt8] {
        [space, bits, 0, access] + AML.le(address, 8)
    }

    /// FADT revision 1 (116 bytes) with QEMU's values. SMI_CMD is 0: our PM is in ACPI mode from the
    /// start, so there is no handshake to offer.
    static func fadtTable(facs: UInt64, dsdt: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 116 - 36)
        func put(_ off: Int, _ bytes: [UInt8]) { b.replaceSubrange(off - 36..<off - 36 + bytes.count, with: bytes) }
        put(36, AML.le(facs, 4))
        put(40, AML.le(dsdt, 4))
        put(44, [0x01])                                      // INT_MODEL: APIC (ACPI 1.0)
        put(46, AML.le(UInt64(PIIX4PM.sciIRQ), 2))
        put(56, AML.le(UInt64(PIIX4PM.pmBase), 4))          // PM1a_EVT_BLK
        put(64, AML.le(UInt64(PIIX4PM.pmBase) + 4, 4))      // PM1a_CNT_BLK
        put(76, AML.le(UInt64(PIIX4PM.pmBase) + 8, 4))      // PM_TMR_BLK
        put(80, AML.le(UInt64(PIIX4PM.gpeBase), 4))         // GPE0_BLK
        put(88, [4, 2, 0, 4, 4])                             // PM1_EVT_LEN .. GPE0_BLK_LEN
        put(96, AML.le(0xFFF, 2))                            // P_LVL2_LAT: no C2
        put(98, AML.le(0xFFF, 2))                            // P_LVL3_LAT: no C3
        put(108, [0x32])                                     // CENTURY
        // WBINVD | PROC_C1 | SLP_BUTTON (no fixed sleep button) | RTC_S4 | USE_PLATFORM_CLOCK
        let flags: UInt32 = (1 << 0) | (1 << 2) | (1 << 5) | (1 << 7) | (1 << 15)
        put(112, AML.le(UInt64(flags), 4))
        return table("FACP", revision: 1, body: b)
    }

    static func madtTable(_ cfg: ACPIConfig) -> [UInt8] {
        var b = AML.le(PCMemoryMap.lapicBase, 4) + AML.le(1, 4)   // PCAT_COMPAT: dual 8259s present
        for i in 0..<cfg.cpuCount {
            b += [0, 8, UInt8(i), UInt8(i)] + AML.le(1, 4)          // Processor Local APIC, enabled
        }
        // The I/O APIC has ID 0, as QEMU's MADT says (SeaBIOS's MP table gives it the CPU count).
        b += [1, 12, 0, 0] + AML.le(PCMemoryMap.ioapicBase, 4) + AML.le(0, 4)
        // QEMU's overrides: IRQ0 -> GSI2 (edge), and the PCI/SCI IRQs level, active high.
        b += [2, 10, 0, 0] + AML.le(2, 4) + AML.le(0, 2)
        for irq: UInt8 in [5, 9, 10, 11] {
            b += [2, 10, 0, irq] + AML.le(UInt64(irq), 4) + AML.le(0x000D, 2)
        }
        b += [4, 6, 0xFF, 0, 0, 1]   // LINT1 is NMI on every processor
        return table("APIC", revision: 1, body: b)
    }

    static func hpetTable() -> [UInt8] {
        // Event timer block ID: rev 1, 3 comparators (count-1 = 2), 64-bit, legacy-capable, vendor 8086.
        let id: UInt32 = 0x8086_0000 | (1 << 15) | (1 << 13) | (2 << 8) | 1
        let b = AML.le(UInt64(id), 4) + gas(space: 0, bits: 0, access: 0, address: PCMemoryMap.hpetBase)
            + [0] + AML.le(0, 2) + [0]   // HPET number 0, no minimum periodic tick (QEMU's values)
        return table("HPET", revision: 1, body: b)
    }

    /// WAET: the PM timer is good with one read (QEMU's flag), so Windows skips its re-reads.
    static func waetTable() -> [UInt8] { table("WAET", revision: 1, body: AML.le(1 << 1, 4)) }
}
