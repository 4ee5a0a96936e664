// qemu-system-x86_64's options for the pc machine, turned into a MachineConfig. Error texts and the
// exit status (1) are QEMU's; a few options that only matter to a display or network are accepted and
// ignored (-display none, -vnc none, -vga none, -net none).
import Machine
import ImageFormats

struct VMOptions {
    var config = MachineConfig()
    var accel: [String]? = nil
    var qmp: [(spec: ChardevSpec, pretty: Bool)] = []
    var monitor: [ChardevSpec] = []
    var pidfile: String?
    var chardevs: [String: ChardevSpec] = [:]
    var nographic = false
    var nodefaults = false
    var serialGiven = false
    var globalSnapshot = false
    var drives = DriveTable()
    var deviceSpecs: [(text: String, opts: [(String, String)])] = []
    var showVersion = false
    var showHelp = false
    var cpuModel = "qemu64"
    /// -object: validated while the options are read, created (ImageFormats' UserObjects) before any
    /// drive is opened, as QEMU creates its objects before its block backends.
    var objects: [UserObject] = []
    /// -drive, -hda and -blockdev, opened in order after the objects exist (a drive's tls-creds=ID may
    /// name an object given after it, as in QEMU).
    var blockOptions: [(name: String, value: String, spelled: String)] = []
}

enum OptionsParser {
    static func fail(_ spelled: String, _ arg: String?, _ message: String) -> ArgvError {
        ArgvError(message: arg.map { "\(spelled) \($0): \(message)" } ?? "\(spelled): \(message)")
    }

