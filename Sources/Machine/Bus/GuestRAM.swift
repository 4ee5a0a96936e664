// Guest RAM: host memory mapped once, shared by the CPU (interpreter or KVM) and device DMA.
//
// One anonymous mapping holds all RAM (MAP_NORESERVE: untouched pages cost nothing). The board
// describes which guest-physical windows show which part of it (below/above 4 GiB, the ISA hole),
// plus ROM images (the BIOS at the top of 4 GiB). The same region list feeds `GuestMemory` for the
// interpreter and the KVM memory slots. DMA helpers check every guest-supplied address/length and
// report outside writes to the interpreter's code cache.
import Glibc
import X86

public final class GuestRAM: @unchecked Sendable {
    /// A guest-physical window onto host memory.
    public struct Window: Sendable {
        public var guestPhysical: UInt64
        public var size: UInt64
        /// Offset in `ram` or in a ROM allocation.
        public var hostOffset: UInt64
        public var isROM: Bool
        public var romIndex: Int
    }

    public enum RAMError: Error, CustomStringConvertible {
        case allocation(UInt64, Int32)
        public var description: String {
            switch self {
            case let .allocation(size, e):
                return "cannot set up guest memory 'pc.ram': \(String(cString: strerror(e))) (\(size) bytes)"
            }
        }
    }

    public let ramSize: UInt64
    public let ram: UnsafeMutableRawPointer
    private var roms: [(UnsafeMutableRawPointer, UInt64)] = []
    public private(set) var windows: [Window] = []
    public private(set) var memory: GuestMemory

    public init(size: UInt64) throws {
        ramSize = size
        let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED else { throw RAMError.allocation(size, errno) }
        ram = p
        memory = GuestMemory(regions: [])
    }

    deinit {
        munmap(ram, Int(ramSize))
        for (p, s) in roms { munmap(p, Int(s)) }
    }

    /// Shows RAM bytes [hostOffset, hostOffset+size) at guest-physical `at`.
    public func mapRAM(at guest: UInt64, size: UInt64, hostOffset: UInt64) {
        precondition(hostOffset <= ramSize && size <= ramSize - hostOffset)
        windows.append(Window(guestPhysical: guest, size: size, hostOffset: hostOffset, isROM: false, romIndex: -1))
        rebuild()
    }

    /// Maps a read-only copy of `bytes` (padded to `size`) at `at`.
    public func mapROM(at guest: UInt64, bytes: [UInt8], size: UInt64) throws {
        let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { throw RAMError.allocation(size, errno) }
        bytes.withUnsafeBytes { b in p.copyMemory(from: b.baseAddress!, byteCount: min(b.count, Int(size))) }
        roms.append((p, size))
        windows.append(Window(guestPhysical: guest, size: size, hostOffset: 0, isROM: true, romIndex: roms.count - 1))
        rebuild()
    }

    public func host(of w: Window) -> UnsafeMutableRawPointer {
        w.isROM ? roms[w.romIndex].0 : ram + Int(w.hostOffset)
    }

    private func rebuild() {
        let observer = memory.writeObserver
        memory = GuestMemory(regions: windows.map {
            GuestRAMRegion(guestPhysical: $0.guestPhysical, size: $0.size, host: host(of: $0), readOnly: $0.isROM)
        })
        memory.writeObserver = observer
    }

    // MARK: DMA and loader access (checked)

    /// Host pointer for [physical, physical+length) when it lies in one RAM window; nil otherwise.
    public func pointer(_ physical: UInt64, _ length: UInt64) -> UnsafeMutableRawPointer? {
        memory.hostPointer(physical: physical, length: length)
    }

    /// Copies guest bytes out; false when the range is not all RAM.
    public func read(_ physical: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard let p = pointer(physical, UInt64(buffer.count)) else { return false }
        if buffer.count > 0 { buffer.baseAddress!.copyMemory(from: p, byteCount: buffer.count) }
        return true
    }

    /// Copies bytes into guest RAM (ROM windows too: this is the loader's path); false when not RAM.
    @discardableResult
    public func write(_ physical: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool {
        guard let p = pointer(physical, UInt64(buffer.count)) else { return false }
        if buffer.count > 0 { p.copyMemory(from: buffer.baseAddress!, byteCount: buffer.count) }
        memory.didWrite(physical: physical, length: UInt64(buffer.count))
        return true
    }

    @discardableResult
    public func write(_ physical: UInt64, bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { write(physical, from: $0) }
    }

    public func readBytes(_ physical: UInt64, count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBytes { read(physical, into: $0) }
        return ok ? out : nil
    }

    public func load<T: FixedWidthInteger>(_ physical: UInt64, as: T.Type) -> T? {
        guard let p = pointer(physical, UInt64(MemoryLayout<T>.size)) else { return nil }
        return T(littleEndian: p.loadUnaligned(as: T.self))
    }

    @discardableResult
    public func store<T: FixedWidthInteger>(_ physical: UInt64, _ value: T) -> Bool {
        guard let p = pointer(physical, UInt64(MemoryLayout<T>.size)) else { return false }
        p.storeBytes(of: value.littleEndian, as: T.self)
        memory.didWrite(physical: physical, length: UInt64(MemoryLayout<T>.size))
        return true
    }
}
