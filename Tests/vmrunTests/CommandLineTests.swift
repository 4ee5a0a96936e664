// qemu-system-x86_64's command-line contract: error messages (with our program name where QEMU
// prints its own) and exit statuses for bad options, as QEMU 7.2 prints them.
import Foundation
import XCTest

final class CommandLineTests: XCTestCase {
    func testErrorsMatchQEMU() throws {
        let cases: [([String], String)] = [
            (["-foo"], "vmrun: -foo: invalid option"),
            (["-m"], "vmrun: -m: requires an argument"),
            (["-m", "1x"], "vmrun: -m 1x: Parameter 'size' expects a non-negative number below 2^64"),
            (["-device", "foo"], "vmrun: -device foo: 'foo' is not a valid device model name"),
            (["-machine", "q99"], "vmrun: unsupported machine type\nUse -machine help to list supported machines"),
            (["-accel", "xyz"], "vmrun: -accel xyz: invalid accelerator xyz"),
            (["-M", "pc,accel=foo"], "vmrun: invalid accelerator foo"),
            (["-cpu", "nosuch"], "vmrun: unable to find CPU model 'nosuch'"),
            (["-accel", "tcg", "-cpu", "host"], "vmrun: CPU model 'host' requires KVM or HVF"),
            (["-drive", "file=/nonexistent/x,if=virtio"], "vmrun: -drive file=/nonexistent/x,if=virtio: Could not open '/nonexistent/x': No such file or directory"),
            (["-device", "virtio-blk-pci"], "vmrun: -device virtio-blk-pci: drive property not set"),
            (["-device", "virtio-blk-pci,drive=nope"], "vmrun: -device virtio-blk-pci,drive=nope: Property 'virtio-blk-device.drive' can't find value 'nope'"),
            (["-serial", "bogus"], "vmrun: -serial bogus: 'bogus' is not a valid char driver"),
            (["-object", "memory-backend-ram,id=m"], "vmrun: -object memory-backend-ram,id=m: invalid object type: memory-backend-ram"),
            (["-drive", "file=/dev/null,format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0,queue-size=100"],
             "vmrun: -device virtio-blk-pci,drive=d0,queue-size=100: invalid queue-size property (100), must be a power of 2 (max 1024)"),
            (["-drive", "file=/dev/null,format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0,queue-size=2"],
             "vmrun: -device virtio-blk-pci,drive=d0,queue-size=2: invalid queue-size property (2), must be > 2"),
            (["-device", "isa-debugcon"], "vmrun: -device isa-debugcon: Can't create debugcon device, empty char device"),
        ]
        for (args, expected) in cases {
            let r = try VMRun.run(["-display", "none", "-nodefaults"] + args)
            XCTAssertEqual(r.status, 1, "\(args)")
            XCTAssertTrue(r.stderr.hasPrefix(expected), "\(args): got \(r.stderr)")
        }
    }

    func testKernelThatIsMissing() throws {
        let r = try VMRun.run(["-accel", "tcg", "-display", "none", "-kernel", "/nonexistent/vmlinuz"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("could not load kernel '/nonexistent/vmlinuz'"), r.stderr)
    }

    func testVersionAndMachineHelp() throws {
        let v = try VMRun.run(["-version"])
        XCTAssertEqual(v.status, 0)
        XCTAssertTrue(v.stdout.hasPrefix("QEMU emulator version 7.2.0"))
        let m = try VMRun.run(["-machine", "help"])
        XCTAssertEqual(m.status, 0)
        XCTAssertTrue(m.stdout.contains("pc-i440fx-7.2"))
    }

    /// The same bad options make QEMU itself fail with status 1 (the oracle, where installed).
    func testQEMUAgreesOnStatus() throws {
        try XCTSkipUnless(VMRun.qemuInstalled, "qemu-system-x86_64 is not installed")
        for args in [["-foo"], ["-m", "1x"], ["-device", "foo"], ["-accel", "xyz"], ["-accel", "tcg", "-cpu", "host"]] {
            let q = try VMRun.run(["-display", "none", "-nodefaults"] + args, executable: URL(fileURLWithPath: VMRun.qemu))
            XCTAssertEqual(q.status, 1)
            let ours = try VMRun.run(["-display", "none", "-nodefaults"] + args)
            XCTAssertEqual(ours.stderr.replacingOccurrences(of: "vmrun:", with: "qemu-system-x86_64:"), q.stderr)
        }
    }
}