    static func parse(_ argv: [String]) throws -> VMOptions {
        var o = VMOptions()
        let items = try Argv.parse(argv)
        o.drives.globalSnapshot = items.contains { $0.name == "snapshot" }
        for (name, value, spelled) in items {
            let v = value ?? ""
            switch name {
            case "version": o.showVersion = true
            case "help", "h": o.showHelp = true
            case "enable-kvm": o.accel = (o.accel ?? []) + ["kvm"]
            case "accel":
                let (head, opts) = split(v)
                let accel = opts.first { $0.0 == "accel" }?.1 ?? head
                guard AcceleratorChoice.known.contains(accel) else { throw fail(spelled, v, "invalid accelerator \(accel)") }
                o.accel = (o.accel ?? []) + [accel]
            case "M", "machine":
                let (head, opts) = split(v)
                var type = head
                for (k, val) in opts {
                    switch k {
                    case "type": type = val
                    case "accel":
                        let list = val.split(separator: ":").map(String.init)
                        for a in list where !AcceleratorChoice.known.contains(a) { throw ArgvError(message: "invalid accelerator \(a)") }
                        o.accel = list
                    case "kernel-irqchip", "usb", "vmport", "smm", "hpet", "dump-guest-core", "mem-merge", "graphics": break
                    default:
                        if head.contains("=") && k == head { continue }
                        throw fail(spelled, v, "Property '\(type)-machine.\(k)' not found")
                    }
                }
                if type == "help" {
                    print("Supported machines are:\npc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\npc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)")
                    throw ExitRequest(code: 0)
                }
                guard type.isEmpty || type == "pc" || type.hasPrefix("pc-i440fx-") || type.contains("=") else {
                    throw ArgvError(message: "unsupported machine type\nUse -machine help to list supported machines")
                }
            case "m":
                o.config.ramSize = try memorySize(v, spelled: spelled)
            case "smp":
                let (head, opts) = split(v)
                var cpus = Int(head) ?? 0
                for (k, val) in opts where k == "cpus" { cpus = Int(val) ?? 0 }
                if head.isEmpty || head.contains("=") {
                    let d = Dictionary(opts, uniquingKeysWith: { _, b in b })
                    let s = Int(d["sockets"] ?? "1") ?? 1, c = Int(d["cores"] ?? "1") ?? 1, t = Int(d["threads"] ?? "1") ?? 1
                    if cpus == 0 { cpus = s * c * t }
                }
                guard cpus >= 1 && cpus <= 255 else {
                    throw fail(spelled, v, "Invalid CPU topology: the number of CPUs must be between 1 and 255")
                }
                o.config.cpus = cpus
            case "cpu":
                let model = split(v).0
                guard ["host", "max", "qemu64", "kvm64", "qemu32", "kvm32", "base", "help"].contains(model) else {
                    throw ArgvError(message: "unable to find CPU model '\(model)'")
                }
                o.cpuModel = v
            case "kernel": o.config.kernel = v
            case "initrd": o.config.initrd = v
            case "append": o.config.append = v
            case "bios": o.config.bios = v
            case "L": break
            case "display":
                let d = split(v).0
                guard ["none", "default", "curses", "egl-headless"].contains(d) else {
                    throw fail(spelled, v, "Parameter 'type' does not accept value '\(d)'")
                }
            case "vnc", "vga", "net", "boot", "rtc", "global", "D", "d", "trace", "k", "uuid", "msg", "sandbox", "action", "icount": break
            case "nographic": o.nographic = true
            case "nodefaults": o.nodefaults = true
            case "no-reboot": o.config.noReboot = true
            case "no-shutdown": o.config.noShutdown = true
            case "S": o.config.startPaused = true
            case "no-hpet": o.config.hpet = false
            case "snapshot": o.globalSnapshot = true
            case "name":
                let (head, opts) = split(v)
                o.config.name = opts.first { $0.0 == "guest" }?.1 ?? (head.contains("=") ? nil : head)
            case "pidfile": o.pidfile = v
            case "serial":
                do {
                    o.config.serial = try ChardevSpec.parseLegacy(v)
                    o.serialGiven = true
                } catch let e as ChardevSpec.ParseError {
                    throw ArgvError(message: "\(spelled) \(v): \(e.message)\n\(Diagnostics.programName): \(spelled) \(v): could not connect serial device to character backend '\(v)'")
                }
            case "monitor":
                do { o.monitor.append(try ChardevSpec.parseLegacy(v)) } catch let e as ChardevSpec.ParseError { throw fail(spelled, v, e.message) }
            case "mon":
                // -mon chardev=ID[,mode=readline|control][,pretty=on|off]
                let d = Dictionary(split(v).1, uniquingKeysWith: { _, b in b })
                guard let id = d["chardev"] else { throw fail(spelled, v, "Parameter 'chardev' is missing") }
                switch d["mode"] ?? "readline" {
                case "control": o.qmp.append((.chardevRef(id), d["pretty"] == "on"))
                case "readline": o.monitor.append(.chardevRef(id))
                default: throw fail(spelled, v, "Parameter 'mode' does not accept value '\(d["mode"]!)'")
                }
            case "qmp", "qmp-pretty":
                do { o.qmp.append((try ChardevSpec.parseLegacy(v), name == "qmp-pretty")) } catch let e as ChardevSpec.ParseError { throw fail(spelled, v, e.message) }
            case "chardev":
                do {
                    let (id, spec) = try ChardevSpec.parseChardev(v)
                    guard o.chardevs[id] == nil else { throw fail(spelled, v, "attempt to add duplicate property 'id' to object (type 'container')") }
                    o.chardevs[id] = spec
                } catch let e as ChardevSpec.ParseError { throw fail(spelled, v, e.message) }
            case "object":
                let a: ObjectArgument
                do {
                    a = try UserObjects.parse(v, catalog: .qemuSystem, dialect: .qemuOpts, takenIDs: Set(o.objects.map(\.id)),
                                              warn: { Diagnostics.write("\(Diagnostics.programName): \(spelled) \(v): warning: \($0)\n") })
                } catch {
                    throw fail(spelled, v, error.message + (error.hint.map { "\n" + $0 } ?? ""))
                }
                if let help = a.help {
                    print(help)
                    throw ExitRequest(code: 0)
                }
                if let obj = a.object { o.objects.append(obj) }
            case "drive", "hda", "blockdev":
                o.blockOptions.append((name, v, spelled))
            case "device":
                let (head, opts) = split(v)
                let driver = opts.first { $0.0 == "driver" }?.1 ?? head
                switch driver {
                case "virtio-blk-pci", "virtio-blk", "isa-debug-exit", "isa-debugcon": o.deviceSpecs.append((v, opts))
                case "help":
                    print("Storage devices:\nname \"virtio-blk-pci\", bus PCI, alias \"virtio-blk\"\n\nMisc devices:\nname \"isa-debug-exit\", bus ISA\nname \"isa-debugcon\", bus ISA")
                    throw ExitRequest(code: 0)
                default: throw fail(spelled, v, "'\(driver)' is not a valid device model name")
                }
            default:
                break   // accepted and ignored (listed in Argv but without meaning here)
            }
        }
        try createObjectsAndDrives(&o)
        return o
    }

