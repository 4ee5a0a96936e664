// Small guests run end to end under vmrun, on KVM (where /dev/kvm is usable; this host's PVM KVM
// runs them) and on the interpreter, and under QEMU TCG as the oracle: a real-mode BIOS image
// (serial output, PCI config, isa-debug-exit), a multiboot protected-mode guest that drives
// virtio-blk by hand (MMIO BARs, a virtqueue, a read and a write checked on the host side), and an
// SMP guest that starts its second CPU with INIT/SIPI.
import Foundation
import XCTest

final class GuestTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws { dir = try VMRun.tempDir() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func realMode(accel: String) throws {
        let bios = try VMRun.assemble("realmode", into: dir)
        let r = try VMRun.run(["-accel", accel, "-M", "pc", "-m", "32", "-display", "none", "-nodefaults", "-serial", "stdio",
                               "-bios", bios.path, "-device", "isa-debug-exit,iobase=0xf4,iosize=4"], timeout: 20)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.stdout, "Hello from real mode\n")
        XCTAssertEqual(r.status, 33, r.stderr)
    }

    func virtio32(accel: String, executable: URL? = nil) throws {
        let kernel = try VMRun.assemble("virtio32", into: dir)
        let disk = dir.appendingPathComponent("disk-\(accel).raw")
        var content = [UInt8](repeating: 0, count: 1 << 20)
        for (i, b) in "VMRUN-DISK-TEST!".utf8.enumerated() { content[i] = b }
        try Data(content).write(to: disk)
        let r = try VMRun.run(["-accel", accel, "-m", "32", "-display", "none", "-nodefaults", "-serial", "stdio",
                               "-kernel", kernel.path, "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                               "-drive", "file=\(disk.path),format=raw,if=none,id=d0",
                               "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"], executable: executable, timeout: 30)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.stdout, "virtio32: protected mode\nVMRUN-DISK-TEST!\nvirtio32: done\n", r.stderr)
        XCTAssertEqual(r.status, 33)
        let after = try Data(contentsOf: disk)
        XCTAssertEqual(String(decoding: after[512..<528], as: UTF8.self), "WRITTEN-BY-GUEST")
    }

    /// -smp 2: the boot CPU starts CPU 1 with INIT and STARTUP IPIs through its local APIC.
    func smp(accel: String, executable: URL? = nil) throws {
        let kernel = try VMRun.assemble("smp32", into: dir)
        let r = try VMRun.run(["-accel", accel, "-smp", "2", "-m", "32", "-display", "none", "-nodefaults", "-serial", "stdio",
                               "-kernel", kernel.path, "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
                              executable: executable, timeout: 30)
        XCTAssertEqual(r.stdout, "smp32: hello from CPU 1\nsmp32: CPU 1 is up\n", r.stderr)
        XCTAssertEqual(r.status, 33)
    }

    func testSMPStartupOnInterpreter() throws { try smp(accel: "tcg") }

    func testSMPStartupOnKVM() throws {
        try XCTSkipUnless(VMRun.kvmUsable, "/dev/kvm is missing or not accessible")
        try smp(accel: "kvm")
    }

    func testSMPStartupOnQEMU() throws {
        try XCTSkipUnless(VMRun.qemuInstalled, "qemu-system-x86_64 is not installed")
        try smp(accel: "tcg", executable: URL(fileURLWithPath: VMRun.qemu))
    }

    func testRealModeOnKVM() throws {
        try XCTSkipUnless(VMRun.kvmUsable, "/dev/kvm is missing or not accessible")
        try realMode(accel: "kvm")
    }

    func testRealModeOnInterpreter() throws { try realMode(accel: "tcg") }

    func testVirtioBlockGuestOnKVM() throws {
        try XCTSkipUnless(VMRun.kvmUsable, "/dev/kvm is missing or not accessible")
        try virtio32(accel: "kvm")
    }

    func testVirtioBlockGuestOnInterpreter() throws { try virtio32(accel: "tcg") }

    func testVirtioBlockGuestOnQEMU() throws {
        try XCTSkipUnless(VMRun.qemuInstalled, "qemu-system-x86_64 is not installed")
        try virtio32(accel: "tcg", executable: URL(fileURLWithPath: VMRun.qemu))
    }

    /// -blockdev in both forms, the format node referring to the protocol node by node-name.
    func testBlockdevReferenceAndDevice() throws {
        let kernel = try VMRun.assemble("virtio32", into: dir)
        let disk = dir.appendingPathComponent("bd.raw")
        var content = [UInt8](repeating: 0, count: 1 << 20)
        for (i, b) in "VMRUN-DISK-TEST!".utf8.enumerated() { content[i] = b }
        try Data(content).write(to: disk)
        let r = try VMRun.run(["-accel", "tcg", "-m", "32", "-display", "none", "-nodefaults", "-serial", "stdio",
                               "-kernel", kernel.path, "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                               "-blockdev", "driver=file,node-name=f0,filename=\(disk.path)",
                               "-blockdev", "{\"driver\": \"raw\", \"node-name\": \"d0\", \"file\": \"f0\"}",
                               "-device", "virtio-blk-pci,drive=d0,num-queues=2"], timeout: 30)
        XCTAssertEqual(r.status, 33, r.stderr)
        XCTAssertTrue(r.stdout.contains("virtio32: done"))
        XCTAssertEqual(String(decoding: try Data(contentsOf: disk)[512..<528], as: UTF8.self), "WRITTEN-BY-GUEST")
    }

    /// snapshot=on: the guest's write goes to a temporary qcow2 overlay; the image is untouched.
    func testSnapshotOnLeavesTheImageAlone() throws {
        let kernel = try VMRun.assemble("virtio32", into: dir)
        let disk = dir.appendingPathComponent("snap.raw")
        var content = [UInt8](repeating: 0, count: 1 << 20)
        for (i, b) in "VMRUN-DISK-TEST!".utf8.enumerated() { content[i] = b }
        try Data(content).write(to: disk)
        let r = try VMRun.run(["-accel", "tcg", "-m", "32", "-display", "none", "-nodefaults", "-serial", "stdio",
                               "-kernel", kernel.path, "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                               "-drive", "file=\(disk.path),format=raw,if=virtio,snapshot=on"], timeout: 30)
        XCTAssertEqual(r.status, 33, r.stderr)
        XCTAssertTrue(r.stdout.contains("virtio32: done"))
        XCTAssertEqual(try Data(contentsOf: disk), Data(content))
    }

    /// A qcow2 overlay on a raw backing file: the guest reads through to the base and its write
    /// lands in the overlay; qemu-img check is clean and sees the data.
    func testQcow2WithBackingFile() throws {
        let qemuImg = "/usr/bin/qemu-img"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: qemuImg), "qemu-img is not installed")
        let kernel = try VMRun.assemble("virtio32", into: dir)
        let base = dir.appendingPathComponent("base.raw")
        var content = [UInt8](repeating: 0, count: 1 << 20)
        for (i, b) in "VMRUN-DISK-TEST!".utf8.enumerated() { content[i] = b }
        try Data(content).write(to: base)
        let top = dir.appendingPathComponent("top.qcow2")
        let c = try VMRun.run(["create", "-q", "-f", "qcow2", "-b", base.path, "-F", "raw", top.path], executable: URL(fileURLWithPath: qemuImg))
        XCTAssertEqual(c.status, 0, c.stderr)
        let r = try VMRun.run(["-accel", "tcg", "-m", "32", "-display", "none", "-nodefaults", "-serial", "stdio",
                               "-kernel", kernel.path, "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                               "-drive", "file=\(top.path),if=virtio"], timeout: 30)
        XCTAssertEqual(r.status, 33, r.stderr)
        XCTAssertTrue(r.stdout.contains("VMRUN-DISK-TEST!"), r.stdout)
        let check = try VMRun.run(["check", top.path], executable: URL(fileURLWithPath: qemuImg))
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        let raw = dir.appendingPathComponent("out.raw")
        _ = try VMRun.run(["convert", "-O", "raw", top.path, raw.path], executable: URL(fileURLWithPath: qemuImg))
        let out = try Data(contentsOf: raw)
        XCTAssertEqual(String(decoding: out[512..<528], as: UTF8.self), "WRITTEN-BY-GUEST")
        XCTAssertEqual(try Data(contentsOf: base), Data(content), "the backing file is never written")
    }

    func testDiskLockedByAnotherVMIsRefused() throws {
        try XCTSkipUnless(VMRun.qemuInstalled, "qemu-system-x86_64 is not installed")
        let disk = dir.appendingPathComponent("locked.raw")
        try Data(count: 1 << 20).write(to: disk)
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: VMRun.qemu)
        holder.arguments = ["-accel", "tcg", "-display", "none", "-nodefaults", "-S",
                            "-drive", "file=\(disk.path),format=raw,if=virtio"]
        holder.standardError = FileHandle.nullDevice
        try holder.run()
        defer { holder.terminate(); holder.waitUntilExit() }
        usleep(800_000)
        let r = try VMRun.run(["-accel", "tcg", "-display", "none", "-nodefaults",
                               "-drive", "file=\(disk.path),format=raw,if=virtio"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("Failed to get \"write\" lock"), r.stderr)
    }
}
