// A small AML (ACPI Machine Language) builder: enough of ACPI 6.x section 20 to describe the pc
// machine's namespace (names, scopes, devices, methods, packages, buffers and resource templates).
//
// Terms are values (`AML`) holding their encoded bytes; containers compute their PkgLength when
// built, so nesting is just composition:
//   AML.scope("\\_SB", [AML.device("PCI0", [AML.name("_HID", .eisaID("PNP0A03")), ...])])
// Only what our DSDT needs is here; every encoding follows the spec's grammar (20.2).

public struct AML: Sendable, Equatable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    // MARK: data objects

    public static let zero = AML([0x00])
    public static let one = AML([0x01])
    public static let ones = AML([0xFF])

    public static func integer(_ v: UInt64) -> AML {
        switch v {
        case 0: return zero
        case 1: return one
        case ...0xFF: return AML([0x0A, UInt8(v)])
        case ...0xFFFF: return AML([0x0B] + le(v, 2))
        case ...0xFFFF_FFFF: return AML([0x0C] + le(v, 4))
        default: return AML([0x0E] + le(v, 8))
        }
    }

    public static func string(_ s: String) -> AML { AML([0x0D] + Array(s.utf8) + [0]) }

    /// EISA ID ("PNP0A03") compressed to a DWord, as EisaId() in ASL.
    public static func eisaID(_ id: String) -> AML {
        let c = Array(id.utf8)
        precondition(c.count == 7)
        func hex(_ x: UInt8) -> UInt32 { UInt32(x >= 0x41 ? x - 0x41 + 10 : x - 0x30) }
        let v: UInt32 = (UInt32(c[0] - 0x40) << 26) | (UInt32(c[1] - 0x40) << 21) | (UInt32(c[2] - 0x40) << 16)
            | (hex(c[3]) << 12) | (hex(c[4]) << 8) | (hex(c[5]) << 4) | hex(c[6])
        return AML([0x0C] + le(UInt64(v.byteSwapped), 4))
    }

    public static func package(_ elements: [AML]) -> AML {
        precondition(elements.count <= 255)
        let body = [UInt8(elements.count)] + elements.flatMap(\.bytes)
        return AML([0x12] + pkgLength(body.count) + body)
    }

    public static func buffer(_ data: [UInt8]) -> AML {
        let body = integer(UInt64(data.count)).bytes + data
        return AML([0x11] + pkgLength(body.count) + body)
    }

    // MARK: named objects and containers

    public static func name(_ n: String, _ value: AML) -> AML { AML([0x08] + nameString(n) + value.bytes) }

    public static func scope(_ n: String, _ terms: [AML]) -> AML {
        let body = nameString(n) + terms.flatMap(\.bytes)
        return AML([0x10] + pkgLength(body.count) + body)
    }

    public static func device(_ n: String, _ terms: [AML]) -> AML {
        let body = nameString(n) + terms.flatMap(\.bytes)
        return AML([0x5B, 0x82] + pkgLength(body.count) + body)
    }

    /// Method(n, argCount, NotSerialized) { terms }.
    public static func method(_ n: String, args: Int = 0, serialized: Bool = false, _ terms: [AML]) -> AML {
        precondition(args >= 0 && args <= 7)
        let body = nameString(n) + [UInt8(args) | (serialized ? 0x08 : 0)] + terms.flatMap(\.bytes)
        return AML([0x14] + pkgLength(body.count) + body)
    }

    public static func `return`(_ v: AML) -> AML { AML([0xA4] + v.bytes) }

    /// A reference to a named object (as an argument or return value).
    public static func reference(_ n: String) -> AML { AML(nameString(n)) }

    // MARK: encodings

    /// PkgLength for a body of `n` bytes (the encoding counts its own bytes).
    static func pkgLength(_ n: Int) -> [UInt8] {
        if n + 1 < 0x40 { return [UInt8(n + 1)] }
        for extra in 1...3 {
            let total = n + 1 + extra
            if total < 1 << (4 + 8 * extra) {
                var out = [UInt8(extra << 6) | UInt8(total & 0x0F)]
                for i in 0..<extra { out.append(UInt8((total >> (4 + 8 * i)) & 0xFF)) }
                return out
            }
        }
        preconditionFailure("AML package too large")
    }

    /// A NameString: optional root prefix "\\" or parent prefixes "^", then dot-separated segments
    /// of up to four characters (padded with "_").
    static func nameString(_ n: String) -> [UInt8] {
        var s = Substring(n)
        var prefix: [UInt8] = []
        if s.hasPrefix("\\") { prefix = [0x5C]; s = s.dropFirst() }
        while s.hasPrefix("^") { prefix.append(0x5E); s = s.dropFirst() }
        let segs = s.split(separator: ".").map { seg -> [UInt8] in
            var b = Array(seg.utf8)
            precondition(!b.isEmpty && b.count <= 4)
            while b.count < 4 { b.append(0x5F) }
            return b
        }
        switch segs.count {
        case 0: return prefix + [0x00]
        case 1: return prefix + segs[0]
        case 2: return prefix + [0x2E] + segs[0] + segs[1]
        default: return prefix + [0x2F, UInt8(segs.count)] + segs.flatMap { $0 }
        }
    }

    static func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8((v >> (8 * UInt64($0))) & 0xFF) } }
}

