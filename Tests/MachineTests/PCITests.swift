// PCI: configuration mechanism #1, BAR sizing and mapping, masks, the PIIX3 PIRQ router.
import Synchronization
import XCTest
@testable import Machine

final class PCITests: XCTestCase {
    final class Dummy: PCIDevice, @unchecked Sendable {
        let pciName = "dummy"
        let config: Mutex<PCIConfigSpace>
        let regs = ByteRegister()
        var line: IRQLine?
        init() {
            var c = PCIConfigSpace(vendor: 0x1234, device: 0x5678, classCode: 0xFF_00_00, interruptPin: 1)
            let regs = self.regs
            c.declareBAR(0, PCIBARSpec(kind: .io, size: 0x20, device: regs))
            c.declareBAR(2, PCIBARSpec(kind: .memory64, size: 0x4000, device: regs), address: 0xFE00_0000)
            config = Mutex(c)
        }
        func attachInterrupt(_ l: IRQLine) { line = l }
    }

    func configAddress(_ dev: Int, _ reg: Int) -> UInt64 { UInt64(0x8000_0000 | dev << 11 | reg) }

    func testConfigMechanismAndBARSizing() throws {
        let ports = IOBus(name: "io"), mmio = IOBus(name: "mem")
        let bus = PCIBus(ports: ports, mmio: mmio, intxRouter: nil)
        let d = Dummy()
        bus.plug(d, at: PCIAddress(device: 3))
        let cfg = PCIConfigPorts(bus: bus)
        cfg.busWrite(offset: 0, size: 4, value: configAddress(3, 0))
        XCTAssertEqual(cfg.busRead(offset: 4, size: 4), 0x5678_1234)
        XCTAssertEqual(cfg.busRead(offset: 6, size: 2), 0x5678)
        cfg.busWrite(offset: 0, size: 4, value: configAddress(4, 0))
        XCTAssertEqual(cfg.busRead(offset: 4, size: 4), 0xFFFF_FFFF, "empty slot")
        // Size BAR0 (I/O, 32 bytes)
        cfg.busWrite(offset: 0, size: 4, value: configAddress(3, 0x10))
        cfg.busWrite(offset: 4, size: 4, value: 0xFFFF_FFFF)
        XCTAssertEqual(cfg.busRead(offset: 4, size: 4), 0xFFFF_FFE1)
        cfg.busWrite(offset: 4, size: 4, value: 0xC000)
        // BAR2/3: 64-bit memory, pre-assigned
        cfg.busWrite(offset: 0, size: 4, value: configAddress(3, 0x18))
        XCTAssertEqual(cfg.busRead(offset: 4, size: 4), 0xFE00_0004)
        XCTAssertNil(mmio.lookup(0xFE00_0000), "not decoded before the command register enables memory")
        cfg.busWrite(offset: 0, size: 4, value: configAddress(3, 0x04))
        cfg.busWrite(offset: 4, size: 2, value: 0x3)
        XCTAssertNotNil(mmio.lookup(0xFE00_3FFF))
        XCTAssertNotNil(ports.lookup(0xC01F))
        // Move BAR0: the old range is unmapped.
        cfg.busWrite(offset: 0, size: 4, value: configAddress(3, 0x10))
        cfg.busWrite(offset: 4, size: 4, value: 0xD000)
        XCTAssertNil(ports.lookup(0xC000))
        XCTAssertNotNil(ports.lookup(0xD000))
        // Read-only fields stay.
        cfg.busWrite(offset: 0, size: 4, value: configAddress(3, 0))
        cfg.busWrite(offset: 4, size: 4, value: 0)
        XCTAssertEqual(cfg.busRead(offset: 4, size: 4), 0x5678_1234)
    }

    func testMisalignedConfigAccessesAreHarmless() {
        var c = PCIConfigSpace(vendor: 1, device: 2, classCode: 0)
        XCTAssertEqual(c.read(255, size: 4), 0xFFFF_FFFF)
        XCTAssertEqual(c.read(3, size: 2), 0xFFFF)
        c.write(254, size: 4, value: 0)
        c.write(-1, size: 1, value: 0)
        XCTAssertEqual(c.read(0, size: 4), 0x0002_0001)
    }

    func testPIRQRoutingIsWiredOrAndFollowsRerouting() {
        let sink = RecordingInterruptSink()
        let piix = PIIX3(sink: sink)
        let a = piix.line(forPIRQ: 0), b = piix.line(forPIRQ: 0)
        a.raise()
        XCTAssertTrue(sink.level(10))
        b.raise()
        a.lower()
        XCTAssertTrue(sink.level(10), "the other source still holds the shared line")
        b.lower()
        XCTAssertFalse(sink.level(10))
        XCTAssertEqual(PCIBus.pirq(device: 2, pin: 1), 1)
        XCTAssertEqual(PCIBus.pirq(device: 1, pin: 1), 0)
        a.raise()
        piix.config.withLock { $0.set8(0x60, 0x80) }   // disable link A
        piix.configDidWrite(offset: 0x60, size: 1)
        XCTAssertFalse(sink.level(10))
    }

