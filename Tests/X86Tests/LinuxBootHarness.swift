// A tiny Linux direct-boot harness for driving CPU correctness (the real machine lives in the
// Machine target). Loads a bzImage at 16 MiB, builds a zero page with an e820 map and a command
// line, identity-maps the first GiB, and enters the kernel's 64-bit entry (startup_64) exactly as
// the boot protocol describes, or the 32-bit entry with X86_LINUX_ENTRY=32.
//
// Devices: COM1 (enough 8250 for earlyprintk and the console: LSR says "transmitter empty",
// scratch register works), port 0x61/PIT channel 2 for TSC calibration, isa-debug-exit. No
// interrupt controller: the harness reports how far the guest gets.
//
// Run: X86_LINUX_KERNEL=/path/vmlinuz swift test -c release --filter LinuxBootHarness
// (bench/x86-speed.sh sets it up through bench/x86-linux-assets.sh, which fetches the Debian kernel with apt-get download and dpkg -x).

import Foundation
import XCTest
@testable import X86

final class BootPlatform: X86Platform, @unchecked Sendable {
    let memory: GuestMemory
    let ram: UnsafeMutableRawPointer
    let ramSize: Int
    var output: [UInt8] = []
    var stopAt: UInt64
    var stopped = false
    var scratch: UInt8 = 0
    var lcr: UInt8 = 0
    var port61: UInt8 = 0
    var pit2Start: UInt64 = 0
    var pit2Count: UInt16 = 0xFFFF
    var pitLatch: [UInt8] = []
    var marker: String?
    var lineBuf: [UInt8] = []
    let start = monotonicNanos()

    init(ramMiB: Int, seconds: Double) {
        ramSize = ramMiB << 20
        ram = .allocate(byteCount: ramSize, alignment: 1 << 21)
        ram.initializeMemory(as: UInt8.self, repeating: 0, count: ramSize)
        memory = GuestMemory(regions: [GuestRAMRegion(guestPhysical: 0, size: UInt64(ramSize), host: ram)])
        stopAt = monotonicNanos() + UInt64(seconds * 1e9)
    }

    func mmioRead(cpu: Int, address: UInt64, size: Int) -> UInt64 { 0 }
    func mmioWrite(cpu: Int, address: UInt64, size: Int, value: UInt64) {}

    func portRead(cpu: Int, port: UInt16, size: Int) -> UInt32 {
        switch port {
        case 0x3F8: return 0
        case 0x3F9: return 0
        case 0x3FA: return 0xC1
        case 0x3FB: return UInt32(lcr)
        case 0x3FC: return 0
        case 0x3FD: return 0x60
        case 0x3FE: return 0xB0
        case 0x3FF: return UInt32(scratch)
        case 0x61:
            // Bit 5: PIT channel 2 output, high once the programmed count has elapsed.
            let elapsed = (monotonicNanos() - pit2Start) * 1_193_182 / 1_000_000_000
            let out: UInt8 = elapsed >= UInt64(pit2Count) ? 0x20 : 0
            return UInt32((port61 & 0x0F) | out)
        case 0x42:
            if pitLatch.isEmpty {
                let elapsed = (monotonicNanos() - pit2Start) * 1_193_182 / 1_000_000_000
                let v = UInt16(truncatingIfNeeded: UInt64(pit2Count) &- elapsed)
                pitLatch = [UInt8(v & 0xFF), UInt8(v >> 8)]
            }
            return UInt32(pitLatch.removeFirst())
        default: return UInt32.max >> UInt32(32 - 8 * size)
        }
    }

