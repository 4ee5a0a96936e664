// The BIOS memory map (INT 15h E820) the guest sees, for the zero page and fw_cfg's etc/e820.
public struct E820Entry: Sendable, Equatable {
    public enum Kind: UInt32, Sendable { case ram = 1, reserved = 2, acpi = 3, nvs = 4 }
    public var address: UInt64
    public var size: UInt64
    public var kind: Kind
    public init(_ address: UInt64, _ size: UInt64, _ kind: Kind) {
        self.address = address
        self.size = size
        self.kind = kind
    }
    /// The 20-byte record (address, size, type).
    public var bytes: [UInt8] { AML.le(address, 8) + AML.le(size, 8) + AML.le(UInt64(kind.rawValue), 4) }
}

public enum E820 {
    /// The pc map for direct kernel boot: conventional memory up to the EBDA, the BIOS area
    /// (0xE0000-0xFFFFF, where the ACPI tables and MP table live) reserved, RAM from 1 MiB to the end
    /// of low memory, KVM's TSS/identity pages (with `kvm`, as QEMU reserves them only then) and the
    /// BIOS ROM reserved, and RAM above 4 GiB.
    public static func pcMap(_ map: PCMemoryMap, biosSize: UInt64, kvm: Bool = true) -> [E820Entry] {
        var e: [E820Entry] = [
            E820Entry(0, PCMemoryMap.ebdaStart, .ram),
            E820Entry(PCMemoryMap.ebdaStart, 0xA_0000 - PCMemoryMap.ebdaStart, .reserved),
            E820Entry(0xE_0000, 0x2_0000, .reserved),
        ]
        if map.below4G > 0x10_0000 { e.append(E820Entry(0x10_0000, map.below4G - 0x10_0000, .ram)) }
        if kvm { e.append(E820Entry(PCMemoryMap.kvmIdentityMap, 0x4000, .reserved)) }
        if biosSize > 0 { e.append(E820Entry(PCMemoryMap.fourGiB - biosSize, biosSize, .reserved)) }
        if map.above4G > 0 { e.append(E820Entry(PCMemoryMap.fourGiB, map.above4G, .ram)) }
        return e
    }
}
