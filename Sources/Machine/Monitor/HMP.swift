// The human monitor commands vmrun understands (for -monitor and QMP's human-monitor-command),
// with QEMU's output text and "\r\n" line ends.
import ImageFormats

struct HMP {
    let machine: PCMachine

    /// Commands that change the run state: carried out by the control thread.
    func lifecycleRequest(_ line: String) -> MachineRequest? {
        switch line.trimmedWhitespace {
        case "quit", "q": return .shutdown(.hostQMPQuit)
        case "stop": return .stop
        case "cont", "c": return .cont
        case "system_reset": return .reset(.hostQMPSystemReset)
        case "system_powerdown": return .powerdown
        default: return nil
        }
    }

    /// `xp /Nfu addr`: N units of size u (b, h, w, g) of guest-physical memory, in hex.
    func examinePhysical(_ words: [String]) -> String {
        var count = 1, unit = 4
        var rest = words.dropFirst()
        if let fmt = rest.first, fmt.hasPrefix("/") {
            rest = rest.dropFirst()
            let digits = fmt.dropFirst().prefix { $0.isNumber }
            count = Int(digits) ?? 1
            if fmt.contains("b") { unit = 1 } else if fmt.contains("h") { unit = 2 } else if fmt.contains("g") { unit = 8 }
        }
        guard let a = rest.first, let addr = UInt64(a.hasPrefix("0x") ? String(a.dropFirst(2)) : a, radix: a.hasPrefix("0x") ? 16 : 10) else {
            return "xp: invalid address\r\n"
        }
        var out = ""
        let perLine = unit == 1 ? 8 : 16 / unit
        for i in 0..<min(count, 4096) {
            let at = addr &+ UInt64(i * unit)
            if i % perLine == 0 { out += (i > 0 ? "\r\n" : "") + cFormat("%016llx:", at) }
            guard let bytes = machine.ram.readBytes(at, count: unit) else { out += " Cannot access memory"; break }
            var v: UInt64 = 0
            for (j, b) in bytes.enumerated() { v |= UInt64(b) << (8 * UInt64(j)) }
            out += " 0x" + cFormat("%0\(unit * 2)llx", v)
        }
        return out + "\r\n"
    }

    func execute(_ line: String) -> String {
        let words = line.split(separator: " ").map(String.init)
        guard let cmd = words.first else { return "" }
        if let r = lifecycleRequest(line) {
            machine.control.requestAndWait(r)
            return ""
        }
        switch (cmd, words.dropFirst().first) {
        case ("info", "status"):
            let st = machine.control.runState
            switch st {
            case .running: return "VM status: running\r\n"
            case .prelaunch: return "VM status: paused (prelaunch)\r\n"
            case .paused: return "VM status: paused\r\n"
            default: return "VM status: paused (\(st.rawValue))\r\n"
            }
        case ("info", "block"):
            var out: [String] = []
            for (i, d) in machine.disks.enumerated() {
                let n = d.config.drive.node
                let ro = d.config.drive.readOnly || n.isReadOnly ? ", read-only" : ""
                var s = "\(d.config.drive.id) (\(d.config.drive.nodeName ?? BlockInfo.nodeName(n))): \(n.filename) (\(n.driverName)\(ro))\r\n"
                s += "    Attached to:      \(BlockInfo.qdevPath(index: i, d))\r\n"
                let c = d.config.drive.cache
                let mode = c.noFlush ? "writeback, ignore flushes" : (c.writeback ? (c.direct ? "writeback, direct" : "writeback") : (c.direct ? "writethrough, direct" : "writethrough"))
                s += "    Cache mode:       \(mode)\r\n"
                if let b = n.backing { s += "    Backing file:     \(b.filename) (chain depth: \(BlockInfo.depth(n)))\r\n" }
                out.append(s)
            }
            return out.joined(separator: "\r\n")
        case ("info", "blockstats"):
            return machine.disks.map { d in
                let s = d.device.stats.snapshot
                return "\(d.config.drive.id): rd_bytes=\(s.readBytes) wr_bytes=\(s.writeBytes) rd_operations=\(s.readOps) wr_operations=\(s.writeOps) flush_operations=\(s.flushOps) wr_total_time_ns=\(s.writeTimeNs) rd_total_time_ns=\(s.readTimeNs) flush_total_time_ns=\(s.flushTimeNs) rd_merged=0 wr_merged=0 idle_time_ns=0\r\n"
            }.joined()
        case ("info", "iothreads"):
            return machine.iothreads.map { t in
                "\(t.id):\r\n  thread_id=\(t.threadID)\r\n  poll-max-ns=0\r\n  poll-grow=0\r\n  poll-shrink=0\r\n  aio-max-batch=0\r\n"
            }.joined()
        case ("info", "registers"):
            let running = machine.control.runState == .running
            if running { machine.accelerator.pause() }
            defer { if running { machine.accelerator.resume() } }
            return (0..<machine.config.cpus).compactMap { machine.accelerator.registerDump(cpu: $0) }.joined()
        case ("xp", _):
            return examinePhysical(words)
        case ("info", "name"):
            return machine.config.name.map { "\($0)\r\n" } ?? ""
        case ("info", "kvm"):
            return machine.accelerator.name == "kvm" ? "kvm support: enabled\r\n" : "kvm support: disabled\r\n"
        case ("info", let sub?):
            return "info: unknown command: '\(sub)'\r\n"   // not QEMU's exact wording for every case
        case ("help", _), ("?", _):
            return "cont|c  -- resume emulation\r\ninfo [subcommand] -- show various information about the system state\r\nquit|q  -- quit the emulator\r\nstop  -- stop emulation\r\nsystem_powerdown  -- send system power down event\r\nsystem_reset  -- reset the system\r\n"
        default:
            return "unknown command: '\(cmd)'\r\n"
        }
    }
}
