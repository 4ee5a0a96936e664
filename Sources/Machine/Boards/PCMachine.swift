// The `pc` machine (i440FX + PIIX3/PIIX4), assembled from the devices and firmware pieces, and the
// control loop that carries out lifecycle requests.
//
// Layout (QEMU's): ports 0x60/0x64 i8042, 0x70 RTC/CMOS, 0x92 port A, 0x3F0-0x3F7 floppy
// controller (no drives; 0x3F6 is IDE's), 0x3F8 COM1, 0x501 (default) isa-debug-exit, 0x510 fw_cfg,
// 0x600 PIIX4 PM, 0xAFE0 GPE0, 0xCF8 PCI config (0xCF9 reset); PCI 00:00.0 i440FX, 00:01.0 PIIX3,
// 00:01.1 PIIX3 IDE (no drives; legacy ports 0x1F0, 0x170, 0x3F6, 0x376), 00:01.3 PIIX4 PM,
// virtio-blk from 00:02.0 on; the PIC, PIT, I/O APIC and local APICs belong to the accelerator
// (in-kernel on KVM). Firmware: direct Linux boot with our ACPI tables in the BIOS area, or a BIOS
// image (SeaBIOS) at the top of 4 GiB.
import Glibc
import ImageFormats

public final class PCMachine: VCPUHost, @unchecked Sendable {
    public let config: MachineConfig
    public let map: PCMemoryMap
    public let ram: GuestRAM
    public let ports = IOBus(name: "io")
    public let mmio = IOBus(name: "memory")
    public let accelerator: any Accelerator
    public let control: MachineControl
    public let pci: PCIBus
    public let pm: PIIX4PM
    public let serial: Serial16550?
    public let chardev: Chardev?
    private var debugConsole: Chardev?
    public let fwcfg: FwCfg
    public private(set) var disks: [(config: VirtioBlkConfig, device: VirtioBlock, pci: VirtioPCI, address: PCIAddress)] = []
    public private(set) var iothreads: [IOThread] = []
    public let cmos: CMOS
    public let i8042: I8042
    public let floppy: FloppyController
    public let timers = TimerService()
    public private(set) var hpet: HPET?
    private var bootEntry: CPUEntry = .reset
    private var biosImage: [UInt8]?

    public enum BuildError: Error, CustomStringConvertible {
        case message(String)
        public var description: String { if case .message(let m) = self { return m }; return "" }
    }

