// What a virtio device type (block, ...) provides to a transport, and what the transport gives back.
//
// The device type knows its features, configuration space and request processing; the transport
// (virtio-pci here) owns feature negotiation, status, queue set-up and interrupt delivery. This is
// the split virtio 1.x draws between "device types" (section 5) and "transports" (section 4).
public protocol VirtioDeviceType: AnyObject, Sendable {
    /// Virtio device ID (2 = block).
    var virtioDeviceID: UInt16 { get }
    /// Feature bits offered, including transport bits (VERSION_1, INDIRECT_DESC).
    var deviceFeatures: UInt64 { get }
    var queueCount: Int { get }
    var queueMaxSize: UInt16 { get }
    /// Device-specific configuration space (little-endian fields), bounds-checked by the device.
    func readConfig(offset: Int, size: Int) -> UInt64
    func writeConfig(offset: Int, size: Int, value: UInt64)
    /// DRIVER_OK: the negotiated features and the ready queues; the device may start serving.
    func activate(features: UInt64, queues: [Virtqueue], interrupts: any VirtioInterrupts)
    /// The driver notified queue `index` (already range-checked).
    func notify(queue index: Int)
    /// The driver reset the device: stop using the queues.
    func deviceReset()
}

/// How a device signals the driver (MSI-X vector or INTx + ISR, chosen by the transport).
public protocol VirtioInterrupts: AnyObject, Sendable {
    func usedBuffers(queue: Int)
    func configChanged()
    /// A queue is broken (guest programming error): set DEVICE_NEEDS_RESET.
    func deviceNeedsReset(_ reason: String)
}

public enum VirtioFeature {
    public static let indirectDesc: UInt64 = 1 << 28
    public static let eventIdx: UInt64 = 1 << 29
    public static let version1: UInt64 = 1 << 32
    public static let accessPlatform: UInt64 = 1 << 33
}

public enum VirtioStatus {
    public static let acknowledge: UInt8 = 1, driver: UInt8 = 2, driverOK: UInt8 = 4, featuresOK: UInt8 = 8
    public static let needsReset: UInt8 = 64, failed: UInt8 = 128
}
