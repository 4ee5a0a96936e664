// The QMP commands vmrun implements, with QEMU's argument checks and return shapes (key order as
// QEMU 7.2 prints them). Lifecycle commands go through MachineControl and answer once the control
// thread has carried them out, so their events reach the client before the return, as in QEMU.
import Glibc
import ImageFormats

struct QMPError: Error {
    var errorClass: String
    var desc: String
    static func generic(_ d: String) -> QMPError { QMPError(errorClass: "GenericError", desc: d) }
}

enum QMPCommands {
    static let names = ["qmp_capabilities", "query-version", "query-status", "query-name", "query-cpus-fast",
                        "query-block", "query-blockstats", "query-iothreads", "query-commands", "query-kvm",
                        "stop", "cont", "system_reset", "system_powerdown", "quit", "human-monitor-command"]

    /// Runs `name`; `reply` is called exactly once (possibly later, from the control thread).
    static func execute(_ name: String, args: JSONValue, machine: PCMachine,
                        reply: @escaping @Sendable (Result<JSONValue, QMPError>) -> Void) {
        let control = machine.control
        func noArgs() -> Bool {
            if case .object(let m) = args, let (k, _) = m.first {
                reply(.failure(.generic("Parameter '\(k)' is unexpected")))
                return false
            }
            return true
        }
        switch name {
        case "query-version":
            guard noArgs() else { return }
            reply(.success(.object([("qemu", .object([("micro", .int(0)), ("minor", .int(2)), ("major", .int(7))])),
                                    ("package", .string("vmrun"))])))
        case "query-status":
            guard noArgs() else { return }
            let st = control.runState
            reply(.success(.object([("status", .string(st.rawValue)), ("singlestep", .bool(false)),
                                    ("running", .bool(st == .running))])))
        case "query-name":
            guard noArgs() else { return }
            if let n = machine.config.name { reply(.success(.object([("name", .string(n))]))) } else { reply(.success(.object([]))) }
        case "query-kvm":
            reply(.success(.object([("enabled", .bool(machine.accelerator.name == "kvm")), ("present", .bool(KVMHost.deviceExists))])))
        case "query-cpus-fast":
            guard noArgs() else { return }
            reply(.success(.array((0..<machine.config.cpus).map { i in
                .object([("thread-id", .int(Int64(getpid()))),
                         ("props", .object([("core-id", .int(0)), ("thread-id", .int(0)), ("socket-id", .int(Int64(i)))])),
                         ("qom-path", .string("/machine/unattached/device[\(i)]")), ("cpu-index", .int(Int64(i))),
                         ("target", .string("x86_64"))])
            })))
        case "query-block":
            guard noArgs() else { return }
            reply(.success(.array(machine.disks.enumerated().map { BlockInfo.queryBlock(index: $0.offset, disk: $0.element) })))
        case "query-blockstats":
            reply(.success(.array(machine.disks.enumerated().map { BlockInfo.queryBlockstats(index: $0.offset, disk: $0.element) })))
        case "query-iothreads":
            guard noArgs() else { return }
            reply(.success(.array(machine.iothreads.map { t in
                .object([("poll-shrink", .int(0)), ("thread-id", .int(Int64(t.threadID))), ("aio-max-batch", .int(0)),
                         ("poll-grow", .int(0)), ("poll-max-ns", .int(0)), ("id", .string(t.id))])
            })))
        case "query-commands":
            reply(.success(.array(names.map { .object([("name", .string($0))]) })))
        case "stop":
            guard noArgs() else { return }
            control.request(.stop) { reply(.success(.object([]))) }
        case "cont":
            guard noArgs() else { return }
            control.request(.cont) { reply(.success(.object([]))) }
        case "system_reset":
            guard noArgs() else { return }
            control.request(.reset(.hostQMPSystemReset)) { reply(.success(.object([]))) }
        case "system_powerdown":
            guard noArgs() else { return }
            control.request(.powerdown) { reply(.success(.object([]))) }
        case "quit":
            guard noArgs() else { return }
            control.request(.shutdown(.hostQMPQuit)) { reply(.success(.object([]))) }
        case "human-monitor-command":
            guard let line = args["command-line"]?.stringValue else {
                reply(.failure(.generic("Parameter 'command-line' is missing")))
                return
            }
            let hmp = HMP(machine: machine)
            if let lifecycle = hmp.lifecycleRequest(line) {
                control.request(lifecycle) { reply(.success(.string(""))) }
            } else {
                reply(.success(.string(hmp.execute(line))))
            }
        default:
            reply(.failure(QMPError(errorClass: "CommandNotFound", desc: "The command \(name) has not been found")))
        }
    }
}
