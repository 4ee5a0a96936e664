// isa-debug-exit (QEMU's test device, default iobase 0x501, iosize 2): a write of value v ends the
// process with exit status (v << 1) | 1, exactly as QEMU does, so test guests report pass/fail.
public final class DebugExit: BusDevice {
    private let exit: @Sendable (Int32) -> Void

    /// `exit` is called with the status; the machine stops its vCPUs and exits with it.
    public init(exit: @escaping @Sendable (Int32) -> Void) { self.exit = exit }

    public func busRead(offset: UInt64, size: Int) -> UInt64 { IOBus.allOnes(size) }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        exit(Int32(truncatingIfNeeded: (value << 1) | 1))
    }
}

/// isa-debugcon (QEMU's debug console, default iobase 0xE9; SeaBIOS prints its log to 0x402): bytes
/// written go to a character device; reads return 0xE9, which is how firmware detects it.
public final class DebugCon: BusDevice {
    private let output: any SerialOutput

    public init(output: any SerialOutput) { self.output = output }

    public func busRead(offset: UInt64, size: Int) -> UInt64 { 0xE9 }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        output.serialWrite([UInt8(truncatingIfNeeded: value)])
    }
}