    /// The objects (errors without the option's name, as QEMU reports creation), then the drives.
    static func createObjectsAndDrives(_ o: inout VMOptions) throws {
        for obj in o.objects {
            do {
                try UserObjects.shared.add(obj)
            } catch {
                throw ArgvError(message: error.message + (error.hint.map { "\n" + $0 } ?? ""))
            }
            if obj.type == "iothread" { o.config.iothreads.append(obj.id) }
        }
        for (name, v, spelled) in o.blockOptions {
            switch name {
            case "drive": try o.drives.addDrive(v, spelled: spelled)
            case "hda": try o.drives.addDrive("file=\(v.replacing(",", with: ",,")),index=0,media=disk,if=virtio", spelled: spelled)
            default: try o.drives.addBlockdev(v, spelled: spelled)
            }
        }
    }

    static func split(_ s: String) -> (String, [(String, String)]) {
        let items = BlockOptionsSplit.items(s)
        guard let first = items.first else { return ("", []) }
        let rest = items.dropFirst().map { i -> (String, String) in
            if let eq = i.firstIndex(of: "=") { return (String(i[..<eq]), String(i[i.index(after: eq)...])) }
            return (i, "on")
        }
        if let eq = first.firstIndex(of: "=") {
            return (first, [(String(first[..<eq]), String(first[first.index(after: eq)...]))] + rest)
        }
        return (first, rest)
    }

    /// -m: "512", "512M", "2G", or "size=2G,slots=..,maxmem=..". A bare number is MiB.
    static func memorySize(_ v: String, spelled: String) throws -> UInt64 {
        let (head, opts) = split(v)
        var text = head
        if let s = opts.first(where: { $0.0 == "size" }) { text = s.1 } else if head.contains("=") { text = "" }
        for (k, _) in opts where !["size", "slots", "maxmem"].contains(k) {
            throw ArgvError(message: "\(spelled) \(v): Invalid parameter '\(k)'")
        }
        guard !text.isEmpty else { return 128 << 20 }
        let bad = ArgvError(message: "\(spelled) \(v): Parameter 'size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.")
        var digits = text
        var mult: UInt64 = 1 << 20
        if let last = text.last, last.isLetter {
            digits = String(text.dropLast())
            switch last {
            case "k", "K": mult = 1 << 10
            case "m", "M": mult = 1 << 20
            case "g", "G": mult = 1 << 30
            case "t", "T": mult = 1 << 40
            case "b", "B": mult = 1
            default: throw bad
            }
        }
        guard let n = Double(digits), n >= 0 else { throw bad }
        let bytes = n * Double(mult)
        guard bytes < 1.8e19 else { throw bad }
        let size = (UInt64(bytes) + 0x1F_FFFF) & ~0x1F_FFFF   // QEMU rounds RAM up to 2 MiB
        guard size >= 2 << 20 else { throw ArgvError(message: "\(spelled) \(v): ram size too small") }
        return size
    }
}

/// An early exit with a status (help output, -version).
struct ExitRequest: Error { var code: Int32 }

/// Splitting QemuOpts text on single commas (",," is a comma), shared with drive parsing.
enum BlockOptionsSplit {
    /// QEMU's OnOffAuto for device properties ("auto" means the default: legacy stays on for pc).
    static func bool(_ s: String) -> Bool? {
        switch s {
        case "on", "true", "yes": return true
        case "off", "false", "no", "auto": return false
        default: return nil
        }
    }

    static func items(_ text: String) -> [String] {
        var items: [String] = []
        var cur = ""
        var chars = Array(text)[...]
        while let c = chars.popFirst() {
            if c == "," {
                if chars.first == "," { cur.append(","); chars.removeFirst() } else { items.append(cur); cur = "" }
            } else { cur.append(c) }
        }
        items.append(cur)
        return items
    }
}
