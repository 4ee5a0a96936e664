// The i8042 keyboard controller with a PS/2 keyboard on its first port and a PS/2 mouse on its
// AUX port (PS2Devices.swift), behaving as QEMU's pckbd.c for what firmware and Linux's i8042,
// atkbd and psmouse drivers do: the status/command port (0x64) and data port (0x60, registered as
// offsets 4 and 0 of one range), the controller configuration byte (CTR), self and interface tests,
// AUX enable/disable/loopback/write (0xA7, 0xA8, 0xA9, 0xD3, 0xD4), and the reset line (command
// 0xFE, or output port bit 0 cleared through 0xD1) that reboots the machine.
//
// One byte at a time sits in the output buffer: a controller reply first, then keyboard bytes (unless
// the keyboard interface is disabled, CTR bit 4), then mouse bytes (unless AUX is disabled, bit 5).
// Reading port 0x60 empties it, which lowers the IRQ, and the next waiting byte moves in and raises
// it again: every byte is its own edge, as drivers that read one byte per interrupt need. IRQ 1
// follows a keyboard byte when CTR bit 0 is set, IRQ 12 an AUX byte (status bit 5) when bit 1 is.
//
// The state at power-on is what SeaBIOS leaves (self test done, so the system flag is set; CTR 0x61:
// keyboard interrupt, AUX disabled, translation), since a directly booted kernel sees no BIOS.
import Synchronization

public final class I8042: BusDevice {
    enum Source: Sendable, Equatable { case controller, keyboard, mouse }

    struct State: Sendable {
        var mode: UInt8 = 0x61
        var status: UInt8 = I8042.sysFlag | I8042.unlocked
        var outputPort: UInt8 = 0xCF        // A20 on, not in reset, unused bits high (as QEMU)
        /// A controller command waiting for its data byte (0x60, 0xD1, 0xD2, 0xD3, 0xD4).
        var pendingCommand: UInt8? = nil
        /// A controller reply (one byte) and whether it is marked as AUX data (0xD3 loopback).
        var reply: (byte: UInt8, aux: Bool)? = nil
        var keyboard = PS2Keyboard()
        var mouse = PS2Mouse()
        /// The byte in the output buffer comes from here when full.
        var outputFull: Source? = nil
        var outputAux = false
        /// What port 0x60 returns when the buffer is empty (the last byte read).
        var lastData: UInt8 = 0
        /// The levels last driven on IRQ 1 and IRQ 12.
        var kbdLine = false, auxLine = false
    }

    // Status register bits.
    static let outputBufferFull: UInt8 = 0x01, sysFlag: UInt8 = 0x04, lastWasCommand: UInt8 = 0x08
    static let unlocked: UInt8 = 0x10, auxData: UInt8 = 0x20
    // CTR bits.
    static let kbdInterrupt: UInt8 = 0x01, auxInterrupt: UInt8 = 0x02, kbdDisabled: UInt8 = 0x10
    static let auxDisabled: UInt8 = 0x20, translate: UInt8 = 0x40

    private let state = Mutex(State())
    private let reset: @Sendable () -> Void
    private let kbdIRQ: IRQLine?
    private let auxIRQ: IRQLine?

    public init(irq: IRQLine?, auxIRQ: IRQLine? = nil, reset: @escaping @Sendable () -> Void) {
        self.kbdIRQ = irq
        self.auxIRQ = auxIRQ
        self.reset = reset
    }