    public init(config: MachineConfig, accelerator: any Accelerator) throws {
        self.config = config
        self.accelerator = accelerator
        map = PCMemoryMap(ramSize: config.ramSize)
        ram = try GuestRAM(size: config.ramSize)
        ram.mapRAM(at: 0, size: PCMemoryMap.vgaHoleStart, hostOffset: 0)
        ram.mapRAM(at: PCMemoryMap.vgaHoleEnd, size: map.below4G - PCMemoryMap.vgaHoleEnd, hostOffset: PCMemoryMap.vgaHoleEnd)
        if map.above4G > 0 { ram.mapRAM(at: PCMemoryMap.fourGiB, size: map.above4G, hostOffset: map.below4G) }
        control = MachineControl(initial: config.startPaused ? .prelaunch : .running)
        let sink = accelerator.interruptSink
        try accelerator.attach(ports: ports, mmio: mmio)

        // Firmware images first: a BIOS is a ROM window, which KVM needs before its memory slots.
        let biosPath = config.bios ?? (config.kernel == nil ? MachineConfig.defaultBIOS : nil)
        if let biosPath {
            guard let data = HostFile.read(biosPath, limit: 16 << 20), data.count > 0,
                  data.count % 65536 == 0, data.count <= 16 << 20 else {
                throw BuildError.message("qemu: could not load PC BIOS '\(biosPath)'")
            }
            biosImage = data
            try ram.mapROM(at: PCMemoryMap.fourGiB - UInt64(data.count), bytes: biosImage!, size: UInt64(data.count))
        }

        // Devices.
        let control = self.control
        let resetGuest: @Sendable () -> Void = {
            if PCMachine.debug { Diagnostics.info("debug: reset requested by a device") }
            control.request(.reset(.guestReset))
        }
        cmos = CMOS()
        cmos.setMemoryInfo(below4G: map.below4G, above4G: map.above4G, cpus: config.cpus)
        try ports.register(cmos, base: 0x70, length: 2, name: "rtc")
        let kbd = I8042(irq: IRQLine(sink: sink, gsi: 1), auxIRQ: IRQLine(sink: sink, gsi: 12), reset: resetGuest)
        i8042 = kbd
        try ports.register(OffsetWindow(kbd, offset: 0), base: 0x60, length: 1, name: "i8042 data")
        try ports.register(OffsetWindow(kbd, offset: 4), base: 0x64, length: 1, name: "i8042 cmd")
        try ports.register(Port92(reset: resetGuest), base: 0x92, length: 1, name: "port92")
        floppy = FloppyController(irq: IRQLine(sink: sink, gsi: 6))
        try ports.register(floppy, base: 0x3F0, length: 6, name: "fdc")
        try ports.register(OffsetWindow(floppy, offset: 7), base: 0x3F7, length: 1, name: "fdc dir")
        if let spec = config.serial, spec != .none {
            let cd = try Chardev(spec: spec)
            chardev = cd
            let uart = Serial16550(irq: IRQLine(sink: sink, gsi: 4), output: cd)
            serial = uart
            try ports.register(uart, base: 0x3F8, length: 8, name: "serial")
        } else {
            chardev = nil
            serial = nil
        }
        if let de = config.debugExit {
            try ports.register(DebugExit(exit: { control.request(.exit($0)) }), base: UInt64(de.base),
                               length: UInt64(max(de.size, 1)), name: "isa-debug-exit")
        }
        if let dc = config.debugCon {
            let cd = try Chardev(spec: dc.chardev)
            debugConsole = cd
            try ports.register(DebugCon(output: cd), base: UInt64(dc.base), length: 1, name: "isa-debugcon")
        }
        if config.hpet {
            let h = HPET(sink: sink, service: timers)
            try mmio.register(h, base: PCMemoryMap.hpetBase, length: 0x400, name: "hpet")
            hpet = h
        }
        fwcfg = FwCfg(ram: ram, cpus: config.cpus)
        try ports.register(fwcfg, base: 0x510, length: 12, name: "fw_cfg")

        let piix3 = PIIX3(sink: sink)
        pci = PCIBus(ports: ports, mmio: mmio, intxRouter: { piix3.line(forPIRQ: $0) })
        try ports.register(PCIConfigPorts(bus: pci, resetControl: ResetControlRegister(reset: resetGuest)),
                           base: 0xCF8, length: 8, name: "pci-conf")
        // S5 is a guest shutdown (the control loop applies -no-shutdown); S4 too, after QEMU's
        // SUSPEND_DISK event. S3 (suspend to RAM) is not offered: resuming needs firmware that a
        // directly booted guest does not have.
        pm = PIIX4PM(sci: IRQLine(sink: sink, gsi: UInt32(PIIX4PM.sciIRQ)), sleep: { req in
            switch req {
            case .softOff: control.request(.shutdown(.guestShutdown))
            case .suspendToDisk:
                control.emit("SUSPEND_DISK")
                control.request(.shutdown(.guestShutdown))
            case .suspend: break
            }
        })
        try ports.register(pm.pmRegisters, base: UInt64(PIIX4PM.pmBase), length: PIIX4PM.pmLength, name: "piix4-pm")
        try ports.register(pm.gpeRegisters, base: UInt64(PIIX4PM.gpeBase), length: PIIX4PM.gpeLength, name: "gpe0")
        pci.plug(I440FXHostBridge(), at: PCIAddress(device: 0))
        pci.plug(piix3, at: PCIAddress(device: 1, function: 0))
        pci.plug(pm, at: PCIAddress(device: 1, function: 3))

        for id in config.iothreads { iothreads.append(IOThread(id: id)) }
        var nextMMIO = map.pciHoleStart >= 0xFE00_0000 ? map.pciHoleStart : 0xFE00_0000
        var nextIO: UInt64 = 0xC000
        for d in config.disks {
            var o = VirtioBlockOptions()
            o.serial = d.serial
            o.numQueues = max(1, d.numQueues)
            o.queueSize = d.queueSize
            o.readOnly = d.drive.readOnly
            o.discard = d.drive.discard
            o.detectZeroes = d.drive.detectZeroes
            var io: IOThread? = nil
            if let name = d.iothread {
                guard let t = iothreads.first(where: { $0.id == name }) else {
                    throw BuildError.message("Property 'virtio-blk-device.iothread' can't find value '\(name)'")
                }
                io = t
            }
            let dev = VirtioBlock(node: d.drive.node, options: o, iothread: io)
            let bar1 = nextMMIO
            let bar4 = (bar1 + MSIX.barSize + VirtioPCI.modernBARSize - 1) & ~(VirtioPCI.modernBARSize - 1)
            nextMMIO = bar4 + VirtioPCI.modernBARSize
            let bar0 = nextIO
            if d.legacy { nextIO += VirtioPCI.legacyBARSize }
            let transport = VirtioPCI(name: "virtio-blk-pci", device: dev, ram: ram, sink: sink, bar1: bar1, bar4: bar4,
                                      legacy: d.legacy, bar0: bar0)
            guard let slot = d.slot ?? pci.freeSlot() else { throw BuildError.message("PCI: no slot/function available for virtio-blk-pci, all in use") }
            let addr = PCIAddress(device: slot)
            guard pci.device(at: addr) == nil else {
                throw BuildError.message("PCI: slot \(slot) function 0 not available for virtio-blk-pci, in use by \(pci.device(at: addr)!.pciName)")
            }
            pci.plug(transport, at: addr)
            disks.append((d, dev, transport, addr))
        }

        // The PIIX3's IDE function, with no drives (QEMU's pc has it even with -nodefaults). Its
        // bus-master block goes after the disks' I/O BARs, where SeaBIOS (largest first) puts it.
        let ide = PIIX3IDE(bar4: nextIO)
        pci.plug(ide, at: PCIAddress(device: 1, function: 1))
        for base in PIIX3IDE.legacyCommandBlocks {
            try ports.register(PIIX3IDE.emptyChannelPorts(), base: base, length: 8, name: "ide")
        }
        for base in PIIX3IDE.legacyControlPorts {
            try ports.register(PIIX3IDE.emptyChannelPorts(), base: base, length: 1, name: "ide ctl")
        }

        try accelerator.setUp(ram: ram, cpuCount: config.cpus, host: self)
        try loadFirmware()
        try resetCPUs()
    }

