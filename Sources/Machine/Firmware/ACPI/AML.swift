// A small AML (ACPI Machine Language) builder: enough of ACPI 6.x section 20 to describe the pc
// machine's namespace (names, scopes, devices, methods, packages, buffers and resource templates),
// plus the operation regions, fields and few operators (Store, And, Or, If, CreateDWordField) that
// the PCI interrupt link methods are written in.
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

    /// A reference to a named object (as an argument, operand, target or package element).
    public static func reference(_ n: String) -> AML { AML(nameString(n)) }

    /// A call of method `n` with its arguments (the method must be declared before, as ASL requires).
    public static func call(_ n: String, _ args: [AML] = []) -> AML { AML(nameString(n) + args.flatMap(\.bytes)) }

    // MARK: arguments, locals and operators

    public static func arg(_ n: Int) -> AML {
        precondition(n >= 0 && n <= 6)
        return AML([0x68 + UInt8(n)])
    }

    public static func local(_ n: Int) -> AML {
        precondition(n >= 0 && n <= 7)
        return AML([0x60 + UInt8(n)])
    }

    /// Store(source, target).
    public static func store(_ source: AML, _ target: AML) -> AML { AML([0x70] + source.bytes + target.bytes) }

    /// And(a, b, target) / Or(a, b, target); without a target the result is only the value.
    public static func and(_ a: AML, _ b: AML, _ target: AML? = nil) -> AML { AML([0x7B] + a.bytes + b.bytes + (target?.bytes ?? [0x00])) }
    public static func or(_ a: AML, _ b: AML, _ target: AML? = nil) -> AML { AML([0x7D] + a.bytes + b.bytes + (target?.bytes ?? [0x00])) }

    public static func lEqual(_ a: AML, _ b: AML) -> AML { AML([0x93] + a.bytes + b.bytes) }
    public static func lLess(_ a: AML, _ b: AML) -> AML { AML([0x95] + a.bytes + b.bytes) }

    /// If(predicate) { terms }.
    public static func `if`(_ predicate: AML, _ terms: [AML]) -> AML {
        let body = predicate.bytes + terms.flatMap(\.bytes)
        return AML([0xA0] + pkgLength(body.count) + body)
    }

    /// Else { terms } (directly after an If).
    public static func `else`(_ terms: [AML]) -> AML {
        let body = terms.flatMap(\.bytes)
        return AML([0xA1] + pkgLength(body.count) + body)
    }

    /// CreateDWordField(source, byteIndex, name).
    public static func createDWordField(_ source: AML, byteIndex: AML, _ n: String) -> AML {
        AML([0x8A] + source.bytes + byteIndex.bytes + nameString(n))
    }

    // MARK: operation regions and fields

    public enum RegionSpace: UInt8, Sendable { case systemMemory = 0, systemIO = 1, pciConfig = 2 }
    public enum FieldAccess: UInt8, Sendable { case any = 0, byte = 1, word = 2, dword = 3 }
    public enum FieldUpdate: UInt8, Sendable { case preserve = 0, writeAsOnes = 1, writeAsZeros = 2 }

    /// OperationRegion(n, space, offset, length).
    public static func operationRegion(_ n: String, _ space: RegionSpace, offset: UInt64, length: UInt64) -> AML {
        AML([0x5B, 0x80] + nameString(n) + [space.rawValue] + integer(offset).bytes + integer(length).bytes)
    }

    /// Field(region, access, Lock/NoLock, update) { name, bits; ... } with the fields packed from offset 0.
    public static func field(_ region: String, _ access: FieldAccess, lock: Bool = false, update: FieldUpdate = .preserve,
                             _ fields: [(name: String, bits: Int)]) -> AML {
        var body = nameString(region) + [access.rawValue | (lock ? 0x10 : 0) | update.rawValue << 5]
        for f in fields {
            precondition(f.name.utf8.count == 4, "a field name is one NameSeg")
            body += Array(f.name.utf8) + encodedLength(f.bits)
        }
        return AML([0x5B, 0x81] + pkgLength(body.count) + body)
    }

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

    /// A value in PkgLength's encoding that does not count itself (field widths in bits).
    static func encodedLength(_ v: Int) -> [UInt8] {
        if v < 0x40 { return [UInt8(v)] }
        for extra in 1...3 where v < 1 << (4 + 8 * extra) {
            var out = [UInt8(extra << 6) | UInt8(v & 0x0F)]
            for i in 0..<extra { out.append(UInt8((v >> (4 + 8 * i)) & 0xFF)) }
            return out
        }
        preconditionFailure("AML length too large")
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

    /// DMA(Compatibility, NotBusMaster, Transfer8) { channel }.
    public static func dma(channel: Int) -> [UInt8] { [0x2A, UInt8(1 << channel), 0x00] }

    /// Memory32Fixed(ReadWrite or ReadOnly, base, length).
    public static func memory32Fixed(base: UInt32, length: UInt32, readOnly: Bool = false) -> [UInt8] {
        [0x86, 0x09, 0x00, readOnly ? 0x00 : 0x01] + AML.le(UInt64(base), 4) + AML.le(UInt64(length), 4)
    }

    /// Interrupt(ResourceConsumer, Level/Edge, ActiveHigh/Low, Shared/Exclusive) { irqs } (extended
    /// interrupt descriptor); the first IRQ's DWord is at byte 5, where _SRS methods read it.
    public static func interrupt(_ irqs: [UInt32], level: Bool = true, activeHigh: Bool = true, shared: Bool = true) -> [UInt8] {
        precondition(!irqs.isEmpty && irqs.count < 64)
        let flags: UInt8 = 0x01 | (level ? 0 : 0x02) | (activeHigh ? 0 : 0x04) | (shared ? 0x08 : 0)
        return [0x89] + AML.le(UInt64(2 + 4 * irqs.count), 2) + [flags, UInt8(irqs.count)] + irqs.flatMap { AML.le(UInt64($0), 4) }
    }

    /// WordBusNumber / WordIO: a producer range with fixed min and max.
    public static func wordAddress(type: UInt8, typeFlags: UInt8, min: UInt16, max: UInt16) -> [UInt8] {
        let len = UInt64(max) - UInt64(min) + 1
        return [0x88, 0x0D, 0x00, type, 0x0C, typeFlags] + AML.le(0, 2) + AML.le(UInt64(min), 2)
            + AML.le(UInt64(max), 2) + AML.le(0, 2) + AML.le(len, 2)
    }

    public static func wordBusNumber(min: UInt16, max: UInt16) -> [UInt8] { wordAddress(type: 2, typeFlags: 0, min: min, max: max) }
    public static func wordIO(min: UInt16, max: UInt16) -> [UInt8] { wordAddress(type: 1, typeFlags: 0x03, min: min, max: max) }

    /// DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable or NonCacheable, ReadWrite).
    public static func dwordMemory(min: UInt32, max: UInt32, cacheable: Bool = true) -> [UInt8] {
        let len = UInt64(max) - UInt64(min) + 1
        return [0x87, 0x17, 0x00, 0x00, 0x0C, cacheable ? 0x03 : 0x01] + AML.le(0, 4) + AML.le(UInt64(min), 4)
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