/// Resource descriptors for _CRS buffers (ACPI 6.x section 6.4).
public enum AMLResource {
    /// IO(Decode16, min, max, align, length).
    public static func io(min: UInt16, max: UInt16, align: UInt8, length: UInt8) -> [UInt8] {
        [0x47, 0x01] + AML.le(UInt64(min), 2) + AML.le(UInt64(max), 2) + [align, length]
    }

    /// IRQNoFlags() { irq }.
    public static func irqNoFlags(_ irq: Int) -> [UInt8] { [0x22] + AML.le(UInt64(1) << UInt64(irq), 2) }

    /// Memory32Fixed(ReadWrite, base, length).
    public static func memory32Fixed(base: UInt32, length: UInt32) -> [UInt8] {
        [0x86, 0x09, 0x00, 0x01] + AML.le(UInt64(base), 4) + AML.le(UInt64(length), 4)
    }

    /// WordBusNumber / WordIO: a producer range with fixed min and max.
    public static func wordAddress(type: UInt8, typeFlags: UInt8, min: UInt16, max: UInt16) -> [UInt8] {
        let len = UInt64(max) - UInt64(min) + 1
        return [0x88, 0x0D, 0x00, type, 0x0C, typeFlags] + AML.le(0, 2) + AML.le(UInt64(min), 2)
            + AML.le(UInt64(max), 2) + AML.le(0, 2) + AML.le(len, 2)
    }

    public static func wordBusNumber(min: UInt16, max: UInt16) -> [UInt8] { wordAddress(type: 2, typeFlags: 0, min: min, max: max) }
    public static func wordIO(min: UInt16, max: UInt16) -> [UInt8] { wordAddress(type: 1, typeFlags: 0x03, min: min, max: max) }

    /// DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite).
    public static func dwordMemory(min: UInt32, max: UInt32) -> [UInt8] {
        let len = UInt64(max) - UInt64(min) + 1
        return [0x87, 0x17, 0x00, 0x00, 0x0C, 0x03] + AML.le(0, 4) + AML.le(UInt64(min), 4)
            + AML.le(UInt64(max), 4) + AML.le(0, 4) + AML.le(len, 4)
    }

    /// QWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite).
    public static func qwordMemory(min: UInt64, max: UInt64) -> [UInt8] {
        let len = max - min + 1
        return [0x8A, 0x2B, 0x00, 0x00, 0x0C, 0x03] + AML.le(0, 8) + AML.le(min, 8) + AML.le(max, 8)
            + AML.le(0, 8) + AML.le(len, 8)
    }

    /// A resource template buffer: descriptors followed by the end tag.
    public static func template(_ descriptors: [[UInt8]]) -> AML {
        AML.buffer(descriptors.flatMap { $0 } + [0x79, 0x00])
    }
}
