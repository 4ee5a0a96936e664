// Debian's kernel with a busybox initramfs (built at test time by Fixtures/make-linux-guest.sh):
// the guest reaches userspace, loads virtio_pci and virtio_blk, reads the disk (md5 compared with
// the host's), writes to it, and powers off through ACPI so that vmrun exits 0.
//
// These need a CPU that boots Linux: the interpreter (built optimised: a debug interpreter is too
// slow for a kernel; the tests build a release vmrun once in .build/vmrun-release unless
// VMRUN_TEST_BINARY names one), or KVM on ordinary hardware (not this host's PVM KVM, which hangs
// on unmodified kernels). The first boot decides: when it does not reach userspace, every test
// here skips with the reason. One boot per configuration (three in all).
import Foundation
import XCTest

final class LinuxBootTests: XCTestCase {
    static let guestDir = ProcessInfo.processInfo.environment["VMRUN_GUEST_CACHE"] ?? "/tmp/vmrun-linux-guest-7"
    /// The first boot (qcow2 over a raw backing file, -drive if=virtio) doubles as the probe.
    nonisolated(unsafe) static var first: (accel: String, result: VMRun.Result, top: URL, base: URL, verdict: String?)?
    nonisolated(unsafe) static var releaseBinary: URL?

    var dir: URL!
    override func setUpWithError() throws { dir = try VMRun.tempDir() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Builds the guest once; skips when the kernel package cannot be fetched.
    func guest() throws -> (kernel: String, initrd: String) {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/make-linux-guest.sh")
        let r = try VMRun.run([script.path, LinuxBootTests.guestDir], executable: URL(fileURLWithPath: "/bin/bash"), timeout: 300)
        try XCTSkipUnless(r.status == 0, "cannot build the Linux guest: \(r.stderr)")
        return (LinuxBootTests.guestDir + "/vmlinuz", LinuxBootTests.guestDir + "/initrd.gz")
    }

    /// An optimised vmrun: a debug interpreter is far too slow for a kernel. VMRUN_TEST_BINARY wins;
    /// else a release build in its own scratch directory (built once, reused afterwards).
    func binary() throws -> URL {
        if let b = LinuxBootTests.releaseBinary { return b }
        if let env = ProcessInfo.processInfo.environment["VMRUN_TEST_BINARY"] {
            LinuxBootTests.releaseBinary = URL(fileURLWithPath: env)
            return LinuxBootTests.releaseBinary!
        }
        let scratch = LinuxBootTests.packageRoot.appendingPathComponent(".build/vmrun-release")
        let swift = ["/usr/bin/swift", "/opt/swift/usr/bin/swift"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/bin/swift"
        let r = try VMRun.run(["build", "-c", "release", "--product", "vmrun", "--package-path", LinuxBootTests.packageRoot.path,
                               "--scratch-path", scratch.path], executable: URL(fileURLWithPath: swift), timeout: 1800)
        try XCTSkipUnless(r.status == 0, "cannot build a release vmrun: \(r.stderr.suffix(500))")
        let b = scratch.appendingPathComponent("release/vmrun")
        LinuxBootTests.releaseBinary = b
        return b
    }

    struct BootFailure: Error, CustomStringConvertible { var description: String }

    /// Runs the first boot once and returns the accelerator; a boot that does not reach userspace
    /// fails every test that needs it, with the reason.
    func firstBoot() throws -> (accel: String, result: VMRun.Result, top: URL, base: URL) {
        if LinuxBootTests.first == nil {
            let kvmRealHardware = VMRun.kvmUsable && access("/sys/module/kvm_pvm", F_OK) != 0
            let accel = kvmRealHardware ? "kvm" : "tcg"
            let g = try guest()
            let qemuImg = "/usr/bin/qemu-img"
            try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: qemuImg), "qemu-img is not installed")
            let keep = try VMRun.tempDir()
            let base = try makeDisk("base.raw", in: keep)
            let top = keep.appendingPathComponent("top.qcow2")
            let c = try VMRun.run(["create", "-q", "-f", "qcow2", "-b", base.path, "-F", "raw", top.path],
                                  executable: URL(fileURLWithPath: qemuImg))
            XCTAssertEqual(c.status, 0, c.stderr)
            let r = try boot(accel: accel, g, ["-drive", "file=\(top.path),if=virtio"], environment: ["VMRUN_DEBUG": "1"])
            var verdict: String? = nil
            if !r.stdout.contains("VMRUN-USERSPACE-OK") {
                let last = r.stdout.split(separator: "\n").last.map(String.init) ?? "no serial output"
                let why = r.stderr.split(separator: "\n").first { $0.contains("debug:") }.map { String($0.drop { $0 != ":" }.dropFirst(2)) }
                verdict = "-accel \(accel) did not boot Linux to userspace (\(r.timedOut ? "timed out" : "exit \(r.status)")"
                    + (why.map { ", \($0)" } ?? "") + "; last serial line: \(last.prefix(120)))"
            }
            LinuxBootTests.first = (accel, r, top, base, verdict)
        }
        let f = LinuxBootTests.first!
        if let v = f.verdict { throw BootFailure(description: v) }
        return (f.accel, f.result, f.top, f.base)
    }