    /// The PIIX3 IDE function as QEMU's with no drives: legacy-mode class, BAR4 where firmware put
    /// it, empty channels that read 0 (0xFF for a byte of data), plain bus-master registers.
    func testPIIX3IDEWithoutDrives() {
        let ports = IOBus(name: "io")
        let bus = PCIBus(ports: ports, mmio: IOBus(name: "mem"), intxRouter: nil)
        let ide = PIIX3IDE(bar4: 0xC080)
        bus.plug(ide, at: PCIAddress(device: 1, function: 1))
        let cfg = PCIConfigPorts(bus: bus)
        func config(_ reg: Int, _ size: Int = 4) -> UInt64 {
            cfg.busWrite(offset: 0, size: 4, value: UInt64(0x8000_0000 | 1 << 11 | 1 << 8 | reg & ~3))
            return cfg.busRead(offset: 4 + UInt64(reg & 3), size: size)
        }
        XCTAssertEqual(config(0x00), 0x7010_8086)
        XCTAssertEqual(config(0x08), 0x0101_8000, "class 0x010180, revision 0")
        XCTAssertEqual(config(0x20), 0xC081, "BAR4: I/O at 0xC080")
        XCTAssertEqual(config(0x3D, 1), 0, "legacy mode: no INTx pin")
        XCTAssertNil(ports.lookup(0xC080), "not decoded until the OS enables I/O")
        cfg.busWrite(offset: 0, size: 4, value: 0x8000_0000 | 1 << 11 | 1 << 8 | 0x04)
        cfg.busWrite(offset: 4, size: 2, value: 0x05)
        let bm = ports.lookup(0xC080)
        XCTAssertNotNil(bm)
        XCTAssertNil(ports.lookup(0xC090))
        let ch = PIIX3IDE.emptyChannelPorts()
        XCTAssertEqual(ch.busRead(offset: 7, size: 1), 0, "status 0: no drive")
        XCTAssertEqual(ch.busRead(offset: 0, size: 1), 0xFF)
        XCTAssertEqual(ch.busRead(offset: 0, size: 2), 0)
        _ = ports.write(0xC088 + 4, size: 4, value: 0x1234_5677)
        XCTAssertEqual(ports.read(0xC088 + 4, size: 4), 0x1234_5674, "PRD table address is dword aligned")
        _ = ports.write(0xC080, size: 1, value: 0xFF)
        XCTAssertEqual(ports.read(0xC080, size: 1), 0x09)
        XCTAssertEqual(ports.read(0xC082, size: 1), 0x01, "started: active")
        _ = ports.write(0xC082, size: 1, value: 0x66)
        XCTAssertEqual(ports.read(0xC082, size: 1), 0x61, "DMA-capable bits stick")
        _ = ports.write(0xC080, size: 1, value: 0)
        XCTAssertEqual(ports.read(0xC082, size: 1), 0x60)
    }

    /// What the DSDT's LNKB._SRS/_DIS do: byte writes to the PIIX3's 0x61 through 0xCF8/0xCFD move a
    /// device's asserted INTx (slot 2 INTA = PIRQB) to the new IRQ, and bit 7 takes it off.
    func testLinkWritesThroughConfigSpaceSteerADevicesINTx() {
        let sink = RecordingInterruptSink()
        let piix = PIIX3(sink: sink)
        let bus = PCIBus(ports: IOBus(name: "io"), mmio: IOBus(name: "mem"), intxRouter: { piix.line(forPIRQ: $0) })
        bus.plug(piix, at: PCIAddress(device: 1))
        let d = Dummy()
        bus.plug(d, at: PCIAddress(device: 2))
        let cfg = PCIConfigPorts(bus: bus)
        cfg.busWrite(offset: 0, size: 4, value: configAddress(1, 0x60))
        XCTAssertEqual(cfg.busRead(offset: 5, size: 1), 10, "LNKB._CRS reads SeaBIOS's routing")
        d.line?.raise()
        XCTAssertTrue(sink.level(10))
        cfg.busWrite(offset: 5, size: 1, value: 11)
        XCTAssertFalse(sink.level(10))
        XCTAssertTrue(sink.level(11))
        XCTAssertEqual(cfg.busRead(offset: 5, size: 1), 11)
        cfg.busWrite(offset: 5, size: 1, value: 0x8B)                 // _DIS
        XCTAssertFalse(sink.level(11))
        cfg.busWrite(offset: 5, size: 1, value: 5)
        XCTAssertTrue(sink.level(5), "re-enabled on IRQ 5 with the device still asserting")
        d.line?.lower()
        XCTAssertFalse(sink.level(5))
    }
}
