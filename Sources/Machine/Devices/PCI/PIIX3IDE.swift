// The PIIX3 IDE function (00:01.1, 8086:7010, class 0x010180: legacy-mode ATA with bus mastering),
// which QEMU's pc machine always has, even with -nodefaults and no IDE drives. We attach no drives
// to it (-drive without if=virtio is not an IDE disk here), so it behaves as QEMU's controller with
// two empty channels:
// - the legacy command blocks (0x1F0-0x1F7, 0x170-0x177) and control ports (0x3F6, 0x376) read 0
//   (an 8-bit read of the data register 0xFF), which is how ATA drivers see "no device", and
//   ignore writes; IRQ 14 and 15 are never raised;
// - BAR4 holds the two bus-master DMA register blocks (command, status, PRD table address), plain
//   registers since no transfer can ever start without a drive.
// Config space as SeaBIOS leaves it: BAR4 assigned (given by the board), IDE decode enabled in
// IDETIM (0x40, 0x42).
import Synchronization

public final class PIIX3IDE: PCIDevice {
    public let pciName = "piix3-ide"
    public let config: Mutex<PCIConfigSpace>
    private let bmdma = BusMasterDMA()
    private let bar4: UInt64

    public static let legacyCommandBlocks: [UInt64] = [0x1F0, 0x170]
    public static let legacyControlPorts: [UInt64] = [0x3F6, 0x376]
    public static let bmdmaSize: UInt64 = 16

    /// `bar4`: the bus-master block's I/O address, as firmware assigns it (0 leaves it unassigned).
    public init(bar4: UInt64) {
        self.bar4 = bar4
        config = Mutex(PIIX3IDE.initialConfig(bmdma: bmdma, bar4: bar4))
    }

    static func initialConfig(bmdma: BusMasterDMA, bar4: UInt64) -> PCIConfigSpace {
        var c = PCIConfigSpace(vendor: 0x8086, device: 0x7010, classCode: 0x01_01_80,
                               subsystemVendor: 0x1AF4, subsystem: 0x1100)
        c.set16(PCIConfigSpace.status, 0x0280)   // DEVSEL medium, fast back-to-back, as QEMU
        c.declareBAR(4, PCIBARSpec(kind: .io, size: bmdmaSize, device: bmdma), address: bar4)
        for o in 0x40...0x43 { c.writeMask[o] = 0xFF }   // IDETIM primary/secondary
        c.set16(0x40, 0x8000)
        c.set16(0x42, 0x8000)
        return c
    }

    public func pciReset() {
        bmdma.reset()
        config.withLock { $0 = PIIX3IDE.initialConfig(bmdma: bmdma, bar4: bar4) }
    }

    /// The legacy ports of one empty channel (8 command-block ports, or the one control port).
    public static func emptyChannelPorts() -> any BusDevice { EmptyATAChannel() }
}

/// An ATA channel with no drives: every register reads 0, except 8-bit reads of the data register.
final class EmptyATAChannel: BusDevice {
    func busRead(offset: UInt64, size: Int) -> UInt64 { offset == 0 && size == 1 ? 0xFF : 0 }
    func busWrite(offset: UInt64, size: Int, value: UInt64) {}
}

/// Bus-master IDE registers for two channels (8 bytes each): command (start, direction), status
/// (active, error and interrupt write-1-to-clear, drive DMA-capable bits), PRD table address.
final class BusMasterDMA: BusDevice {
    struct Channel { var command: UInt8 = 0; var status: UInt8 = 0; var prdt: UInt32 = 0 }
    private let channels = Mutex([Channel(), Channel()])

    func reset() { channels.withLock { $0 = [Channel(), Channel()] } }

    func busRead(offset: UInt64, size: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<UInt64(size) { v |= UInt64(readByte(offset + i)) << (8 * i) }
        return v
    }

    func busWrite(offset: UInt64, size: Int, value: UInt64) {
        for i in 0..<UInt64(size) { writeByte(offset + i, UInt8(truncatingIfNeeded: value >> (8 * i))) }
    }

    private func readByte(_ off: UInt64) -> UInt8 {
        guard off < 16 else { return 0xFF }
        return channels.withLock { ch in
            let c = ch[Int(off / 8)]
            switch off % 8 {
            case 0: return c.command
            case 2: return c.status
            case 4...7: return UInt8(truncatingIfNeeded: c.prdt >> (8 * UInt32(off % 8 - 4)))
            default: return 0xFF
            }
        }
    }

    private func writeByte(_ off: UInt64, _ b: UInt8) {
        guard off < 16 else { return }
        channels.withLock { ch in
            let i = Int(off / 8)
            switch off % 8 {
            case 0:
                // Start/stop only sets the active bit: with no drive nothing is ever transferred.
                if b & 0x01 != ch[i].command & 0x01 { ch[i].status = b & 0x01 != 0 ? ch[i].status | 0x01 : ch[i].status & ~0x01 }
                ch[i].command = b & 0x09
            case 2: ch[i].status = (ch[i].status & 0x01) | (ch[i].status & ~b & 0x06) | (b & 0x60)
            case 4...7:
                let sh = 8 * UInt32(off % 8 - 4)
                ch[i].prdt = (ch[i].prdt & ~(0xFF << sh)) | (UInt32(b) << sh)
                ch[i].prdt &= ~3
            default: break
            }
        }
    }
}
