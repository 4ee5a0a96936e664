// QEMU's command-line shape: options start with "-" or "--", take zero or one argument (the next
// word), and unknown ones are errors worded as qemu-system-x86_64 words them. Returns the options
// in order; meaning is given in Options.swift.

struct ArgvError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

enum Argv {
    /// Options that take an argument.
    static let withArgument: Set<String> = [
        "M", "machine", "m", "smp", "cpu", "accel", "kernel", "initrd", "append", "bios", "display", "serial",
        "monitor", "qmp", "qmp-pretty", "chardev", "name", "pidfile", "drive", "blockdev", "device", "object",
        "vnc", "L", "boot", "rtc", "vga", "net", "netdev", "nic", "global", "D", "d", "trace", "mon", "hda", "hdb",
        "k", "uuid", "parallel", "usbdevice", "fw_cfg", "action", "sandbox", "msg", "icount",
    ]
    /// Options without an argument.
    static let flags: Set<String> = [
        "enable-kvm", "nographic", "no-reboot", "no-shutdown", "S", "nodefaults", "snapshot", "version", "help", "h",
        "no-hpet", "no-acpi", "daemonize", "full-screen", "no-user-config", "s", "preconfig",
    ]

    static func parse(_ args: [String]) throws -> [(name: String, value: String?, spelled: String)] {
        var out: [(String, String?, String)] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            guard a.hasPrefix("-"), a.count > 1 else {
                // A bare word is the disk image (-hda) in QEMU.
                out.append(("hda", a, a))
                i += 1
                continue
            }
            var name = String(a.dropFirst())
            if name.hasPrefix("-") { name.removeFirst() }
            if flags.contains(name) {
                out.append((name, nil, a))
                i += 1
            } else if withArgument.contains(name) {
                guard i + 1 < args.count else { throw ArgvError(message: "\(a): requires an argument") }
                out.append((name, args[i + 1], a))
                i += 2
            } else {
                throw ArgvError(message: "\(a): invalid option")
            }
        }
        return out
    }
}
