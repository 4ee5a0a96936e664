// The one interface the machine uses to run guest CPUs, whether KVM or the interpreter runs them.
//
// The board builds RAM and devices, then hands the accelerator three things: the RAM, a `VCPUHost`
// (the buses and lifecycle calls the vCPUs need on an exit), and the entry state the firmware
// loader chose. The accelerator owns its vCPU threads (one per vCPU: KVM_RUN and the interpreter's
// loop both block) and the interrupt controllers (in-kernel on KVM, ours on the interpreter), which
// it exposes as an `InterruptSink` for the devices. Pausing parks every vCPU thread between runs; a
// vCPU never waits for itself, so lifecycle requests from guest code go through `VCPUHost` and are
// carried out by the machine's control thread.

/// The CPU state the firmware loader hands over.
public enum CPUEntry: Sendable, Equatable {
    /// Power-on reset: real mode at F000:FFF0 (the BIOS runs).
    case reset
    /// Flat 32-bit protected mode, interrupts and paging off, CS = 0x10 and data segments = 0x18
    /// in a GDT at `gdtBase` (the Linux 32-bit boot protocol; multiboot with eax/ebx set).
    case protected32(eip: UInt32, esi: UInt32, eax: UInt32, ebx: UInt32, gdtBase: UInt32, gdtLimit: UInt16)
}

/// What vCPUs call on exits. Implemented by the machine; every call may come from any vCPU thread.
public protocol VCPUHost: AnyObject, Sendable {
    func portRead(cpu: Int, port: UInt16, size: Int) -> UInt32
    func portWrite(cpu: Int, port: UInt16, size: Int, value: UInt32)
    func mmioRead(cpu: Int, address: UInt64, size: Int) -> UInt64
    func mmioWrite(cpu: Int, address: UInt64, size: Int, value: UInt64)
    /// The CPU asked for a reset (triple fault, KVM_EXIT_SHUTDOWN).
    func cpuRequestedReset(cpu: Int, reason: String)
    /// The accelerator cannot go on (KVM internal error, failed entry): the machine stops with an error.
    func cpuFailed(cpu: Int, message: String)
}

public protocol Accelerator: AnyObject, Sendable {
    /// QEMU's name for it: "kvm" or "tcg".
    var name: String { get }
    /// Where devices send interrupts.
    var interruptSink: any InterruptSink { get }
    /// Registers the interrupt controllers the accelerator emulates itself (the interpreter's PIC,
    /// PIT and I/O APIC); KVM keeps them in the kernel. Called once, before devices are added.
    func attach(ports: IOBus, mmio: IOBus) throws
    /// Creates the vCPUs and maps guest memory. Called once, before `start`.
    func setUp(ram: GuestRAM, cpuCount: Int, host: any VCPUHost) throws
    /// Puts every vCPU in its initial state: the boot CPU at `entry`, the others waiting for SIPI.
    /// Only while stopped or paused.
    func reset(entry: CPUEntry) throws
    /// Physical address width the vCPUs report (CPUID 0x80000008), which MTRR masks depend on.
    var physicalAddressBits: Int { get }
    /// Writes MSRs on every vCPU as a firmware would before the kernel starts (after `reset`).
    func setFirmwareMSRs(_ msrs: [FirmwareMSR]) throws
    /// Starts the vCPU threads (running).
    func start() throws
    /// Parks every vCPU; returns when all are parked. Never call from a vCPU thread.
    func pause()
    func resume()
    /// HMP `info registers` text for one vCPU; only while paused.
    func registerDump(cpu: Int) -> String?
    /// Stops and joins the vCPU threads. Idempotent.
    func shutdown()
}

extension Accelerator {
    public func attach(ports: IOBus, mmio: IOBus) throws {}
    public func registerDump(cpu: Int) -> String? { nil }
}
