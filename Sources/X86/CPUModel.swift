// CPU models in QEMU's -cpu syntax, and the CPUID leaves they produce.
//
// A model is a name ("qemu64", "max", "host" = max) plus "+feat"/"-feat"/"feat=on|off" edits, as
// in `-cpu qemu64,+x2apic,-sse4.2`. Feature names are QEMU's. CPUID only ever reports what this
// interpreter implements: asking for a feature we do not implement drops it with a warning (QEMU's
// TCG does the same), and an unknown name is an error.

/// A named CPUID feature bit: which register of which leaf, and the bit.
struct CPUIDFeature {
    enum Word: Int, CaseIterable { case l1edx, l1ecx, l7ebx, l7ecx, l7edx, e1edx, e1ecx, l0dEax1 }
    let name: String
    let word: Word
    let bit: Int
    let implemented: Bool
}

let cpuidFeatureTable: [CPUIDFeature] = [
    // leaf 1 EDX
    .init(name: "fpu", word: .l1edx, bit: 0, implemented: true),
    .init(name: "vme", word: .l1edx, bit: 1, implemented: false),
    .init(name: "de", word: .l1edx, bit: 2, implemented: true),
    .init(name: "pse", word: .l1edx, bit: 3, implemented: true),
    .init(name: "tsc", word: .l1edx, bit: 4, implemented: true),
    .init(name: "msr", word: .l1edx, bit: 5, implemented: true),
    .init(name: "pae", word: .l1edx, bit: 6, implemented: true),
    .init(name: "mce", word: .l1edx, bit: 7, implemented: true),
    .init(name: "cx8", word: .l1edx, bit: 8, implemented: true),
    .init(name: "apic", word: .l1edx, bit: 9, implemented: true),
    .init(name: "sep", word: .l1edx, bit: 11, implemented: true),
    .init(name: "mtrr", word: .l1edx, bit: 12, implemented: true),
    .init(name: "pge", word: .l1edx, bit: 13, implemented: true),
    .init(name: "mca", word: .l1edx, bit: 14, implemented: true),
    .init(name: "cmov", word: .l1edx, bit: 15, implemented: true),
    .init(name: "pat", word: .l1edx, bit: 16, implemented: true),
    .init(name: "pse36", word: .l1edx, bit: 17, implemented: true),
    .init(name: "clflush", word: .l1edx, bit: 19, implemented: true),
    .init(name: "mmx", word: .l1edx, bit: 23, implemented: true),
    .init(name: "fxsr", word: .l1edx, bit: 24, implemented: true),
    .init(name: "sse", word: .l1edx, bit: 25, implemented: true),
    .init(name: "sse2", word: .l1edx, bit: 26, implemented: true),
    .init(name: "ss", word: .l1edx, bit: 27, implemented: true),
    .init(name: "ht", word: .l1edx, bit: 28, implemented: false),
    // leaf 1 ECX
    .init(name: "pni", word: .l1ecx, bit: 0, implemented: true),
    .init(name: "pclmulqdq", word: .l1ecx, bit: 1, implemented: false),
    .init(name: "monitor", word: .l1ecx, bit: 3, implemented: false),
    .init(name: "ssse3", word: .l1ecx, bit: 9, implemented: true),
    .init(name: "fma", word: .l1ecx, bit: 12, implemented: false),
    .init(name: "cx16", word: .l1ecx, bit: 13, implemented: true),
    .init(name: "sse4.1", word: .l1ecx, bit: 19, implemented: true),
    .init(name: "sse4.2", word: .l1ecx, bit: 20, implemented: true),
    .init(name: "x2apic", word: .l1ecx, bit: 21, implemented: true),
    .init(name: "movbe", word: .l1ecx, bit: 22, implemented: true),
    .init(name: "popcnt", word: .l1ecx, bit: 23, implemented: true),
    .init(name: "tsc-deadline", word: .l1ecx, bit: 24, implemented: true),
    .init(name: "aes", word: .l1ecx, bit: 25, implemented: false),
    .init(name: "xsave", word: .l1ecx, bit: 26, implemented: true),
    .init(name: "avx", word: .l1ecx, bit: 28, implemented: false),
    .init(name: "f16c", word: .l1ecx, bit: 29, implemented: false),
    .init(name: "rdrand", word: .l1ecx, bit: 30, implemented: false),
    .init(name: "hypervisor", word: .l1ecx, bit: 31, implemented: true),
    // leaf 7 subleaf 0
    .init(name: "fsgsbase", word: .l7ebx, bit: 0, implemented: true),
    .init(name: "bmi1", word: .l7ebx, bit: 3, implemented: false),
    .init(name: "avx2", word: .l7ebx, bit: 5, implemented: false),
    .init(name: "smep", word: .l7ebx, bit: 7, implemented: true),
    .init(name: "bmi2", word: .l7ebx, bit: 8, implemented: false),
    .init(name: "erms", word: .l7ebx, bit: 9, implemented: true),
    .init(name: "invpcid", word: .l7ebx, bit: 10, implemented: false),
    .init(name: "smap", word: .l7ebx, bit: 20, implemented: false),
    .init(name: "clflushopt", word: .l7ebx, bit: 23, implemented: true),
    .init(name: "umip", word: .l7ecx, bit: 2, implemented: false),
    .init(name: "rdpid", word: .l7ecx, bit: 22, implemented: true),
    .init(name: "fsrm", word: .l7edx, bit: 4, implemented: true),
    // extended leaf 0x80000001
    .init(name: "syscall", word: .e1edx, bit: 11, implemented: true),
    .init(name: "nx", word: .e1edx, bit: 20, implemented: true),
    .init(name: "mmxext", word: .e1edx, bit: 22, implemented: false),
    .init(name: "fxsr-opt", word: .e1edx, bit: 25, implemented: false),
    .init(name: "pdpe1gb", word: .e1edx, bit: 26, implemented: true),
    .init(name: "rdtscp", word: .e1edx, bit: 27, implemented: true),
    .init(name: "lm", word: .e1edx, bit: 29, implemented: true),
    .init(name: "lahf-lm", word: .e1ecx, bit: 0, implemented: true),
    .init(name: "svm", word: .e1ecx, bit: 2, implemented: false),
    .init(name: "abm", word: .e1ecx, bit: 5, implemented: true),
    .init(name: "sse4a", word: .e1ecx, bit: 6, implemented: false),
    .init(name: "3dnowprefetch", word: .e1ecx, bit: 8, implemented: true),
    // leaf 0xD subleaf 1
    .init(name: "xsaveopt", word: .l0dEax1, bit: 0, implemented: false),
]

