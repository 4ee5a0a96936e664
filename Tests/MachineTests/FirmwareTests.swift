// Firmware pieces: the pc memory map (feature S4) and e820, AML encodings, the ACPI tables
// (checksums, pointers, and, where acpica's iasl is installed, a full disassembly of our DSDT),
// the Linux boot protocol plan, multiboot, and fw_cfg.
import Foundation
import XCTest
@testable import Machine

final class MemoryMapTests: XCTestCase {
    func testS4Split() {
        let table: [(UInt64, UInt64, UInt64)] = [
            (512 << 20, 512 << 20, 0),
            (0xDFF0_0000, 0xDFF0_0000, 0),                        // just under 3.5 GiB: all low
            (0xE000_0000, 0xC000_0000, 0x2000_0000),              // 3.5 GiB: 3 GiB low
            (4 << 30, 0xC000_0000, 1 << 30),
            (8 << 30, 0xC000_0000, 5 << 30),
        ]
        for (ram, below, above) in table {
            let m = PCMemoryMap(ramSize: ram)
            XCTAssertEqual(m.below4G, below, "ram \(ram)")
            XCTAssertEqual(m.above4G, above, "ram \(ram)")
        }
    }

    func testE820MatchesTheSplit() {
        let e = E820.pcMap(PCMemoryMap(ramSize: 4 << 30), biosSize: 0)
        let ram = e.filter { $0.kind == .ram }
        XCTAssertEqual(ram.map(\.address), [0, 0x10_0000, 1 << 32])
        XCTAssertEqual(ram.reduce(0) { $0 + $1.size }, 0x9_FC00 + 0xC000_0000 - 0x10_0000 + (1 << 30))
        XCTAssertEqual(e.first!.bytes.count, 20)
        XCTAssertTrue(e.contains { $0.address == PCMemoryMap.kvmIdentityMap })
        XCTAssertFalse(E820.pcMap(PCMemoryMap(ramSize: 4 << 30), biosSize: 0, kvm: false).contains { $0.address == PCMemoryMap.kvmIdentityMap },
                       "QEMU reserves KVM's identity map and TSS pages only under KVM")
    }
}

final class AMLTests: XCTestCase {
    func testEncodings() {
        XCTAssertEqual(AML.pkgLength(10), [11])
        XCTAssertEqual(AML.pkgLength(62), [63])
        XCTAssertEqual(AML.pkgLength(63), [0x41, 0x04])   // 63 + 2 = 65
        XCTAssertEqual(AML.eisaID("PNP0A03").bytes, [0x0C, 0x41, 0xD0, 0x0A, 0x03])
        XCTAssertEqual(AML.nameString("_SB.PCI0"), [0x2E] + Array("_SB_PCI0".utf8))
        XCTAssertEqual(AML.nameString("\\_S5"), [0x5C] + Array("_S5_".utf8))
        XCTAssertEqual(AML.integer(0x1234).bytes, [0x0B, 0x34, 0x12])
        XCTAssertEqual(AML.integer(0x1_0000_0000).bytes, [0x0E, 0, 0, 0, 0, 1, 0, 0, 0])
        XCTAssertEqual(AML.package([AML.zero, AML.one]).bytes, [0x12, 0x04, 0x02, 0x00, 0x01])
    }
}

final class ACPITableTests: XCTestCase {
    func tables(cpus: Int = 2) -> ACPITables {
        ACPITables.build(ACPIConfig(cpuCount: cpus, memoryMap: PCMemoryMap(ramSize: 6 << 30), hasHPET: true,
                                    pciSlots: [0, 1, 2]), base: 0xE_0000)
    }

    /// The table at guest address `a` inside the blob.
    func table(_ t: ACPITables, at a: UInt64) -> [UInt8] {
        let off = Int(a - t.base)
        let len = Int(t.blob[off + 4]) | Int(t.blob[off + 5]) << 8 | Int(t.blob[off + 6]) << 16
        return Array(t.blob[off..<off + len])
    }

