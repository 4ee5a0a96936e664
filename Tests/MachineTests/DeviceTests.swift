// Unit tests of the small devices: buses, the UART, CMOS, i8042, PIIX4 PM, debug exit and fw_cfg,
// each driven through its registers with injected sinks, as a guest driver would.
import Synchronization
import XCTest
@testable import Machine

final class CollectingOutput: SerialOutput, @unchecked Sendable {
    private let bytes = Mutex<[UInt8]>([])
    func serialWrite(_ b: [UInt8]) { bytes.withLock { $0 += b } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

final class ByteRegister: BusDevice, @unchecked Sendable {
    var last: (UInt64, Int, UInt64)?
    func busRead(offset: UInt64, size: Int) -> UInt64 { offset }
    func busWrite(offset: UInt64, size: Int, value: UInt64) { last = (offset, size, value) }
}

final class BusTests: XCTestCase {
    func testDispatchOffsetsAndUnclaimed() throws {
        let bus = IOBus(name: "io")
        let dev = ByteRegister()
        try bus.register(dev, base: 0x100, length: 8, name: "dev")
        XCTAssertEqual(bus.read(0x103, size: 1), 3)
        XCTAssertEqual(bus.read(0x108, size: 1), 0xFF)
        XCTAssertEqual(bus.read(0x0FF, size: 4), 0xFFFF_FFFF)
        XCTAssertTrue(bus.write(0x107, size: 2, value: 0x1_2345))
        XCTAssertEqual(dev.last?.0, 7)
        XCTAssertEqual(dev.last?.2, 0x2345, "values are masked to the access size")
        XCTAssertFalse(bus.write(0x200, size: 1, value: 0))
    }

    func testOverlapIsRefused() throws {
        let bus = IOBus(name: "io")
        try bus.register(ByteRegister(), base: 0x100, length: 8, name: "a")
        XCTAssertThrowsError(try bus.register(ByteRegister(), base: 0x107, length: 2, name: "b"))
        XCTAssertThrowsError(try bus.register(ByteRegister(), base: 0x0F0, length: 0x11, name: "c"))
        XCTAssertNoThrow(try bus.register(ByteRegister(), base: 0x108, length: 1, name: "d"))
        XCTAssertThrowsError(try bus.register(ByteRegister(), base: UInt64.max, length: 2, name: "wrap"))
    }
}

final class SerialTests: XCTestCase {
    func make() -> (Serial16550, CollectingOutput, RecordingInterruptSink) {
        let out = CollectingOutput()
        let sink = RecordingInterruptSink()
        return (Serial16550(irq: IRQLine(sink: sink, gsi: 4), output: out), out, sink)
    }

    func testTransmitGoesToTheSink() {
        let (uart, out, _) = make()
        for b in "hi\n".utf8 { uart.busWrite(offset: 0, size: 1, value: UInt64(b)) }
        XCTAssertEqual(out.text, "hi\n")
        XCTAssertEqual(uart.busRead(offset: 5, size: 1) & 0x60, 0x60, "THR and transmitter always empty")
    }

    func testTHREInterruptNeedsOUT2AndClearsOnIIRRead() {
        let (uart, _, sink) = make()
        uart.busWrite(offset: 4, size: 1, value: 0x00)     // OUT2 off: no interrupt to the PIC
        uart.busWrite(offset: 1, size: 1, value: 0x02)
        XCTAssertFalse(sink.level(4))
        uart.busWrite(offset: 4, size: 1, value: 0x08)
        XCTAssertTrue(sink.level(4))
        XCTAssertEqual(uart.busRead(offset: 2, size: 1) & 0x0F, 0x02)
        XCTAssertFalse(sink.level(4))
        XCTAssertEqual(uart.busRead(offset: 2, size: 1) & 0x0F, 0x01)
    }

    func testReceiveFIFODataReadyAndOverrun() {
        let (uart, _, sink) = make()
        uart.busWrite(offset: 1, size: 1, value: 0x01)
        XCTAssertEqual(uart.enqueue(Array("ab".utf8)), 2)
        XCTAssertTrue(sink.level(4))
        XCTAssertEqual(uart.busRead(offset: 2, size: 1) & 0x0F, 0x04)
        XCTAssertEqual(uart.busRead(offset: 0, size: 1), UInt64(UInt8(ascii: "a")))
        XCTAssertEqual(uart.busRead(offset: 0, size: 1), UInt64(UInt8(ascii: "b")))
        XCTAssertEqual(uart.busRead(offset: 5, size: 1) & 1, 0)
        XCTAssertFalse(sink.level(4))
        XCTAssertEqual(uart.enqueue([UInt8](repeating: 1, count: 100)), Serial16550.fifoSize)
        XCTAssertEqual(uart.busRead(offset: 5, size: 1) & 0x02, 0x02, "overrun reported once")
        XCTAssertEqual(uart.busRead(offset: 5, size: 1) & 0x02, 0)
    }

    func testDivisorLatchAndLoopback() {
        let (uart, out, _) = make()
        uart.busWrite(offset: 3, size: 1, value: 0x83)
        uart.busWrite(offset: 0, size: 1, value: 0x01)
        uart.busWrite(offset: 1, size: 1, value: 0x00)
        XCTAssertEqual(uart.busRead(offset: 0, size: 1), 1)
        uart.busWrite(offset: 3, size: 1, value: 0x03)
        uart.busWrite(offset: 4, size: 1, value: 0x10)       // loopback
        uart.busWrite(offset: 0, size: 1, value: 0x5A)
        XCTAssertEqual(out.text, "")
        XCTAssertEqual(uart.busRead(offset: 0, size: 1), 0x5A)
    }
}

final class SmallDeviceTests: XCTestCase {
    func testCMOSTimeIsBCDAndMemoryBytes() {
        let cmos = CMOS(now: { 1_700_000_000 })   // 2023-11-14 22:13:20 UTC
        func reg(_ i: UInt64) -> UInt64 { cmos.busWrite(offset: 0, size: 1, value: i); return cmos.busRead(offset: 1, size: 1) }
        XCTAssertEqual(reg(0x00), 0x20)
        XCTAssertEqual(reg(0x02), 0x13)
        XCTAssertEqual(reg(0x04), 0x22)
        XCTAssertEqual(reg(0x07), 0x14)
        XCTAssertEqual(reg(0x08), 0x11)
        XCTAssertEqual(reg(0x09), 0x23)
        XCTAssertEqual(reg(0x32), 0x20)
        cmos.busWrite(offset: 0, size: 1, value: 0x0B)
        cmos.busWrite(offset: 1, size: 1, value: 0x06)       // binary, 24 h
        XCTAssertEqual(reg(0x04), 22)
        cmos.setMemoryInfo(below4G: 0xC000_0000, above4G: 0x4000_0000, cpus: 2)
        XCTAssertEqual(reg(0x5F), 1)
        XCTAssertEqual(reg(0x5B) | reg(0x5C) << 8, 0x4000)   // 1 GiB above 4 GiB in 64 KiB units
        XCTAssertEqual(reg(0x80 | 0x0D), 0x80, "bit 7 of the index is the NMI mask")
    }

    func testI8042SelfTestAndResetLine() {
        let resets = Mutex(0)
        let kbd = I8042(irq: nil, reset: { resets.withLock { $0 += 1 } })
        kbd.busWrite(offset: 4, size: 1, value: 0xAA)
        XCTAssertEqual(kbd.busRead(offset: 4, size: 1) & 1, 1)
        XCTAssertEqual(kbd.busRead(offset: 0, size: 1), 0x55)
        kbd.busWrite(offset: 4, size: 1, value: 0xFE)
        XCTAssertEqual(resets.withLock { $0 }, 1)
        kbd.busWrite(offset: 4, size: 1, value: 0xD1)
        kbd.busWrite(offset: 0, size: 1, value: 0x02)        // output port bit 0 low: reset
        XCTAssertEqual(resets.withLock { $0 }, 2)
    }

    /// An i8042 on a recording sink (IRQ 1 and 12), with helpers that act as Linux's i8042 driver.
    final class KBC {
        let sink = RecordingInterruptSink()
        let dev: I8042
        init() { dev = I8042(irq: IRQLine(sink: sink, gsi: 1), auxIRQ: IRQLine(sink: sink, gsi: 12), reset: {}) }
        var status: UInt8 { UInt8(dev.busRead(offset: 4, size: 1)) }
        func command(_ c: UInt8, _ param: UInt8? = nil) {
            dev.busWrite(offset: 4, size: 1, value: UInt64(c))
            if let param { dev.busWrite(offset: 0, size: 1, value: UInt64(param)) }
        }
        func write(_ b: UInt8) { dev.busWrite(offset: 0, size: 1, value: UInt64(b)) }
        /// Reads bytes while the output buffer is full, with the status bit 5 (AUX) seen for each.
        func drain() -> [(byte: UInt8, aux: Bool)] {
            var out: [(UInt8, Bool)] = []
            while status & 1 != 0 && out.count < 32 {
                let st = status
                out.append((UInt8(dev.busRead(offset: 0, size: 1)), st & 0x20 != 0))
            }
            return out
        }
        func bytes() -> [UInt8] { drain().map(\.byte) }
        var ctr: UInt8 {
            command(0x20)
            return bytes().first ?? 0xEE
        }
    }

    func testI8042KeyboardRepliesAndOneEdgePerByte() {
        let k = KBC()
        XCTAssertEqual(k.ctr, 0x61, "SeaBIOS's CTR: keyboard IRQ, AUX disabled, translation")
        k.sink.clear()
        k.write(0xF2)                                            // GETID, translated
        XCTAssertEqual(k.status & 0x21, 0x01)
        XCTAssertEqual(k.bytes(), [0xFA, 0xAB, 0x41])
        // Three bytes, three rising edges on IRQ 1 (each read lowers the line first), none on 12.
        XCTAssertEqual(k.sink.events, [.irq(1, true), .irq(1, false), .irq(1, true), .irq(1, false), .irq(1, true), .irq(1, false)])
        k.command(0x60, 0x05)                                    // no translation, keyboard IRQ
        k.write(0xF2)
        XCTAssertEqual(k.bytes(), [0xFA, 0xAB, 0x83])
        k.write(0xFF)
        XCTAssertEqual(k.bytes(), [0xFA, 0xAA], "reset: ACK then BAT passed")
        k.write(0xF0); k.write(0x00)
        XCTAssertEqual(k.bytes(), [0xFA, 0x02], "the parameter's reply replaces the unread ACK")
        k.write(0xF0); XCTAssertEqual(k.bytes(), [0xFA]); k.write(0x00)
        XCTAssertEqual(k.bytes(), [0xFA, 0x02], "scancode set 2")
        k.command(0x60, 0x45)
        k.write(0xF0); XCTAssertEqual(k.bytes(), [0xFA]); k.write(0x00)
        XCTAssertEqual(k.bytes(), [0xFA, 0x41], "set 2 as the translating controller reports it")
        for (cmd, param) in [(0xED, 0x07), (0xF3, 0x20)] as [(UInt8, UInt8)] {
            k.write(cmd); XCTAssertEqual(k.bytes(), [0xFA]); k.write(param); XCTAssertEqual(k.bytes(), [0xFA])
        }
        k.write(0xF4); XCTAssertEqual(k.bytes(), [0xFA])
        k.write(0xEE); XCTAssertEqual(k.bytes(), [0xEE])
        k.write(0x77); XCTAssertEqual(k.bytes(), [0xFE], "unknown command: resend")
        // Keyboard IRQ off: the byte is there, the line stays low.
        k.command(0x60, 0x44)
        k.sink.clear()
        k.write(0xF4)
        XCTAssertEqual(k.status & 1, 1)
        XCTAssertEqual(k.sink.events, [])
        XCTAssertEqual(k.bytes(), [0xFA])
        XCTAssertEqual(k.dev.busRead(offset: 0, size: 1), 0xFA, "an empty buffer reads the last byte again")
    }

    func testI8042AuxPortAsLinuxProbesIt() {
        let k = KBC()
        // i8042_check_aux: loopback through 0xD3 comes back as AUX data.
        k.command(0xD3, 0x5A)
        XCTAssertEqual(k.status & 0x21, 0x21)
        XCTAssertEqual(k.drain().map { [$0.byte, $0.aux ? 1 : 0] }, [[0x5A, 1]])
        // Bit assignment test: 0xA7/0xA8 toggle CTR bit 5.
        k.command(0xA7); XCTAssertEqual(k.ctr & 0x20, 0x20)
        k.command(0xA8); XCTAssertEqual(k.ctr & 0x20, 0)
        k.command(0xA9); XCTAssertEqual(k.bytes(), [0x00], "AUX interface test passes")
        // The IRQ delivery test: with CTR bit 1 a looped byte raises IRQ 12, and only IRQ 12.
        k.command(0x60, 0x43)
        k.sink.clear()
        k.command(0xD3, 0xA5)
        XCTAssertEqual(k.sink.events, [.irq(12, true)])
        XCTAssertEqual(k.bytes(), [0xA5])
        XCTAssertEqual(k.sink.events, [.irq(12, true), .irq(12, false)])
    }

    func testI8042MouseProbesAsExplorer() {
        let k = KBC()
        k.command(0x60, 0x47)                                    // both interrupts, AUX enabled
        k.sink.clear()
        func mouse(_ bytes: UInt8...) -> [UInt8] {
            var out: [UInt8] = []
            for b in bytes {
                k.command(0xD4, b)
                let d = k.drain()
                XCTAssertTrue(d.allSatisfy(\.aux), "mouse bytes are AUX data")
                out += d.map(\.byte)
            }
            return out
        }
        XCTAssertEqual(mouse(0xFF), [0xFA, 0xAA, 0x00], "reset: ACK, BAT passed, ID 0")
        XCTAssertTrue(k.sink.events.allSatisfy { if case .irq(12, _) = $0 { return true }; return false })
        XCTAssertEqual(k.sink.events.filter { $0 == .irq(12, true) }.count, 3)
        XCTAssertEqual(mouse(0xF2), [0xFA, 0x00])
        XCTAssertEqual(mouse(0xF3, 200, 0xF3, 100, 0xF3, 80, 0xF2), [0xFA, 0xFA, 0xFA, 0xFA, 0xFA, 0xFA, 0xFA, 0x03], "IntelliMouse")
        XCTAssertEqual(mouse(0xF3, 200, 0xF3, 200, 0xF3, 80, 0xF2), [0xFA, 0xFA, 0xFA, 0xFA, 0xFA, 0xFA, 0xFA, 0x04], "Explorer")
        XCTAssertEqual(mouse(0xE8, 0x03, 0xE6, 0xF4, 0xE9), [0xFA, 0xFA, 0xFA, 0xFA, 0xFA, 0x20, 0x03, 80])
        XCTAssertEqual(mouse(0xEB), [0xFA, 0x08, 0x00, 0x00, 0x00], "a poll: one 4-byte packet, nothing moved")
        XCTAssertEqual(mouse(0xF6, 0xE9), [0xFA, 0xFA, 0x00, 0x02, 100])
        XCTAssertEqual(mouse(0xEE, 0x12, 0xEC, 0xF5), [0xFA, 0x12, 0xFA, 0xFA], "wrap mode echoes")
        XCTAssertEqual(mouse(0xFF), [0xFA, 0xAA, 0x00])
        // Mouse bytes wait while the AUX port is disabled, keyboard bytes while the keyboard is.
        k.command(0xA7)
        k.command(0xD4, 0xF2)
        XCTAssertEqual(k.status & 1, 0)
        k.command(0xA8)
        XCTAssertEqual(k.drain().map { [$0.byte, $0.aux ? 1 : 0] }, [[0xFA, 1], [0x00, 1]])
    }

    /// The floppy controller with no drives, driven as Linux's floppy driver probes it (reset, the
    /// four SENSE INTERRUPTs, DUMPREG, CONFIGURE, PERPENDICULAR, UNLOCK, PARTID), then seeks.
    func testFloppyControllerProbesAsQEMUs() {
        let sink = RecordingInterruptSink()
        let fdc = FloppyController(irq: IRQLine(sink: sink, gsi: 6))
        var msr: UInt8 { UInt8(fdc.busRead(offset: 4, size: 1)) }
        /// Command bytes in, result bytes out, checking the main status register's handshake.
        func run(_ bytes: UInt8...) -> [UInt8] {
            for b in bytes {
                XCTAssertEqual(msr & 0xC0, 0x80, "ready for a command byte")
                fdc.busWrite(offset: 5, size: 1, value: UInt64(b))
            }
            var out: [UInt8] = []
            while msr & 0xC0 == 0xC0 && out.count < 20 { out.append(UInt8(fdc.busRead(offset: 5, size: 1))) }
            XCTAssertEqual(msr & 0xD0, 0x80, "back in the command phase")
            return out
        }
        XCTAssertEqual(fdc.busRead(offset: 2, size: 1), 0x0C, "DOR: out of reset, DMA enabled")
        fdc.busWrite(offset: 2, size: 1, value: 0x00)                     // into reset...
        fdc.busWrite(offset: 2, size: 1, value: 0x0C)                     // ...and out: IRQ 6
        XCTAssertEqual(sink.events, [.irq(6, true)])
        XCTAssertEqual(fdc.busRead(offset: 0, size: 1) & 0x80, 0x80, "SRA: interrupt pending")
        XCTAssertEqual(run(0x08), [0xC0, 0])
        XCTAssertFalse(sink.level(6))
        XCTAssertEqual(run(0x08), [0xC1, 0])
        XCTAssertEqual(run(0x08), [0xC2, 0])
        XCTAssertEqual(run(0x08), [0xC3, 0])
        XCTAssertEqual(run(0x08), [0x80], "no interrupt pending: invalid")
        XCTAssertEqual(run(0x0E).count, 10, "DUMPREG")
        XCTAssertEqual(run(0x13, 0x00, 0x1A, 0x00), [], "CONFIGURE")
        XCTAssertEqual(run(0x0E)[8], 0x1A)
        XCTAssertEqual(run(0x12, 0x00), [], "PERPENDICULAR")
        XCTAssertEqual(run(0x14), [0x00], "UNLOCK")
        XCTAssertEqual(run(0x94), [0x10], "LOCK")
        XCTAssertEqual(run(0x18), [0x41], "PART ID: an 82078 (Linux: S82078B)")
        XCTAssertEqual(run(0x10), [0x90], "VERSION")
        XCTAssertEqual(run(0x03, 0xCF, 0x06), [], "SPECIFY")
        sink.clear()
        XCTAssertEqual(run(0x0F, 0x00, 5), [], "SEEK")
        XCTAssertEqual(sink.events, [.irq(6, true)])
        XCTAssertEqual(run(0x08), [0x20, 5], "seek end, track 5")
        XCTAssertEqual(run(0x04, 0x00), [0x28], "SENSE DRIVE STATUS: not on track 0")
        XCTAssertEqual(run(0x07, 0x00), [])
        XCTAssertEqual(run(0x08), [0x20, 0], "recalibrated")
        let read = run(0xE6, 0, 0, 0, 1, 2, 18, 0x1B, 0xFF)
        XCTAssertEqual(Array(read.prefix(2)), [0x40, 0x01], "no medium: abnormal termination, missing address mark")
        XCTAssertEqual(read.count, 7)
        XCTAssertEqual(run(0xFF), [0x80], "invalid command")
        fdc.busWrite(offset: 4, size: 1, value: 0x80)                     // DSR software reset
        XCTAssertTrue(sink.level(6))
        XCTAssertEqual(run(0x08), [0xC0, 0])
    }

    func testPort92AndCF9Reset() {

        let resets = Mutex(0)
        let p92 = Port92(reset: { resets.withLock { $0 += 1 } })
        p92.busWrite(offset: 0, size: 1, value: 0x02)
        XCTAssertEqual(resets.withLock { $0 }, 0)
        p92.busWrite(offset: 0, size: 1, value: 0x03)
        XCTAssertEqual(resets.withLock { $0 }, 1)
        let cf9 = ResetControlRegister(reset: { resets.withLock { $0 += 1 } })
        cf9.busWrite(offset: 0, size: 1, value: 0x02)
        cf9.busWrite(offset: 0, size: 1, value: 0x06)
        XCTAssertEqual(resets.withLock { $0 }, 2)
    }

    func testDebugExitStatusIsQEMUs() {
        let code = Mutex<Int32>(-1)
        let d = DebugExit(exit: { c in code.withLock { $0 = c } })
        d.busWrite(offset: 0, size: 1, value: 0x10)
        XCTAssertEqual(code.withLock { $0 }, 33)
    }

    func testPMPowerOffPowerButtonAndTimer() {
        let sink = RecordingInterruptSink()
        let sleeps = Mutex<[PIIX4PM.SleepRequest]>([])
        let now = Mutex<UInt64>(0)
        let pm = PIIX4PM(sci: IRQLine(sink: sink, gsi: 9), sleep: { r in sleeps.withLock { $0.append(r) } },
                         clock: { now.withLock { $0 } })
        let regs = pm.pmRegisters
        XCTAssertEqual(regs.busRead(offset: 4, size: 2) & 1, 1, "SCI_EN: ACPI mode from reset")
        now.withLock { $0 = 1_000_000_000 }
        XCTAssertEqual(regs.busRead(offset: 8, size: 4), 3_579_545 & 0xFF_FFFF)
        pm.pressPowerButton()
        XCTAssertFalse(sink.level(9), "no SCI until the OS enables the power button event")
        regs.busWrite(offset: 2, size: 2, value: 0x100)
        XCTAssertTrue(sink.level(9))
        XCTAssertEqual(regs.busRead(offset: 0, size: 2) & 0x100, 0x100)
        regs.busWrite(offset: 0, size: 2, value: 0x100)      // write 1 to clear
        XCTAssertFalse(sink.level(9))
        regs.busWrite(offset: 4, size: 2, value: 0x2000 | (0 << 10) | 1)
        XCTAssertEqual(sleeps.withLock { $0 }, [.softOff])
        regs.busWrite(offset: 4, size: 2, value: 0x2000 | (1 << 10))
        XCTAssertEqual(sleeps.withLock { $0 }.last, .suspend(1))
        regs.busWrite(offset: 4, size: 2, value: 0x2000 | (2 << 10))
        XCTAssertEqual(sleeps.withLock { $0 }.last, .suspendToDisk, "SLP_TYP 2 is \\_S4")
    }
}
