// What the machine hands a BIOS (SeaBIOS) through fw_cfg, as QEMU's pc machine does:
//   - "etc/e820": RAM below and above 4 GiB (the BIOS adds its own reservations);
//   - "etc/table-loader", "etc/acpi/tables", "etc/acpi/rsdp": our ACPI tables, placed by the BIOS;
//   - with -kernel, QEMU's linuxboot path: the real-mode setup (with the setup header patched as a
//     boot loader would: loader type, command line pointer, heap end, initrd address), the
//     protected-mode kernel, the initrd and the command line as fw_cfg items with their load
//     addresses, our loader ROM as "genroms/linuxboot_dma.bin", and "bootorder" naming that ROM
//     first, so the BIOS boots it instead of looking at the disks.

public enum FwCfgBoot {
    /// Where the pieces go (QEMU's choices for boot protocol 2.02 and later).
    public static let setupAddress: UInt32 = 0x1_0000
    public static let cmdlineAddress: UInt32 = 0x2_0000
    public static let kernelAddress: UInt32 = 0x10_0000
    /// Room QEMU's pc machine keeps for the BIOS's tables at the top of low RAM (acpi_data_size).
    public static let acpiDataSize: UInt64 = 0x2_8000
    public static let romName = "genroms/linuxboot_dma.bin"

    /// QEMU's etc/e820 for -bios: RAM entries only.
    public static func e820(_ map: PCMemoryMap) -> [E820Entry] {
        var e = [E820Entry(0, map.below4G, .ram)]
        if map.above4G > 0 { e.append(E820Entry(PCMemoryMap.fourGiB, map.above4G, .ram)) }
        return e
    }

    /// The firmware files every BIOS boot gets.
    public static func addTables(to fwcfg: FwCfg, map: PCMemoryMap, acpi: ACPIConfig) {
        fwcfg.addFile("etc/e820", e820(map).flatMap(\.bytes))
        let t = ACPITables.buildForLoader(acpi)
        fwcfg.addFile("etc/acpi/tables", t.tables)
        fwcfg.addFile("etc/acpi/rsdp", t.rsdp)
        fwcfg.addFile("etc/table-loader", t.loader)
    }

    /// The linuxboot items for a bzImage; throws QEMU's messages for kernels it cannot take.
    public static func addLinux(to fwcfg: FwCfg, kernel: [UInt8], cmdline: String, initrd: [UInt8]?,
                                below4G: UInt64) throws {
        guard LinuxBootPlan.isBzImage(kernel) else {
            throw LinuxBootError("qemu: linux kernel too old to load a ram disk with -bios (only bzImage kernels boot through the BIOS)")
        }
        func u16(_ o: Int) -> UInt32 { UInt32(kernel[o]) | UInt32(kernel[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { u16(o) | u16(o + 2) << 16 }
        let proto = u16(0x206)
        guard proto >= 0x202, kernel[0x211] & 0x01 != 0 else {
            throw LinuxBootError("qemu: linux kernel too old to load with -bios (boot protocol \(String(proto, radix: 16)))")
        }
        let setupSects = kernel[0x1F1] == 0 ? 4 : Int(kernel[0x1F1])
        let setupSize = (setupSects + 1) * 512
        guard kernel.count > setupSize else { throw LinuxBootError("qemu: could not load kernel: truncated setup") }
        var setup = Array(kernel[0..<setupSize])
        func put(_ o: Int, _ v: UInt32, _ n: Int) { for i in 0..<n { setup[o + i] = UInt8((v >> (8 * UInt32(i))) & 0xFF) } }

        put(0x210, 0xB0, 1)                                        // type_of_loader: "other" (QEMU's)
        put(0x211, UInt32(setup[0x211] | 0x80), 1)                 // CAN_USE_HEAP
        put(0x224, cmdlineAddress - setupAddress - 0x200, 2)       // heap_end_ptr
        put(0x228, cmdlineAddress, 4)                              // cmd_line_ptr

        var initrdMax = UInt64(proto >= 0x203 ? u32(0x22C) : 0x37FF_FFFF)
        if initrdMax >= below4G - acpiDataSize { initrdMax = below4G - acpiDataSize - 1 }
        if let initrd {
            guard UInt64(initrd.count) < initrdMax else {
                throw LinuxBootError("qemu: initrd is too large (max: \(initrdMax), need \(initrd.count))")
            }
            let addr = UInt32((initrdMax - UInt64(initrd.count)) & ~0xFFF)
            put(0x218, addr, 4)
            put(0x21C, UInt32(initrd.count), 4)
            fwcfg.setItem(FwCfg.initrdAddr, AML.le(UInt64(addr), 4))
            fwcfg.setItem(FwCfg.initrdSize, AML.le(UInt64(initrd.count), 4))
            fwcfg.setItem(FwCfg.initrdData, initrd)
        } else {
            fwcfg.setItem(FwCfg.initrdAddr, AML.le(0, 4))
            fwcfg.setItem(FwCfg.initrdSize, AML.le(0, 4))
            fwcfg.setItem(FwCfg.initrdData, [])
        }
        let line = Array(cmdline.utf8) + [0]
        fwcfg.setItem(FwCfg.cmdlineAddr, AML.le(UInt64(cmdlineAddress), 4))
        fwcfg.setItem(FwCfg.cmdlineSize, AML.le(UInt64(line.count), 4))
        fwcfg.setItem(FwCfg.cmdlineData, line)
        fwcfg.setItem(FwCfg.kernelCmdline, line)
        fwcfg.setItem(FwCfg.kernelAddr, AML.le(UInt64(kernelAddress), 4))
        fwcfg.setItem(FwCfg.kernelSize, AML.le(UInt64(kernel.count - setupSize), 4))
        fwcfg.setItem(FwCfg.kernelData, Array(kernel[setupSize...]))
        fwcfg.setItem(FwCfg.setupAddr, AML.le(UInt64(setupAddress), 4))
        fwcfg.setItem(FwCfg.setupSize, AML.le(UInt64(setupSize), 4))
        fwcfg.setItem(FwCfg.setupData, setup)
        fwcfg.addFile(romName, LinuxBootROM.image)
        fwcfg.addFile("bootorder", Array("/rom@\(romName)".utf8) + [0])
    }
}
