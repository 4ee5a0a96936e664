// What a PCI function is to the bus: a configuration space behind a lock, plus hooks for the few
// registers with side effects. Generic header and BAR semantics live in PCIConfigSpace; a device only
// adds its own behaviour in `configWillRead`/`configDidWrite`.
import Synchronization

public protocol PCIDevice: AnyObject, Sendable {
    /// Short name for messages and `info pci` ("virtio-blk-pci").
    var pciName: String { get }
    var config: Mutex<PCIConfigSpace> { get }
    /// Called after a guest config write was applied (MSI-X enable, PIRQ routing, ...).
    func configDidWrite(offset: Int, size: Int)
    /// The bus gives the device its INTx line when it is plugged in.
    func attachInterrupt(_ line: IRQLine)
    /// Back to power-on state (config registers other than the BAR declarations included).
    func pciReset()
}

extension PCIDevice {
    public func configDidWrite(offset: Int, size: Int) {}
    public func attachInterrupt(_ line: IRQLine) {}
    public func pciReset() {}
}

/// PCI address: bus 0 only (no bridges yet), device 0-31, function 0-7.
public struct PCIAddress: Hashable, Sendable, CustomStringConvertible, Comparable {
    public var device: Int
    public var function: Int
    public init(device: Int, function: Int = 0) {
        precondition(device >= 0 && device < 32 && function >= 0 && function < 8)
        self.device = device
        self.function = function
    }
    public var devfn: Int { device << 3 | function }
    public var description: String { "00:\(String(format2: device)).\(function)" }
    public static func < (a: PCIAddress, b: PCIAddress) -> Bool { a.devfn < b.devfn }
}

extension String {
    init(format2 v: Int) {
        let s = String(v, radix: 16)
        self = s.count < 2 ? "0" + s : s
    }
}
