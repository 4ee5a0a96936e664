// The KVM accelerator: the kernel runs the CPUs, the local APICs, the I/O APIC, the PICs and the PIT
// (KVM_CREATE_IRQCHIP + KVM_CREATE_PIT2 with QEMU's pc GSI routing); we get port I/O and MMIO exits
// and dispatch them to the same devices the interpreter uses. One thread per vCPU blocks in KVM_RUN.
// Guest RAM is the board's one mapping, registered as memory slots (ROM slots read-only).
//
// Kicking: to pause, the gate sets its mode, then every kvm_run.immediate_exit is set and the thread
// gets SIGUSR1 (a no-op handler without SA_RESTART), so KVM_RUN returns EINTR whether the signal
// lands inside or just before the ioctl; the thread clears immediate_exit and reaches the gate.
import CLinux
import Glibc
import Synchronization

public final class KVMAccelerator: Accelerator, @unchecked Sendable {
    public let name = "kvm"
    public static let kickSignal = SIGUSR1

    let system: KVMSystem
    let vm: KVMVM
    private(set) var vcpus: [KVMVCPU] = []
    private let gate = VCPUGate()
    private let sink: KVMInterruptSink
    /// Power-on state of the in-kernel PICs, I/O APIC and PIT, restored on every reset.
    private var initialChips: [kvm_irqchip] = []
    private var initialPIT: kvm_pit_state2?

    public var interruptSink: any InterruptSink { sink }

    public init() throws {
        system = try KVMSystem()
        for (cap, what) in [(KVM_CAP_IRQCHIP, "in-kernel irqchip"), (KVM_CAP_USER_MEMORY, "user memory"),
                            (KVM_CAP_IMMEDIATE_EXIT, "immediate exit"), (KVM_CAP_PIT2, "in-kernel PIT")]
        where system.checkExtension(cap) == 0 {
            throw KVMError(operation: "KVM lacks \(what)", errno: ENOTSUP)
        }
        vm = try system.createVM()
        sink = KVMInterruptSink(vm: vm)
        let g = gate
        gate.kick = { [weak self] in
            guard let self else { return }
            _ = g
            for v in self.vcpus { v.kick() }
        }
        _ = clinux_install_kick_handler(KVMAccelerator.kickSignal)
    }

    public func setUp(ram: GuestRAM, cpuCount: Int, host: any VCPUHost) throws {
        try vm.setIdentityMapAddress(PCMemoryMap.kvmIdentityMap)
        try vm.setTSSAddress(PCMemoryMap.kvmTSS)
        try vm.createIRQChip()
        try vm.createPIT()
        initialChips = try (0..<3).map { try vm.getIRQChip(UInt32($0)) }
        initialPIT = try vm.getPIT()
        for (slot, w) in ram.windows.enumerated() {
            try vm.setUserMemoryRegion(slot: UInt32(slot), guestPhysical: w.guestPhysical, size: w.size,
                                       host: ram.host(of: w),
                                       readOnly: w.isROM && system.checkExtension(KVM_CAP_READONLY_MEM) != 0)
        }
        let cpuid = try system.supportedCPUID()
        physicalAddressBits = cpuid.first { $0.function == 0x8000_0008 }.map { Int($0.eax & 0xFF) } ?? 36
        for i in 0..<cpuCount {
            let fd = try vm.createVCPU(i)
            try fd.setCPUID(KVMCPUID.entries(from: cpuid, apicID: UInt32(i), cpuCount: cpuCount))
            vcpus.append(try KVMVCPU(fd: fd, gate: gate, host: host))
        }
    }

    public func reset(entry: CPUEntry) throws {
        for c in initialChips { try vm.setIRQChip(c) }
        if let p = initialPIT { try vm.setPIT(p) }
        for v in vcpus { try v.reset(entry: v.fd.id == 0 ? entry : nil) }
    }

    public private(set) var physicalAddressBits = 36

    public func setFirmwareMSRs(_ msrs: [FirmwareMSR]) throws {
        for v in vcpus { try v.fd.setMSRs(msrs.map { ($0.index, $0.value) }) }
    }

    public func start() throws {
        gate.resume()
        for v in vcpus {
            gate.threadStarted()
            HostThread.start(name: "CPU \(v.fd.id)/KVM", stackSize: 1 << 20) { v.loop() }
        }
    }

    public func pause() { gate.pause() }
    public func resume() { gate.resume() }
    public func shutdown() { gate.quit() }
}

/// Interrupts into the in-kernel irqchip.
final class KVMInterruptSink: InterruptSink {
    let vm: KVMVM
    private let failed = Atomic<Bool>(false)
    init(vm: KVMVM) { self.vm = vm }

    func setIRQ(_ gsi: UInt32, level: Bool) {
        do { try vm.irqLine(gsi, level: level) } catch { report(error) }
    }
    func signalMSI(address: UInt64, data: UInt32) {
        do { try vm.signalMSI(address: address, data: data) } catch { report(error) }
    }
    private func report(_ error: Error) {
        if !failed.exchange(true, ordering: .relaxed) {
            Diagnostics.error("interrupt injection failed: \(error)")
        }
    }
}
