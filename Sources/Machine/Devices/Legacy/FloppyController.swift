// The ISA floppy disk controller (an 82078 at 0x3F0-0x3F5 and 0x3F7, IRQ 6, DMA 2) that QEMU's pc
// machine has even with -nodefaults, with no drives attached (CMOS 0x10 says none), so that Linux
// enumerates the same PNP devices and its floppy driver probes it as QEMU's ("FDC 0 is a S82078B").
//
// Registers as QEMU's fdc.c: status A/B (0, 1), digital output (2: drive select, reset, DMA gate,
// motors), tape drive (3), main status (4, read: RQM, DIO, busy) / data rate select (4, write:
// software reset, power down), FIFO (5), digital input (7, read) / configuration control (7, write).
// Commands go through the FIFO in three phases: command bytes, execution, result bytes. A reset
// (DOR bit 2 rising, or DSR bit 7) raises IRQ 6 and owes four SENSE INTERRUPT STATUS answers, one
// per polled drive. Implemented: SPECIFY, SENSE DRIVE STATUS, RECALIBRATE, SEEK (and the relative
// seeks), SENSE INTERRUPT STATUS, DUMPREG, VERSION (0x90), PART ID (0x41), LOCK/UNLOCK, CONFIGURE,
// PERPENDICULAR MODE, POWERDOWN MODE, OPTION, SAVE and RESTORE. Data commands (read, write, verify,
// scan, format, read ID) find no medium and end at once with "abnormal termination, missing address
// mark"; other opcodes answer 0x80 (invalid command).
import Synchronization

public final class FloppyController: BusDevice {
    static let version: UInt8 = 0x90
    /// MSR bits.
    static let rqm: UInt8 = 0x80, dio: UInt8 = 0x40, busy: UInt8 = 0x10
    /// DOR bits.
    static let dorReset: UInt8 = 0x04, dorDMA: UInt8 = 0x08
    static let intPending: UInt8 = 0x80   // SRA
    static let readyChanged: UInt8 = 0xC0 // ST0 after a reset (polling)
    static let drives = 2

    enum Phase { case command, result }

    struct State {
        var sra: UInt8 = 0x40          // no second drive
        var srb: UInt8 = 0xC0
        var dor: UInt8 = FloppyController.dorReset | FloppyController.dorDMA
        var tdr: UInt8 = 0
        var dsr: UInt8 = 0
        var msr: UInt8 = FloppyController.rqm
        var status0: UInt8 = 0
        var phase = Phase.command
        var fifo = [UInt8](repeating: 0, count: 32)
        var dataPos = 0
        var dataLen = 1
        var resetSensei = 0
        var currentDrive = 0
        var track = [UInt8](repeating: 0, count: FloppyController.drives)
        var head: UInt8 = 0
        var perpendicular: UInt8 = 0
        var timer0: UInt8 = 0, timer1: UInt8 = 0
        var config: UInt8 = 0x60       // implied seek, FIFO disabled, polling on (QEMU's)
        var precompTrack: UInt8 = 0
        var lock: UInt8 = 0
        var powerdown: UInt8 = 0
        var irqLevel = false
    }

    private let state = Mutex(State())
    private let irq: IRQLine?

    public init(irq: IRQLine?) { self.irq = irq }

