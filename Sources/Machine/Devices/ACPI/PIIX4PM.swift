// The PIIX4 power-management function (00:01.3, 8086:7113) and its ACPI fixed hardware, at QEMU's
// addresses: PM1 event block 0x600 (status, enable), PM1 control 0x604, PM timer 0x608, GPE0 block
// 0xAFE0 (status, enable). The SCI is ISA IRQ 9, level-triggered.
//
// Sleep: writing SLP_EN with SLP_TYP 0 (our \_S5) is "power off", and SLP_TYP 2 (\_S4) is the
// end of a hibernation, which QEMU also turns into a power off; the machine's injected `sleep`
// action decides what they mean (exit 0, or pause with -no-shutdown). The power button
// (`pressPowerButton`, QMP system_powerdown) sets PWRBTN_STS and raises the SCI when enabled.
// The PM timer is a 24-bit counter at 3.579545 MHz derived from the host's monotonic clock.
import Glibc
import Synchronization

public final class PIIX4PM: PCIDevice {
    public let pciName = "PIIX4_PM"
    public let config: Mutex<PCIConfigSpace>

    public static let pmBase: UInt16 = 0x600
    public static let pmLength: UInt64 = 0x40
    public static let gpeBase: UInt16 = 0xAFE0
    public static let gpeLength: UInt64 = 4
    public static let sciIRQ: UInt8 = 9
    public static let timerHz: UInt64 = 3_579_545

    // PM1 status/enable bits
    public static let tmrSts: UInt16 = 1 << 0, gblSts: UInt16 = 1 << 5, pwrbtnSts: UInt16 = 1 << 8, wakSts: UInt16 = 1 << 15
    public static let sciEn: UInt16 = 1 << 0, slpEn: UInt16 = 1 << 13

    /// SLP_TYP 0 is soft-off (\_S5), 2 is S4 (\_S4, QEMU's s4_val); other values (S3) are passed on.
    public enum SleepRequest: Sendable, Equatable { case softOff, suspendToDisk, suspend(UInt8) }
    public static let s4Type: UInt8 = 2

    struct State {
        var pm1Sts: UInt16 = 0
        var pm1En: UInt16 = 0
        var pm1Cnt: UInt16 = PIIX4PM.sciEn   // ACPI mode from the start (no SMI handshake)
        var gpeSts: UInt16 = 0
        var gpeEn: UInt16 = 0
    }

    private let state = Mutex(State())
    private let sci: IRQLine
    private let sleep: @Sendable (SleepRequest) -> Void
    private let clock: @Sendable () -> UInt64

    /// `clock` returns monotonic nanoseconds (injectable for tests).
    public init(sci: IRQLine, sleep: @escaping @Sendable (SleepRequest) -> Void,
                clock: @escaping @Sendable () -> UInt64 = PIIX4PM.monotonicNanos) {
        self.sci = sci
        self.sleep = sleep
        self.clock = clock
        config = Mutex(PIIX4PM.initialConfig())
    }

    static func initialConfig() -> PCIConfigSpace {
        var c = PCIConfigSpace(vendor: 0x8086, device: 0x7113, classCode: 0x06_80_00, revision: 0x03,
                               subsystemVendor: 0x1AF4, subsystem: 0x1100, interruptPin: 1)
        c.set32(0x40, UInt32(PIIX4PM.pmBase) | 1)   // PMBA, as firmware programs it
        c.set8(0x80, 0x01)                           // PMREGMISC: PM I/O enabled
        c.set8(0x3C, PIIX4PM.sciIRQ)
        // DEVACTB APMC_EN already set: there is no SMM, and this tells SeaBIOS (as QEMU does with
        // smm=off) not to wait for an SMI handler that would never run.
        c.set8(0x5B, 0x02)
        return c
    }

    public static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// The 24-bit PM timer value now.
    public var timerValue: UInt32 {
        let ns = clock()
        let ticks = ns.multipliedFullWidth(by: PIIX4PM.timerHz)
        let (q, _) = UInt64(1_000_000_000).dividingFullWidth((ticks.high, ticks.low))
        return UInt32(truncatingIfNeeded: q) & 0xFF_FFFF
    }

    public func pressPowerButton() {
        state.withLock { $0.pm1Sts |= PIIX4PM.pwrbtnSts }
        updateSCI()
    }

    public func reset() {
        state.withLock { $0 = State() }
        updateSCI()
    }