    func u32(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<4).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }
    func u64(_ b: [UInt8], _ o: Int) -> UInt64 { u32(b, o) | u32(b, o + 4) << 32 }

    func testEveryTableChecksumsAndIsReachable() {
        let t = tables()
        let rsdp = Array(t.blob[0..<20])
        XCTAssertEqual(Array(rsdp[0..<8]), Array("RSD PTR ".utf8))
        XCTAssertEqual(rsdp[15], 0, "ACPI 1.0 RSDP, as QEMU's pc machine")
        XCTAssertEqual(rsdp.reduce(0, &+), 0)
        let rsdt = table(t, at: u32(rsdp, 16))
        XCTAssertEqual(String(decoding: rsdt[0..<4], as: UTF8.self), "RSDT")
        XCTAssertEqual(rsdt.reduce(0, &+), 0)
        var sigs: [String] = []
        for i in 0..<(rsdt.count - 36) / 4 {
            let tb = table(t, at: u32(rsdt, 36 + 4 * i))
            XCTAssertEqual(tb.reduce(0, &+), 0)
            sigs.append(String(decoding: tb[0..<4], as: UTF8.self))
            if sigs.last == "FACP" {
                XCTAssertEqual(tb.count, 116)
                XCTAssertEqual(tb[8], 1, "FADT revision 1")
                let dsdt = table(t, at: u32(tb, 40))
                XCTAssertEqual(String(decoding: dsdt[0..<4], as: UTF8.self), "DSDT")
                XCTAssertEqual(dsdt[8], 1, "DSDT revision 1 (32-bit AML integers)")
                XCTAssertEqual(dsdt.reduce(0, &+), 0)
                XCTAssertEqual(tb[46], 9, "SCI on IRQ 9")
                XCTAssertEqual(u32(tb, 112), 0x80A5, "QEMU's FADT flags")
                let facs = table(t, at: u32(tb, 36))
                XCTAssertEqual(String(decoding: facs[0..<4], as: UTF8.self), "FACS")
                XCTAssertEqual((u32(tb, 36) - t.base) % 64, 0)
            }
            if sigs.last == "APIC" {
                // Two local APICs and one I/O APIC, whose ID is 0 as in QEMU's MADT.
                var types: [UInt8] = []
                var o = 44
                while o < tb.count {
                    types.append(tb[o])
                    if tb[o] == 1 { XCTAssertEqual(tb[o + 2], 0, "I/O APIC ID") }
                    o += Int(tb[o + 1])
                }
                XCTAssertEqual(types.filter { $0 == 0 }.count, 2)
                XCTAssertEqual(types.filter { $0 == 1 }.count, 1)
            }
        }
        XCTAssertEqual(sigs, ["FACP", "APIC", "HPET", "WAET"])
        XCTAssertLessThan(t.blob.count, 0x1_0000)
    }

    /// The DSDT, found as the OS finds it: RSDP -> RSDT -> FACP -> DSDT.
    func dsdt(_ t: ACPITables) -> [UInt8] {
        let rsdt = table(t, at: u32(Array(t.blob[0..<20]), 16))
        let fadt = table(t, at: u32(rsdt, 36))
        return table(t, at: u32(fadt, 40))
    }

    /// Runs an acpica tool in a fresh directory holding dsdt.dat; returns its stdout and the directory.
    func runACPICA(_ tool: String, _ args: [String]) throws -> (out: String, dir: URL) {
        let path = "/usr/bin/" + tool
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: path), "acpica-tools (\(tool)) is not installed")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dsdt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try Data(dsdt(tables())).write(to: dir.appendingPathComponent("dsdt.dat"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.currentDirectoryURL = dir
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        try p.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        return (String(decoding: out, as: UTF8.self), dir)
    }

    func testDSDTDisassemblesWithIASL() throws {
        let (_, dir) = try runACPICA("iasl", ["-d", "dsdt.dat"])
        let dsl = try String(contentsOf: dir.appendingPathComponent("dsdt.dsl"), encoding: .utf8)
        if let keep = ProcessInfo.processInfo.environment["VMRUN_KEEP_DSDT"] { try? dsl.write(toFile: keep, atomically: true, encoding: .utf8) }
        for needle in ["Device (PCI0)", "EisaId (\"PNP0A03\")", "_S5, Package (0x04)", "_S4, Package (0x04)", "Name (_PRT, Package (0x80)",
                       "WordBusNumber", "DWordMemory", "QWordMemory", "Device (COM1)", "EisaId (\"PNP0501\")",
                       "IRQNoFlags ()", "Device (HPET)", "Device (KBD)", "Device (MOU)", "EisaId (\"PNP0F13\")",
                       "OperationRegion (P40C, PCI_Config, 0x60, 0x04)", "Field (PCI0.S08.P40C, ByteAcc, NoLock, Preserve)",
                       "Device (LNKA)", "Device (LNKD)", "Device (LNKS)", "EisaId (\"PNP0C0F\")",
                       "Interrupt (ResourceConsumer, Level, ActiveHigh, Shared, ,, )", "Return (IQCR (PRQ1))",
                       "PRQ2 |= 0x80", "Device (FDC0)", "DMA (Compatibility, NotBusMaster, Transfer8, )", "CreateDWordField (Arg0, 0x05, PRRI)", "PRQ3 = PRRI", "Name (_HID, \"QEMU0002\")"] {
            XCTAssertTrue(dsl.contains(needle), "DSDT lacks \(needle)")
        }
        // _PRT as QEMU's: slot 1 INTA is the SCI link, slot 2 INTA..INTD are LNKB, LNKC, LNKD, LNKA.
        let prt = dsl.components(separatedBy: .whitespacesAndNewlines).joined()
        for entry in ["Package(0x04){0x0001FFFF,Zero,LNKS,Zero}", "Package(0x04){0x0001FFFF,One,LNKB,Zero}",
                      "Package(0x04){0x0002FFFF,Zero,LNKB,Zero}", "Package(0x04){0x0002FFFF,0x03,LNKA,Zero}",
                      "Package(0x04){0xFFFF,Zero,LNKD,Zero}"] {
            XCTAssertTrue(prt.contains(entry), "_PRT lacks \(entry)")
        }
        XCTAssertTrue(dsl.contains("32-bit table (V1)"), "revision 1, as QEMU's")
        let body = dsl.components(separatedBy: "DefinitionBlock").last ?? ""
        XCTAssertFalse(body.contains("****"), "iasl flagged something: \(body.components(separatedBy: "\n").filter { $0.contains("****") })")
    }

    /// The link methods under ACPICA's own interpreter (acpiexec simulates the PCI_Config region as
    /// zeroed memory): _SRS stores the IRQ the OS picked, _CRS and _STA read it back, _DIS sets
    /// bit 7 (present but disabled, _CRS without an IRQ), and LNKS stays on the SCI.
    func testLinkMethodsRunUnderACPICA() throws {
        let steps = ["\\_SB.LNKB._SRS (89 06 00 09 01 0B 00 00 00 79 00)", "\\_SB.LNKB._CRS", "\\_SB.LNKB._STA",
                     "\\_SB.LNKB._DIS", "\\_SB.LNKB._STA", "\\_SB.LNKB._CRS", "\\_SB.LNKA._CRS", "\\_SB.LNKS._CRS"]
        let (out, _) = try runACPICA("acpiexec", ["-b", steps.map { "evaluate " + $0 }.joined(separator: "; "), "dsdt.dat"])
        // One result per evaluation, in order: "[Integer] = ..." or the buffer's bytes.
        let results = out.components(separatedBy: "\n").compactMap { line -> String? in
            if let r = line.range(of: "[Integer] = ") { return String(UInt64(line[r.upperBound...].trimmingCharacters(in: .whitespaces), radix: 16) ?? 999) }
            if let r = line.range(of: "0000: ") { return String(line[r.upperBound...].prefix(32)).trimmingCharacters(in: .whitespaces) }
            return nil
        }
        XCTAssertEqual(results, ["89 06 00 09 01 0B 00 00 00 79 00", "11", "9", "89 06 00 09 01 00 00 00 00 79 00",
                                 "89 06 00 09 01 00 00 00 00 79 00", "89 06 00 09 01 09 00 00 00 79 00"], out)
        XCTAssertFalse(out.contains("ACPI Error"), out)
    }
}

