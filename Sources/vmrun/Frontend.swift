// From parsed options to the machine's inputs: QEMU's defaults (-nographic puts the serial port and
// the monitor on stdio; -nodefaults drops the default serial), -device resolution (drive=, iothread=,
// addr=, isa-debug-exit's iobase/iosize), drives with if=virtio getting their own virtio-blk-pci,
// chardev references, and the monitors.
import Glibc
import Machine

enum Frontend {
    static func assemble(_ o: inout VMOptions) throws {
        // Serial default.
        if !o.serialGiven {
            o.config.serial = o.nographic ? .stdio(mux: true) : (o.nodefaults ? ChardevSpec.none : .null)
        }
        if case .chardevRef(let id)? = o.config.serial {
            guard let spec = o.chardevs[id] else { throw ArgvError(message: "-serial chardev:\(id): chardev '\(id)' not found") }
            o.config.serial = spec
        }
        // -device
        var anon = 0
        var disks: [(VirtioBlkConfig, Int)] = []
        for (text, opts) in o.deviceSpecs {
            let d = Dictionary(opts, uniquingKeysWith: { _, b in b })
            let driver = d["driver"] ?? OptionsParser.split(text).0
            let spelled = "-device"
            if driver == "isa-debug-exit" {
                let base = try number(d["iobase"] ?? "0x501", key: "iobase", text: text)
                let size = try number(d["iosize"] ?? "2", key: "iosize", text: text)
                o.config.debugExit = (UInt16(truncatingIfNeeded: base), UInt16(truncatingIfNeeded: size))
                continue
            }
            if driver == "isa-debugcon" {
                let base = try number(d["iobase"] ?? "0xe9", key: "iobase", text: text)
                guard let id = d["chardev"] else { throw ArgvError(message: "-device \(text): Can't create debugcon device, empty char device") }
                guard let spec = o.chardevs[id] else { throw ArgvError(message: "-device \(text): Property 'isa-debugcon.chardev' can't find value '\(id)'") }
                o.config.debugCon = (UInt16(truncatingIfNeeded: base), spec)
                continue
            }
            for (k, _) in opts where !["driver", "drive", "serial", "num-queues", "iothread", "id", "addr", "bus",
                                          "disable-legacy", "disable-modern", "config-wce", "scsi", "logical_block_size",
                                          "physical_block_size", "write-cache", "discard", "write-zeroes", "queue-size",
                                          "bootindex"].contains(k) && k != OptionsParser.split(text).0 {
                throw ArgvError(message: "\(spelled) \(text): Property 'virtio-blk-pci.\(k)' not found")
            }
            guard let driveName = d["drive"] else { throw ArgvError(message: "\(spelled) \(text): drive property not set") }
            let drive = try o.drives.claim(driveName, spelled: spelled, arg: text)
            var dc = drive
            if dc.id.isEmpty { dc.id = "" }
            var vc = VirtioBlkConfig(drive: dc)
            vc.deviceID = d["id"]
            vc.serial = d["serial"]
            if let q = d["num-queues"] {
                guard let n = Int(q), n >= 1, n <= 64 else {
                    throw ArgvError(message: "\(spelled) \(text): num-queues property must be > 0 and <= 64")
                }
                vc.numQueues = n
            }
            if let q = d["queue-size"] {
                guard let n = UInt16(q), n > 2 else {
                    throw ArgvError(message: "\(spelled) \(text): invalid queue-size property (\(q)), must be > 2")
                }
                guard n.nonzeroBitCount == 1, n <= 1024 else {
                    throw ArgvError(message: "\(spelled) \(text): invalid queue-size property (\(n)), must be a power of 2 (max 1024)")
                }
                vc.queueSize = n
            }
            if let t = d["iothread"] {
                guard o.config.iothreads.contains(t) else {
                    throw ArgvError(message: "\(spelled) \(text): Property 'virtio-blk-pci.iothread' can't find value '\(t)'")
                }
                vc.iothread = t
            }
            if let a = d["addr"] {
                let slotText = a.split(separator: ".").first.map(String.init) ?? a
                guard let s = Int(slotText.hasPrefix("0x") ? String(slotText.dropFirst(2)) : slotText, radix: 16), s >= 0, s < 32 else {
                    throw ArgvError(message: "\(spelled) \(text): Property 'virtio-blk-pci.addr' doesn't take value '\(a)'")
                }
                vc.slot = s
            }
            if let l = d["disable-legacy"] {
                guard let b = BlockOptionsSplit.bool(l) else {
                    throw ArgvError(message: "\(spelled) \(text): Property 'virtio-blk-pci.disable-legacy' doesn't take value '\(l)'")
                }
                vc.legacy = !b
            }
            if vc.deviceID == nil { anon += 1 }
            disks.append((vc, disks.count))
        }
        // Drives with if=virtio get an automatic device, in command-line order before -device ones.
        var auto: [VirtioBlkConfig] = []
        for p in o.drives.drives where p.interface == "virtio" {
            var vc = VirtioBlkConfig(drive: p.config)
            vc.serial = nil
            auto.append(vc)
        }
        o.config.disks = auto + disks.map(\.0)
    }

    static func number(_ s: String, key: String, text: String) throws -> UInt64 {
        let v = s.hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16) : UInt64(s)
        guard let v else { throw ArgvError(message: "-device \(text): Property 'isa-debug-exit.\(key)' doesn't take value '\(s)'") }
        return v
    }

    static func startMonitors(_ o: VMOptions, machine: PCMachine) throws -> [MonitorServer] {
        var servers: [MonitorServer] = []
        func resolve(_ s: ChardevSpec) throws -> ChardevSpec {
            if case .chardevRef(let id) = s {
                guard let spec = o.chardevs[id] else { throw ArgvError(message: "chardev '\(id)' not found") }
                return spec
            }
            return s
        }
        for (spec, pretty) in o.qmp {
            let s = try resolve(spec)
            if case .none = s { continue }
            servers.append(try MonitorServer(spec: s, kind: .qmp(pretty: pretty), machine: machine))
        }
        for spec in o.monitor {
            let s = try resolve(spec)
            if case .none = s { continue }
            if case .stdio = s, case .stdio? = o.config.serial { continue }   // mux console: serial owns stdio
            servers.append(try MonitorServer(spec: s, kind: .hmp, machine: machine))
        }
        for s in servers { s.start() }
        return servers
    }
}

/// SIGINT / SIGTERM / SIGHUP end the machine as QEMU does ("terminating on signal N"). They are
/// blocked in every thread (`blockEarly`, before any thread starts, so all threads inherit the mask)
/// and taken by one thread with sigwait.
enum Signals {
    static let handled: [Int32] = [SIGINT, SIGTERM, SIGHUP]

    static func set() -> sigset_t {
        var s = sigset_t()
        sigemptyset(&s)
        for sig in handled { sigaddset(&s, sig) }
        return s
    }

    static func blockEarly() {
        var s = set()
        pthread_sigmask(SIG_BLOCK, &s, nil)
    }

    static func install(_ control: MachineControl) {
        HostThread.start(name: "signals") {
            var s = set()
            while true {
                var sig: Int32 = 0
                guard sigwait(&s, &sig) == 0 else { continue }
                Diagnostics.error("terminating on signal \(sig)")
                control.request(.shutdown(.hostSignal))
            }
        }
    }
}
