// The contract between an interpreted x86 CPU and the machine around it.
//
// The CPU (this target) knows nothing of devices, boards or KVM. The machine (target Machine) owns
// guest RAM, devices and interrupt controllers, and implements `X86Platform`. The same machine is
// driven by KVM, where the kernel runs the CPU and only the exits reach the platform.
//
// Rules both sides keep:
// - Guest RAM is host memory mapped once; the CPU reads and writes it directly through `GuestMemory`.
// - Anything that is not RAM (MMIO, the local APIC page, ROM writes) goes through `mmioRead/Write`.
// - Whoever writes guest RAM from outside the CPU (device DMA, the loader) calls
//   `GuestMemory.didWrite(physical:length:)`, so that decoded code blocks over those bytes are dropped.
// - The local APIC is per CPU, so every call names the vCPU index.

/// One contiguous range of guest-physical memory backed by host memory.
public struct GuestRAMRegion: @unchecked Sendable {
    public let guestPhysical: UInt64
    public let size: UInt64
    /// Host address of the first byte. Valid for the life of the `GuestMemory` that holds it.
    public let host: UnsafeMutableRawPointer
    /// ROM: reads come from `host`, guest writes are dropped (as on the real chipset).
    public let readOnly: Bool

    public init(guestPhysical: UInt64, size: UInt64, host: UnsafeMutableRawPointer, readOnly: Bool = false) {
        self.guestPhysical = guestPhysical
        self.size = size
        self.host = host
        self.readOnly = readOnly
    }
}

/// Guest-physical memory: the RAM and ROM regions, and the write notification that keeps an
/// interpreter's decoded-code cache honest when something other than the CPU writes RAM.
public final class GuestMemory: @unchecked Sendable {
    public let regions: [GuestRAMRegion]

    /// Called with (physical, length) after an outside write. Set once by the accelerator before the
    /// guest runs; nil when nothing caches guest code (KVM).
    public var writeObserver: (@Sendable (UInt64, UInt64) -> Void)?

    public init(regions: [GuestRAMRegion]) {
        self.regions = regions.sorted { $0.guestPhysical < $1.guestPhysical }
    }

    /// The region holding `physical`, or nil where the address is not RAM/ROM (then it is MMIO).
    @inline(__always)
    public func region(containing physical: UInt64) -> GuestRAMRegion? {
        for r in regions where physical >= r.guestPhysical && physical - r.guestPhysical < r.size {
            return r
        }
        return nil
    }

    /// Host pointer for `length` bytes at `physical`, or nil unless the whole range is in one region.
    public func hostPointer(physical: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        guard let r = region(containing: physical) else { return nil }
        let off = physical - r.guestPhysical
        guard length <= r.size - off else { return nil }
        return r.host + Int(off)
    }

    /// Must be called after writing guest RAM from outside the CPU (DMA, loaders).
    @inline(__always)
    public func didWrite(physical: UInt64, length: UInt64) {
        writeObserver?(physical, length)
    }
}

/// What an interpreted CPU asks of its machine. All calls come from the vCPU's own thread.
public protocol X86Platform: AnyObject, Sendable {
    var memory: GuestMemory { get }

    /// Accesses to guest-physical addresses outside RAM (size 1, 2, 4 or 8).
    func mmioRead(cpu: Int, address: UInt64, size: Int) -> UInt64
    func mmioWrite(cpu: Int, address: UInt64, size: Int, value: UInt64)

    /// IN/OUT (size 1, 2 or 4).
    func portRead(cpu: Int, port: UInt16, size: Int) -> UInt32
    func portWrite(cpu: Int, port: UInt16, size: Int, value: UInt32)

    /// MSRs that belong to the platform (IA32_APIC_BASE, x2APIC 0x800-0x8FF, TSC_DEADLINE).
    /// Returns nil / false when the platform does not own `index`; the CPU then handles it or raises #GP.
    func readMSR(cpu: Int, index: UInt32) -> UInt64?
    func writeMSR(cpu: Int, index: UInt32, value: UInt64) -> Bool

    /// A maskable interrupt is ready for this CPU (the CPU itself checks RFLAGS.IF and the shadow).
    func hasPendingInterrupt(cpu: Int) -> Bool
    /// Interrupt acknowledge: the vector to deliver, or nil if the request went away (spurious).
    func acknowledgeInterrupt(cpu: Int) -> UInt8?
    /// NMI, INIT and SIPI requests, consumed by the CPU between instructions.
    func takePendingEvents(cpu: Int) -> X86PendingEvents

    /// HLT: block until an interrupt or event may be pending for `cpu`, or `deadlineNanos` (monotonic
    /// clock) passes. Returns early when the machine wants the CPU to stop (see `shouldStop`).
    func waitForInterrupt(cpu: Int, deadlineNanos: UInt64?)
    /// Polled between blocks: the machine is pausing, resetting or quitting.
    func shouldStop(cpu: Int) -> Bool
}

/// Asynchronous events a CPU consumes between instructions.
public struct X86PendingEvents: Sendable, Equatable {
    public var nmi = false
    public var initSignal = false
    /// Startup IPI with its vector (the CPU starts at vector << 12 in real mode).
    public var startupVector: UInt8? = nil
    public var smi = false
    public init(nmi: Bool = false, initSignal: Bool = false, startupVector: UInt8? = nil, smi: Bool = false) {
        self.nmi = nmi
        self.initSignal = initSignal
        self.startupVector = startupVector
        self.smi = smi
    }
    public var isEmpty: Bool { !nmi && !initSignal && startupVector == nil && !smi }
}