    /// Every vCPU back to its initial state; a directly booted kernel also finds the MTRRs SeaBIOS
    /// would have programmed (a BIOS boot leaves that to the BIOS).
    private func resetCPUs() throws {
        try accelerator.reset(entry: bootEntry)
        if case .protected32 = bootEntry {
            try accelerator.setFirmwareMSRs(FirmwareMTRRs.msrs(ramBelow4G: map.below4G,
                                                               physicalAddressBits: accelerator.physicalAddressBits))
        }
    }

    /// The device numbers with something plugged on bus 0, once each (slot 1 has three functions).
    private var pciSlots: [Int] { Array(Set(pci.plugged.map(\.0.device))).sorted() }

    /// Builds ACPI tables and the e820 map, loads the kernel (or leaves the BIOS to boot), and
    /// decides the boot CPU's entry state. Run again on every reset (the guest may have overwritten
    /// everything).
    private func loadFirmware() throws {
        let acpiConfig = ACPIConfig(cpuCount: config.cpus, memoryMap: map, hasHPET: hpet != nil,
                                    pciSlots: pciSlots)
        if let bios = biosImage {
            // A BIOS boot. The BIOS area below 1 MiB is RAM here and the i440FX's PAM registers say
            // it is already shadowed, so the image is copied there now (up to 256 KiB, what
            // SeaBIOS would copy from the ROM itself: its init code lies below 0xE0000).
            let low = Array(bios.suffix(0x4_0000))
            ram.write(0x10_0000 - UInt64(low.count), bytes: low)
            FwCfgBoot.addTables(to: fwcfg, map: map, acpi: acpiConfig)
            bootEntry = .reset
            guard let kernelPath = config.kernel else { return }
            let (kernel, initrd) = try readKernel(kernelPath)
            if LinuxBootPlan.isBzImage(kernel) {
                try FwCfgBoot.addLinux(to: fwcfg, kernel: kernel, cmdline: config.append, initrd: initrd, below4G: map.below4G)
            } else {
                throw BuildError.message("qemu: multiboot kernels with -bios are not supported (drop -bios to boot them directly)")
            }
            return
        }
        let e820 = E820.pcMap(map, biosSize: 0, kvm: accelerator.name == "kvm")
        fwcfg.addFile("etc/e820", e820.flatMap(\.bytes))
        guard let kernelPath = config.kernel else {
            bootEntry = .reset
            return
        }
        enableDecodingAsSeaBIOSDoes()
        let tables = ACPITables.build(acpiConfig, base: 0xE_0000)
        guard UInt64(tables.blob.count) <= 0x1_0000 else { throw BuildError.message("ACPI tables too large") }
        ram.write(tables.base, bytes: tables.blob)
        // Also keep a copy of the RSDP where legacy scans look (0xF0000-0xFFFFF).
        ram.write(0xF_0000, bytes: Array(tables.blob[0..<ACPITables.rsdpLength]))
        ram.write(0xF_0100, bytes: MPTable.build(cpuCount: config.cpus, pciSlots: pciSlots, address: 0xF_0100))
        let (kernel, initrd) = try readKernel(kernelPath)
        if LinuxBootPlan.isBzImage(kernel) {
            let plan = try LinuxBootPlan.plan(kernel: kernel, cmdline: config.append, initrd: initrd,
                                              ramBelow4G: map.below4G, e820: e820, rsdp: tables.rsdpAddress)
            try plan.load(into: ram)
            bootEntry = plan.cpuEntry
        } else {
            let mb = try Multiboot.load(kernel: kernel, cmdline: config.append, initrd: initrd, ram: ram, e820: e820,
                                        kernelPath: kernelPath)
            bootEntry = mb
        }
    }

