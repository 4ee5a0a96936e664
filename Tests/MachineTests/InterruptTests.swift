// The interpreter's interrupt controllers: 8259 initialisation and priorities, the I/O APIC's
// edge/level semantics with EOI, the local APIC's priorities, timer and IPIs, and the PIT, all with
// injected clocks so that nothing depends on real time.
import Synchronization
import XCTest
@testable import Machine

final class InterruptTests: XCTestCase {
    func initPIC(_ pic: PIC8259Pair) {
        pic.busWrite(offset: 0, size: 1, value: 0x11); pic.busWrite(offset: 1, size: 1, value: 0x20)
        pic.busWrite(offset: 1, size: 1, value: 0x04); pic.busWrite(offset: 1, size: 1, value: 0x01)
        pic.busWrite(offset: 0x80, size: 1, value: 0x11); pic.busWrite(offset: 0x81, size: 1, value: 0x28)
        pic.busWrite(offset: 0x81, size: 1, value: 0x02); pic.busWrite(offset: 0x81, size: 1, value: 0x01)
        pic.busWrite(offset: 1, size: 1, value: 0x00); pic.busWrite(offset: 0x81, size: 1, value: 0x00)
    }

    func testPICVectorsPriorityCascadeAndEOI() {
        let pic = PIC8259Pair()
        initPIC(pic)
        pic.setIRQ(4, level: true)
        pic.setIRQ(1, level: true)
        XCTAssertTrue(pic.outputHigh)
        XCTAssertEqual(pic.acknowledge(), 0x21, "IRQ 1 beats IRQ 4")
        XCTAssertFalse(pic.outputHigh, "IRQ 4 waits while IRQ 1 is in service")
        pic.busWrite(offset: 0, size: 1, value: 0x20)   // EOI
        XCTAssertEqual(pic.acknowledge(), 0x24)
        pic.busWrite(offset: 0, size: 1, value: 0x20)
        pic.setIRQ(12, level: true)
        XCTAssertEqual(pic.acknowledge(), 0x2C, "slave IRQ 12 through the cascade")
        pic.busWrite(offset: 0x80, size: 1, value: 0x20)
        pic.busWrite(offset: 0, size: 1, value: 0x20)
        pic.busWrite(offset: 1, size: 1, value: 0xFF)   // mask everything
        pic.setIRQ(3, level: true)
        XCTAssertFalse(pic.outputHigh)
        pic.busWrite(offset: 0, size: 1, value: 0x0B)   // OCW3: read ISR
        XCTAssertEqual(pic.busRead(offset: 0, size: 1), 0)
        XCTAssertEqual(pic.acknowledge(), 0x27, "spurious IRQ 7 when nothing is pending")
    }

    func testPICLevelModeFollowsTheLine() {
        let pic = PIC8259Pair()
        initPIC(pic)
        pic.busWrite(offset: 0x4B1, size: 1, value: 0x0C)   // IRQ 10, 11 level
        pic.setIRQ(10, level: true)
        XCTAssertEqual(pic.acknowledge(), 0x2A)
        pic.busWrite(offset: 0x80, size: 1, value: 0x20)
        pic.busWrite(offset: 0, size: 1, value: 0x20)
        XCTAssertTrue(pic.outputHigh, "still high: requests again")
        pic.setIRQ(10, level: false)
        XCTAssertFalse(pic.outputHigh)
    }

    func program(_ io: IOAPIC, pin: Int, _ low: UInt32, dest: UInt32 = 0) {
        io.busWrite(offset: 0, size: 4, value: UInt64(0x10 + 2 * pin + 1))
        io.busWrite(offset: 0x10, size: 4, value: UInt64(dest << 24))
        io.busWrite(offset: 0, size: 4, value: UInt64(0x10 + 2 * pin))
        io.busWrite(offset: 0x10, size: 4, value: UInt64(low))
    }

    func testIOAPICLevelRemoteIRRAndEOI() {
        let hub = InterruptHub(cpuCount: 1, clock: { 0 })
        let lapic = hub.lapics[0]
        lapic.write(offset: 0xF0, value: 0x1FF)
        program(hub.ioapic, pin: 11, 0x8000 | 0x41)      // level, vector 0x41
        hub.setIRQ(11, level: true)
        XCTAssertEqual(hub.acknowledge(cpu: 0), 0x41)
        hub.setIRQ(11, level: true)
        XCTAssertNil(hub.acknowledge(cpu: 0), "remote IRR blocks a second delivery")
        lapic.write(offset: 0xB0, value: 0)              // EOI: line still high -> again
        XCTAssertEqual(hub.acknowledge(cpu: 0), 0x41)
        hub.setIRQ(11, level: false)
        lapic.write(offset: 0xB0, value: 0)
        XCTAssertNil(hub.acknowledge(cpu: 0))
        // IRQ 0 is wired to pin 2 (the MADT override); edge pins deliver once per rising edge.
        program(hub.ioapic, pin: 2, 0x30)
        hub.setIRQ(0, level: true)
        hub.setIRQ(0, level: true)
        hub.setIRQ(0, level: false)
        XCTAssertEqual(hub.acknowledge(cpu: 0), 0x30)
        XCTAssertNil(hub.acknowledge(cpu: 0))
        // Version register: 24 pins, version 0x20.
        hub.ioapic.busWrite(offset: 0, size: 4, value: 1)
        XCTAssertEqual(hub.ioapic.busRead(offset: 0x10, size: 4), 0x17_0020)
    }

