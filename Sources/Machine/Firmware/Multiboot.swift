// Multiboot (version 1) loading for `-kernel` images that are not bzImages, as QEMU does: find the
// multiboot header in the first 8 KiB, load the ELF32 PT_LOAD segments (or the a.out-kludge address
// fields when header flag 16 is set), build the multiboot information structure (memory sizes, the
// command line, the e820-derived memory map, modules = the initrd), and enter in flat 32-bit mode
// with EAX = 0x2BADB002 and EBX = the information structure. Every offset from the image is checked.

public enum Multiboot {
    public static let headerMagic: UInt32 = 0x1BAD_B002
    public static let bootMagic: UInt32 = 0x2BAD_B002
    static let infoAddress: UInt64 = 0x9000
    static let cmdlineAddress: UInt64 = 0x9800
    static let mmapAddress: UInt64 = 0x9400
    static let modulesAddress: UInt64 = 0x9300

    static func u32(_ d: [UInt8], _ o: Int) -> UInt32? {
        guard o >= 0, o + 4 <= d.count else { return nil }
        return UInt32(d[o]) | UInt32(d[o + 1]) << 8 | UInt32(d[o + 2]) << 16 | UInt32(d[o + 3]) << 24
    }
    static func u16(_ d: [UInt8], _ o: Int) -> UInt16? {
        guard o >= 0, o + 2 <= d.count else { return nil }
        return UInt16(d[o]) | UInt16(d[o + 1]) << 8
    }

    /// Offset of a valid multiboot header, if any.
    public static func findHeader(_ d: [UInt8]) -> Int? {
        var o = 0
        while o + 12 <= min(d.count, 8192) {
            if let m = u32(d, o), m == headerMagic, let f = u32(d, o + 4), let c = u32(d, o + 8), m &+ f &+ c == 0 { return o }
            o += 4
        }
        return nil
    }

    public static func load(kernel d: [UInt8], cmdline: String, initrd: [UInt8]?, ram: GuestRAM,
                            e820: [E820Entry], kernelPath: String) throws -> CPUEntry {
        let isELF = d.count >= 52 && d[0] == 0x7F && d[1] == 0x45 && d[2] == 0x4C && d[3] == 0x46
        if isELF && d[4] == 2 { throw LinuxBootError("qemu: Cannot load x86-64 image, give a 32bit one.") }
        guard let h = findHeader(d), let flags = u32(d, h + 4) else {
            throw LinuxBootError("qemu: could not load kernel '\(kernelPath)': not a bzImage, multiboot or ELF32 kernel")
        }
        var entry: UInt32
        var loadEnd: UInt64 = 0
        if flags & (1 << 16) != 0 {
            guard let headerAddr = u32(d, h + 12), let loadAddr = u32(d, h + 16), let loadEndAddr = u32(d, h + 20),
                  let bssEnd = u32(d, h + 24), let e = u32(d, h + 28), headerAddr >= loadAddr,
                  UInt32(h) >= headerAddr - loadAddr else { throw LinuxBootError("qemu: invalid multiboot header") }
            let fileStart = h - Int(headerAddr - loadAddr)
            let size = loadEndAddr == 0 ? d.count - fileStart : Int(loadEndAddr) - Int(loadAddr)
            guard size >= 0, fileStart + size <= d.count, ram.write(UInt64(loadAddr), bytes: Array(d[fileStart..<fileStart + size])) else {
                throw LinuxBootError("qemu: kernel does not fit in guest RAM")
            }
            loadEnd = UInt64(max(bssEnd, UInt32(truncatingIfNeeded: Int(loadAddr) + size)))
            entry = e
        } else {
            guard isELF, d[4] == 1, let phoff = u32(d, 28), let phentsize = u16(d, 42), let phnum = u16(d, 44),
                  let e = u32(d, 24) else { throw LinuxBootError("qemu: could not load kernel '\(kernelPath)': not ELF32") }
            entry = e
            for i in 0..<Int(phnum) {
                let p = Int(phoff) + i * Int(phentsize)
                guard let type = u32(d, p), let off = u32(d, p + 4), let paddr = u32(d, p + 12),
                      let filesz = u32(d, p + 16), let memsz = u32(d, p + 20) else { throw LinuxBootError("qemu: truncated ELF") }
                guard type == 1 else { continue }
                guard UInt64(off) + UInt64(filesz) <= UInt64(d.count), filesz <= memsz,
                      ram.pointer(UInt64(paddr), UInt64(memsz)) != nil else {
                    throw LinuxBootError("qemu: ELF segment does not fit in guest RAM")
                }
                ram.write(UInt64(paddr), bytes: Array(d[Int(off)..<Int(off) + Int(filesz)]))
                if memsz > filesz { ram.write(UInt64(paddr) + UInt64(filesz), bytes: [UInt8](repeating: 0, count: Int(memsz - filesz))) }
                loadEnd = max(loadEnd, UInt64(paddr) + UInt64(memsz))
            }
        }
        var infoFlags: UInt32 = 1 | 4 | 64   // mem, cmdline, mmap
        var info = [UInt8](repeating: 0, count: 88)
        func put(_ o: Int, _ v: UInt64) { for i in 0..<4 { info[o + i] = UInt8((v >> (8 * UInt64(i))) & 0xFF) } }
        let upper = e820.first { $0.address == 0x10_0000 }.map { $0.size / 1024 } ?? 0
        put(4, 640)
        put(8, upper)
        put(16, cmdlineAddress)
        ram.write(cmdlineAddress, bytes: Array((kernelPath + (cmdline.isEmpty ? "" : " " + cmdline)).utf8.prefix(0x7FF)) + [0])
        if let initrd {
            let at = (max(loadEnd, 0x10_0000) + 0xFFF) & ~0xFFF
            guard ram.write(at, bytes: initrd) else { throw LinuxBootError("qemu: initrd does not fit in guest RAM") }
            ram.write(modulesAddress, bytes: AML.le(at, 4) + AML.le(at + UInt64(initrd.count), 4) + AML.le(0, 4) + AML.le(0, 4))
            put(20, 1)
            put(24, modulesAddress)
            infoFlags |= 8
        }
        var mmap: [UInt8] = []
        for e in e820 { mmap += AML.le(20, 4) + e.bytes }
        ram.write(mmapAddress, bytes: mmap)
        put(44, UInt64(mmap.count))
        put(48, mmapAddress)
        put(0, UInt64(infoFlags))
        ram.write(infoAddress, bytes: info)
        ram.write(LinuxBootPlan.gdtAddress, bytes: LinuxBootPlan.gdt)
        return .protected32(eip: entry, esi: 0, eax: bootMagic, ebx: UInt32(infoAddress),
                            gdtBase: UInt32(LinuxBootPlan.gdtAddress), gdtLimit: UInt16(LinuxBootPlan.gdt.count - 1))
    }
}
