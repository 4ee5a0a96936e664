import XCTest
@testable import X86

final class CPUModelTests: XCTestCase {
    func testParsesQEMUSyntax() throws {
        let m = try CPUModel(parsing: "qemu64,+x2apic,-sse3,nx=off")
        XCTAssertEqual(m.vendor, "AuthenticAMD")
        XCTAssertTrue(m.has("x2apic"))
        XCTAssertFalse(m.has("pni"))
        XCTAssertFalse(m.has("nx"))
        XCTAssertTrue(m.has("sse2"))
        XCTAssertTrue(m.warnings.isEmpty)
    }

    func testUnimplementedFeaturesAreDroppedWithAWarning() throws {
        let m = try CPUModel(parsing: "qemu64,+avx,+aes")
        XCTAssertFalse(m.has("avx"))
        XCTAssertFalse(m.has("aes"))
        XCTAssertEqual(m.warnings.count, 2)
    }

    func testSSSE3AndSSE4() throws {
        // qemu64 stops at SSE3 (QEMU's definition: pni and cx16 in leaf 1 ECX); max has them all.
        let q = CPUModel.qemu64
        for f in ["ssse3", "sse4.1", "sse4.2", "popcnt"] { XCTAssertFalse(q.has(f), f) }
        XCTAssertTrue(q.has("pni"))
        for f in ["ssse3", "sse4.1", "sse4.2", "popcnt"] { XCTAssertTrue(CPUModel.max.has(f), f) }
        let plus = try CPUModel(parsing: "qemu64,+ssse3,+sse4.1,sse4_2=on")
        XCTAssertTrue(plus.has("ssse3") && plus.has("sse4.1") && plus.has("sse4.2"))
        XCTAssertTrue(plus.warnings.isEmpty)
        let minus = try CPUModel(parsing: "max,-sse4.2,ssse3=off")
        XCTAssertFalse(minus.has("sse4.2"))
        XCTAssertFalse(minus.has("ssse3"))
        XCTAssertTrue(minus.has("sse4.1"))
        XCTAssertEqual(DecoderFeatures(model: minus).simdExt, 2)
        XCTAssertEqual(DecoderFeatures(model: .max).simdExt, 7)
        XCTAssertEqual(DecoderFeatures(model: q).simdExt, 0)
        let again = try CPUModel(parsing: "max,+sse4.2,+ssse3")
        XCTAssertTrue(again.warnings.isEmpty)
        XCTAssertEqual(again, CPUModel.max)
    }

    func testErrors() {
        XCTAssertThrowsError(try CPUModel(parsing: "pentium9"))
        XCTAssertThrowsError(try CPUModel(parsing: "qemu64,+frobnicate"))
        XCTAssertThrowsError(try CPUModel(parsing: "qemu64,nx=maybe"))
    }

    func testMaxReportsOnlyImplementedFeatures() throws {
        let m = CPUModel.max
        for f in cpuidFeatureTable {
            XCTAssertEqual(m.has(f.name), f.implemented, f.name)
        }
    }

    func testRegisterRoundTrip() throws {
        let plat = TestPlatform(bios: [UInt8](repeating: 0xF4, count: 0x10000))
        let cpu = X86VCPU(index: 0, platform: plat, model: .qemu64)
        var r = cpu.registers
        XCTAssertEqual(r.rip, 0xFFF0)
        XCTAssertEqual(r.cs.base, 0xFFFF_0000)
        r.cs = .flatCode64(); r.ds = .flatData(); r.ss = .flatData()
        r.cr0 = 0x8000_0011; r.cr4 = 0x20; r.efer = 0x500; r.cr3 = 0x1000
        r.rax = 42; r.rip = 0x100_0000; r.gs.base = 0xFFFF_8880_0000_0000
        cpu.registers = r
        let back = cpu.registers
        XCTAssertEqual(back.rax, 42)
        XCTAssertEqual(back.rip, 0x100_0000)
        XCTAssertEqual(back.gs.base, 0xFFFF_8880_0000_0000)
        XCTAssertEqual(back.efer, 0x500)
        XCTAssertEqual(back.cs.attributes, 0xA09B)
        let ap = X86VCPU(index: 1, platform: plat, model: .qemu64)
        XCTAssertEqual(ap.activityState, .waitForSIPI)
    }
}