final class LinuxBootPlanTests: XCTestCase {
    /// A minimal bzImage: boot sector with the setup header, 4 setup sectors, a 4 KiB kernel.
    func fakeBzImage(version: UInt16 = 0x020F, cmdlineSize: UInt32 = 2048, initrdMax: UInt32 = 0x7FFF_FFFF) -> [UInt8] {
        var d = [UInt8](repeating: 0, count: 5 * 512 + 4096)
        func put(_ o: Int, _ b: [UInt8]) { d.replaceSubrange(o..<o + b.count, with: b) }
        d[0x1F1] = 4
        put(0x1FE, [0x55, 0xAA])
        d[0x201] = 0x6A
        put(0x202, Array("HdrS".utf8))
        put(0x206, AML.le(UInt64(version), 2))
        d[0x211] = 0x01
        put(0x214, AML.le(0x10_0000, 4))
        put(0x22C, AML.le(UInt64(initrdMax), 4))
        put(0x238, AML.le(UInt64(cmdlineSize), 4))
        put(0x260, AML.le(0x10_0000, 4))     // init_size
        return d
    }

    func testPlanPlacesEverythingAndFillsTheZeroPage() throws {
        let e820 = E820.pcMap(PCMemoryMap(ramSize: 256 << 20), biosSize: 0)
        let plan = try LinuxBootPlan.plan(kernel: fakeBzImage(), cmdline: "console=ttyS0", initrd: [1, 2, 3],
                                          ramBelow4G: 256 << 20, e820: e820, rsdp: 0xE0000)
        XCTAssertEqual(plan.kernel.count, 4096)
        XCTAssertEqual(plan.initrdAddress % 4096, 0)
        XCTAssertLessThan(plan.initrdAddress + 3, 256 << 20)
        let zp = plan.zeroPage
        XCTAssertEqual(zp[0x210], 0xB0)
        XCTAssertEqual(zp[0x211] & 0x81, 0x81)
        XCTAssertEqual(Int(zp[0x1E8]), e820.count)
        XCTAssertEqual(Array(zp[0x202..<0x206]), Array("HdrS".utf8))
        XCTAssertEqual(Array(zp[0x228..<0x22C]), AML.le(0x2_0000, 4))
        XCTAssertEqual(Array(zp[0x070..<0x078]), AML.le(0xE0000, 8))
        XCTAssertEqual(plan.cmdline.last, 0)
        guard case let .protected32(eip, esi, _, _, _, limit) = plan.cpuEntry else { return XCTFail() }
        XCTAssertEqual(eip, 0x10_0000)
        XCTAssertEqual(esi, 0x1_0000)
        XCTAssertEqual(limit, 31)
    }

