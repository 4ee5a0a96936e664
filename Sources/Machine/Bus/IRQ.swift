// Interrupt wiring: devices raise lines, the board decides where they go.
//
// A device holds an `IRQLine` (a GSI number plus the sink) and only ever says "my line is high/low"
// or "here is an MSI". The sink is the accelerator's interrupt controller: on KVM the in-kernel
// PIC+I/O APIC (KVM_IRQ_LINE, KVM_SIGNAL_MSI), on the interpreter our own PIC/I/O APIC models.
// PCI INTx lines are shared (wired-OR): `SharedIRQ` ORs the levels of several sources onto one GSI,
// so one device lowering its line does not drop another's pending interrupt.
import Synchronization

/// Where interrupts end up: the accelerator's interrupt controllers.
public protocol InterruptSink: AnyObject, Sendable {
    /// Sets the level of global system interrupt `gsi` (ISA IRQs 0-15 reach the PIC and the I/O APIC).
    func setIRQ(_ gsi: UInt32, level: Bool)
    /// Delivers a message-signalled interrupt (address 0xFEExxxxx, data with vector and mode).
    func signalMSI(address: UInt64, data: UInt32)
}

/// One interrupt line of a device. Copyable and cheap; edge-triggered devices use `pulse()`.
public struct IRQLine: Sendable {
    public let gsi: UInt32
    private let sink: any InterruptSink
    private let shared: SharedIRQ?
    private let source: Int

    public init(sink: any InterruptSink, gsi: UInt32) {
        self.sink = sink
        self.gsi = gsi
        self.shared = nil
        self.source = 0
    }

    init(shared: SharedIRQ, source: Int) {
        self.sink = shared.sink
        self.gsi = shared.gsi
        self.shared = shared
        self.source = source
    }

    public func set(_ level: Bool) {
        if let shared { shared.set(source: source, level: level) } else { sink.setIRQ(gsi, level: level) }
    }
    public func raise() { set(true) }
    public func lower() { set(false) }
    /// An edge: high then low.
    public func pulse() { set(true); set(false) }
}

/// A wired-OR interrupt line shared by several level-triggered sources (PCI INTx on PIIX links).
public final class SharedIRQ: Sendable {
    let sink: any InterruptSink
    let gsi: UInt32
    private let state = Mutex<(levels: UInt64, next: Int)>((0, 0))

    public init(sink: any InterruptSink, gsi: UInt32) {
        self.sink = sink
        self.gsi = gsi
    }

    /// A new source on this line (at most 64).
    public func makeLine() -> IRQLine {
        let n = state.withLock { s -> Int in s.next += 1; return s.next - 1 }
        precondition(n < 64, "too many sources on one shared IRQ")
        return IRQLine(shared: self, source: n)
    }

    func set(source: Int, level: Bool) {
        let (was, now) = state.withLock { s -> (Bool, Bool) in
            let was = s.levels != 0
            if level { s.levels |= 1 << UInt64(source) } else { s.levels &= ~(1 << UInt64(source)) }
            return (was, s.levels != 0)
        }
        if was != now || level { sink.setIRQ(gsi, level: now) }
    }
}

/// A sink that records what it was told; for tests and for devices built before the accelerator.
public final class RecordingInterruptSink: InterruptSink {
    public enum Event: Equatable, Sendable { case irq(UInt32, Bool), msi(UInt64, UInt32) }
    private let log = Mutex<[Event]>([])
    public init() {}
    public func setIRQ(_ gsi: UInt32, level: Bool) { log.withLock { $0.append(.irq(gsi, level)) } }
    public func signalMSI(address: UInt64, data: UInt32) { log.withLock { $0.append(.msi(address, data)) } }
    public var events: [Event] { log.withLock { $0 } }
    public func clear() { log.withLock { $0.removeAll() } }
    /// The last level seen on `gsi` (false when never set).
    public func level(_ gsi: UInt32) -> Bool {
        log.withLock { l in
            for case let .irq(g, v) in l.reversed() where g == gsi { return v }
            return false
        }
    }
}
