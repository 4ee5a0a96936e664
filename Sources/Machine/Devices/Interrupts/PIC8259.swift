// The two cascaded 8259A PICs (master at 0x20, slave at 0xA0 on IRQ 2) and the PIIX ELCR
// (0x4D0/0x4D1, edge/level per IRQ), for the interpreter. Each chip is a value: initialisation
// words, IMR/IRR/ISR, fully-nested priority with rotation, specific/non-specific EOI, auto-EOI,
// OCW3 register select and poll mode. `outputHigh` is the master's INTR pin; `acknowledge` is the
// INTA cycle and returns the vector (IRQ 7/15 as spurious when the request went away).
import Synchronization

struct PIC8259: Equatable {
    var irr: UInt8 = 0
    var isr: UInt8 = 0
    var imr: UInt8 = 0xFF
    var vectorBase: UInt8 = 0
    var lowestPriority: UInt8 = 7
    var initStep = 0           // 0: ready, 2: expect ICW2, 3: ICW3, 4: ICW4
    var needICW4 = false
    var autoEOI = false
    var readISR = false
    var poll = false
    var specialMask = false
    var lines: UInt8 = 0       // current input levels
    var elcr: UInt8 = 0

    mutating func setLine(_ irq: Int, _ level: Bool) {
        let bit = UInt8(1) << UInt8(irq)
        if elcr & bit != 0 {
            if level { irr |= bit } else { irr &= ~bit }
        } else if level && lines & bit == 0 {
            irr |= bit
        }
        if level { lines |= bit } else { lines &= ~bit }
    }

    func priority(_ mask: UInt8) -> Int? {
        guard mask != 0 else { return nil }
        for i in 0..<8 {
            let irq = (Int(lowestPriority) + 1 + i) & 7
            if mask & (1 << UInt8(irq)) != 0 { return irq }
        }
        return nil
    }

    /// The IRQ that would be delivered now.
    func pending(cascadeSlaveOnIRQ2: Bool = false) -> Int? {
        guard let irq = priority(irr & ~imr) else { return nil }
        let inService = priority(specialMask ? isr & ~imr : isr)
        if let s = inService {
            // Only a higher-priority request interrupts (rotation aware).
            let rank = { (x: Int) in (x - Int(lowestPriority) - 1) & 7 }
            if rank(irq) >= rank(s) { return nil }
        }
        return irq
    }

    mutating func ack(_ irq: Int) {
        let bit = UInt8(1) << UInt8(irq)
        if elcr & bit == 0 { irr &= ~bit }
        if autoEOI { } else { isr |= bit }
    }

    mutating func writeCommand(_ v: UInt8) {
        if v & 0x10 != 0 {          // ICW1
            imr = 0; isr = 0; irr = 0; lowestPriority = 7; specialMask = false; readISR = false; autoEOI = false
            needICW4 = v & 1 != 0
            initStep = 2
            return
        }
        if v & 0x08 != 0 {          // OCW3
            if v & 0x04 != 0 { poll = true }
            if v & 0x02 != 0 { readISR = v & 0x01 != 0 }
            if v & 0x40 != 0 { specialMask = v & 0x20 != 0 }
            return
        }
        // OCW2
        let cmd = v >> 5
        switch cmd {
        case 1, 5:                 // non-specific EOI (5: and rotate)
            if let s = priority(isr) {
                isr &= ~(1 << UInt8(s))
                if cmd == 5 { lowestPriority = UInt8(s) }
            }
        case 3, 7:                 // specific EOI (7: and rotate)
            isr &= ~(1 << (v & 7))
            if cmd == 7 { lowestPriority = v & 7 }
        case 6: lowestPriority = v & 7
        default: break
        }
    }

    mutating func writeData(_ v: UInt8) {
        switch initStep {
        case 2: vectorBase = v & 0xF8; initStep = 3
        case 3: initStep = needICW4 ? 4 : 0
        case 4: autoEOI = v & 0x02 != 0; initStep = 0
        default: imr = v
        }
    }

    mutating func readCommand() -> UInt8 {
        if poll {
            poll = false
            if let irq = pending() { ack(irq); return 0x80 | UInt8(irq) }
            return 0
        }
        return readISR ? isr : irr
    }
}

public final class PIC8259Pair: BusDevice, @unchecked Sendable {
    private let chips = Mutex<(master: PIC8259, slave: PIC8259)>((PIC8259(), PIC8259()))
    /// Called when the INTR output may have changed (wakes the boot CPU).
    var onOutputChange: (@Sendable (Bool) -> Void)?

    public init() {}

    public func reset() { chips.withLock { c in c.master = PIC8259(); c.slave = PIC8259() } }

    /// The slave's INT output drives master IR2 as a level (a request that went away on the slave
    /// is withdrawn on the master too, rather than becoming a spurious interrupt).
    private static func cascade(_ c: inout (master: PIC8259, slave: PIC8259)) {
        let high = c.slave.pending() != nil
        if high { c.master.irr |= 0x04; c.master.lines |= 0x04 } else { c.master.irr &= ~0x04; c.master.lines &= ~0x04 }
    }

    public func setIRQ(_ irq: Int, level: Bool) {
        guard irq >= 0 && irq < 16 else { return }
        let out = chips.withLock { c -> Bool in
            if irq < 8 { c.master.setLine(irq, level) } else { c.slave.setLine(irq - 8, level) }
            PIC8259Pair.cascade(&c)
            return c.master.pending() != nil
        }
        onOutputChange?(out)
    }

    public var outputHigh: Bool { chips.withLock { $0.master.pending() != nil } }

    /// INTA: the vector for the highest-priority request.
    public func acknowledge() -> UInt8? {
        let v = chips.withLock { c -> UInt8 in
            guard let irq = c.master.pending() else { return c.master.vectorBase | 7 }   // spurious IRQ 7
            c.master.ack(irq)
            if irq == 2 {
                guard let s = c.slave.pending() else {
                    PIC8259Pair.cascade(&c)
                    return c.slave.vectorBase | 7
                }
                c.slave.ack(s)
                PIC8259Pair.cascade(&c)
                return c.slave.vectorBase | UInt8(s)
            }
            return c.master.vectorBase | UInt8(irq)
        }
        return v
    }

    /// Registered at 0x20 (2 ports), 0xA0 (2 ports) and 0x4D0 (2 ports) through OffsetWindows:
    /// offsets 0-1 master, 0x80-0x81 slave, 0x4B0-0x4B1 ELCR.
    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        chips.withLock { c in
            switch offset {
            case 0: return UInt64(c.master.readCommand())
            case 1: return UInt64(c.master.imr)
            case 0x80: return UInt64(c.slave.readCommand())
            case 0x81: return UInt64(c.slave.imr)
            case 0x4B0: return UInt64(c.master.elcr)
            case 0x4B1: return UInt64(c.slave.elcr)
            default: return 0xFF
            }
        }
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        let b = UInt8(truncatingIfNeeded: value)
        let out = chips.withLock { c -> Bool in
            switch offset {
            case 0: c.master.writeCommand(b)
            case 1: c.master.writeData(b)
            case 0x80: c.slave.writeCommand(b)
            case 0x81: c.slave.writeData(b)
            case 0x4B0: c.master.elcr = b & 0xF8      // IRQ 0-2 are always edge
            case 0x4B1: c.slave.elcr = b & 0xDE       // IRQ 8 and 13 are always edge
            default: break
            }
            PIC8259Pair.cascade(&c)
            return c.master.pending() != nil
        }
        onOutputChange?(out)
    }
}