public struct CPUModelError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// A CPU model as `-cpu` names it. Value type; the CPU derives CPUID from it.
public struct CPUModel: Sendable, Equatable {
    public var name: String
    public var vendor: String
    public var family: Int
    public var model: Int
    public var stepping: Int
    public var modelID: String
    /// Highest basic and extended CPUID leaves.
    public var level: UInt32
    public var xlevel: UInt32
    /// Feature words indexed by `CPUIDFeature.Word.rawValue`.
    var words: [UInt32]
    /// Requested features that were dropped because the interpreter does not implement them.
    public private(set) var warnings: [String] = []

    /// QEMU's default for -M pc.
    public static var qemu64: CPUModel { try! CPUModel(parsing: "qemu64") }
    /// Everything this interpreter implements.
    public static var max: CPUModel { try! CPUModel(parsing: "max") }

    /// Parses QEMU's -cpu argument: `NAME[,+feat|-feat|feat=on|feat=off]...`.
    public init(parsing spec: String) throws(CPUModelError) {
        var parts = spec.split(separator: ",", omittingEmptySubsequences: true).map(String.init)
        guard !parts.isEmpty else { throw CPUModelError(description: "CPU model name missing") }
        let base = parts.removeFirst()
        words = Array(repeating: 0, count: CPUIDFeature.Word.allCases.count)
        name = base
        switch base {
        case "qemu64":
            vendor = "AuthenticAMD"; family = 15; model = 107; stepping = 1
            modelID = "QEMU Virtual CPU version 2.5+"
            level = 0xD; xlevel = 0x8000_000A
            for f in ["fpu", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr", "pge",
                      "mca", "cmov", "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2",
                      "pni", "cx16", "hypervisor", "syscall", "nx", "lm", "lahf-lm"] {
                try Self.set(&words, f, true)
            }
        case "max", "host":
            // QEMU TCG's max: qemu64's identity (an AMD family 0Fh part, which Linux does not take for
            // one with Intel's speculation bugs) with every feature the interpreter implements.
            vendor = "AuthenticAMD"; family = 15; model = 107; stepping = 1
            modelID = "QEMU TCG CPU version 2.5+"
            level = 0xD; xlevel = 0x8000_0008
            for f in cpuidFeatureTable where f.implemented {
                words[f.word.rawValue] |= 1 << UInt32(f.bit)
            }
        default:
            throw CPUModelError(description: "unable to find CPU model '\(base)'")
        }
        for p in parts {
            var fname = p
            var on = true
            if p.hasPrefix("+") { fname = String(p.dropFirst()) }
            else if p.hasPrefix("-") { fname = String(p.dropFirst()); on = false }
            else if let eq = p.firstIndex(of: "=") {
                fname = String(p[..<eq])
                let v = p[p.index(after: eq)...]
                switch v {
                case "on", "true", "yes": on = true
                case "off", "false", "no": on = false
                default: throw CPUModelError(description: "Parameter '\(fname)' expects 'on' or 'off'")
                }
            }
            fname = String(fname.map { $0 == "_" ? "-" : $0 })
            if fname == "sse4-1" { fname = "sse4.1" }
            if fname == "sse4-2" { fname = "sse4.2" }
            if fname == "sse3" { fname = "pni" }
            guard let f = cpuidFeatureTable.first(where: { $0.name == fname }) else {
                throw CPUModelError(description: "Property '\(fname)' not found")
            }
            if on && !f.implemented {
                warnings.append("TCG doesn't support requested feature: \(fname)")
                continue
            }
            try Self.set(&words, fname, on)
        }
    }

    private static func set(_ words: inout [UInt32], _ name: String, _ on: Bool) throws(CPUModelError) {
        guard let f = cpuidFeatureTable.first(where: { $0.name == name }) else {
            throw CPUModelError(description: "Property '\(name)' not found")
        }
        if on { words[f.word.rawValue] |= 1 << UInt32(f.bit) } else { words[f.word.rawValue] &= ~(1 << UInt32(f.bit)) }
    }

    /// Whether the model reports a feature (QEMU name).
    public func has(_ feature: String) -> Bool {
        guard let f = cpuidFeatureTable.first(where: { $0.name == feature }) else { return false }
        return words[f.word.rawValue] & (1 << UInt32(f.bit)) != 0
    }

    func word(_ w: CPUIDFeature.Word) -> UInt32 { words[w.rawValue] }
}
