// The interpreter accelerator (QEMU's "tcg"): runs vCPUs with the X86 target's CPU and provides the
// interrupt controllers KVM would have in the kernel (PIC, I/O APIC, local APICs, PIT), as devices
// on the machine's buses. Until the X86 target publishes its CPU, creating it fails with a clear
// message; the machine, devices and KVM path do not depend on it.
import X86

public final class InterpreterAccelerator: Accelerator, @unchecked Sendable {
    public let name = "tcg"
    public struct Unavailable: Error, CustomStringConvertible {
        public var description: String {
            "the x86 interpreter (-accel tcg) is not available in this build yet; use -accel kvm"
        }
    }

    private let sink = RecordingInterruptSink()
    public var interruptSink: any InterruptSink { sink }

    public init() throws { throw Unavailable() }

    public func setUp(ram: GuestRAM, cpuCount: Int, host: any VCPUHost) throws { throw Unavailable() }
    public func reset(entry: CPUEntry) throws {}
    public func start() throws { throw Unavailable() }
    public func pause() {}
    public func resume() {}
    public func shutdown() {}
}
