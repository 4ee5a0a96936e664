// The interpreter accelerator (QEMU's "tcg"): one X86VCPU per vCPU thread, plus the interrupt
// controllers KVM would keep in the kernel (local APICs, I/O APIC, 8259 pair, 8254 PIT), attached
// to the machine's buses. The CPU talks to the machine through `InterpreterPlatform`.
import Glibc
import X86

public final class InterpreterAccelerator: Accelerator, @unchecked Sendable {
    public let name = "tcg"
    public let hub: InterruptHub
    public let pit: PIT8254
    let model: CPUModel
    let gate = VCPUGate()
    private(set) var cpus: [X86VCPU] = []
    private var platform: InterpreterPlatform?

    public var interruptSink: any InterruptSink { hub }

    public init(cpuCount: Int, model: CPUModel) {
        hub = InterruptHub(cpuCount: cpuCount)
        let h = hub
        pit = PIT8254(irq0: { h.setIRQ(0, level: true); h.setIRQ(0, level: false) })
        self.model = model
        gate.kick = { h.kickAll() }
    }

    public func attach(ports: IOBus, mmio: IOBus) throws {
        try ports.register(OffsetWindow(hub.pic, offset: 0), base: 0x20, length: 2, name: "pic master")
        try ports.register(OffsetWindow(hub.pic, offset: 0x80), base: 0xA0, length: 2, name: "pic slave")
        try ports.register(OffsetWindow(hub.pic, offset: 0x4B0), base: 0x4D0, length: 2, name: "elcr")
        try ports.register(pit, base: 0x40, length: 4, name: "pit")
        try ports.register(OffsetWindow(pit, offset: 0x21), base: 0x61, length: 1, name: "port61")
        try mmio.register(hub.ioapic, base: PCMemoryMap.ioapicBase, length: 0x1000, name: "ioapic")
    }

    public func setUp(ram: GuestRAM, cpuCount: Int, host: any VCPUHost) throws {
        let p = InterpreterPlatform(memory: ram.memory, host: host, hub: hub, pit: pit, gate: gate)
        platform = p
        cpus = (0..<cpuCount).map { X86VCPU(index: $0, platform: p, model: model) }
    }

    public func reset(entry: CPUEntry) throws {
        hub.reset()
        pit.reset()
        for c in cpus { c.reset() }
        guard let bsp = cpus.first else { return }
        switch entry {
        case .reset: break
        case let .protected32(eip, esi, eax, ebx, gdtBase, gdtLimit):
            var r = bsp.registers
            r.cs = .flatCode32(selector: 0x10)
            r.ds = .flatData(selector: 0x18)
            r.es = r.ds; r.ss = r.ds; r.fs = r.ds; r.gs = r.ds
            r.gdt = X86TableRegister(base: UInt64(gdtBase), limit: gdtLimit)
            r.idt = X86TableRegister(base: 0, limit: 0)
            r.cr0 = 0x11
            r.rip = UInt64(eip)
            r.rsi = UInt64(esi)
            r.rax = UInt64(eax)
            r.rbx = UInt64(ebx)
            r.rflags = 2
            bsp.registers = r
        }
    }

    public var physicalAddressBits: Int { cpus.first?.physicalAddressBits ?? 36 }

    public func setFirmwareMSRs(_ msrs: [FirmwareMSR]) throws {
        for c in cpus {
            for m in msrs where !c.writeMSR(m.index, m.value) {
                throw AcceleratorChoice.ChoiceError(message: "interpreter: MSR 0x\(String(m.index, radix: 16)) refused the firmware's value 0x\(String(m.value, radix: 16))")
            }
        }
    }

    public func start() throws {
        gate.resume()
        for cpu in cpus {
            let g = gate
            let host = platform!.host
            gate.threadStarted()
            HostThread.start(name: "CPU \(cpu.index)/TCG", stackSize: 8 << 20) {
                defer { g.threadEnded() }
                while true {
                    if g.mustStop, g.checkpoint() == .quit { return }
                    switch cpu.run() {
                    case .stopRequested: continue
                    case .shutdown:
                        host.cpuRequestedReset(cpu: cpu.index, reason: "triple fault")
                        while !g.mustStop { usleep(1000) }
                    }
                }
            }
        }
    }

    public func registerDump(cpu: Int) -> String? {
        guard cpu < cpus.count else { return nil }
        let r = cpus[cpu].registers
        func h(_ v: UInt64) -> String { let s = String(v, radix: 16); return String(repeating: "0", count: max(0, 16 - s.count)) + s }
        return "RAX=\(h(r.rax)) RBX=\(h(r.rbx)) RCX=\(h(r.rcx)) RDX=\(h(r.rdx))\r\nRSI=\(h(r.rsi)) RDI=\(h(r.rdi)) RBP=\(h(r.rbp)) RSP=\(h(r.rsp))\r\n"
            + "RIP=\(h(r.rip)) RFL=\(String(r.rflags, radix: 16)) CPL=\(r.cs.selector & 3) [instructions \(cpus[cpu].instructionsRetired)]\r\n"
            + "CS =\(String(r.cs.selector, radix: 16)) \(h(r.cs.base)) SS=\(String(r.ss.selector, radix: 16))\r\n"
            + "CR0=\(String(r.cr0, radix: 16)) CR2=\(h(r.cr2)) CR3=\(h(r.cr3)) CR4=\(String(r.cr4, radix: 16)) EFER=\(String(r.efer, radix: 16))\r\n"
    }

    public func pause() { gate.pause() }
    public func resume() { gate.resume() }
    public func shutdown() { gate.quit() }
}
