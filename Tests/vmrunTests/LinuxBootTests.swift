// Debian's kernel with a busybox initramfs (built at test time by Fixtures/make-linux-guest.sh):
// the guest reaches userspace, loads virtio_pci and virtio_blk, reads the disk (md5 compared with
// the host's), writes to it, and powers off through ACPI so that vmrun exits 0.
//
// These need a CPU that boots Linux: the interpreter (while it cannot yet, one short probe boot
// decides and every test here skips with the reason), or KVM on ordinary hardware (not this host's
// PVM KVM, which hangs on unmodified kernels). One boot per configuration.
import Foundation
import XCTest

final class LinuxBootTests: XCTestCase {
    static let guestDir = ProcessInfo.processInfo.environment["VMRUN_GUEST_CACHE"] ?? "/tmp/vmrun-linux-guest"
    nonisolated(unsafe) static var probe: (accel: String, verdict: String?)?

    var dir: URL!
    override func setUpWithError() throws { dir = try VMRun.tempDir() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// Builds the guest once; skips when the kernel package cannot be fetched.
    func guest() throws -> (kernel: String, initrd: String) {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/make-linux-guest.sh")
        let r = try VMRun.run([script.path, LinuxBootTests.guestDir], executable: URL(fileURLWithPath: "/bin/bash"), timeout: 300)
        try XCTSkipUnless(r.status == 0, "cannot build the Linux guest: \(r.stderr)")
        return (LinuxBootTests.guestDir + "/vmlinuz", LinuxBootTests.guestDir + "/initrd.gz")
    }

    /// The accelerator that can boot Linux here, or a skip with the reason.
    func accelerator() throws -> String {
        if LinuxBootTests.probe == nil {
            let kvmRealHardware = VMRun.kvmUsable && access("/sys/module/kvm_pvm", F_OK) != 0
            let accel = kvmRealHardware ? "kvm" : "tcg"
            let g = try guest()
            let disk = try makeDisk("probe.raw")
            let r = try boot(accel: accel, g, ["-drive", "file=\(disk.path),format=raw,if=virtio"], timeout: 120,
                             environment: ["VMRUN_DEBUG": "1"])
            var verdict: String? = nil
            if !r.stdout.contains("VMRUN-USERSPACE-OK") {
                let last = r.stdout.split(separator: "\n").last.map(String.init) ?? "no serial output"
                let why = r.stderr.split(separator: "\n").first { $0.contains("debug:") }.map { String($0.drop { $0 != ":" }.dropFirst(2)) }
                verdict = "-accel \(accel) does not boot Linux to userspace yet (\(r.timedOut ? "timed out" : "exit \(r.status)")"
                    + (why.map { ", \($0)" } ?? "") + "; last serial line: \(last.prefix(120)))"
            }
            LinuxBootTests.probe = (accel, verdict)
        }
        if let v = LinuxBootTests.probe!.verdict { throw XCTSkip(v) }
        return LinuxBootTests.probe!.accel
    }

    func makeDisk(_ name: String) throws -> URL {
        var content = [UInt8](repeating: 0, count: 4 << 20)
        var x: UInt32 = 12345
        for i in 0..<(1 << 20) { x = x &* 1_103_515_245 &+ 12345; content[i] = UInt8(truncatingIfNeeded: x >> 16) }
        let url = dir.appendingPathComponent(name)
        try Data(content).write(to: url)
        return url
    }

    func md5OfFirstMiB(_ url: URL) throws -> String {
        let r = try VMRun.run(["-c", "head -c 1048576 '\(url.path)' | md5sum | cut -d' ' -f1"], executable: URL(fileURLWithPath: "/bin/sh"))
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func boot(accel: String, _ g: (kernel: String, initrd: String), _ extra: [String], timeout: TimeInterval = 180,
              environment: [String: String]? = nil) throws -> VMRun.Result {
        try VMRun.run(["-accel", accel, "-M", "pc", "-m", "512", "-display", "none", "-nodefaults", "-serial", "stdio",
                       "-no-reboot", "-kernel", g.kernel, "-initrd", g.initrd, "-append", "console=ttyS0 quiet"] + extra,
                      timeout: timeout, environment: environment)
    }

    func checkBoot(_ r: VMRun.Result, disk: URL, expectWrite: Bool) throws {
        XCTAssertFalse(r.timedOut, r.stdout.suffix(2000).description)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("VMRUN-USERSPACE-OK"))
        XCTAssertFalse(r.stdout.contains("VMRUN-INSMOD-FAILED"), r.stdout)
        XCTAssertTrue(r.stdout.contains("VMRUN-VDA-MD5 \(try md5OfFirstMiB(disk))"), r.stdout)
        let written = try Data(contentsOf: disk)[(1 << 20)..<((1 << 20) + 16)]
        XCTAssertEqual(String(decoding: written, as: UTF8.self) == "GUEST-WROTE-THIS", expectWrite)
    }

    func testBootWithDriveIfVirtio() throws {
        let accel = try accelerator()
        let disk = try makeDisk("a.raw")
        let r = try boot(accel: accel, try guest(), ["-drive", "file=\(disk.path),format=raw,if=virtio"])
        try checkBoot(r, disk: disk, expectWrite: true)
    }

    func testBootWithBlockdevAndDevice() throws {
        let accel = try accelerator()
        let disk = try makeDisk("b.raw")
        let r = try boot(accel: accel, try guest(), [
            "-object", "iothread,id=io0",
            "-blockdev", "driver=file,node-name=f0,filename=\(disk.path)",
            "-blockdev", "{\"driver\": \"raw\", \"node-name\": \"d0\", \"file\": \"f0\"}",
            "-device", "virtio-blk-pci,drive=d0,iothread=io0,num-queues=2,serial=SN1",
        ])
        try checkBoot(r, disk: disk, expectWrite: true)
    }
}
