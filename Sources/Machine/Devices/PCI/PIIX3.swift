// The PIIX3 PCI-to-ISA bridge (00:01.0, 8086:7000) and its PIRQ router.
//
// PIRQRC[A-D] (config 0x60-0x63) steer the four PCI interrupt links to ISA IRQs; bit 7 disables a
// link. They start as SeaBIOS leaves them (10, 10, 11, 11); the DSDT's link devices LNKA-LNKD read
// and write them (_CRS/_SRS/_DIS), and so does a guest that routes without ACPI. INTx from PCI
// functions arrive here as PIRQ levels and leave as shared (wired-OR) ISA IRQ levels; a guest that
// re-steers a link moves the asserted level with it.
import Synchronization

public final class PIIX3: PCIDevice, @unchecked Sendable {
    public let pciName = "PIIX3"
    public let config: Mutex<PCIConfigSpace>
    public static let defaultPIRQ: [UInt8] = [10, 10, 11, 11]

    private let sink: any InterruptSink
    private let state = Mutex<(levels: [UInt32], routedTo: [UInt8?])>(([0, 0, 0, 0], [nil, nil, nil, nil]))
    private var shared: [UInt8: SharedIRQ] = [:]
    private var sharedLines: [UInt8: [IRQLine]] = [:]

    public init(sink: any InterruptSink) {
        self.sink = sink
        config = Mutex(PIIX3.initialConfig())
        for irq in UInt8(0)..<16 {
            let s = SharedIRQ(sink: sink, gsi: UInt32(irq))
            shared[irq] = s
            sharedLines[irq] = (0..<4).map { _ in s.makeLine() }
        }
    }

    static func initialConfig() -> PCIConfigSpace {
        var c = PCIConfigSpace(vendor: 0x8086, device: 0x7000, classCode: 0x06_01_00,
                               subsystemVendor: 0x1AF4, subsystem: 0x1100, headerType: 0x80)
        for (i, irq) in defaultPIRQ.enumerated() {
            c.set8(0x60 + i, irq)
            c.writeMask[0x60 + i] = 0x8F
        }
        return c
    }

    private let nextSource = Mutex<UInt32>(0)

    /// A new INTx line into PIRQ `pirq` (0-3) for one PCI function (its own wired-OR source).
    public func line(forPIRQ pirq: Int) -> IRQLine {
        let source = nextSource.withLock { n -> UInt32 in n += 1; return (n - 1) % 31 }
        return IRQLine(sink: PIRQInput(router: self, pirq: pirq, source: source), gsi: UInt32(pirq))
    }

    /// The ISA IRQ a PIRQ is steered to, nil when disabled.
    public func route(_ pirq: Int) -> UInt8? {
        let r = config.withLock { $0.get8(0x60 + pirq) }
        return r & 0x80 != 0 || r & 0x0F < 3 ? nil : r & 0x0F
    }

    /// Sets source `source` (a device on the link) of PIRQ `pirq`.
    func setPIRQ(_ pirq: Int, source: UInt32, level: Bool) {
        let target = route(pirq)
        let (linkLevel, old) = state.withLock { s -> (Bool, UInt8?) in
            if level { s.levels[pirq] |= 1 << source } else { s.levels[pirq] &= ~(1 << source) }
            let old = s.routedTo[pirq]
            s.routedTo[pirq] = target
            return (s.levels[pirq] != 0, old)
        }
        if let old, old != target { sharedLines[old]?[pirq].lower() }
        if let target { sharedLines[target]?[pirq].set(linkLevel) }
    }

    public func configDidWrite(offset: Int, size: Int) {
        guard offset <= 0x63 && offset + size > 0x60 else { return }
        for p in 0..<4 { setPIRQ(p, source: 31, level: false) }   // re-evaluate routes
    }

    public func pciReset() { config.withLock { $0 = PIIX3.initialConfig() } }
}

/// Adapts one function's PIRQ input to `InterruptSink`, so its `IRQLine` points at the router.
final class PIRQInput: InterruptSink {
    let router: PIIX3
    let pirq: Int
    let source: UInt32
    init(router: PIIX3, pirq: Int, source: UInt32) {
        self.router = router
        self.pirq = pirq
        self.source = source
    }
    func setIRQ(_ gsi: UInt32, level: Bool) { router.setPIRQ(pirq, source: source, level: level) }
    func signalMSI(address: UInt64, data: UInt32) { router.sinkMSI(address: address, data: data) }
}

extension PIIX3 {
    func sinkMSI(address: UInt64, data: UInt32) { sink.signalMSI(address: address, data: data) }
}