    var pitWriteLow: UInt8? = nil
    func portWrite(cpu: Int, port: UInt16, size: Int, value: UInt32) {
        let b = UInt8(truncatingIfNeeded: value)
        switch port {
        case 0x3F8:
            if lcr & 0x80 != 0 { return }
            output.append(b)
            FileHandle.standardError.write(Data([b]))
            if let marker, String(decoding: output.suffix(marker.utf8.count), as: UTF8.self) == marker { stopped = true }
        case 0x3FB: lcr = b
        case 0x3FF: scratch = b
        case 0x61:
            if b & 1 != 0 && port61 & 1 == 0 { pit2Start = monotonicNanos() }
            port61 = b
        case 0x43: pitLatch = []
        case 0x42:
            if let lo = pitWriteLow { pit2Count = UInt16(b) << 8 | UInt16(lo); pitWriteLow = nil; pit2Start = monotonicNanos() }
            else { pitWriteLow = b }
        case 0xF4: stopped = true
        default: break
        }
    }

    func readMSR(cpu: Int, index: UInt32) -> UInt64? { nil }
    func writeMSR(cpu: Int, index: UInt32, value: UInt64) -> Bool { false }
    func hasPendingInterrupt(cpu: Int) -> Bool { false }
    func acknowledgeInterrupt(cpu: Int) -> UInt8? { nil }
    func takePendingEvents(cpu: Int) -> X86PendingEvents { X86PendingEvents() }
    func waitForInterrupt(cpu: Int, deadlineNanos: UInt64?) {
        FileHandle.standardError.write("\n[harness] HLT with interrupts \(cpu)\n".data(using: .utf8)!)
        stopped = true
    }
    func shouldStop(cpu: Int) -> Bool { stopped || monotonicNanos() > stopAt }

    func write(_ bytes: [UInt8], at addr: Int) {
        bytes.withUnsafeBytes { (ram + addr).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    }
    func w16(_ a: Int, _ v: UInt16) { (ram + a).storeBytes(of: v, as: UInt16.self) }
    func w32(_ a: Int, _ v: UInt32) { (ram + a).storeBytes(of: v, as: UInt32.self) }
    func w64(_ a: Int, _ v: UInt64) { (ram + a).storeBytes(of: v, as: UInt64.self) }
    func w8(_ a: Int, _ v: UInt8) { (ram + a).storeBytes(of: v, as: UInt8.self) }
}

final class LinuxBootHarness: XCTestCase {
    func testBootLinux() throws {
        let env = ProcessInfo.processInfo.environment
        guard let kpath = env["X86_LINUX_KERNEL"] else {
            throw XCTSkip("set X86_LINUX_KERNEL=/path/to/vmlinuz (bench/x86-linux-assets.sh prints it)")
        }
        let kernel = [UInt8](try Data(contentsOf: URL(fileURLWithPath: kpath)))
        let seconds = Double(env["X86_LINUX_SECONDS"] ?? "60") ?? 60
        let ramMiB = Int(env["X86_LINUX_RAM_MIB"] ?? "256") ?? 256
        let plat = BootPlatform(ramMiB: ramMiB, seconds: seconds)
        plat.marker = env["X86_LINUX_MARKER"]
        let cmdline = env["X86_LINUX_CMDLINE"] ?? "console=ttyS0 earlyprintk=serial,ttyS0 nokaslr lpj=4000000"

        // Setup header.
        let setupSects = Int(kernel[0x1F1] == 0 ? 4 : kernel[0x1F1])
        let hdrEnd = 0x202 + Int(kernel[0x201])
        let pmOffset = (setupSects + 1) * 512
        let load = 0x100_0000
        plat.write(Array(kernel[pmOffset...]), at: load)
        let zp = 0x7000
        plat.write(Array(kernel[0x1F1..<hdrEnd]), at: zp + 0x1F1)
        plat.w8(zp + 0x210, 0xFF)                       // type_of_loader
        plat.w8(zp + 0x211, kernel[0x211] | 0x80)       // loadflags: CAN_USE_HEAP
        plat.w16(zp + 0x224, 0xFE00)                    // heap_end_ptr
        plat.w32(zp + 0x228, 0x20000)                   // cmd_line_ptr
        plat.w32(zp + 0x214, UInt32(load))              // code32_start
        plat.write(Array(cmdline.utf8) + [0], at: 0x20000)
        if let ipath = env["X86_LINUX_INITRD"] {
            let initrd = [UInt8](try Data(contentsOf: URL(fileURLWithPath: ipath)))
            let at = (ramMiB << 20) - ((initrd.count + 0xFFFFF) & ~0xFFFFF) - (16 << 20)
            plat.write(initrd, at: at)
            plat.w32(zp + 0x218, UInt32(at))
            plat.w32(zp + 0x21C, UInt32(initrd.count))
        }
        // e820.
        let e820: [(UInt64, UInt64, UInt32)] = [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2),
                                                 (0x10_0000, UInt64(ramMiB << 20) - 0x10_0000, 1)]
        for (k, e) in e820.enumerated() {
            plat.w64(zp + 0x2D0 + 20 * k, e.0); plat.w64(zp + 0x2D0 + 20 * k + 8, e.1); plat.w32(zp + 0x2D0 + 20 * k + 16, e.2)
        }
        plat.w8(zp + 0x1E8, UInt8(e820.count))

