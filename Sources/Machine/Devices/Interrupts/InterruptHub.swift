// The interpreter's interrupt fabric: the local APICs, the I/O APIC and the 8259 pair, wired as on
// a PC. It is the `InterruptSink` devices raise lines on (ISA IRQ n reaches PIC input n and I/O APIC
// pin n, except IRQ 0 which QEMU wires to pin 2), decodes MSIs and IPIs into APIC deliveries
// (fixed, lowest priority as fixed to the first match, NMI, INIT, SIPI, ExtINT), keeps each CPU's
// pending NMI/INIT/SIPI events, and wakes a halted CPU when something arrives for it.
import X86

public final class InterruptHub: InterruptSink, @unchecked Sendable {
    static let debug = HostEnvironment.get("VMRUN_DEBUG") != nil
    public let lapics: [LocalAPIC]
    public let ioapic: IOAPIC
    public let pic: PIC8259Pair
    private let cond = Condition()
    private var events: [X86PendingEvents]
    private var wakeups: [Int]

    public init(cpuCount: Int, clock: @escaping @Sendable () -> UInt64 = PIIX4PM.monotonicNanos) {
        lapics = (0..<cpuCount).map { LocalAPIC(index: $0, clock: clock) }
        ioapic = IOAPIC(id: 0)   // QEMU's (and KVM's in-kernel) I/O APIC ID, as the MADT says
        pic = PIC8259Pair()
        events = [X86PendingEvents](repeating: X86PendingEvents(), count: cpuCount)
        wakeups = [Int](repeating: 0, count: cpuCount)
        for l in lapics { l.hub = self }
        ioapic.hub = self
        pic.onOutputChange = { [unowned self] _ in self.kick(cpu: 0) }
    }

    public func reset() {
        for l in lapics { l.reset() }
        ioapic.reset()
        pic.reset()
        cond.lock()
        for i in events.indices { events[i] = X86PendingEvents() }
        cond.unlock()
    }

    // MARK: InterruptSink

    public func setIRQ(_ gsi: UInt32, level: Bool) {
        if gsi < 16 { pic.setIRQ(Int(gsi), level: level) }
        ioapic.setIRQ(gsi == 0 ? 2 : Int(gsi), level: level)
    }

    public func signalMSI(address: UInt64, data: UInt32) {
        guard address >> 20 == 0xFEE else { return }
        let dest = UInt32((address >> 12) & 0xFF)
        let logical = address & 0x4 != 0
        deliver(vector: UInt8(data & 0xFF), mode: (data >> 8) & 7, level: data & 0x8000 != 0,
                destination: dest, logical: logical, shorthand: 0, from: nil)
    }

    // MARK: delivery

    func targets(destination: UInt32, logical: Bool, shorthand: UInt32, from: Int?) -> [LocalAPIC] {
        switch shorthand {
        case 1: return from.map { [lapics[$0]] } ?? []
        case 2: return lapics
        case 3: return lapics.filter { $0.index != from }
        default:
            if logical { return lapics.filter { $0.matchesLogical(destination) } }
            if destination == 0xFF || destination == 0xFFFF_FFFF { return lapics }
            return lapics.filter { $0.apicID == destination }
        }
    }

    /// Delivery modes: 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 6 SIPI, 7 ExtINT.
    func deliver(vector: UInt8, mode: UInt32, level: Bool, destination: UInt32, logical: Bool,
                 shorthand: UInt32, from: Int?) {
        var t = targets(destination: destination, logical: logical, shorthand: shorthand, from: from)
        if mode == 1, let first = t.first { t = [first] }
        for l in t {
            switch mode {
            case 0, 1: l.accept(vector: vector, level: level)
            case 4: post(l.index) { $0.nmi = true }
            case 5 where InterruptHub.debug, 6 where InterruptHub.debug:
                Diagnostics.info("debug: \(mode == 5 ? "INIT" : "SIPI 0x\(String(vector, radix: 16))") to CPU \(l.index) at \(PIIX4PM.monotonicNanos() / 1_000_000) ms")
                if mode == 5 { post(l.index) { $0.initSignal = true } } else { post(l.index) { $0.startupVector = vector } }
            case 5: post(l.index) { $0.initSignal = true }
            case 6: post(l.index) { $0.startupVector = vector }
            case 2: post(l.index) { $0.smi = true }
            default: break
            }
            kick(cpu: l.index)
        }
    }

    func sendIPI(from: Int, low: UInt32, destination: UInt32) {
        let mode = (low >> 8) & 7
        let shorthand = (low >> 18) & 3
        // INIT level de-assert is a no-op on modern CPUs.
        if mode == 5 && low & 0x4000 == 0 && low & 0x8000 != 0 { return }
        deliver(vector: UInt8(low & 0xFF), mode: mode, level: false, destination: destination,
                logical: low & 0x800 != 0, shorthand: shorthand, from: from)
    }

    func endOfInterrupt(vector: UInt8) { ioapic.endOfInterrupt(vector: vector) }

    private func post(_ cpu: Int, _ f: (inout X86PendingEvents) -> Void) {
        cond.lock()
        f(&events[cpu])
        cond.unlock()
    }

    // MARK: the CPU side

    public func takeEvents(cpu: Int) -> X86PendingEvents {
        cond.lock()
        let e = events[cpu]
        events[cpu] = X86PendingEvents()
        cond.unlock()
        if InterruptHub.debug && !e.isEmpty {
            Diagnostics.info("debug: CPU \(cpu) took \(e) at \(PIIX4PM.monotonicNanos() / 1_000_000) ms")
        }
        return e
    }

    public func hasEvents(cpu: Int) -> Bool {
        cond.lock(); defer { cond.unlock() }
        return !events[cpu].isEmpty
    }

    public func hasPendingInterrupt(cpu: Int) -> Bool {
        if lapics[cpu].pendingVector() != nil { return true }
        return cpu == 0 && lapics[0].acceptsPICInterrupts && pic.outputHigh
    }

    public func acknowledge(cpu: Int) -> UInt8? {
        if let v = lapics[cpu].acknowledge() { return v }
        if cpu == 0 && lapics[0].acceptsPICInterrupts { return pic.acknowledge() }
        return nil
    }

    /// Wakes a CPU blocked in `wait`.
    public func kick(cpu: Int) {
        cond.lock()
        if cpu < wakeups.count { wakeups[cpu] &+= 1 }
        cond.broadcast()
        cond.unlock()
    }

    public func kickAll() {
        cond.lock()
        for i in wakeups.indices { wakeups[i] &+= 1 }
        cond.broadcast()
        cond.unlock()
    }

    /// Blocks the CPU until kicked or `deadline` (monotonic ns) passes, unless work is already there.
    public func wait(cpu: Int, until deadline: UInt64?, now: UInt64, ready: () -> Bool) {
        cond.lock()
        let seen = wakeups[cpu]
        cond.unlock()
        if ready() { return }
        cond.lock(); defer { cond.unlock() }
        while wakeups[cpu] == seen {
            if let d = deadline {
                guard d > now else { return }
                if !cond.wait(nanoseconds: min(d - now, 50_000_000)) { return }
            } else {
                if !cond.wait(nanoseconds: 50_000_000) { return }
            }
        }
    }
}
