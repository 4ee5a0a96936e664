// The PC's ways to reset or stop from port I/O, each a tiny device with an injected action:
// - port 0x92 (System Control Port A): bit 0 = fast reset, bit 1 = A20 gate (A20 is always on here).
// - port 0xCF9 (PIIX reset control register): writing 0x06 (or 0x0E) after bit 1 set resets.
// The i8042's pulse of its reset line (command 0xFE) lives in I8042.swift.
import Synchronization

public final class Port92: BusDevice {
    private let value = Mutex<UInt8>(0x02)
    private let reset: @Sendable () -> Void
    public init(reset: @escaping @Sendable () -> Void) { self.reset = reset }
    public func busRead(offset: UInt64, size: Int) -> UInt64 { UInt64(value.withLock { $0 }) }
    public func busWrite(offset: UInt64, size: Int, value v: UInt64) {
        let b = UInt8(truncatingIfNeeded: v)
        value.withLock { $0 = b & 0x02 | 0x02 }   // A20 stays enabled
        if b & 0x01 != 0 { reset() }
    }
}

public final class ResetControlRegister: BusDevice {
    private let value = Mutex<UInt8>(0)
    private let reset: @Sendable () -> Void
    public init(reset: @escaping @Sendable () -> Void) { self.reset = reset }
    public func busRead(offset: UInt64, size: Int) -> UInt64 { UInt64(value.withLock { $0 }) }
    public func busWrite(offset: UInt64, size: Int, value v: UInt64) {
        let b = UInt8(truncatingIfNeeded: v)
        let doReset = value.withLock { old -> Bool in
            defer { old = b & 0x02 }
            return b & 0x04 != 0   // RST_CPU
        }
        if doReset { reset() }
    }
}
