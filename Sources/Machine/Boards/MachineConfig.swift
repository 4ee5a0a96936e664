// Everything vmrun's command line decides, as one value the board is built from. Parsing QEMU's
// argv into it is the front end's job (Sources/vmrun); block nodes arrive already opened through
// the ImageFormats graph.
import ImageFormats

/// A drive as QEMU's BlockBackend: the device-facing name and the root node of its graph.
public struct DriveConfig: @unchecked Sendable {
    /// The backend name ("virtio0", or -drive id=).
    public var id: String
    public var node: any BlockNode
    public var readOnly: Bool
    /// discard=unmap
    public var discard: Bool
    /// QEMU's cache mode name, for query-block ("writeback", "none", ...).
    public var cache: (writeback: Bool, direct: Bool, noFlush: Bool) = (true, false, false)
    public var detectZeroes: String = "off"
    public var snapshot = false
    /// The root node's node-name (-blockdev node-name, -drive node-name=); nil: an automatic "#blockNNN".
    public var nodeName: String?
    public init(id: String, node: any BlockNode, readOnly: Bool, discard: Bool) {
        self.id = id
        self.node = node
        self.readOnly = readOnly
        self.discard = discard
    }
}

/// -device virtio-blk-pci,...
public struct VirtioBlkConfig: @unchecked Sendable {
    public var drive: DriveConfig
    /// The device's id= (qdev id), nil when anonymous.
    public var deviceID: String?
    public var serial: String?
    public var numQueues = 1
    /// Ring entries per queue (QEMU's queue-size, default 256); seg_max is two less.
    public var queueSize: UInt16 = 256
    public var iothread: String?
    /// addr= (PCI device number), nil: first free.
    public var slot: Int?
    /// Transitional (legacy I/O BAR too), QEMU's default on pc; disable-legacy=on turns it off.
    public var legacy = true
    public init(drive: DriveConfig) { self.drive = drive }
}

public struct MachineConfig: @unchecked Sendable {
    public var ramSize: UInt64 = 128 << 20
    public var cpus = 1
    public var kernel: String?
    public var initrd: String?
    public var append = ""
    public var bios: String?
    public var serial: ChardevSpec? = .null
    public var name: String?
    public var noReboot = false
    public var noShutdown = false
    public var startPaused = false
    /// isa-debug-exit iobase/iosize.
    public var debugExit: (base: UInt16, size: UInt16)?
    /// isa-debugcon iobase and where its bytes go.
    public var debugCon: (base: UInt16, chardev: ChardevSpec)?
    public var disks: [VirtioBlkConfig] = []
    public var iothreads: [String] = []
    public var hpet = true
    public init() {}

    public static let defaultBIOS = "/usr/share/seabios/bios-256k.bin"
}