    /// Back to the power-on state (machine reset).
    public func resetState() {
        state.withLock { s in
            s = State()
            applyLines(&s)
        }
    }

    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { s -> UInt64 in
            switch offset {
            case 0: return UInt64(readData(&s))
            case 4:
                var st = s.status
                if s.outputFull != nil { st |= I8042.outputBufferFull | (s.outputAux ? I8042.auxData : 0) }
                return UInt64(st)
            default: return 0xFF
            }
        }
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        let b = UInt8(truncatingIfNeeded: value)
        let doReset = state.withLock { s -> Bool in
            if offset == 4 {
                s.status |= I8042.lastWasCommand
                return command(b, &s)
            } else if offset == 0 {
                s.status &= ~I8042.lastWasCommand
                return data(b, &s)
            }
            return false
        }
        if doReset { reset() }
    }

    // MARK: the output buffer

    private func readData(_ s: inout State) -> UInt8 {
        guard let src = s.outputFull else { return s.lastData }
        s.outputFull = nil
        applyLines(&s)   // the read itself lowers the line...
        switch src {
        case .controller: s.lastData = s.reply?.byte ?? s.lastData; s.reply = nil
        case .keyboard: s.lastData = s.keyboard.queue.pop() ?? s.lastData
        case .mouse: s.lastData = s.mouse.queue.pop() ?? s.lastData
        }
        refill(&s)       // ...and the next byte raises it again
        return s.lastData
    }

    /// Moves the next waiting byte into an empty output buffer.
    private func refill(_ s: inout State) {
        guard s.outputFull == nil else { return }
        if let r = s.reply {
            s.outputFull = .controller
            s.outputAux = r.aux
        } else if !s.keyboard.queue.isEmpty && s.mode & I8042.kbdDisabled == 0 {
            s.outputFull = .keyboard
            s.outputAux = false
        } else if !s.mouse.queue.isEmpty && s.mode & I8042.auxDisabled == 0 {
            s.outputFull = .mouse
            s.outputAux = true
        }
        applyLines(&s)
    }

    /// Drives IRQ 1 and IRQ 12 from the buffer and the CTR (only on changes, in order, under the lock,
    /// so that a lower-then-raise pair reaches the interrupt controller as an edge).
    private func applyLines(_ s: inout State) {
        let full = s.outputFull != nil
        let kbd = full && !s.outputAux && s.mode & I8042.kbdInterrupt != 0 && s.mode & I8042.kbdDisabled == 0
        let aux = full && s.outputAux && s.mode & I8042.auxInterrupt != 0
        if kbd != s.kbdLine { s.kbdLine = kbd; kbdIRQ?.set(kbd) }
        if aux != s.auxLine { s.auxLine = aux; auxIRQ?.set(aux) }
    }

    private func queueReply(_ b: UInt8, aux: Bool = false, _ s: inout State) {
        s.reply = (b, aux)
        refill(&s)
    }

    // MARK: commands and data

    /// A controller command (port 0x64); returns true when it pulses the reset line.
    private func command(_ b: UInt8, _ s: inout State) -> Bool {
        s.pendingCommand = nil
        switch b {
        case 0x20: queueReply(s.mode, &s)
        case 0x60, 0xD1, 0xD2, 0xD3, 0xD4: s.pendingCommand = b
        case 0xA7: s.mode |= I8042.auxDisabled
        case 0xA8:
            s.mode &= ~I8042.auxDisabled
            refill(&s)
        case 0xA9, 0xAB: queueReply(0x00, &s)              // AUX / keyboard interface tests pass
        case 0xAA:
            s.status |= I8042.sysFlag
            queueReply(0x55, &s)                            // self test passed
        case 0xAD:
            s.mode |= I8042.kbdDisabled
            applyLines(&s)
        case 0xAE:
            s.mode &= ~I8042.kbdDisabled
            applyLines(&s)
            refill(&s)
        case 0xC0: queueReply(0x80, &s)                     // input port: keyboard not locked
        case 0xD0:
            var p = s.outputPort & ~0x30
            if s.outputFull != nil { p |= s.outputAux ? 0x20 : 0x10 }
            queueReply(p, &s)
        case 0xDD: s.outputPort &= ~0x02
        case 0xDF: s.outputPort |= 0x02
        case 0xF0...0xFF: return b & 0x01 == 0              // pulse output bits; bit 0 is reset
        default: break
        }
        return false
    }

    /// A data byte (port 0x60): a pending command's parameter, or a byte for the keyboard.
    private func data(_ b: UInt8, _ s: inout State) -> Bool {
        let cmd = s.pendingCommand
        s.pendingCommand = nil
        switch cmd {
        case 0x60:
            s.mode = b
            applyLines(&s)
            refill(&s)
        case 0xD1:
            s.outputPort = b
            return b & 0x01 == 0
        case 0xD2: queueReply(b, &s)                        // as if from the keyboard
        case 0xD3: queueReply(b, aux: true, &s)             // as if from the mouse (loopback)
        case 0xD4:
            s.mouse.write(b)
            refill(&s)
        default:
            s.keyboard.write(b, translated: s.mode & I8042.translate != 0)
            s.mode &= ~I8042.kbdDisabled                    // writing to the keyboard re-enables it
            applyLines(&s)
            refill(&s)
        }
        return false
    }
}
