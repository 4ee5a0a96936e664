// vmrun: a qemu-system-x86_64 replacement for the pc machine. Parses QEMU's argv into a
// MachineConfig, builds the machine on the chosen accelerator, serves the monitors, and exits with
// QEMU's status: 0 after a guest poweroff or `quit`, 1 on errors, (v << 1) | 1 from isa-debug-exit.
import Glibc
import Machine

// QEMU prefixes messages with its own program name (argv[0]); so do we.
Diagnostics.programName = (CommandLine.arguments.first ?? "vmrun").split(separator: "/").last.map(String.init) ?? "vmrun"


func run() -> Int32 {
    Signals.blockEarly()
    CountedNode.install()   // per-node I/O counters below the devices, for query-blockstats
    var o: VMOptions
    do { o = try OptionsParser.parse(Array(CommandLine.arguments.dropFirst())) } catch let e as ArgvError {
        Diagnostics.error(e.message)
        return 1
    } catch let e as ExitRequest {
        return e.code
    } catch {
        Diagnostics.error("\(error)")
        return 1
    }
    if o.showVersion {
        print("QEMU emulator version 7.2.0 (vmrun)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers")
        return 0
    }
    if o.showHelp {
        print("usage: qemu-system-x86_64 [options] [disk_image]\n\nvmrun: the pc machine on KVM or the interpreter; see README.md for the supported options.")
        return 0
    }
    do {
        try Frontend.assemble(&o)
        let accel = try AcceleratorChoice.make(requested: o.accel, cpus: o.config.cpus, cpuModel: o.cpuModel)
        let machine = try PCMachine(config: o.config, accelerator: accel)
        let monitors = try Frontend.startMonitors(o, machine: machine)
        if let p = o.pidfile {
            guard HostFile.create(p, contents: "\(getpid())\n") else {
                Diagnostics.error("cannot create PID file: \(String(cString: strerror(errno)))")
                return 1
            }
        }
        Signals.install(machine.control)
        let code = machine.run()
        monitors.forEach { $0.close() }
        if let p = o.pidfile { unlink(p) }
        return code
    } catch let e as ArgvError {
        Diagnostics.error(e.message)
    } catch {
        Diagnostics.error("\(error)")
    }
    return 1
}

exit(run())