    public func resetState() {
        state.withLock { s in
            let level = s.irqLevel
            s = State()
            s.irqLevel = level
            resetController(&s, raiseIRQ: false)
        }
    }

    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        UInt64(state.withLock { s -> UInt8 in
            switch offset {
            case 0: return s.sra
            case 1: return s.srb
            case 2: return s.dor | UInt8(s.currentDrive)
            case 3: return s.tdr
            case 4:
                s.dsr &= ~0x40
                s.dor |= FloppyController.dorReset   // as QEMU: reading MSR ends a DOR reset
                return s.msr
            case 5: return readFIFO(&s)
            case 7: return 0x80                      // disk changed: no medium in any drive
            default: return 0xFF
            }
        })
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        let v = UInt8(truncatingIfNeeded: value)
        state.withLock { s in
            switch offset {
            case 2: writeDOR(v, &s)
            case 3 where s.dor & FloppyController.dorReset != 0: s.tdr = v & 0x0C
            case 4 where s.dor & FloppyController.dorReset != 0:
                if v & 0x80 != 0 {                    // software reset, self-clearing
                    resetController(&s, raiseIRQ: true)
                } else if v & 0x40 != 0 {             // power down: leaves through a reset
                    resetController(&s, raiseIRQ: true)
                }
                s.dsr = v & 0x7F
            case 5: writeFIFO(v, &s)
            case 7 where s.dor & FloppyController.dorReset != 0: s.dsr = (s.dsr & ~0x03) | (v & 0x03)
            default: break
            }
        }
    }

    // MARK: reset and interrupt

    private func setIRQ(_ level: Bool, _ s: inout State) {
        guard level != s.irqLevel else { return }
        s.irqLevel = level
        irq?.set(level)
    }

    private func raiseIRQ(_ s: inout State) {
        s.sra |= FloppyController.intPending
        setIRQ(true, &s)
        s.resetSensei = 0
    }

    private func lowerIRQ(_ s: inout State) {
        s.status0 = 0
        s.sra &= ~FloppyController.intPending
        setIRQ(false, &s)
    }

    private func resetController(_ s: inout State, raiseIRQ doIRQ: Bool) {
        lowerIRQ(&s)
        s.sra = 0x40
        s.srb = 0xC0
        s.currentDrive = 0
        s.dor = FloppyController.dorReset | FloppyController.dorDMA
        s.msr = FloppyController.rqm
        s.resetSensei = 0
        for d in 0..<FloppyController.drives { s.track[d] = 0 }
        s.head = 0
        toCommandPhase(&s)
        if doIRQ {
            s.status0 |= FloppyController.readyChanged
            raiseIRQ(&s)
            s.resetSensei = 4
        }
    }

    private func writeDOR(_ v: UInt8, _ s: inout State) {
        if v & 0x10 != 0 { s.srb |= 0x01 } else { s.srb &= ~0x01 }   // motor 0
        if v & 0x20 != 0 { s.srb |= 0x02 } else { s.srb &= ~0x02 }   // motor 1
        if v & 0x01 != 0 { s.srb |= 0x20 } else { s.srb &= ~0x20 }   // drive select
        if v & FloppyController.dorReset != 0 && s.dor & FloppyController.dorReset == 0 {
            resetController(&s, raiseIRQ: true)                        // leaving reset
            s.dsr &= ~0x40
        }
        s.currentDrive = Int(v & 0x01)
        s.dor = v & ~0x03
    }

    // MARK: FIFO and phases

    private func toCommandPhase(_ s: inout State) {
        s.phase = .command
        s.dataPos = 0
        s.dataLen = 1
        s.msr &= ~(FloppyController.busy | FloppyController.dio)
        s.msr |= FloppyController.rqm
    }

    private func toResultPhase(_ bytes: [UInt8], _ s: inout State) {
        for (i, b) in bytes.enumerated() { s.fifo[i] = b }
        s.phase = .result
        s.dataLen = bytes.count
        s.dataPos = 0
        s.msr |= FloppyController.busy | FloppyController.rqm | FloppyController.dio
    }

    private func readFIFO(_ s: inout State) -> UInt8 {
        s.dsr &= ~0x40
        guard s.phase == .result, s.msr & FloppyController.rqm != 0, s.msr & FloppyController.dio != 0 else { return 0 }
        let b = s.fifo[s.dataPos]
        s.dataPos += 1
        if s.dataPos == s.dataLen {
            toCommandPhase(&s)
            lowerIRQ(&s)
        }
        return b
    }

    private func writeFIFO(_ v: UInt8, _ s: inout State) {
        guard s.dor & FloppyController.dorReset != 0, s.phase == .command,
              s.msr & FloppyController.rqm != 0, s.msr & FloppyController.dio == 0 else { return }
        s.dsr &= ~0x40
        s.fifo[s.dataPos] = v
        s.dataPos += 1
        if s.dataPos == 1 {
            s.dataLen = FloppyController.parameterCount(v) + 1
            s.msr |= FloppyController.busy
        }
        if s.dataPos == s.dataLen { execute(&s) }
    }

    /// Parameter bytes after each opcode (QEMU's table, by opcode and mask).
    static func parameterCount(_ op: UInt8) -> Int {
        switch op {
        case 0x08, 0x0E, 0x10, 0x18, 0x2E: return 0                  // SENSEI, DUMPREG, VERSION, PARTID, SAVE
        case _ where op & 0x7F == 0x14: return 0                      // LOCK / UNLOCK
        case 0x07, 0x04, 0x12, 0x33: return 1                         // RECALIBRATE, SENSE DRIVE, PERPENDICULAR, OPTION
        case _ where op & 0xBF == 0x0A: return 1                      // READ ID
        case 0x0F, 0x03, 0x17, 0x8F, 0xCF: return 2                   // SEEK, SPECIFY, POWERDOWN, RELATIVE SEEKs
        case 0x13: return 3                                           // CONFIGURE
        case _ where op & 0xBF == 0x0D: return 5                      // FORMAT TRACK
        case 0x8E: return 5                                           // DRIVE SPECIFICATION
        case 0xCD: return 10                                          // FORMAT AND WRITE
        case 0x4E: return 17                                          // RESTORE
        case _ where isDataCommand(op): return 8
        default: return 0
        }
    }

    /// READ, WRITE, READ TRACK, READ/WRITE DELETED, SCANs and VERIFY.
    static func isDataCommand(_ op: UInt8) -> Bool {
        [0x06, 0x0C, 0x11, 0x16, 0x19, 0x1D].contains(op & 0x1F) || [0x05, 0x09].contains(op & 0x3F) || op & 0xBF == 0x02
    }

    private func execute(_ s: inout State) {
        let op = s.fifo[0]
        let p = Array(s.fifo[1..<s.dataLen])
        func select() { s.currentDrive = Int(p[0] & 0x01) }
        switch op {
        case 0x03:                                      // SPECIFY
            s.timer0 = p[0] >> 4
            s.timer1 = p[1] >> 1
            if p[1] & 1 != 0 { s.dor &= ~FloppyController.dorDMA } else { s.dor |= FloppyController.dorDMA }
            toCommandPhase(&s)
        case 0x04:                                      // SENSE DRIVE STATUS: track 0, two-sided
            select()
            s.head = (p[0] >> 2) & 1
            toResultPhase([(s.track[s.currentDrive] == 0 ? 0x10 : 0) | s.head << 2 | UInt8(s.currentDrive) | 0x28], &s)
        case 0x07:                                      // RECALIBRATE
            select()
            s.track[s.currentDrive] = 0
            s.head = 0
            seekDone(&s)
        case 0x0F:                                      // SEEK
            select()
            s.track[s.currentDrive] = p[1]
            seekDone(&s)
        case 0xCF:                                      // RELATIVE SEEK IN (80 tracks)
            select()
            s.track[s.currentDrive] = UInt8(min(Int(s.track[s.currentDrive]) + Int(p[1]), 79))
            seekDone(&s)
        case 0x8F:                                      // RELATIVE SEEK OUT
            select()
            s.track[s.currentDrive] = p[1] > s.track[s.currentDrive] ? 0 : s.track[s.currentDrive] - p[1]
            seekDone(&s)
        case 0x08:                                      // SENSE INTERRUPT STATUS
            let st0: UInt8
            if s.resetSensei > 0 {
                st0 = FloppyController.readyChanged + UInt8(4 - s.resetSensei)
                s.resetSensei -= 1
            } else if s.sra & FloppyController.intPending == 0 {
                toResultPhase([0x80], &s)
                return
            } else {
                st0 = (s.status0 & ~0x07) | UInt8(s.currentDrive)
            }
            toResultPhase([st0, s.track[s.currentDrive]], &s)
            lowerIRQ(&s)
            s.status0 = FloppyController.readyChanged
        case 0x0E:                                      // DUMPREG
            toResultPhase([s.track[0], s.track[1], 0, 0, s.timer0, s.timer1 << 1 | (s.dor & FloppyController.dorDMA != 0 ? 1 : 0),
                           0, s.lock << 7 | s.perpendicular << 2, s.config, s.precompTrack], &s)
        case 0x10: toResultPhase([FloppyController.version], &s)
        case 0x18: toResultPhase([0x41], &s)            // PART ID: 82078, stepping 1
        case 0x14, 0x94:                                // UNLOCK / LOCK
            s.lock = op & 0x80 != 0 ? 1 : 0
            toResultPhase([s.lock << 4], &s)
        case 0x12:                                      // PERPENDICULAR MODE
            if p[0] & 0x80 != 0 { s.perpendicular = p[0] & 0x07 }
            toCommandPhase(&s)
        case 0x13:                                      // CONFIGURE
            s.config = p[1]
            s.precompTrack = p[2]
            toCommandPhase(&s)
        case 0x17:                                      // POWERDOWN MODE
            s.powerdown = p[0]
            toResultPhase([p[0]], &s)
        case 0x33: toCommandPhase(&s)                   // OPTION
        case 0x2E:                                      // SAVE
            toResultPhase([0, 0, s.track[0], s.track[1], 0, 0, s.timer0, s.timer1, 0, s.lock << 7 | s.perpendicular << 2,
                           s.config, s.precompTrack, s.powerdown, 0, 0], &s)
        case 0x4E:                                      // RESTORE
            s.track[0] = p[2]
            s.track[1] = p[3]
            s.timer0 = p[6]
            s.timer1 = p[7]
            s.lock = p[9] >> 7
            s.perpendicular = (p[9] >> 2) & 0x0F
            s.config = p[10]
            s.precompTrack = p[11]
            s.powerdown = p[12]
            toCommandPhase(&s)
        case _ where FloppyController.isDataCommand(op) || op & 0xBF == 0x0D || op & 0xBF == 0x0A:
            // No medium: abnormal termination, missing address mark, at once.
            select()
            s.head = (p[0] >> 2) & 1
            s.status0 = 0x40 | s.head << 2 | UInt8(s.currentDrive)
            toResultPhase([s.status0, 0x01, 0x00, s.track[s.currentDrive], s.head, 1, 2], &s)
            raiseIRQ(&s)
        default:
            toResultPhase([0x80], &s)                   // invalid command
        }
    }

    private func seekDone(_ s: inout State) {
        toCommandPhase(&s)
        s.status0 |= 0x20                               // seek end
        raiseIRQ(&s)
    }
}
