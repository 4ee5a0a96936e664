// QEMU's BIOS linker/loader ("etc/table-loader"): how firmware (SeaBIOS, OVMF) places fw_cfg blobs
// in guest memory and links them. Each command is a 128-byte little-endian record:
//   1 ALLOCATE     file[56], align u32, zone u8 (1 = high memory, 2 = the F segment)
//   2 ADD_POINTER  dest file[56], src file[56], offset u32, size u8: the integer of `size` bytes at
//                  `offset` in dest gets the address the firmware gave src added to it
//   3 ADD_CHECKSUM file[56], offset u32, start u32, length u32: the byte at `offset` is adjusted so
//                  that bytes [start, start+length) sum to zero
// The ACPI tables travel as "etc/acpi/tables" (pointers inside are offsets into that file) and the
// RSDP as "etc/acpi/rsdp", in the F segment where operating systems look for it.

public struct TableLoader: Sendable {
    public enum Zone: UInt8, Sendable { case high = 1, fseg = 2 }
    public static let fileNameSize = 56
    public static let entrySize = 128

    public private(set) var bytes: [UInt8] = []

    public init() {}

    private static func name(_ s: String) -> [UInt8] {
        var n = Array(s.utf8.prefix(fileNameSize - 1))
        n += [UInt8](repeating: 0, count: fileNameSize - n.count)
        return n
    }

    private mutating func append(_ command: UInt32, _ body: [UInt8]) {
        var e = AML.le(UInt64(command), 4) + body
        e += [UInt8](repeating: 0, count: TableLoader.entrySize - e.count)
        bytes += e
    }

    public mutating func allocate(_ file: String, align: UInt32, zone: Zone) {
        append(1, TableLoader.name(file) + AML.le(UInt64(align), 4) + [zone.rawValue])
    }

    public mutating func addPointer(in dest: String, to src: String, offset: Int, size: Int) {
        append(2, TableLoader.name(dest) + TableLoader.name(src) + AML.le(UInt64(offset), 4) + [UInt8(size)])
    }

    public mutating func addChecksum(in file: String, offset: Int, start: Int, length: Int) {
        append(3, TableLoader.name(file) + AML.le(UInt64(offset), 4) + AML.le(UInt64(start), 4) + AML.le(UInt64(length), 4))
    }
}