        // GDT: 0x10 code64 (or code32), 0x18 data.
        let gdt = 0x1000
        plat.w64(gdt + 0x10, 0x00AF_9B00_0000_FFFF)
        plat.w64(gdt + 0x18, 0x00CF_9300_0000_FFFF)
        plat.w64(gdt + 0x20, 0x00CF_9B00_0000_FFFF)
        // Identity map 1 GiB with 2 MiB pages: PML4 0x2000, PDPT 0x3000, PD 0x4000.
        plat.w64(0x2000, 0x3003); plat.w64(0x3000, 0x4003)
        for k in 0..<512 { plat.w64(0x4000 + 8 * k, UInt64(k) << 21 | 0x83) }

        let cpu = X86VCPU(index: 0, platform: plat, model: try CPUModel(parsing: env["X86_LINUX_CPU"] ?? "qemu64"))
        var regs = cpu.registers
        regs.gdt = X86TableRegister(base: UInt64(gdt), limit: 0x27)
        regs.idt = X86TableRegister(base: 0, limit: 0)
        regs.ds = .flatData(selector: 0x18); regs.es = regs.ds; regs.ss = regs.ds; regs.fs = regs.ds; regs.gs = regs.ds
        regs.rsi = UInt64(zp)
        regs.rflags = 2
        if env["X86_LINUX_ENTRY"] == "32" {
            regs.cs = .flatCode32(selector: 0x20)
            regs.cr0 = 0x11
            regs.rip = UInt64(load)
        } else {
            regs.cs = .flatCode64(selector: 0x10)
            regs.cr0 = 0x8005_0033; regs.cr3 = 0x2000; regs.cr4 = 0x20; regs.efer = 0x500
            regs.rip = UInt64(load + 0x200)
        }
        cpu.registers = regs
        let t0 = monotonicNanos()
        let why = cpu.run()
        let dt = Double(monotonicNanos() - t0) / 1e9
        let n = cpu.instructionsRetired
        let r = cpu.registers
        print("\n[harness] exit \(why) after \(String(format: "%.2f", dt)) s, \(n) instructions, \(String(format: "%.1f", Double(n) / dt / 1e6)) MIPS")
        print("[harness] RIP \(String(r.rip, radix: 16)) RSP \(String(r.rsp, radix: 16)) CR0 \(String(r.cr0, radix: 16)) CR3 \(String(r.cr3, radix: 16)) CS \(String(r.cs.selector, radix: 16))")
        if r.rip < UInt64(ramMiB << 20) {
            let bytes = (0..<16).map { String(format: "%02x", (plat.ram + Int(r.rip) + $0).load(as: UInt8.self)) }
            print("[harness] bytes at RIP: \(bytes.joined(separator: " "))")
        }
        if let m = plat.marker {
            XCTAssertTrue(String(decoding: plat.output, as: UTF8.self).contains(m), "marker \(m) not reached")
        }
    }
}
