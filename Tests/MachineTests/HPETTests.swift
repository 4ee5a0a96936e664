// HPET: capabilities, the main counter against an injected clock, a one-shot legacy-routed timer
// and a periodic one fired through the timer service.
import Synchronization
import XCTest
@testable import Machine

final class HPETTests: XCTestCase {
    func testCounterAndTimers() throws {
        let now = Mutex<UInt64>(1_000_000)
        let clock: @Sendable () -> UInt64 = { now.withLock { $0 } }
        let service = TimerService(clock: clock)
        defer { service.stop() }
        let sink = RecordingInterruptSink()
        let hpet = HPET(sink: sink, service: service, clock: clock)
        let cap = hpet.busRead(offset: 0, size: 8)
        XCTAssertEqual(cap >> 32, 10_000_000, "10 ns period in femtoseconds")
        XCTAssertEqual((cap >> 8) & 0x1F, 2, "three timers")
        XCTAssertNotEqual(cap & (1 << 15), 0, "legacy replacement capable")
        XCTAssertEqual(hpet.busRead(offset: 0xF0, size: 8), 0, "halted counter")
        hpet.busWrite(offset: 0x10, size: 4, value: 3)             // enable, legacy routes
        now.withLock { $0 += 1000 }
        XCTAssertEqual(hpet.busRead(offset: 0xF0, size: 4), 100)
        // Timer 0: one-shot, edge, enabled, comparator 200 ticks from now.
        hpet.busWrite(offset: 0x100, size: 4, value: 1 << 2)
        hpet.busWrite(offset: 0x108, size: 8, value: 300)
        usleep(20_000)
        XCTAssertEqual(sink.events, [], "not yet")
        now.withLock { $0 += 2500 }
        let deadline = Date(timeIntervalSinceNow: 2)
        while sink.events.isEmpty && Date() < deadline { usleep(1000) }
        XCTAssertEqual(sink.events, [.irq(0, true), .irq(0, false)], "legacy: timer 0 is IRQ 0")
        // Timer 1: periodic, level, legacy IRQ 8: VAL_SET then period.
        sink.clear()
        hpet.busWrite(offset: 0x120, size: 4, value: (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6))
        let c = hpet.busRead(offset: 0xF0, size: 8)
        hpet.busWrite(offset: 0x128, size: 8, value: c + 10)
        hpet.busWrite(offset: 0x128, size: 8, value: 50)
        now.withLock { $0 += 200 }
        let d2 = Date(timeIntervalSinceNow: 2)
        while !sink.level(8) && Date() < d2 { usleep(1000) }
        XCTAssertTrue(sink.level(8))
        XCTAssertEqual(hpet.busRead(offset: 0x20, size: 4) & 2, 2, "level interrupt status")
        hpet.busWrite(offset: 0x20, size: 4, value: 2)
        XCTAssertFalse(sink.level(8), "writing 1 clears it and lowers the line")
        XCTAssertGreaterThan(hpet.busRead(offset: 0x128, size: 8), c + 10, "the comparator advanced by the period")
        hpet.busWrite(offset: 0x10, size: 4, value: 0)
    }
}