    func testLocalAPICPriorityTimerAndIPIs() {
        let now = Mutex<UInt64>(1000)
        let hub = InterruptHub(cpuCount: 2, clock: { now.withLock { $0 } })
        let a = hub.lapics[0], b = hub.lapics[1]
        a.write(offset: 0xF0, value: 0x1FF); b.write(offset: 0xF0, value: 0x1FF)
        a.accept(vector: 0x50, level: false)
        a.write(offset: 0x80, value: 0x60)               // TPR above the vector's class
        XCTAssertNil(a.pendingVector())
        a.write(offset: 0x80, value: 0)
        XCTAssertEqual(a.acknowledge(), 0x50)
        XCTAssertEqual(a.read(offset: 0xA0), 0x50, "PPR follows the in-service vector")
        a.write(offset: 0xB0, value: 0)
        // Timer: one-shot, divide by 1, 1000 ticks of 1 ns.
        a.write(offset: 0x3E0, value: 0xB)
        a.write(offset: 0x320, value: 0xEC)
        a.write(offset: 0x380, value: 1000)
        XCTAssertEqual(a.nextDeadline(), 2000)
        XCTAssertNil(a.pendingVector())
        now.withLock { $0 = 2500 }
        XCTAssertEqual(a.acknowledge(), 0xEC)
        XCTAssertNil(a.nextDeadline(), "one-shot does not re-arm")
        a.write(offset: 0xB0, value: 0)
        // Fixed IPI to APIC ID 1, then INIT and SIPI.
        a.write(offset: 0x310, value: 1 << 24)
        a.write(offset: 0x300, value: 0x4061)
        XCTAssertEqual(b.acknowledge(), 0x61)
        a.write(offset: 0x300, value: 0x4500)
        a.write(offset: 0x300, value: 0x4608)
        let ev = hub.takeEvents(cpu: 1)
        XCTAssertTrue(ev.initSignal)
        XCTAssertEqual(ev.startupVector, 0x08)
        // x2APIC: ID reads back whole, ICR is one MSR.
        XCTAssertTrue(b.writeMSR(0x1B, 0xFEE0_0C00))
        XCTAssertEqual(b.readMSR(0x802), 1)
        XCTAssertTrue(b.writeMSR(0x830, 0x62 | (UInt64(0) << 32)))
        XCTAssertEqual(a.acknowledge(), 0x62)
        XCTAssertNil(a.readMSR(0x802), "x2APIC MSRs need x2APIC mode")
    }

    func testMSIDecoding() {
        let hub = InterruptHub(cpuCount: 2, clock: { 0 })
        for l in hub.lapics { l.write(offset: 0xF0, value: 0x1FF) }
        hub.signalMSI(address: 0xFEE0_1000, data: 0x4033)   // APIC ID 1, vector 0x33
        XCTAssertNil(hub.acknowledge(cpu: 0))
        XCTAssertEqual(hub.acknowledge(cpu: 1), 0x33)
        hub.signalMSI(address: 0x1234_0000, data: 0x44)     // not an MSI address: dropped
        XCTAssertNil(hub.acknowledge(cpu: 0))
    }

    func testPITChannel0PeriodAndChannel2Gate() {
        let now = Mutex<UInt64>(0)
        let irqs = Mutex(0)
        let pit = PIT8254(irq0: { irqs.withLock { $0 += 1 } }, clock: { now.withLock { $0 } })
        pit.busWrite(offset: 3, size: 1, value: 0x34)      // ch0, lohi, mode 2
        pit.busWrite(offset: 0, size: 1, value: 0x9C)
        pit.busWrite(offset: 0, size: 1, value: 0x2E)      // 11932: ~10 ms
        XCTAssertNotNil(pit.nextDeadline)
        now.withLock { $0 = 5_000_000 }
        pit.poll()
        XCTAssertEqual(irqs.withLock { $0 }, 0)
        now.withLock { $0 = 10_100_000 }
        pit.poll()
        XCTAssertEqual(irqs.withLock { $0 }, 1)
        now.withLock { $0 = 55_000_000 }
        pit.poll()
        XCTAssertEqual(irqs.withLock { $0 }, 2, "missed periods coalesce")
        // Channel 2, mode 0, gate on: OUT2 (port 0x61 bit 5) goes high after the count.
        pit.busWrite(offset: 0x21, size: 1, value: 0x01)
        pit.busWrite(offset: 3, size: 1, value: 0xB0)
        pit.busWrite(offset: 2, size: 1, value: 0xE8)
        pit.busWrite(offset: 2, size: 1, value: 0x03)      // 1000 ticks
        XCTAssertEqual(pit.busRead(offset: 0x21, size: 1) & 0x20, 0)
        now.withLock { $0 += 1_000_000 }                   // ~1193 ticks later
        XCTAssertEqual(pit.busRead(offset: 0x21, size: 1) & 0x20, 0x20)
        // Latch command freezes the value for reading.
        pit.busWrite(offset: 3, size: 1, value: 0x00)
        let lo = pit.busRead(offset: 0, size: 1), hi = pit.busRead(offset: 0, size: 1)
        XCTAssertLessThanOrEqual(lo | hi << 8, 11932)
    }
}