    func testRefusals() {
        let e820 = E820.pcMap(PCMemoryMap(ramSize: 64 << 20), biosSize: 0)
        XCTAssertThrowsError(try LinuxBootPlan.plan(kernel: [UInt8](repeating: 0, count: 4096), cmdline: "", initrd: nil,
                                                    ramBelow4G: 64 << 20, e820: e820, rsdp: nil))
        XCTAssertThrowsError(try LinuxBootPlan.plan(kernel: fakeBzImage(version: 0x0204), cmdline: "", initrd: nil,
                                                    ramBelow4G: 64 << 20, e820: e820, rsdp: nil))
        XCTAssertThrowsError(try LinuxBootPlan.plan(kernel: fakeBzImage(cmdlineSize: 4), cmdline: "too long", initrd: nil,
                                                    ramBelow4G: 64 << 20, e820: e820, rsdp: nil)) {
            XCTAssertTrue("\($0)".contains("command line too long"))
        }
        XCTAssertThrowsError(try LinuxBootPlan.plan(kernel: fakeBzImage(), cmdline: "", initrd: [UInt8](repeating: 0, count: 70 << 20),
                                                    ramBelow4G: 64 << 20, e820: e820, rsdp: nil)) {
            XCTAssertTrue("\($0)".contains("initrd is too large"))
        }
        var truncated = fakeBzImage()
        truncated[0x1F1] = 200
        XCTAssertThrowsError(try LinuxBootPlan.plan(kernel: truncated, cmdline: "", initrd: nil,
                                                    ramBelow4G: 64 << 20, e820: e820, rsdp: nil))
    }

