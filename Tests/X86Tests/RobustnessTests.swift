import XCTest
@testable import X86

/// Guest input never crashes the host: unimplemented encodings raise #UD (named once on stderr),
/// and random bytes executed in every mode end in guest exceptions or shutdown, never a host trap.
final class RobustnessTests: GuestTestCase {
    func testUnimplementedOpcodeRaisesUDOnce() throws {
        let before = UnimplementedLog.reportedCount
        // AESENC (66 0F 38 DC) is not implemented; run it twice.
        let image = try GuestHarness.assemble("""
            lea rax, [rel .r1]
            mov [RECOVER], rax
            aesenc xmm1, [rel .r1]
        .r1:
            lea rax, [rel .r2]
            mov [RECOVER], rax
            aesenc xmm1, [rel .r1]
        .r2:
            mov qword [RECOVER], 0
        """, mode: .lm64)
        let (out, _, plat) = GuestHarness.runOurs(image)
        XCTAssertNotNil(plat.exitCode)
        XCTAssertEqual(out.components(separatedBy: "EXC 0000000000000006").count - 1, 2, out)
        XCTAssertEqual(UnimplementedLog.reportedCount, before + 1)
    }

    func testRandomCodeNeverTrapsTheHost() throws {
        var rng = SystemRandomNumberGenerator()
        for mode in [GuestMode.lm64, .pm32, .real] {
            let jump: String
            switch mode {
            case .lm64: jump = "mov rsp, 0x90000\nmov rax, 0x300000\njmp rax"
            case .pm32: jump = "mov esp, 0x90000\nmov eax, 0x300000\njmp eax"
            case .real: jump = "mov ax, 0x3000\nmov ds, ax\njmp 0x3000:0"
            }
            let image = try GuestHarness.assemble(jump, mode: mode)
            let seeds = Int(ProcessInfo.processInfo.environment["X86_FUZZ_SEEDS"] ?? "5") ?? 5
            for _ in 0..<seeds {
                let plat = TestPlatform(bios: image, seconds: 0.3)
                for k in 0..<0x4000 { (plat.ram + 0x30000 + k).storeBytes(of: UInt8.random(in: 0...255, using: &rng), as: UInt8.self) }
                for k in 0..<0x4000 { (plat.ram + 0x300000 + k).storeBytes(of: UInt8.random(in: 0...255, using: &rng), as: UInt8.self) }
                let cpu = X86VCPU(index: 0, platform: plat, model: .max)
                var runs = 0
                while runs < 4 && plat.exitCode == nil && !plat.halted {
                    if cpu.run() == .shutdown { cpu.reset() }
                    runs += 1
                    if monotonicNanos() > plat.deadline { break }
                }
            }
        }
    }
}

/// External interrupts from the platform (no QEMU counterpart without a PIC program in the guest).
final class InterruptDeliveryTests: XCTestCase {
    func testExternalInterruptAfterSTIShadow() throws {
        let image = try GuestHarness.assemble("""
            lea rax, [rel .resume]
            mov [RECOVER], rax
            xor eax, eax
            sti
            mov eax, 0x1234      ; runs in the STI shadow, before the interrupt
            mov eax, 0x5678      ; not reached: the handler resumes at .resume
        .resume:
            cli
            mov rdx, 0
            call pf64
            mov qword [RECOVER], 0
        """, mode: .lm64)
        let plat = TestPlatform(bios: image)
        plat.pendingVector = 0x20
        let cpu = X86VCPU(index: 0, platform: plat, model: .qemu64)
        _ = cpu.run()
        XCTAssertNotNil(plat.exitCode)
        XCTAssertTrue(plat.text.contains("EXC 0000000000000020"), plat.text)
        XCTAssertTrue(plat.text.contains("0000000000001234 0000000000000000"), plat.text)
    }
}
