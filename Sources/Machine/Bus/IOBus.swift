// Port I/O and MMIO dispatch: the machine's address spaces for everything that is not RAM.
//
// Devices register a range and receive accesses with the offset inside that range (as vm-superio's
// UART sees register offsets, not port numbers), so a device never knows where the board put it.
// Ranges never overlap; lookups are a binary search over a sorted array that is replaced as a whole
// (copy on write under a lock) when PCI BARs move, so the hot path reads an immutable snapshot.
// Unclaimed reads return all ones, unclaimed writes are dropped, as on a PC bus.
import Synchronization

/// A device with registers in port I/O or MMIO space. `offset` is relative to the registered base;
/// `size` is 1, 2, 4 (or 8 for MMIO). Calls come from any vCPU thread; devices lock their own state.
public protocol BusDevice: AnyObject, Sendable {
    func busRead(offset: UInt64, size: Int) -> UInt64
    func busWrite(offset: UInt64, size: Int, value: UInt64)
}

/// One address space (ports or MMIO).
public final class IOBus: Sendable {
    public struct Mapping: Sendable {
        public let base: UInt64
        public let length: UInt64
        public let device: any BusDevice
        public let name: String
    }

    public enum BusError: Error, Equatable, CustomStringConvertible {
        case overlap(String, String)
        case emptyRange(String)
        public var description: String {
            switch self {
            case let .overlap(a, b): return "I/O range of \(a) overlaps \(b)"
            case let .emptyRange(a): return "empty I/O range for \(a)"
            }
        }
    }

    public let name: String
    private let table = Mutex<[Mapping]>([])

    public init(name: String) { self.name = name }

    /// Adds `device` at [base, base+length). Throws on overlap.
    public func register(_ device: any BusDevice, base: UInt64, length: UInt64, name: String) throws {
        guard length > 0, base.addingReportingOverflow(length - 1).overflow == false else {
            throw BusError.emptyRange(name)
        }
        try table.withLock { maps in
            for m in maps where base < m.base &+ m.length && m.base < base &+ length {
                throw BusError.overlap(name, m.name)
            }
            maps.append(Mapping(base: base, length: length, device: device, name: name))
            maps.sort { $0.base < $1.base }
        }
    }

    /// Removes the mapping of `device` at `base` (PCI BAR moves). Returns whether one was removed.
    @discardableResult
    public func unregister(_ device: any BusDevice, base: UInt64) -> Bool {
        table.withLock { maps in
            let before = maps.count
            maps.removeAll { $0.base == base && $0.device === device }
            return maps.count != before
        }
    }

    public var mappings: [Mapping] { table.withLock { $0 } }

    /// The mapping containing `address`, if any.
    public func lookup(_ address: UInt64) -> Mapping? {
        let maps = table.withLock { $0 }
        var lo = 0, hi = maps.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let m = maps[mid]
            if address < m.base { hi = mid }
            else if address - m.base >= m.length { lo = mid + 1 }
            else { return m }
        }
        return nil
    }

    /// Reads `size` bytes at `address`; all ones when nothing answers.
    public func read(_ address: UInt64, size: Int) -> UInt64 {
        guard let m = lookup(address) else { return IOBus.allOnes(size) }
        return m.device.busRead(offset: address - m.base, size: size) & IOBus.mask(size)
    }

    /// Writes `size` bytes at `address`; returns false when nothing claimed it.
    @discardableResult
    public func write(_ address: UInt64, size: Int, value: UInt64) -> Bool {
        guard let m = lookup(address) else { return false }
        m.device.busWrite(offset: address - m.base, size: size, value: value & IOBus.mask(size))
        return true
    }

    @inline(__always)
    public static func mask(_ size: Int) -> UInt64 {
        size >= 8 ? ~0 : (UInt64(1) << (UInt64(size) * 8)) - 1
    }
    @inline(__always)
    public static func allOnes(_ size: Int) -> UInt64 { mask(size) }
}