    public func pciReset() { config.withLock { $0 = PIIX4PM.initialConfig() } }

    private func updateSCI() {
        let level = state.withLock { s in
            (s.pm1Sts & s.pm1En & (PIIX4PM.tmrSts | PIIX4PM.gblSts | PIIX4PM.pwrbtnSts)) != 0 || (s.gpeSts & s.gpeEn) != 0
        }
        sci.set(level)
    }

    /// A byte-granular view of the registers so that any access width works.
    private func readByte(_ off: Int) -> UInt8 {
        if off >= 8 && off < 12 {
            return UInt8(truncatingIfNeeded: timerValue >> (8 * UInt32(off - 8)))
        }
        return state.withLock { s in
            switch off {
            case 0: return UInt8(s.pm1Sts & 0xFF)
            case 1: return UInt8(s.pm1Sts >> 8)
            case 2: return UInt8(s.pm1En & 0xFF)
            case 3: return UInt8(s.pm1En >> 8)
            case 4: return UInt8(s.pm1Cnt & 0xFF)
            case 5: return UInt8(s.pm1Cnt >> 8)
            default: return 0
            }
        }
    }

    fileprivate func pmRead(_ offset: UInt64, _ size: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<size { v |= UInt64(readByte(Int(offset) + i)) << (8 * UInt64(i)) }
        return v
    }

    fileprivate func pmWrite(_ offset: UInt64, _ size: Int, _ value: UInt64) {
        var request: SleepRequest? = nil
        state.withLock { s in
            for i in 0..<size {
                let b = UInt16((value >> (8 * UInt64(i))) & 0xFF)
                switch Int(offset) + i {
                case 0: s.pm1Sts &= ~b
                case 1: s.pm1Sts &= ~(b << 8)
                case 2: s.pm1En = (s.pm1En & 0xFF00) | b
                case 3: s.pm1En = (s.pm1En & 0x00FF) | (b << 8)
                case 4: s.pm1Cnt = (s.pm1Cnt & 0xFF00) | b | PIIX4PM.sciEn
                case 5:
                    let v = (s.pm1Cnt & 0x00FF) | (b << 8)
                    if v & PIIX4PM.slpEn != 0 {
                        let typ = UInt8((v >> 10) & 7)
                        request = typ == 0 ? .softOff : typ == PIIX4PM.s4Type ? .suspendToDisk : .suspend(typ)
                    }
                    s.pm1Cnt = v & ~PIIX4PM.slpEn
                default: break
                }
            }
        }
        updateSCI()
        if let request { sleep(request) }
    }

    fileprivate func gpeRead(_ offset: UInt64, _ size: Int) -> UInt64 {
        state.withLock { s in
            var v: UInt64 = 0
            for i in 0..<size {
                let o = Int(offset) + i
                let b: UInt16 = o < 2 ? s.gpeSts >> (8 * UInt16(o)) : s.gpeEn >> (8 * UInt16(o - 2))
                v |= UInt64(b & 0xFF) << (8 * UInt64(i))
            }
            return v
        }
    }

    fileprivate func gpeWrite(_ offset: UInt64, _ size: Int, _ value: UInt64) {
        state.withLock { s in
            for i in 0..<size {
                let o = Int(offset) + i
                let b = UInt16((value >> (8 * UInt64(i))) & 0xFF)
                switch o {
                case 0, 1: s.gpeSts &= ~(b << (8 * UInt16(o)))
                case 2, 3:
                    let sh = 8 * UInt16(o - 2)
                    s.gpeEn = (s.gpeEn & ~(0xFF << sh)) | (b << sh)
                default: break
                }
            }
        }
        updateSCI()
    }

    /// Register windows for the port bus.
    public var pmRegisters: any BusDevice { PMWindow(pm: self, gpe: false) }
    public var gpeRegisters: any BusDevice { PMWindow(pm: self, gpe: true) }
}

private final class PMWindow: BusDevice {
    let pm: PIIX4PM
    let gpe: Bool
    init(pm: PIIX4PM, gpe: Bool) {
        self.pm = pm
        self.gpe = gpe
    }
    func busRead(offset: UInt64, size: Int) -> UInt64 { gpe ? pm.gpeRead(offset, size) : pm.pmRead(offset, size) }
    func busWrite(offset: UInt64, size: Int, value: UInt64) {
        if gpe { pm.gpeWrite(offset, size, value) } else { pm.pmWrite(offset, size, value) }
    }
}
