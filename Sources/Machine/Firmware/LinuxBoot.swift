// Direct Linux boot (Documentation/x86/boot.rst): load a bzImage's protected-mode kernel at 1 MiB,
// the initrd as high as the kernel allows, the command line, and a zero page (struct boot_params)
// with the setup header, e820 map and ACPI RSDP address; then enter the 32-bit entry point in flat
// protected mode with ESI = zero page. The real-mode setup code never runs, so the CPU needs less.
//
// The parser is a pure function from bytes to a `LinuxBootPlan` (what goes where), checked against
// the header and the RAM size with overflow-safe arithmetic; `load(into:)` only copies. Errors use
// QEMU's wording where QEMU has one.

public struct LinuxBootError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}

public struct LinuxBootPlan: Sendable {
    public static let zeroPage: UInt64 = 0x1_0000
    public static let cmdlineAddress: UInt64 = 0x2_0000
    public static let gdtAddress: UInt64 = 0x800
    public static let kernelAddress: UInt64 = 0x10_0000

    public var protocolVersion: UInt16
    public var zeroPage: [UInt8]
    public var kernel: ArraySlice<UInt8>
    public var cmdline: [UInt8]
    public var initrd: [UInt8]
    public var initrdAddress: UInt64
    public var entry: UInt32

    /// The boot GDT: null, null, flat code at 0x10, flat data at 0x18.
    public static let gdt: [UInt8] = AML.le(0, 8) + AML.le(0, 8) + AML.le(0x00CF_9A00_0000_FFFF, 8) + AML.le(0x00CF_9200_0000_FFFF, 8)

    public var cpuEntry: CPUEntry {
        .protected32(eip: entry, esi: UInt32(LinuxBootPlan.zeroPage), eax: 0, ebx: 0,
                     gdtBase: UInt32(LinuxBootPlan.gdtAddress), gdtLimit: UInt16(LinuxBootPlan.gdt.count - 1))
    }

    /// Whether `data` looks like a bzImage (boot sector + "HdrS" setup header).
    public static func isBzImage(_ data: [UInt8]) -> Bool {
        data.count >= 0x250 && Array(data[0x202..<0x206]) == Array("HdrS".utf8)
    }

    public static func plan(kernel data: [UInt8], cmdline: String, initrd: [UInt8]?, ramBelow4G: UInt64,
                            e820: [E820Entry], rsdp: UInt64?, reservedTop: UInt64 = 0) throws -> LinuxBootPlan {
        guard isBzImage(data) else { throw LinuxBootError("qemu: linux kernel too old to load a ram disk") }
        func u16(_ o: Int) -> UInt16 { UInt16(data[o]) | UInt16(data[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { UInt32(u16(o)) | UInt32(u16(o + 2)) << 16 }
        let version = u16(0x206)
        guard version >= 0x0206 else { throw LinuxBootError("qemu: linux kernel too old to load a ram disk") }
        let loadflags = data[0x211]
        guard loadflags & 0x01 != 0 else { throw LinuxBootError("qemu: kernel is not a bzImage (zImage kernels are not supported)") }
        var setupSects = Int(data[0x1F1])
        if setupSects == 0 { setupSects = 4 }
        let setupSize = (setupSects + 1) * 512
        guard setupSize < data.count else { throw LinuxBootError("qemu: could not load kernel: setup exceeds the file") }
        let kernel = data[setupSize...]
        let initSize = version >= 0x020A ? UInt64(u32(0x260)) : UInt64(kernel.count) * 4
        let needed = LinuxBootPlan.kernelAddress + max(initSize, UInt64(kernel.count))
        guard needed <= ramBelow4G else {
            throw LinuxBootError("qemu: kernel needs \(needed >> 20) MiB of RAM below 4 GiB, the machine has \(ramBelow4G >> 20) MiB")
        }

        let cmdBytes = Array(cmdline.utf8)
        let cmdMax = Int(u32(0x238))
        guard cmdBytes.count <= cmdMax else {
            throw LinuxBootError("qemu: kernel command line too long (\(cmdBytes.count) bytes, the kernel accepts \(cmdMax))")
        }

        var initrdAddress: UInt64 = 0
        let initrdBytes = initrd ?? []
        if let initrd {
            var initrdMax = UInt64(version >= 0x0203 ? u32(0x22C) : 0x37FF_FFFF)
            initrdMax = min(initrdMax, ramBelow4G - reservedTop - 1)
            let size = UInt64(initrd.count)
            guard size <= initrdMax, (initrdMax - size) & ~0xFFF >= needed else {
                throw LinuxBootError("qemu: initrd is too large, cannot support.(max: \(initrdMax), need \(size))")
            }
            initrdAddress = (initrdMax - size) & ~0xFFF
        }

        var zp = [UInt8](repeating: 0, count: 4096)
        let headerEnd = min(0x202 + Int(data[0x201]), 0x280, data.count)
        zp.replaceSubrange(0x1F1..<headerEnd, with: data[0x1F1..<headerEnd])
        func put(_ o: Int, _ bytes: [UInt8]) { zp.replaceSubrange(o..<o + bytes.count, with: bytes) }
        zp[0x210] = 0xB0                                   // type_of_loader: QEMU's id
        zp[0x211] = loadflags | 0x80                       // CAN_USE_HEAP
        put(0x224, AML.le(0xFE00, 2))                      // heap_end_ptr
        put(0x228, AML.le(LinuxBootPlan.cmdlineAddress, 4))
        if initrd != nil {
            put(0x218, AML.le(initrdAddress, 4))
            put(0x21C, AML.le(UInt64(initrdBytes.count), 4))
        }
        let entries = e820.prefix(128)
        zp[0x1E8] = UInt8(entries.count)
        for (i, e) in entries.enumerated() { put(0x2D0 + 20 * i, e.bytes) }
        if let rsdp { put(0x070, AML.le(rsdp, 8)) }

        return LinuxBootPlan(protocolVersion: version, zeroPage: zp, kernel: kernel, cmdline: cmdBytes + [0],
                             initrd: initrdBytes, initrdAddress: initrdAddress,
                             entry: u32(0x214) == 0 ? UInt32(LinuxBootPlan.kernelAddress) : UInt32(LinuxBootPlan.kernelAddress))
    }

    /// Copies everything into guest RAM.
    public func load(into ram: GuestRAM) throws {
        func copy(_ at: UInt64, _ bytes: some Collection<UInt8>, _ what: String) throws {
            let ok = Array(bytes).withUnsafeBytes { ram.write(at, from: $0) }
            guard ok else { throw LinuxBootError("qemu: could not load \(what) at 0x\(String(at, radix: 16)): not RAM") }
        }
        try copy(LinuxBootPlan.gdtAddress, LinuxBootPlan.gdt, "boot GDT")
        try copy(LinuxBootPlan.zeroPage, zeroPage, "zero page")
        try copy(LinuxBootPlan.cmdlineAddress, cmdline, "command line")
        try copy(LinuxBootPlan.kernelAddress, kernel, "kernel")
        if !initrd.isEmpty { try copy(initrdAddress, initrd, "initrd") }
    }
}
