// A minimal machine for CPU tests: flat RAM, the test image as BIOS ROM (mapped at the top of 4 GiB
// and at 0xF0000 like QEMU's -bios), a COM1 byte sink (LSR always reports "transmitter empty"),
// and isa-debug-exit at port 0xF4. No interrupt controller: HLT with nothing pending ends the run.

import Foundation
import Synchronization
@testable import X86

final class TestPlatform: X86Platform, @unchecked Sendable {
    let memory: GuestMemory
    let ramSize: Int
    let ram: UnsafeMutableRawPointer
    let rom: UnsafeMutableRawPointer
    var output: [UInt8] = []
    var exitCode: Int? = nil
    var halted = false
    var deadline: UInt64
    var pendingVector: UInt8? = nil
    var echo = false

    init(bios: [UInt8], ramMiB: Int = 32, seconds: Double = 20) {
        let ramSize = ramMiB << 20
        let ram = UnsafeMutableRawPointer.allocate(byteCount: ramSize, alignment: 4096)
        ram.initializeMemory(as: UInt8.self, repeating: 0, count: ramSize)
        let rom = UnsafeMutableRawPointer.allocate(byteCount: bios.count, alignment: 4096)
        bios.withUnsafeBytes { rom.copyMemory(from: $0.baseAddress!, byteCount: bios.count) }
        self.ramSize = ramSize; self.ram = ram; self.rom = rom
        let n = UInt64(bios.count)
        var regions = [
            GuestRAMRegion(guestPhysical: 0, size: 0xA0000, host: ram),
            GuestRAMRegion(guestPhysical: 0x10_0000, size: UInt64(ramSize) - 0x10_0000, host: ram + 0x10_0000),
            GuestRAMRegion(guestPhysical: 0x1_0000_0000 - n, size: n, host: rom, readOnly: true),
        ]
        let low = min(n, 0x20000)
        regions.append(GuestRAMRegion(guestPhysical: 0x10_0000 - low, size: low, host: rom + Int(n - low), readOnly: true))
        memory = GuestMemory(regions: regions)
        deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
    }

    deinit { ram.deallocate(); rom.deallocate() }

    func mmioRead(cpu: Int, address: UInt64, size: Int) -> UInt64 { UInt64.max >> UInt64(64 - 8 * size) }
    func mmioWrite(cpu: Int, address: UInt64, size: Int, value: UInt64) {}

    func portRead(cpu: Int, port: UInt16, size: Int) -> UInt32 {
        switch port {
        case 0x3FD: return 0x60
        default: return UInt32.max >> UInt32(32 - 8 * size)
        }
    }

    func portWrite(cpu: Int, port: UInt16, size: Int, value: UInt32) {
        switch port {
        case 0x3F8:
            output.append(UInt8(truncatingIfNeeded: value))
            if echo { FileHandle.standardError.write(Data([UInt8(truncatingIfNeeded: value)])) }
        case 0xF4: exitCode = Int(value & 0xFF) << 1 | 1
        default: break
        }
    }

    func readMSR(cpu: Int, index: UInt32) -> UInt64? { nil }
    func writeMSR(cpu: Int, index: UInt32, value: UInt64) -> Bool { false }
    func hasPendingInterrupt(cpu: Int) -> Bool { pendingVector != nil }
    func acknowledgeInterrupt(cpu: Int) -> UInt8? { defer { pendingVector = nil }; return pendingVector }
    func takePendingEvents(cpu: Int) -> X86PendingEvents { X86PendingEvents() }
    func waitForInterrupt(cpu: Int, deadlineNanos: UInt64?) { halted = true }
    func shouldStop(cpu: Int) -> Bool {
        exitCode != nil || halted || DispatchTime.now().uptimeNanoseconds > deadline
    }

    var text: String { String(decoding: output, as: UTF8.self) }
}
