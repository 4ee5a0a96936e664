// The i8042 keyboard controller, reduced to what firmware and Linux touch without a keyboard:
// the status/command port (0x64) and data port (0x60, registered as offset 0 and 4 of one
// 5-port range), the controller configuration byte, self tests, and the reset line (command 0xFE, or
// output port bit 0 cleared through command 0xD1) that reboots the machine. Keyboard commands get
// ACK (0xFA), a reset gets ACK + 0xAA, identify gets the MF2 id. No scancodes are generated.
import Synchronization

public final class I8042: BusDevice {
    public struct State: Sendable, Equatable {
        public var output: [UInt8] = []
        public var configByte: UInt8 = 0x61   // kbd interrupt, system flag, translation
        public var pendingCommand: UInt8? = nil
        public var outputPort: UInt8 = 0x03   // A20 on, not in reset
        public init() {}
    }

    private let state = Mutex(State())
    private let reset: @Sendable () -> Void
    private let irq: IRQLine?

    public init(irq: IRQLine?, reset: @escaping @Sendable () -> Void) {
        self.irq = irq
        self.reset = reset
    }

    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        let v = state.withLock { s -> UInt8 in
            switch offset {
            case 0: return s.output.isEmpty ? 0 : s.output.removeFirst()
            case 4:
                // bit 0: output full, bit 2: system flag, bit 3: last write was a command, bit 4: not inhibited
                return (s.output.isEmpty ? 0 : 0x01) | 0x04 | (s.pendingCommand != nil ? 0x08 : 0) | 0x10
            default: return 0xFF
            }
        }
        updateIRQ()
        return UInt64(v)
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        let b = UInt8(truncatingIfNeeded: value)
        var doReset = false
        state.withLock { s in
            if offset == 4 {
                s.pendingCommand = nil
                switch b {
                case 0x20: s.output.append(s.configByte)
                case 0x60, 0xD1, 0xD2, 0xD3, 0xD4: s.pendingCommand = b
                case 0xA7: s.configByte |= 0x20
                case 0xA8: s.configByte &= ~0x20
                case 0xA9, 0xAB: s.output.append(0x00)   // interface tests pass
                case 0xAA: s.output.append(0x55)         // self test passed
                case 0xAD: s.configByte |= 0x10
                case 0xAE: s.configByte &= ~0x10
                case 0xD0: s.output.append(s.outputPort)
                case 0xF0...0xFF: if b & 0x01 == 0 { doReset = true }   // pulse output bit 0 (reset)
                default: break
                }
            } else if offset == 0 {
                let cmd = s.pendingCommand
                s.pendingCommand = nil
                switch cmd {
                case 0x60: s.configByte = b
                case 0xD1:
                    s.outputPort = b
                    if b & 0x01 == 0 { doReset = true }
                case 0xD2: s.output.append(b)           // echo as keyboard data
                case 0xD3: s.output.append(b)           // echo as aux data
                case 0xD4: s.output.append(0xFE)        // no mouse: resend
                default:
                    switch b {   // keyboard commands
                    case 0xFF: s.output.append(contentsOf: [0xFA, 0xAA])
                    case 0xF2: s.output.append(contentsOf: [0xFA, 0xAB, 0x83])
                    case 0xEE: s.output.append(0xEE)
                    default: s.output.append(0xFA)
                    }
                }
            }
        }
        updateIRQ()
        if doReset { reset() }
    }

    private func updateIRQ() {
        guard let irq else { return }
        let level = state.withLock { !$0.output.isEmpty && $0.configByte & 0x01 != 0 }
        irq.set(level)
    }
}
