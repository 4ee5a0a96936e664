// QEMU's firmware configuration device (fw_cfg), I/O port interface: selector at 0x510 (16-bit),
// data at 0x511 (byte stream), DMA address at 0x514 (big-endian, 64-bit; writing the low half
// starts the transfer). Items are byte arrays under a 16-bit key; named files appear in the
// directory (key 0x19) from key 0x20 on, sorted by name, as firmware (SeaBIOS, OVMF) expects.
//
// DMA control words come from guest RAM and are checked: the descriptor and every buffer must be
// RAM, reads past an item's end return zeroes (as QEMU does), and writes are refused (error bit).
import Synchronization

public final class FwCfg: BusDevice {
    public static let signature: UInt16 = 0x00, id: UInt16 = 0x01, uuid: UInt16 = 0x02, ramSize: UInt16 = 0x03
    public static let nbCPUs: UInt16 = 0x05, maxCPUs: UInt16 = 0x0F, fileDir: UInt16 = 0x19
    public static let kernelAddr: UInt16 = 0x07, kernelSize: UInt16 = 0x08, kernelCmdline: UInt16 = 0x09
    public static let initrdAddr: UInt16 = 0x0A, initrdSize: UInt16 = 0x0B, bootDevice: UInt16 = 0x0C
    public static let kernelEntry: UInt16 = 0x10, kernelData: UInt16 = 0x11, initrdData: UInt16 = 0x12
    public static let cmdlineAddr: UInt16 = 0x13, cmdlineSize: UInt16 = 0x14, cmdlineData: UInt16 = 0x15
    public static let setupAddr: UInt16 = 0x16, setupSize: UInt16 = 0x17, setupData: UInt16 = 0x18
    public static let fileFirst: UInt16 = 0x20
    public static let dmaSignature: UInt64 = 0x51454D5520434647   // "QEMU CFG"

    struct State {
        var items: [UInt16: [UInt8]] = [:]
        var files: [(String, [UInt8])] = []
        var selector: UInt16 = 0
        var offset = 0
        var dmaHigh: UInt32 = 0
    }
    private let state = Mutex(State())
    private let ram: GuestRAM

    public init(ram: GuestRAM, cpus: Int) {
        self.ram = ram
        setItem(FwCfg.signature, Array("QEMU".utf8))
        setItem(FwCfg.id, AML.le(3, 4))   // traditional interface + DMA
        setItem(FwCfg.uuid, [UInt8](repeating: 0, count: 16))
        setItem(FwCfg.ramSize, AML.le(ram.ramSize, 8))
        setItem(FwCfg.nbCPUs, AML.le(UInt64(cpus), 2))
        setItem(FwCfg.maxCPUs, AML.le(UInt64(cpus), 2))
        rebuildDirectory()
    }

    public func setItem(_ key: UInt16, _ data: [UInt8]) { state.withLock { $0.items[key] = data } }

    public func addFile(_ name: String, _ data: [UInt8]) {
        state.withLock { s in
            s.files.removeAll { $0.0 == name }
            s.files.append((name, data))
            s.files.sort { $0.0 < $1.0 }
        }
        rebuildDirectory()
    }

    private func rebuildDirectory() {
        state.withLock { s in
            var dir = FwCfg.be(UInt64(s.files.count), 4)
            for (i, (name, data)) in s.files.enumerated() {
                let key = FwCfg.fileFirst + UInt16(i)
                s.items[key] = data
                var n = Array(name.utf8.prefix(55))
                n += [UInt8](repeating: 0, count: 56 - n.count)
                dir += FwCfg.be(UInt64(data.count), 4) + FwCfg.be(UInt64(key), 2) + [0, 0] + n
            }
            s.items[FwCfg.fileDir] = dir
        }
    }

    static func be(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).reversed().map { UInt8((v >> (8 * UInt64($0))) & 0xFF) } }

    // Port layout relative to 0x510: 0-1 selector, 1 data (byte), 4-11 DMA address.
    public func busRead(offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case 0 where size == 2: return UInt64(state.withLock { $0.selector })
        case 1:
            return state.withLock { s in
                var v: UInt64 = 0
                for i in 0..<size {
                    let item = s.items[s.selector] ?? []
                    let b: UInt8 = s.offset < item.count ? item[s.offset] : 0
                    if s.offset < item.count { s.offset += 1 }
                    v |= UInt64(b) << (8 * UInt64(i))
                }
                return v
            }
        case 4...11:
            // Reading the DMA register gives the signature "QEMU CFG" (big-endian).
            let sig = FwCfg.be(FwCfg.dmaSignature, 8)
            var v: UInt64 = 0
            for i in 0..<size where Int(offset) - 4 + i < 8 { v |= UInt64(sig[Int(offset) - 4 + i]) << (8 * UInt64(i)) }
            return v
        default: return IOBus.allOnes(size)
        }
    }

    public func busWrite(offset: UInt64, size: Int, value: UInt64) {
        switch (offset, size) {
        case (0, 2): state.withLock { $0.selector = UInt16(truncatingIfNeeded: value); $0.offset = 0 }
        case (4, 4): state.withLock { $0.dmaHigh = UInt32(truncatingIfNeeded: value).byteSwapped }
        case (8, 4):
            let high = state.withLock { $0.dmaHigh }
            dma(at: UInt64(high) << 32 | UInt64(UInt32(truncatingIfNeeded: value).byteSwapped))
            state.withLock { $0.dmaHigh = 0 }
        case (4, 8):
            dma(at: value.byteSwapped)
        default: break
        }
    }

    /// Runs one DMA descriptor {control, length, address} (all big-endian) at `at`.
    func dma(at: UInt64) {
        guard let c = ram.load(at, as: UInt32.self), let l = ram.load(at &+ 4, as: UInt32.self),
              let a = ram.load(at &+ 8, as: UInt64.self) else { return }
        var control = c.byteSwapped
        let length = Int(l.byteSwapped)
        let address = a.byteSwapped
        if control & 0x08 != 0 { state.withLock { $0.selector = UInt16(control >> 16); $0.offset = 0 } }
        var error = false
        if control & 0x02 != 0 || control & 0x04 != 0 {
            let data: [UInt8] = state.withLock { s in
                let item = s.items[s.selector] ?? []
                let start = min(s.offset, item.count)
                let end = min(item.count, start + length)
                s.offset = min(s.offset + length, max(item.count, s.offset))
                var d = Array(item[start..<end])
                d += [UInt8](repeating: 0, count: length - d.count)
                return d
            }
            if control & 0x02 != 0 && !ram.write(address, bytes: data) { error = true }
        } else if control & 0x10 != 0 {
            error = true   // writes to items are not supported
        }
        control = error ? 0x01 : 0
        ram.store(at, control.byteSwapped)
    }
}