    func testMultibootHeaderSearchAndELF64Refusal() throws {
        var d = [UInt8](repeating: 0, count: 64)
        d[0] = 0x7F; d[1] = 0x45; d[2] = 0x4C; d[3] = 0x46; d[4] = 2
        let ram = try GuestRAM(size: 4 << 20)
        ram.mapRAM(at: 0, size: 4 << 20, hostOffset: 0)
        XCTAssertThrowsError(try Multiboot.load(kernel: d, cmdline: "", initrd: nil, ram: ram, e820: [], kernelPath: "k")) {
            XCTAssertEqual("\($0)", "qemu: Cannot load x86-64 image, give a 32bit one.")
        }
        var h = [UInt8](repeating: 0, count: 32)
        h.replaceSubrange(12..<24, with: AML.le(0x1BAD_B002, 4) + AML.le(0, 4) + AML.le(UInt64(UInt32(0) &- 0x1BAD_B002), 4))
        XCTAssertEqual(Multiboot.findHeader(h), 12)
    }
}

final class FwCfgTests: XCTestCase {
    func testSignatureFilesAndDMA() throws {
        let ram = try GuestRAM(size: 1 << 20)
        ram.mapRAM(at: 0, size: 1 << 20, hostOffset: 0)
        let fw = FwCfg(ram: ram, cpus: 2)
        fw.addFile("etc/e820", [1, 2, 3, 4])
        fw.busWrite(offset: 0, size: 2, value: 0)
        let sig = (0..<4).map { _ in UInt8(fw.busRead(offset: 1, size: 1)) }
        XCTAssertEqual(sig, Array("QEMU".utf8))
        fw.busWrite(offset: 0, size: 2, value: 0x19)
        let count = (0..<4).reduce(UInt32(0)) { v, _ in v << 8 | UInt32(fw.busRead(offset: 1, size: 1)) }
        XCTAssertEqual(count, 1)
        let entry = (0..<64).map { _ in UInt8(fw.busRead(offset: 1, size: 1)) }
        XCTAssertEqual(Array(entry[0..<4]), [0, 0, 0, 4])
        XCTAssertEqual(Array(entry[4..<6]), [0, 0x20])
        XCTAssertEqual(String(decoding: entry[8..<16], as: UTF8.self), "etc/e820")
        // DMA: select 0x20 and read 6 bytes (2 past the end read as zero) to 0x1000.
        let desc: UInt64 = 0x800
        ram.store(desc, (UInt32(0x20) << 16 | 0x08 | 0x02).byteSwapped)
        ram.store(desc + 4, UInt32(6).byteSwapped)
        ram.store(desc + 8, UInt64(0x1000).byteSwapped)
        fw.busWrite(offset: 4, size: 4, value: 0)
        fw.busWrite(offset: 8, size: 4, value: UInt64(UInt32(desc).byteSwapped))
        XCTAssertEqual(ram.readBytes(0x1000, count: 6), [1, 2, 3, 4, 0, 0])
        XCTAssertEqual(ram.load(desc, as: UInt32.self), 0, "control cleared: success")
        // A descriptor pointing outside RAM reports an error instead of trapping.
        ram.store(desc, (UInt32(0x20) << 16 | 0x08 | 0x02).byteSwapped)
        ram.store(desc + 8, UInt64(0xFFFF_FFF0).byteSwapped)
        fw.busWrite(offset: 8, size: 4, value: UInt64(UInt32(desc).byteSwapped))
        XCTAssertEqual(ram.load(desc, as: UInt32.self), UInt32(1).byteSwapped)
    }
}

final class MPTableTests: XCTestCase {
    func testChecksumsAndEntries() {
        let b = MPTable.build(cpuCount: 2, pciSlots: [0, 1, 2], address: 0xF0100)
        XCTAssertEqual(Array(b[0..<4]), Array("_MP_".utf8))
        XCTAssertEqual(b[0..<16].reduce(0, &+), 0)
        XCTAssertEqual(Array(b[4..<8]), AML.le(0xF0110, 4))
        let table = Array(b[16...])
        XCTAssertEqual(Array(table[0..<4]), Array("PCMP".utf8))
        XCTAssertEqual(Int(table[4]) | Int(table[5]) << 8, table.count)
        XCTAssertEqual(table.reduce(0, &+), 0)
        // 2 CPUs (20 bytes each) first; the BSP flag only on the first.
        XCTAssertEqual(table[44], 0); XCTAssertEqual(table[47], 3)
        XCTAssertEqual(table[64], 0); XCTAssertEqual(table[67], 1)
    }
}