    /// SeaBIOS turns on I/O, memory and SERR# decoding in every PCI function's command register
    /// (the BARs we pre-assign are where it would put them); a directly booted kernel finds the same,
    /// rather than enabling the devices itself.
    private func enableDecodingAsSeaBIOSDoes() {
        let bits = UInt32(PCIConfigSpace.commandIO | PCIConfigSpace.commandMemory) | 0x100
        for (address, _) in pci.plugged {
            let command = pci.configRead(address, offset: PCIConfigSpace.command, size: 2)
            pci.configWrite(address, offset: PCIConfigSpace.command, size: 2, value: command | bits)
        }
    }

    private func readKernel(_ kernelPath: String) throws -> (kernel: [UInt8], initrd: [UInt8]?) {
        guard let kernel = HostFile.read(kernelPath) else {
            throw BuildError.message("qemu: could not load kernel '\(kernelPath)': \(String(cString: strerror(errno)))")
        }
        var initrd: [UInt8]? = nil
        if let ip = config.initrd {
            guard let d = HostFile.read(ip) else {
                throw BuildError.message("qemu: could not load initial ram disk '\(ip)'")
            }
            initrd = d
        }
        return (kernel, initrd)
    }

    // MARK: VCPUHost

    public func portRead(cpu: Int, port: UInt16, size: Int) -> UInt32 {
        UInt32(truncatingIfNeeded: ports.read(UInt64(port), size: size))
    }
    public func portWrite(cpu: Int, port: UInt16, size: Int, value: UInt32) {
        ports.write(UInt64(port), size: size, value: UInt64(value))
    }
    public func mmioRead(cpu: Int, address: UInt64, size: Int) -> UInt64 { mmio.read(address, size: size) }
    public func mmioWrite(cpu: Int, address: UInt64, size: Int, value: UInt64) { mmio.write(address, size: size, value: value) }
    public func cpuRequestedReset(cpu: Int, reason: String) {
        if PCMachine.debug { Diagnostics.info("debug: CPU \(cpu) requested a reset: \(reason)\n\(accelerator.registerDump(cpu: cpu) ?? "")") }
        control.request(.reset(.guestReset))
    }

