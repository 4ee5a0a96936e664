// The 16550A UART (COM1 at 0x3F8, IRQ 4), as a state machine in the style of vm-superio's Serial.
//
// Registers by offset (DLAB = LCR bit 7 switches 0/1 to the divisor latch):
//   0 RBR/THR/DLL  1 IER/DLM  2 IIR (read) / FCR (write)  3 LCR  4 MCR  5 LSR  6 MSR  7 SCR
// Transmit is immediate: a THR write goes to the output sink, so THR is always empty and THRE
// interrupts fire right away when enabled. Received bytes wait in a 64-byte FIFO (input beyond that
// is dropped, as a real UART overruns); the "data ready" interrupt is level-held while the FIFO has
// data. Loopback (MCR bit 4) feeds THR into the receive FIFO. Interrupt output goes to an injected
// line; the device never blocks.
import Synchronization

/// Where the UART's transmitted bytes go (a chardev backend).
public protocol SerialOutput: AnyObject, Sendable {
    func serialWrite(_ bytes: [UInt8])
}

public final class Serial16550: BusDevice {
    public struct State: Sendable, Equatable {
        public var ier: UInt8 = 0
        public var lcr: UInt8 = 0
        public var mcr: UInt8 = 0x08
        public var lsr: UInt8 = 0x60   // THR empty, transmitter empty
        public var msr: UInt8 = 0xB0   // DCD, DSR, CTS
        public var scr: UInt8 = 0
        public var dll: UInt8 = 0x0C   // 9600 baud
        public var dlm: UInt8 = 0
        public var fcr: UInt8 = 0
        public var thrInterruptPending = false
        public var rx: [UInt8] = []
        public init() {}
    }

    public static let fifoSize = 64
    private static let ierRDA: UInt8 = 0x01, ierTHRE: UInt8 = 0x02, ierRLS: UInt8 = 0x04, ierMS: UInt8 = 0x08
    private static let lsrDR: UInt8 = 0x01, lsrOE: UInt8 = 0x02, lsrTHRE: UInt8 = 0x20, lsrTEMT: UInt8 = 0x40

    private let state = Mutex(State())
    private let irq: IRQLine?
    private let output: any SerialOutput

    public init(irq: IRQLine?, output: any SerialOutput) {
        self.irq = irq
        self.output = output
    }

    public var snapshot: State { state.withLock { $0 } }
    public func restore(_ s: State) { state.withLock { $0 = s }; updateIRQ() }

    /// Bytes from the host side (stdin, a socket). Returns how many fit in the FIFO.
    @discardableResult
    public func enqueue(_ bytes: [UInt8]) -> Int {
        let n = state.withLock { s -> Int in
            let room = max(0, Serial16550.fifoSize - s.rx.count)
            s.rx.append(contentsOf: bytes.prefix(room))
            if bytes.count > room { s.lsr |= Serial16550.lsrOE }
            if !s.rx.isEmpty { s.lsr |= Serial16550.lsrDR }
            return min(room, bytes.count)
        }
        updateIRQ()
        return n
    }

    /// Room left in the receive FIFO (a chardev reader waits while it is 0).
    public var receiveRoom: Int { state.withLock { Serial16550.fifoSize - $0.rx.count } }

    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        let v = state.withLock { s -> UInt8 in
            let dlab = s.lcr & 0x80 != 0
            switch offset {
            case 0:
                if dlab { return s.dll }
                guard !s.rx.isEmpty else { return 0 }
                let b = s.rx.removeFirst()
                if s.rx.isEmpty { s.lsr &= ~Serial16550.lsrDR }
                return b
            case 1: return dlab ? s.dlm : s.ier
            case 2:
                let iir = Serial16550.interruptIdentification(s)
                if iir == 0x02 { s.thrInterruptPending = false }   // reading IIR clears THRE
                return iir | (s.fcr & 0x01 != 0 ? 0xC0 : 0)
            case 3: return s.lcr
            case 4: return s.mcr
            case 5:
                let v = s.lsr
                s.lsr &= ~Serial16550.lsrOE
                return v
            case 6:
                if s.mcr & 0x10 != 0 {   // loopback: outputs drive the inputs
                    return ((s.mcr & 0x0C) << 4) | ((s.mcr & 0x01) << 5) | ((s.mcr & 0x02) << 3)
                }
                return s.msr
            case 7: return s.scr
            default: return 0xFF
            }
        }
        updateIRQ()
        return UInt64(v)
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        let b = UInt8(truncatingIfNeeded: value)
        var transmit: UInt8? = nil
        state.withLock { s in
            let dlab = s.lcr & 0x80 != 0
            switch offset {
            case 0:
                if dlab { s.dll = b; return }
                if s.mcr & 0x10 != 0 {
                    if s.rx.count < Serial16550.fifoSize { s.rx.append(b) } else { s.lsr |= Serial16550.lsrOE }
                    s.lsr |= Serial16550.lsrDR
                } else {
                    transmit = b
                }
                s.thrInterruptPending = true
            case 1:
                if dlab { s.dlm = b; return }
                let enablingTHRE = (s.ier & Serial16550.ierTHRE == 0) && (b & Serial16550.ierTHRE != 0)
                s.ier = b & 0x0F
                if enablingTHRE { s.thrInterruptPending = true }
            case 2:
                s.fcr = b & 0xC9
                if b & 0x02 != 0 { s.rx.removeAll(); s.lsr &= ~Serial16550.lsrDR }
            case 3: s.lcr = b
            case 4: s.mcr = b & 0x1F
            case 7: s.scr = b
            default: break   // LSR and MSR are read-only
            }
        }
        if let transmit { output.serialWrite([transmit]) }
        updateIRQ()
    }

    /// IIR value: 0x01 = none, 0x06 line status, 0x04 data, 0x02 THR empty, 0x00 modem status.
    static func interruptIdentification(_ s: State) -> UInt8 {
        if s.ier & ierRLS != 0 && s.lsr & lsrOE != 0 { return 0x06 }
        if s.ier & ierRDA != 0 && s.lsr & lsrDR != 0 { return 0x04 }
        if s.ier & ierTHRE != 0 && s.thrInterruptPending { return 0x02 }
        return 0x01
    }

    private func updateIRQ() {
        let pending = state.withLock { Serial16550.interruptIdentification($0) != 0x01 && $0.mcr & 0x08 != 0 }
        irq?.set(pending)
    }
}
