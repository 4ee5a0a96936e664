// CPUID: the leaves a `CPUModel` produces, computed once per vCPU (leaf 1's OSXSAVE and APIC ID
// are filled in at execution time).

struct CPUIDTable {
    var basic: [[UInt32]] = []       // leaves 0...level: (eax, ebx, ecx, edx)
    var ext: [[UInt32]] = []         // leaves 0x80000000...xlevel
    var level: UInt32 = 0
    var xlevel: UInt32 = 0

    init(model m: CPUModel, index: Int) {
        level = m.level
        xlevel = m.xlevel
        let v = Array(m.vendor.utf8)
        func word(_ k: Int) -> UInt32 {
            UInt32(v[k]) | UInt32(v[k + 1]) << 8 | UInt32(v[k + 2]) << 16 | UInt32(v[k + 3]) << 24
        }
        let vb = word(0), vd = word(4), vc = word(8)
        let fam = m.family, mdl = m.model
        var sig = UInt32(m.stepping & 0xF) | UInt32(mdl & 0xF) << 4 | UInt32(min(fam, 0xF)) << 8
        if fam >= 0xF { sig |= UInt32(fam - 0xF) << 20 }
        if fam >= 6 { sig |= UInt32((mdl >> 4) & 0xF) << 16 }
        for leaf in 0...Int(level) {
            var e: [UInt32] = [0, 0, 0, 0]
            switch leaf {
            case 0: e = [level, vb, vc, vd]
            case 1: e = [sig, UInt32(index) << 24 | 1 << 16 | 8 << 8, m.word(.l1ecx), m.word(.l1edx)]
            case 2: e = [1, 0, 0, 0x2C307D]
            case 7: e = [0, m.word(.l7ebx), m.word(.l7ecx), m.word(.l7edx)]
            case 0xB: e = [0, 1, 0x100, UInt32(index)]
            case 0xD: e = [3, 576, 576, 0]
            default: break
            }
            basic.append(e)
        }
        let brand = Array(m.modelID.utf8) + Array(repeating: 0, count: 48)
        func bw(_ k: Int) -> UInt32 {
            UInt32(brand[k]) | UInt32(brand[k + 1]) << 8 | UInt32(brand[k + 2]) << 16 | UInt32(brand[k + 3]) << 24
        }
        var e1edx = m.word(.e1edx)
        if m.vendor == "AuthenticAMD" { e1edx |= m.word(.l1edx) & 0x0183_F3FF }
        for leaf in 0...Int(xlevel - 0x8000_0000) {
            var e: [UInt32] = [0, 0, 0, 0]
            switch leaf {
            case 0: e = [xlevel, vb, vc, vd]
            case 1: e = [sig, 0, m.word(.e1ecx), e1edx]
            case 2, 3, 4:
                let o = (leaf - 2) * 16
                e = [bw(o), bw(o + 4), bw(o + 8), bw(o + 12)]
            case 5: e = [0x01FF_01FF, 0x01FF_01FF, 0x4002_0140, 0x4002_0140]
            case 6: e = [0, 0x4200_4200, 0x0200_8140, 0]
            case 8: e = [0x3028, 0, 0, 0]
            default: break
            }
            ext.append(e)
        }
    }
}

extension CPUCore {
    mutating func cpuid(_ leaf0: UInt32, _ sub: UInt32) -> (UInt32, UInt32, UInt32, UInt32) {
        var leaf = leaf0
        if leaf >= 0x4000_0000 && leaf < 0x8000_0000 && leaf > cpuidCache.level { return (0, 0, 0, 0) }
        if leaf >= 0x8000_0000 {
            if leaf > cpuidCache.xlevel { leaf = cpuidCache.level } else {
                let e = cpuidCache.ext[Int(leaf - 0x8000_0000)]
                return (e[0], e[1], e[2], e[3])
            }
        }
        if leaf > cpuidCache.level { leaf = cpuidCache.level }
        var e = cpuidCache.basic[Int(leaf)]
        switch leaf {
        case 1:
            if cr4 & 0x4_0000 != 0 { e[2] |= 1 << 27 }
        case 7:
            if sub != 0 { return (0, 0, 0, 0) }
        case 0xB:
            if sub == 0 { return (0, 1, 0x100, UInt32(index)) }
            if sub == 1 { return (0, 1, 0x201, UInt32(index)) }
            return (0, 0, sub & 0xFF, UInt32(index))
        case 0xD:
            switch sub {
            case 0: return (3, 576, 576, 0)
            default: return (0, 0, 0, 0)
            }
        case 4:
            return (0, 0, 0, 0)
        default: break
        }
        return (e[0], e[1], e[2], e[3])
    }
}