    /// VMRUN_DEBUG=1 in the environment: say why the machine resets or stops.
    static let debug = HostEnvironment.get("VMRUN_DEBUG") != nil
    public func cpuFailed(cpu: Int, message: String) { control.request(.fatal(message)) }

    // MARK: lifecycle

    /// Starts the guest and carries out requests until the machine ends; returns the exit status.
    public func run() -> Int32 {
        if let chardev, let serial {
            chardev.waitForClientIfNeeded()
            chardev.onQuitKey = { [control] in control.request(.exit(0)) }
            chardev.monitor = { [unowned self] line in HMP(machine: self).execute(line) }
            chardev.startInput { bytes in
                var rest = bytes[...]
                while !rest.isEmpty {
                    let n = serial.enqueue(Array(rest))
                    rest = rest.dropFirst(n)
                    if !rest.isEmpty { usleep(1000) }
                }
            }
        }
        do { try accelerator.start() } catch {
            Diagnostics.error("\(error)")
            return 1
        }
        if config.startPaused { accelerator.pause() }
        while true {
            let (request, done) = control.next()
            defer { done?() }
            switch request {
            case .exit(let code):
                return finish(code)
            case .fatal(let message):
                Diagnostics.error(message)
                control.setState(.internalError)
                accelerator.pause()
                control.emit("STOP")
                return finish(1)
            case .shutdown(let cause):
                control.emit("SHUTDOWN", .object([("guest", .bool(cause.fromGuest)), ("reason", .string(cause.rawValue))]))
                if cause == .guestShutdown && config.noShutdown {
                    accelerator.pause()
                    control.setState(.shutdown)
                    control.emit("STOP")
                    continue
                }
                return finish(0)
            case .reset(let cause):
                if cause.fromGuest && config.noReboot {
                    control.emit("SHUTDOWN", .object([("guest", .bool(true)), ("reason", .string(cause.rawValue))]))
                    return finish(0)
                }
                accelerator.pause()
                do {
                    try resetDevices()
                    control.emit("RESET", .object([("guest", .bool(cause.fromGuest)), ("reason", .string(cause.rawValue))]))
                    let st = control.runState
                    if st == .running || st == .shutdown {
                        control.setState(.running)
                        accelerator.resume()
                    }
                } catch {
                    Diagnostics.error("reset failed: \(error)")
                    return finish(1)
                }
            case .powerdown:
                control.emit("POWERDOWN")
                pm.pressPowerButton()
            case .stop:
                let st = control.runState
                if st == .running {
                    accelerator.pause()
                    control.setState(.paused)
                    control.emit("STOP")
                } else if st == .prelaunch {
                    control.setState(.paused)
                }
            case .cont:
                let st = control.runState
                if st == .paused || st == .prelaunch {
                    control.setState(.running)
                    control.emit("RESUME")
                    accelerator.resume()
                }
            }
        }
    }

    private func resetDevices() throws {
        pci.reset()
        pm.reset()
        i8042.resetState()
        floppy.resetState()
        hpet?.reset()
        try loadFirmware()
        try resetCPUs()
    }

    private func finish(_ code: Int32) -> Int32 {
        control.setState(.shutdown)
        control.drainCompletions()
        accelerator.shutdown()
        timers.stop()
        for t in iothreads { t.drain(); t.stop() }
        for d in disks {
            try? d.config.drive.node.flush()
            try? d.config.drive.node.close()
        }
        chardev?.close()
        debugConsole?.close()
        Chardev.restoreTerminal()
        return code
    }
}