    func makeDisk(_ name: String, in directory: URL? = nil) throws -> URL {
        var content = [UInt8](repeating: 0, count: 4 << 20)
        var x: UInt32 = 12345
        for i in 0..<(1 << 20) { x = x &* 1_103_515_245 &+ 12345; content[i] = UInt8(truncatingIfNeeded: x >> 16) }
        let url = (directory ?? dir).appendingPathComponent(name)
        try Data(content).write(to: url)
        return url
    }

    func md5OfFirstMiB(_ url: URL, qcow2: Bool = false) throws -> String {
        var path = url.path
        if qcow2 {
            path = dir.appendingPathComponent("converted.raw").path
            _ = try VMRun.run(["convert", "-O", "raw", url.path, path], executable: URL(fileURLWithPath: "/usr/bin/qemu-img"))
        }
        let r = try VMRun.run(["-c", "head -c 1048576 '\(path)' | md5sum | cut -d' ' -f1"], executable: URL(fileURLWithPath: "/bin/sh"))
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// no_timer_check: Linux's boot-time IO-APIC timer check wants 5 PIT ticks inside a 40 ms TSC
    /// delay loop; on a loaded host an emulated CPU can be descheduled for longer than that and
    /// panic with "IO-APIC + timer doesn't work" (QEMU TCG too; libguestfs passes the same flag).
    func boot(accel: String, _ g: (kernel: String, initrd: String), _ extra: [String], timeout: TimeInterval = 300,
              environment: [String: String]? = nil, append: String = "") throws -> VMRun.Result {
        try VMRun.run(["-accel", accel, "-M", "pc", "-m", "512", "-display", "none", "-nodefaults", "-serial", "stdio",
                       "-no-reboot", "-kernel", g.kernel, "-initrd", g.initrd, "-append", "console=ttyS0 quiet no_timer_check" + append] + extra,
                      executable: try binary(), timeout: timeout, environment: environment)
    }

    func checkGuestSaw(_ r: VMRun.Result, md5: String) {
        XCTAssertFalse(r.timedOut, String(r.stdout.suffix(2000)))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("VMRUN-USERSPACE-OK"))
        XCTAssertFalse(r.stdout.contains("VMRUN-INSMOD-FAILED"), r.stdout)
        XCTAssertTrue(r.stdout.contains("VMRUN-VDA-MD5 \(md5)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("VMRUN-VDA-WRITTEN"), r.stdout)
    }

    func wrote(_ data: Data) -> Bool {
        String(decoding: data[(1 << 20)..<((1 << 20) + 16)], as: UTF8.self) == "GUEST-WROTE-THIS"
    }

    /// qcow2 over a raw backing file: reads match qemu-img convert, the write lands in the overlay,
    /// qemu-img check is clean, and the backing file is untouched.
    func testBootQcow2WithBackingFile() throws {
        let (_, r, top, base) = try firstBoot()
        let baseBefore = try Data(contentsOf: base)
        checkGuestSaw(r, md5: try md5OfFirstMiB(base))
        let check = try VMRun.run(["check", top.path], executable: URL(fileURLWithPath: "/usr/bin/qemu-img"))
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        let converted = dir.appendingPathComponent("after.raw")
        _ = try VMRun.run(["convert", "-O", "raw", top.path, converted.path], executable: URL(fileURLWithPath: "/usr/bin/qemu-img"))
        XCTAssertTrue(wrote(try Data(contentsOf: converted)))
        XCTAssertEqual(try Data(contentsOf: base), baseBefore)
    }

    /// -blockdev/-device with an iothread and two queues, and QMP query-block while it runs.
    func testBootWithBlockdevDeviceAndQMP() throws {
        let (accel, _, _, _) = try firstBoot()
        let disk = try makeDisk("b.raw")
        let md5 = try md5OfFirstMiB(disk)
        let sock = dir.appendingPathComponent("qmp.sock").path
        let queried = LockedData()
        let t = Thread {
            guard let c = try? QMPClient(path: sock, timeout: 30), c.json() != nil else { return }
            _ = c.execute("qmp_capabilities")
            let (_, r) = c.execute("query-block")
            if let d = try? JSONSerialization.data(withJSONObject: r ?? [:]) { queried.append(d) }
        }
        t.start()
        let r = try boot(accel: accel, try guest(), [
            "-object", "iothread,id=io0",
            "-blockdev", "driver=file,node-name=f0,filename=\(disk.path)",
            "-blockdev", "{\"driver\": \"raw\", \"node-name\": \"d0\", \"file\": \"f0\"}",
            "-device", "virtio-blk-pci,drive=d0,iothread=io0,num-queues=2,serial=SN1,id=vd0",
            "-qmp", "unix:\(sock),server=on,wait=off",
        ])
        checkGuestSaw(r, md5: md5)
        XCTAssertTrue(wrote(try Data(contentsOf: disk)))
        let q = queried.string.replacingOccurrences(of: "\\/", with: "/")
        XCTAssertTrue(q.contains("/machine/peripheral/vd0/virtio-backend"), q)
        XCTAssertTrue(q.contains("\"node-name\":\"d0\""), q)
    }

    /// snapshot=on: the guest's write never reaches the image. Booted with -smp 2 (both CPUs come
    /// up through the local APICs' INIT/SIPI) so SMP costs no extra boot; on the interpreter also
    /// with -cpu max, so the kernel and the static glibc in the guest take their SSSE3/SSE4.2 paths
    /// (PALIGNR copies, PCMPISTRI string functions). And without MSI, with IRQs 10 and 11 marked as
    /// taken by ISA: Linux moves the disk's interrupt link (LNKB) to IRQ 5 through its _SRS, and the
    /// disk's INTx must arrive there through the PIIX3's re-steered PIRQ.
    func testBootWithSnapshotOnAndTwoCPUs() throws {
        let (accel, _, _, _) = try firstBoot()
        let disk = try makeDisk("c.raw")
        let before = try Data(contentsOf: disk)
        let cpu = accel == "tcg" ? ["-cpu", "max"] : []
        let r = try boot(accel: accel, try guest(), cpu + ["-smp", "2", "-drive", "file=\(disk.path),format=raw,if=virtio,snapshot=on"],
                         append: " pci=nomsi acpi_irq_balance acpi_irq_isa=10,11")
        checkGuestSaw(r, md5: try md5OfFirstMiB(disk))
        XCTAssertTrue(r.stdout.contains("VMRUN-CPUS 2"), r.stdout)
        XCTAssertTrue(r.stdout.contains("VMRUN-DMESG ACPI: \\_SB_.LNKB: Enabled at IRQ 5"), r.stdout)
        XCTAssertEqual(try Data(contentsOf: disk), before)
    }

    /// What firmware and devices show a directly booted kernel, as Linux sees them, against the same
    /// kernel and initramfs under QEMU TCG (with a virtio disk in slot 2 for both): the MTRRs SeaBIOS
    /// programs (the PCI hole uncached, so that Linux enables PAT with its WC/WP entries), no
    /// 'unchecked MSR access' warnings, and the device lines of the boot log (VMRUN-DMESG: ACPI
    /// tables, I/O APIC, PCI functions, interrupt links, PNP devices, i8042 ports and keyboard),
    /// except the differences listed below.
    func testFirmwareStateMatchesQEMU() throws {
        let (_, r, _, _) = try firstBoot()
        try XCTSkipUnless(VMRun.qemuInstalled, "qemu-system-x86_64 is not installed")
        let g = try guest()
        let disk = try makeDisk("q.raw")
        let q = try VMRun.run(["-accel", "tcg", "-M", "pc", "-m", "512", "-display", "none", "-nodefaults", "-serial", "stdio",
                               "-no-reboot", "-kernel", g.kernel, "-initrd", g.initrd, "-append", "console=ttyS0 quiet no_timer_check",
                               "-drive", "file=\(disk.path),format=raw,if=virtio"],
                              executable: URL(fileURLWithPath: VMRun.qemu), timeout: 300)
        func lines(_ out: String) -> [String] { out.split(whereSeparator: \.isNewline).map(String.init) }
        func markers(_ out: String) -> [String] {
            lines(out).filter { $0.hasPrefix("VMRUN-MTRR") || $0.hasPrefix("VMRUN-PAT") || $0.hasPrefix("VMRUN-MSR-WARNINGS") }
        }
        let ours = markers(r.stdout), theirs = markers(q.stdout)
        XCTAssertEqual(theirs.count, 3, q.stdout)
        XCTAssertEqual(ours, theirs)
        XCTAssertTrue(ours.contains("VMRUN-MSR-WARNINGS 0"), ours.joined(separator: "\n"))

        // Known differences (line prefixes after "VMRUN-DMESG "), each with its reason.
        let known: [(prefix: String, why: String)] = [
            ("ACPI: PM: (supports", "no S3: resuming from suspend-to-RAM needs firmware a directly booted guest lacks"),
            ("ACPI: Enabled ", "QEMU's GPEs 1 and 2 are PCI and CPU hotplug, which we do not have"),
        ]
        // Input device numbers (".../input/input1") follow the order in which concurrent probes
        // register their devices, which varies from boot to boot under either emulator.
        func withoutInputNumber(_ l: String) -> String {
            guard let r = l.range(of: "/input/input") else { return l }
            return String(l[..<r.upperBound]) + "N"
        }
        func dmesg(_ out: String) -> [String] {
            lines(out).filter { $0.hasPrefix("VMRUN-DMESG ") }.map { withoutInputNumber(String($0.dropFirst(12))) }
                .filter { l in !known.contains { l.hasPrefix($0.prefix) } }.sorted()
        }
        let ourDevices = dmesg(r.stdout), qemuDevices = dmesg(q.stdout)
        XCTAssertTrue(qemuDevices.contains { $0.hasPrefix("i8042: PNP: PS/2 Controller") }, q.stdout)
        XCTAssertEqual(ourDevices, qemuDevices, "ours:\n\(ourDevices.joined(separator: "\n"))\nQEMU:\n\(qemuDevices.joined(separator: "\n"))")
    }

    /// -bios with Debian's SeaBIOS: the kernel goes through fw_cfg and our loader ROM (QEMU's
    /// linuxboot path), the ACPI tables through the BIOS's table loader; the guest reaches the same
    /// userspace marker, reads and writes the disk and powers off.
    func testBootThroughSeaBIOS() throws {
        let (accel, _, _, _) = try firstBoot()
        let bios = "/usr/share/seabios/bios-256k.bin"
        try XCTSkipUnless(FileManager.default.fileExists(atPath: bios), "seabios is not installed")
        let disk = try makeDisk("s.raw")
        let md5 = try md5OfFirstMiB(disk)
        let log = dir.appendingPathComponent("seabios.log").path
        let r = try boot(accel: accel, try guest(), ["-bios", bios, "-drive", "file=\(disk.path),format=raw,if=virtio",
                                                     "-chardev", "file,id=dbg,path=\(log)", "-device", "isa-debugcon,iobase=0x402,chardev=dbg"])
        checkGuestSaw(r, md5: md5)
        XCTAssertTrue(wrote(try Data(contentsOf: disk)))
        let bioslog = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        XCTAssertTrue(bioslog.contains("Booting from ROM"), String(bioslog.suffix(2000)))
    }
}
