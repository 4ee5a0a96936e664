// `X86Platform` for the interpreter: the CPU's window onto the machine. Port I/O and MMIO go to the
// machine's buses, except the local APIC page (0xFEE00000) and the APIC MSRs, which are the calling
// CPU's own local APIC. Interrupt polling also drives the lazy timers (PIT on the boot CPU, each
// local APIC's timer), and HLT sleeps until the earliest timer deadline or a kick from the hub.
import X86

final class InterpreterPlatform: X86Platform, @unchecked Sendable {
    let memory: GuestMemory
    let host: any VCPUHost
    let hub: InterruptHub
    let pit: PIT8254
    let gate: VCPUGate

    init(memory: GuestMemory, host: any VCPUHost, hub: InterruptHub, pit: PIT8254, gate: VCPUGate) {
        self.memory = memory
        self.host = host
        self.hub = hub
        self.pit = pit
        self.gate = gate
    }

    private func lapicOffset(_ cpu: Int, _ address: UInt64) -> Int? {
        guard address & ~0xFFF == PCMemoryMap.lapicBase, cpu < hub.lapics.count else { return nil }
        let l = hub.lapics[cpu]
        guard l.hardwareEnabled, !l.x2apic else { return nil }
        return Int(address & 0xFF0)
    }

    func mmioRead(cpu: Int, address: UInt64, size: Int) -> UInt64 {
        if let off = lapicOffset(cpu, address) {
            let v = UInt64(hub.lapics[cpu].read(offset: off))
            return (v >> (8 * (address & 3))) & IOBus.mask(size)
        }
        return host.mmioRead(cpu: cpu, address: address, size: size)
    }

    func mmioWrite(cpu: Int, address: UInt64, size: Int, value: UInt64) {
        if let off = lapicOffset(cpu, address) {
            if address & 0xF == 0 { hub.lapics[cpu].write(offset: off, value: UInt32(truncatingIfNeeded: value)) }
            return
        }
        host.mmioWrite(cpu: cpu, address: address, size: size, value: value)
    }

    func portRead(cpu: Int, port: UInt16, size: Int) -> UInt32 { host.portRead(cpu: cpu, port: port, size: size) }
    func portWrite(cpu: Int, port: UInt16, size: Int, value: UInt32) { host.portWrite(cpu: cpu, port: port, size: size, value: value) }

    func readMSR(cpu: Int, index: UInt32) -> UInt64? { hub.lapics[cpu].readMSR(index) }
    func writeMSR(cpu: Int, index: UInt32, value: UInt64) -> Bool { hub.lapics[cpu].writeMSR(index, value) }

    func hasPendingInterrupt(cpu: Int) -> Bool {
        if cpu == 0 { pit.poll() }
        return hub.hasPendingInterrupt(cpu: cpu)
    }

    func acknowledgeInterrupt(cpu: Int) -> UInt8? { hub.acknowledge(cpu: cpu) }

    func takePendingEvents(cpu: Int) -> X86PendingEvents { hub.takeEvents(cpu: cpu) }

    func waitForInterrupt(cpu: Int, deadlineNanos: UInt64?) {
        var deadline = deadlineNanos
        func earliest(_ d: UInt64?) { if let d { deadline = min(deadline ?? d, d) } }
        earliest(hub.lapics[cpu].nextDeadline())
        if cpu == 0 { earliest(pit.nextDeadline) }
        let now = PIIX4PM.monotonicNanos()
        hub.wait(cpu: cpu, until: deadline, now: now) {
            gate.mustStop || hub.hasEvents(cpu: cpu) || hasPendingInterrupt(cpu: cpu)
        }
    }

    func shouldStop(cpu: Int) -> Bool { gate.mustStop }
}