/// What a BIOS boot gets through fw_cfg: the table loader, the linuxboot items and our loader ROM.
final class BIOSBootTests: XCTestCase {
    func u32(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<4).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }
    func u64(_ b: [UInt8], _ o: Int) -> UInt64 { u32(b, o) | u32(b, o + 4) << 32 }

    /// Runs the table-loader commands as SeaBIOS does (romfile_loader.c), with the tables file at
    /// `tablesAt` and the RSDP at `rsdpAt`, and checks the result is a consistent set of tables.
    func testTableLoaderLinksRelocatedTables() throws {
        let cfg = ACPIConfig(cpuCount: 2, memoryMap: PCMemoryMap(ramSize: 512 << 20), hasHPET: true, pciSlots: [0, 1, 2])
        let t = ACPITables.buildForLoader(cfg)
        XCTAssertEqual(t.loader.count % 128, 0)
        var files: [String: [UInt8]] = ["etc/acpi/tables": t.tables, "etc/acpi/rsdp": t.rsdp]
        var base: [String: UInt64] = [:]
        let placement: [String: UInt64] = ["etc/acpi/tables": 0x1FFE_0000, "etc/acpi/rsdp": 0xF5A30]
        func name(_ e: ArraySlice<UInt8>) -> String { String(decoding: e.prefix { $0 != 0 }, as: UTF8.self) }
        for i in 0..<(t.loader.count / 128) {
            let e = Array(t.loader[128 * i..<128 * (i + 1)])
            switch u32(e, 0) {
            case 1:
                let f = name(e[4..<60])
                let align = u32(e, 60)
                XCTAssertEqual(placement[f]! % align, 0, f)
                XCTAssertEqual(e[64], f == "etc/acpi/rsdp" ? 2 : 1, "zone of \(f)")
                base[f] = placement[f]
            case 2:
                let dest = name(e[4..<60]), src = name(e[60..<116])
                let off = Int(u32(e, 116)), size = Int(e[120])
                var v: UInt64 = 0
                for j in 0..<size { v |= UInt64(files[dest]![off + j]) << (8 * UInt64(j)) }
                v &+= try XCTUnwrap(base[src], "\(src) allocated before use")
                for j in 0..<size { files[dest]![off + j] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(j))) }
            case 3:
                let f = name(e[4..<60])
                let off = Int(u32(e, 60)), start = Int(u32(e, 64)), len = Int(u32(e, 68))
                files[f]![off] = files[f]![off] &- files[f]![start..<start + len].reduce(0, &+)
            default: XCTFail("unknown command \(u32(e, 0))")
            }
        }
        let rsdp = files["etc/acpi/rsdp"]!, tables = files["etc/acpi/tables"]!
        XCTAssertEqual(rsdp.count, 20)
        XCTAssertEqual(Array(rsdp[0..<8]), Array("RSD PTR ".utf8))
        XCTAssertEqual(rsdp.reduce(0, &+), 0)
        func table(at a: UInt64) -> [UInt8] {
            let off = Int(a - base["etc/acpi/tables"]!)
            return Array(tables[off..<off + Int(u32(tables, off + 4))])
        }
        let rsdt = table(at: u32(rsdp, 16))
        XCTAssertEqual(rsdt.reduce(0, &+), 0)
        var sigs: [String] = []
        for i in 0..<(rsdt.count - 36) / 4 {
            let tb = table(at: u32(rsdt, 36 + 4 * i))
            XCTAssertEqual(tb.reduce(0, &+), 0)
            sigs.append(String(decoding: tb[0..<4], as: UTF8.self))
            if sigs.last == "FACP" {
                XCTAssertEqual(String(decoding: table(at: u32(tb, 40))[0..<4], as: UTF8.self), "DSDT")
                XCTAssertEqual(String(decoding: table(at: u32(tb, 36))[0..<4], as: UTF8.self), "FACS")
            }
        }
        XCTAssertEqual(sigs, ["FACP", "APIC", "HPET", "WAET"])
    }

    func fakeBzImage() -> [UInt8] {
        var d = [UInt8](repeating: 0xCC, count: 5 * 512 + 4096)
        d[0x1F1] = 4
        d.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        d.replaceSubrange(0x206..<0x208, with: AML.le(0x020F, 2))
        d[0x211] = 0x01
        d.replaceSubrange(0x22C..<0x230, with: AML.le(0x7FFF_FFFF, 4))
        return d
    }

    func item(_ fw: FwCfg, _ key: UInt16, _ count: Int) -> [UInt8] {
        fw.busWrite(offset: 0, size: 2, value: UInt64(key))
        return (0..<count).map { _ in UInt8(fw.busRead(offset: 1, size: 1)) }
    }

    func testLinuxBootItemsAsQEMUSetsThem() throws {
        let ram = try GuestRAM(size: 1 << 20)
        let fw = FwCfg(ram: ram, cpus: 1)
        let kernel = fakeBzImage()
        try FwCfgBoot.addLinux(to: fw, kernel: kernel, cmdline: "console=ttyS0", initrd: [1, 2, 3], below4G: 512 << 20)
        XCTAssertEqual(u32(item(fw, FwCfg.setupAddr, 4), 0), 0x1_0000)
        XCTAssertEqual(u32(item(fw, FwCfg.setupSize, 4), 0), 5 * 512)
        XCTAssertEqual(u32(item(fw, FwCfg.kernelAddr, 4), 0), 0x10_0000)
        XCTAssertEqual(u32(item(fw, FwCfg.kernelSize, 4), 0), 4096)
        XCTAssertEqual(u32(item(fw, FwCfg.cmdlineAddr, 4), 0), 0x2_0000)
        XCTAssertEqual(u32(item(fw, FwCfg.cmdlineSize, 4), 0), 14)
        XCTAssertEqual(item(fw, FwCfg.cmdlineData, 14), Array("console=ttyS0".utf8) + [0])
        let initrdAddr = u32(item(fw, FwCfg.initrdAddr, 4), 0)
        XCTAssertEqual(initrdAddr, ((512 << 20) - FwCfgBoot.acpiDataSize - 1 - 3) & ~0xFFF, "QEMU's initrd_max rule")
        let setup = item(fw, FwCfg.setupData, 5 * 512)
        XCTAssertEqual(setup[0x210], 0xB0)
        XCTAssertEqual(setup[0x211], 0x81)
        XCTAssertEqual(u32(setup, 0x228), 0x2_0000)
        XCTAssertEqual(u32(setup, 0x224) & 0xFFFF, 0x2_0000 - 0x1_0000 - 0x200)
        XCTAssertEqual(u32(setup, 0x218), initrdAddr)
        XCTAssertEqual(u32(setup, 0x21C), 3)
        XCTAssertEqual(item(fw, FwCfg.kernelData, 4), [0xCC, 0xCC, 0xCC, 0xCC])
        // The directory lists the ROM and a boot order that names it.
        fw.busWrite(offset: 0, size: 2, value: 0x19)
        let count = Int((0..<4).reduce(UInt32(0)) { v, _ in v << 8 | UInt32(fw.busRead(offset: 1, size: 1)) })
        var names: [String: (UInt16, Int)] = [:]
        for _ in 0..<count {
            let e = (0..<64).map { _ in UInt8(fw.busRead(offset: 1, size: 1)) }
            let size = Int(e[0]) << 24 | Int(e[1]) << 16 | Int(e[2]) << 8 | Int(e[3])
            names[String(decoding: e[8...].prefix { $0 != 0 }, as: UTF8.self)] = (UInt16(e[4]) << 8 | UInt16(e[5]), size)
        }
        let rom = try XCTUnwrap(names["genroms/linuxboot_dma.bin"])
        XCTAssertEqual(item(fw, rom.0, rom.1), LinuxBootROM.image)
        let order = try XCTUnwrap(names["bootorder"])
        XCTAssertEqual(String(decoding: item(fw, order.0, order.1).prefix { $0 != 0 }, as: UTF8.self), "/rom@genroms/linuxboot_dma.bin")
        XCTAssertThrowsError(try FwCfgBoot.addLinux(to: fw, kernel: [UInt8](repeating: 0, count: 4096), cmdline: "",
                                                    initrd: nil, below4G: 512 << 20))
    }

    /// The ROM: signature, size, checksum, a PnP header whose boot entry vector is inside the ROM,
    /// and (when nasm is installed) the embedded bytes are what the source assembles to.
    func testLinuxBootROMImage() throws {
        let rom = LinuxBootROM.image
        XCTAssertEqual(rom.count, LinuxBootROM.size)
        XCTAssertEqual(Array(rom[0..<2]), [0x55, 0xAA])
        XCTAssertEqual(Int(rom[2]) * 512, rom.count)
        XCTAssertEqual(rom.reduce(0, &+), 0)
        let pnp = Int(u32(rom, 0x1A) & 0xFFFF)
        XCTAssertEqual(String(decoding: rom[pnp..<pnp + 4], as: UTF8.self), "$PnP")
        let bev = Int(u32(rom, pnp + 0x1A) & 0xFFFF)
        XCTAssertGreaterThan(bev, pnp)
        XCTAssertLessThan(bev, LinuxBootROM.code.count)
        XCTAssertEqual(rom[bev], 0xFA, "the BEV starts with cli")

        let nasm = "/usr/bin/nasm"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: nasm), "nasm is not installed")
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/Machine/Firmware/LinuxBootROM.asm")
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lbrom-\(getpid()).bin")
        defer { try? FileManager.default.removeItem(at: out) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: nasm)
        p.arguments = ["-f", "bin", "-o", out.path, source.path]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        var assembled = [UInt8](try Data(contentsOf: out))
        assembled[assembled.count - 1] = rom[rom.count - 1]
        XCTAssertEqual(assembled, rom, "LinuxBootROM.swift is stale: regenerate it from LinuxBootROM.asm")
    }
}

