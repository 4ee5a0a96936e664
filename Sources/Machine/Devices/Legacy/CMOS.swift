// MC146818 RTC and CMOS RAM (index port 0x70, data 0x71; registered as a 2-port range).
//
// The clock reads the host's wall clock (UTC) whenever a time register is read, in BCD or binary
// and 12/24-hour form as register B asks; UIP is never set, so readers never wait. Writes to the
// time registers set an offset from the host clock. The board fills the CMOS bytes firmware reads:
// memory sizes (0x15-0x18, 0x30-0x31, 0x34-0x35, 0x5B-0x5D), CPU count (0x5F), equipment (0x14).
// Bit 7 of the index write is the NMI mask and is not part of the index.
import Glibc
import Synchronization

public final class CMOS: BusDevice {
    public struct State: Sendable, Equatable {
        public var index: UInt8 = 0
        public var bytes = [UInt8](repeating: 0, count: 128)
        /// Seconds added to the host clock (after the guest set the time).
        public var clockOffset: Int64 = 0
        public init() {
            bytes[0x0A] = 0x26   // 32.768 kHz divider, 1024 Hz rate
            bytes[0x0B] = 0x02   // 24-hour, BCD
            bytes[0x0D] = 0x80   // valid RAM and time
        }
    }

    private let state = Mutex(State())
    private let now: @Sendable () -> Int64

    /// `now` gives seconds since the epoch (injectable for tests).
    public init(now: @escaping @Sendable () -> Int64 = { Int64(time(nil)) }) { self.now = now }

    /// Sets a CMOS byte (the board's memory-size and CPU-count bytes).
    public func setByte(_ index: Int, _ value: UInt8) {
        precondition(index >= 0 && index < 128)
        state.withLock { $0.bytes[index] = value }
    }

    public func byte(_ index: Int) -> UInt8 { state.withLock { $0.bytes[index & 0x7F] } }

    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        guard offset == 1 else { return 0xFF }
        let t = now()
        return UInt64(state.withLock { s -> UInt8 in
            let i = Int(s.index)
            switch i {
            case 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32:
                return CMOS.timeField(i, seconds: t + s.clockOffset, regB: s.bytes[0x0B])
            case 0x0C:
                let v = s.bytes[0x0C]
                s.bytes[0x0C] = 0   // reading C acknowledges
                return v
            default: return s.bytes[i]
            }
        })
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        let b = UInt8(truncatingIfNeeded: value)
        state.withLock { s in
            if offset == 0 { s.index = b & 0x7F; return }
            let i = Int(s.index)
            switch i {
            case 0x0A: s.bytes[i] = b & 0x7F   // UIP is read-only
            case 0x0C, 0x0D: break              // read-only
            default: s.bytes[i] = b
            }
        }
    }

    /// One time register for `seconds` since the epoch, encoded per register B (bit 2: binary,
    /// bit 1: 24-hour).
    static func timeField(_ index: Int, seconds: Int64, regB: UInt8) -> UInt8 {
        var t = time_t(seconds)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        let binary = regB & 0x04 != 0
        func enc(_ v: Int32) -> UInt8 {
            let v = UInt8(clamping: max(0, v))
            return binary ? v : ((v / 10) << 4) | (v % 10)
        }
        switch index {
        case 0x00: return enc(tmv.tm_sec)
        case 0x02: return enc(tmv.tm_min)
        case 0x04:
            if regB & 0x02 != 0 { return enc(tmv.tm_hour) }
            let h = tmv.tm_hour % 12 == 0 ? 12 : tmv.tm_hour % 12
            return enc(h) | (tmv.tm_hour >= 12 ? 0x80 : 0)
        case 0x06: return enc(tmv.tm_wday + 1)
        case 0x07: return enc(tmv.tm_mday)
        case 0x08: return enc(tmv.tm_mon + 1)
        case 0x09: return enc(tmv.tm_year % 100)
        case 0x32: return enc(19 + tmv.tm_year / 100)
        default: return 0
        }
    }

    /// Fills the memory-size and CPU bytes firmware (SeaBIOS) reads.
    public func setMemoryInfo(below4G: UInt64, above4G: UInt64, cpus: Int) {
        let kib = below4G / 1024
        let extKiB = min(max(Int64(kib) - 1024, 0), 0xFFFF)   // above 1 MiB, in KiB, capped
        setByte(0x15, 0x80); setByte(0x16, 0x02)               // 640 KiB base memory
        setByte(0x17, UInt8(extKiB & 0xFF)); setByte(0x18, UInt8(extKiB >> 8))
        setByte(0x30, UInt8(extKiB & 0xFF)); setByte(0x31, UInt8(extKiB >> 8))
        let above16M = below4G > 16 << 20 ? min((below4G - (16 << 20)) >> 16, 0xFFFF) : 0
        setByte(0x34, UInt8(above16M & 0xFF)); setByte(0x35, UInt8(above16M >> 8))
        let high = above4G >> 16
        setByte(0x5B, UInt8(high & 0xFF)); setByte(0x5C, UInt8((high >> 8) & 0xFF)); setByte(0x5D, UInt8((high >> 16) & 0xFF))
        setByte(0x5F, UInt8(clamping: max(cpus - 1, 0)))
        setByte(0x14, 0x06)   // FPU present, VGA/EGA
    }
}
