// Small adapters for registering one device's registers in pieces (the i8042's 0x60 and 0x64 are
// one device with a gap; 0xCF9 sits inside the PCI address register's range).

/// Shows `device`'s registers shifted by `offset` (accesses at 0 reach `device` at `offset`).
public final class OffsetWindow: BusDevice {
    let device: any BusDevice
    let offset: UInt64
    public init(_ device: any BusDevice, offset: UInt64) {
        self.device = device
        self.offset = offset
    }
    public func busRead(offset o: UInt64, size: Int) -> UInt64 { device.busRead(offset: o + offset, size: size) }
    public func busWrite(offset o: UInt64, size: Int, value: UInt64) { device.busWrite(offset: o + offset, size: size, value: value) }
}
