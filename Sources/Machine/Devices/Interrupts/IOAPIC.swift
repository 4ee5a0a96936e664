// The 82093AA I/O APIC (24 pins, version 0x20 with the EOI register), at 0xFEC00000: IOREGSEL at
// 0x00, IOWIN at 0x10, EOI at 0x40. Edge pins deliver on a rising edge; level pins deliver while
// high and not waiting for EOI (remote IRR), and deliver again after the EOI if still high.
import Synchronization

public final class IOAPIC: BusDevice, @unchecked Sendable {
    public static let pins = 24
    struct State {
        var id: UInt8
        var select: UInt8 = 0
        var redirection = [UInt64](repeating: 1 << 16, count: IOAPIC.pins)
        var levels = [Bool](repeating: false, count: IOAPIC.pins)
    }
    private let state: Mutex<State>
    private let initialID: UInt8
    unowned(unsafe) var hub: InterruptHub!

    init(id: UInt8) {
        initialID = id
        state = Mutex(State(id: id))
    }

    func reset() { state.withLock { $0 = State(id: initialID) } }

    public func setIRQ(_ pin: Int, level: Bool) {
        guard pin >= 0 && pin < IOAPIC.pins else { return }
        let fire = state.withLock { s -> Bool in
            let was = s.levels[pin]
            s.levels[pin] = level
            let e = s.redirection[pin]
            guard e & (1 << 16) == 0 else { return false }   // masked
            let isLevel = e & (1 << 15) != 0
            if isLevel { return level && e & (1 << 14) == 0 }
            return level && !was
        }
        if fire { deliver(pin) }
    }

    private func deliver(_ pin: Int) {
        let e = state.withLock { s -> UInt64 in
            if s.redirection[pin] & (1 << 15) != 0 { s.redirection[pin] |= 1 << 14 }   // remote IRR
            return s.redirection[pin]
        }
        hub.deliver(vector: UInt8(e & 0xFF), mode: UInt32((e >> 8) & 7), level: e & (1 << 15) != 0,
                    destination: UInt32(e >> 56), logical: e & (1 << 11) != 0, shorthand: 0, from: nil)
    }

    func endOfInterrupt(vector: UInt8) {
        let again = state.withLock { s -> [Int] in
            var pins: [Int] = []
            for p in 0..<IOAPIC.pins where s.redirection[p] & 0xFF == UInt64(vector) && s.redirection[p] & (1 << 14) != 0 {
                s.redirection[p] &= ~(1 << 14)
                if s.levels[p] && s.redirection[p] & (1 << 16) == 0 { pins.append(p) }
            }
            return pins
        }
        for p in again { deliver(p) }
    }

    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { s in
            switch offset {
            case 0x00: return UInt64(s.select)
            case 0x10:
                switch s.select {
                case 0x00: return UInt64(s.id) << 24
                case 0x01: return UInt64(IOAPIC.pins - 1) << 16 | 0x20
                case 0x02: return 0
                case 0x10..<0x40:
                    let i = Int(s.select - 0x10) / 2
                    return s.select & 1 == 0 ? s.redirection[i] & 0xFFFF_FFFF : s.redirection[i] >> 32
                default: return 0xFFFF_FFFF
                }
            default: return 0
            }
        }
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        switch offset {
        case 0x00: state.withLock { $0.select = UInt8(truncatingIfNeeded: value) }
        case 0x40: endOfInterrupt(vector: UInt8(truncatingIfNeeded: value))
        case 0x10:
            let pin = state.withLock { s -> Int? in
                switch s.select {
                case 0x00: s.id = UInt8((value >> 24) & 0xF); return nil
                case 0x10..<0x40:
                    let i = Int(s.select - 0x10) / 2
                    let v = value & 0xFFFF_FFFF
                    if s.select & 1 == 0 {
                        // Delivery status and remote IRR are read-only.
                        s.redirection[i] = (s.redirection[i] & 0xFFFF_FFFF_0000_0000) | (v & ~0x5000) | (s.redirection[i] & 0x5000)
                        if s.redirection[i] & (1 << 15) == 0 { s.redirection[i] &= ~(1 << 14) }
                    } else {
                        s.redirection[i] = (s.redirection[i] & 0xFFFF_FFFF) | (v << 32)
                    }
                    // Unmasking a level pin that is high delivers.
                    let e = s.redirection[i]
                    return e & (1 << 16) == 0 && e & (1 << 15) != 0 && e & (1 << 14) == 0 && s.levels[i] ? i : nil
                default: return nil
                }
            }
            if let pin { deliver(pin) }
        default: break
        }
    }
}