/// The MTRRs a directly booted kernel gets: SeaBIOS's mtrr_setup for the i440FX.
final class FirmwareMTRRTests: XCTestCase {
    func finalState(_ msrs: [FirmwareMSR]) -> [UInt32: UInt64] {
        var s: [UInt32: UInt64] = [:]
        for m in msrs { s[m.index] = m.value }
        return s
    }

    func testPCIHoleAndFixedRanges() {
        // RAM below 4 GiB -> where SeaBIOS starts PCI memory (checked against /proc/mtrr under QEMU
        // for 512 MiB and 3 GiB), with 40 physical address bits as qemu64 reports.
        let cases: [(UInt64, UInt64, UInt64)] = [
            (512 << 20, 0x8000_0000, 0xFF_8000_0800),
            (0x8000_0000, 0x8000_0000, 0xFF_8000_0800),
            (0xC000_0000, 0xC000_0000, 0xFF_C000_0800),
            (0xD000_0000, 0xE000_0000, 0xFF_E000_0800),
        ]
        for (below, base, mask) in cases {
            let s = finalState(FirmwareMTRRs.msrs(ramBelow4G: below, physicalAddressBits: 40))
            XCTAssertEqual(s[0x200], base, "\(below)")
            XCTAssertEqual(s[0x201], mask, "\(below)")
            for i in 1..<8 { XCTAssertEqual(s[0x200 + UInt32(2 * i)], 0); XCTAssertEqual(s[0x201 + UInt32(2 * i)], 0) }
            XCTAssertEqual(s[0x2FF], 0xC06)
            XCTAssertEqual(s[0x250], 0x0606_0606_0606_0606)
            XCTAssertEqual(s[0x258], 0x0606_0606_0606_0606)
            XCTAssertEqual(s[0x259], 0)
            for j in 0..<8 { XCTAssertEqual(s[0x268 + UInt32(j)], 0x0505_0505_0505_0505) }
        }
        // MTRRs are off while they are written, enabled by the last write.
        let m = FirmwareMTRRs.msrs(ramBelow4G: 512 << 20, physicalAddressBits: 40)
        XCTAssertEqual(m.first, FirmwareMSR(0x2FF, 0))
        XCTAssertEqual(m.last, FirmwareMSR(0x2FF, 0xC06))
        // A wider physical address space widens the mask.
        XCTAssertEqual(finalState(FirmwareMTRRs.msrs(ramBelow4G: 512 << 20, physicalAddressBits: 48))[0x201], 0xFFFF_8000_0800)
    }

    func testTinyRAMLeavesUncoveredPiecesUncached() {
        // Only the 64 KiB pieces that RAM covers are write-back (SeaBIOS's per-piece rule).
        let s = finalState(FirmwareMTRRs.msrs(ramBelow4G: 0x3_0000, physicalAddressBits: 40))
        XCTAssertEqual(s[0x250], 0x06_0606)
        XCTAssertEqual(s[0x258], 0)
        XCTAssertEqual(s[0x268], 0)
    }
}
