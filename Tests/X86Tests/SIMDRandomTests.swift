import XCTest
@testable import X86

/// Random SSSE3/SSE4 instruction streams (seeded, so every run is the same) over random register and
/// memory contents, compared with QEMU's TCG under -cpu max after every instruction: all encodings
/// of registers (xmm8-15, r8-r15, REX byte registers), memory operands, every immediate.
/// PCMPESTRx with REX.W and DPPS/DPPD are left out (QEMU 7.2 deviates there; see SIMDGuestTests).
final class SIMDRandomTests: GuestTestCase {
    struct LCG {
        var s: UInt64
        mutating func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s >> 11 }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
    }

    static let r64 = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
    static let r32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "r8d", "r9d", "r10d", "r11d", "r12d", "r13d", "r14d", "r15d"]
    static let r16 = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8w", "r9w", "r10w", "r11w", "r12w", "r13w", "r14w", "r15w"]
    static let r8 = ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil", "r8b", "r9b", "r10b", "r11b", "r12b", "r13b", "r14b", "r15b"]

    func px(_ n: Int) -> String {
        "movq rax, xmm\(n)\nmovdqa xmm15, xmm\(n)\npsrldq xmm15, 8\nmovq rdx, xmm15\ncall pf64\n"
    }

    func program(seed: UInt64, count: Int) -> String {
        var g = LCG(s: seed)
        var body = "mov qword [FLAGMASK], 0x8D5\n"
        // 512 random bytes at 0x8400, then every XMM, MMX and general register from them.
        for k in 0..<64 { body += "mov rax, 0x\(String(g.next() | (g.below(4) == 0 ? 0x8000_0000_0000_0000 : 0), radix: 16))\nmov [\(0x8400 + 8 * k)], rax\n" }
        // Some lanes with zero bytes and float specials.
        body += "mov dword [0x8408], 0\nmov word [0x8432], 0\nmov dword [0x8444], 0x7FC00000\nmov dword [0x8448], 0xFF800000\nmov qword [0x8458], 0x7FF4000000000000\nmov dword [0x8464], 0x3FC00000\n"
        for k in 0..<16 { body += "movdqu xmm\(k), [\(0x8400 + 16 * g.below(30))]\n" }
        for k in 0..<8 { body += "movq mm\(k), [\(0x8400 + 8 * g.below(60))]\n" }
        let gprs = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        for k in gprs { body += "mov \(Self.r64[k]), [\(0x8400 + 8 * g.below(60))]\n" }
        let binary = ["pshufb", "phaddw", "phaddd", "phaddsw", "phsubw", "phsubd", "phsubsw", "pmaddubsw", "pmulhrsw",
                      "psignb", "psignw", "psignd", "pabsb", "pabsw", "pabsd"]
        let sse41 = ["pminsb", "pminsd", "pminuw", "pminud", "pmaxsb", "pmaxsd", "pmaxuw", "pmaxud", "pmulld", "pmuldq",
                     "pcmpeqq", "pcmpgtq", "packusdw", "phminposuw"]
        let pmov = [("pmovsxbw", "qword"), ("pmovsxbd", "dword"), ("pmovsxbq", "word"), ("pmovsxwd", "qword"),
                    ("pmovsxwq", "dword"), ("pmovsxdq", "qword"), ("pmovzxbw", "qword"), ("pmovzxbd", "dword"),
                    ("pmovzxbq", "word"), ("pmovzxwd", "qword"), ("pmovzxwq", "dword"), ("pmovzxdq", "qword")]
        // DPPS/DPPD are left to SIMDGuestTests: with two NaN inputs QEMU picks a different NaN.
        let withImm = ["palignr", "blendps", "blendpd", "pblendw", "roundps", "roundpd", "mpsadbw", "insertps"]
        let aligned16 = { "[\(0x8400 + 16 * g.below(30))]" }
        let anyAddr = { "[\(0x8400 + g.below(480))]" }
        for _ in 0..<count {
            let x = g.below(15), y = g.below(16)
            let gr = g.pick(gprs), gs = g.pick(gprs)
            let mem = g.below(4) == 0
            let imm = g.below(256)
            switch g.below(16) {
            case 0, 1:
                body += "\(g.pick(binary + sse41)) xmm\(x), \(mem ? aligned16() : "xmm\(y)")\n" + px(x)
            case 2:
                let m = g.below(8)
                body += "\(g.pick(binary)) mm\(m), \(mem ? "[\(0x8400 + g.below(480))]" : "mm\(g.below(8))")\nmovq rax, mm\(m)\nmov edx, 0\ncall pf64\n"
            case 3:
                let m = g.below(8)
                body += "palignr mm\(m), mm\(g.below(8)), \(g.below(20))\nmovq rax, mm\(m)\nmov edx, 0\ncall pf64\n"
            case 4:
                let (op, size) = g.pick(pmov)
                body += "\(op) xmm\(x), \(mem ? "\(size) \(anyAddr())" : "xmm\(y)")\n" + px(x)
            case 5:
                let op = g.pick(withImm)
                let i = op == "palignr" ? g.below(36) : (op.hasPrefix("round") ? g.below(16) : imm)
                body += "\(op) xmm\(x), \(mem ? aligned16() : "xmm\(y)"), \(i)\n" + px(x)
            case 6:
                let op = g.pick(["roundss", "roundsd"])
                body += "\(op) xmm\(x), \(mem ? (op == "roundss" ? "dword " : "qword ") + anyAddr() : "xmm\(y)"), \(g.below(16))\n" + px(x)
            case 7:
                body += "movdqu xmm0, [\(0x8400 + 16 * g.below(30))]\n\(g.pick(["pblendvb", "blendvps", "blendvpd"])) xmm\(x), \(mem ? aligned16() : "xmm\(y)"), xmm0\n" + px(x)
            case 8:
                body += "ptest xmm\(x), \(mem ? aligned16() : "xmm\(y)")\nmov eax, 0\nmov edx, 0\ncall pf64\n"
            case 9:
                let op = g.pick(["pextrb", "pextrw", "pextrd", "extractps", "pextrq"])
                let reg = op == "pextrq" ? Self.r64[gr] : Self.r32[gr]
                if mem {
                    body += "mov qword [0x8700], -1\n\(op) [0x8701], xmm\(y), \(imm)\nmov rax, [0x8700]\nmov edx, 0\ncall pf64\n"
                } else {
                    body += "\(op) \(reg), xmm\(y), \(imm)\nmov rax, \(Self.r64[gr])\nmov edx, 0\ncall pf64\n"
                }
            case 10:
                let op = g.pick(["pinsrb", "pinsrd", "pinsrq"])
                let src = mem ? anyAddr() : (op == "pinsrq" ? Self.r64[gs] : Self.r32[gs])
                body += "\(op) xmm\(x), \(mem && op == "pinsrb" ? "byte " : "")\(src), \(imm)\n" + px(x)
            case 11:
                let op = g.pick(["pcmpistri", "pcmpistrm", "pcmpestri", "pcmpestrm"])
                let i = g.below(128)
                let lens = op.hasPrefix("pcmpe") ? "mov eax, \(g.below(41) - 20)\nmov edx, \(g.below(41) - 20)\n" : ""
                let src = mem ? anyAddr() : "xmm\(y)"
                if op.hasSuffix("i") {
                    body += lens + "\(op) xmm\(x), \(src), \(i)\nmov rax, rcx\nmov edx, 0\ncall pf64\n"
                } else {
                    body += lens + "\(op) xmm\(x), \(src), \(i)\n" + px(0)
                }
            case 12:
                let form = g.below(6)
                let gr = form == 5 ? g.pick([0, 1, 2, 3, 5, 6, 7]) : gr   // AH..BH: no REX allowed
                let dst = form >= 3 && form != 5 ? Self.r64[gr] : Self.r32[gr]
                let src: String
                switch form {
                case 0: src = mem ? "byte " + anyAddr() : Self.r8[gs]
                case 1: src = mem ? "word " + anyAddr() : Self.r16[gs]
                case 2: src = mem ? "dword " + anyAddr() : Self.r32[gs]
                case 3: src = mem ? "qword " + anyAddr() : Self.r64[gs]
                case 4: src = mem ? "byte " + anyAddr() : Self.r8[gs]
                default: src = Self.r8[[0, 1, 2, 3].randomElement(using: &g)!].replacingOccurrences(of: "l", with: "h")
                }
                body += "crc32 \(dst), \(src)\nmov rax, \(Self.r64[gr])\nmov edx, 0\ncall pf64\n"
            case 13:
                body += "movntdqa xmm\(x), \(aligned16())\n" + px(x)
            default:
                body += "\(g.pick(binary + sse41)) xmm\(x), xmm\(y)\n" + px(x)
            }
        }
        return body + "emms\n"
    }

    func testRandomStreams() throws {
        for seed: UInt64 in (ProcessInfo.processInfo.environment["X86_SIMD_SEEDS"].map { (1...UInt64($0)!).map { $0 } } ?? [1, 2, 3, 4]) {
            if let only = ProcessInfo.processInfo.environment["X86_SIMD_ONLY"], UInt64(only)! != seed { continue }
            let prog = program(seed: seed, count: 260)
            if let dir = ProcessInfo.processInfo.environment["X86_SIMD_DUMP"] {
                try prog.write(toFile: "\(dir)/seed\(seed).asm", atomically: true, encoding: .utf8)
            }
            try compare(prog, cpu: "max")
        }
    }
}

extension SIMDRandomTests.LCG: RandomNumberGenerator {}
