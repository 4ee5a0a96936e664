// One QMP client: greeting, capabilities negotiation, framing of the JSON input (objects may span
// reads or share one), dispatch, and events. Error classes and texts are QEMU's
// ("CommandNotFound", "GenericError", "Expecting capabilities negotiation with 'qmp_capabilities'").
import ImageFormats

final class QMPSession: @unchecked Sendable {
    private let machine: PCMachine
    private let output: MonitorOutput
    private let pretty: Bool
    private var negotiated = false
    private var pending: [UInt8] = []
    private var subscription: Int?

    init(machine: PCMachine, output: MonitorOutput, pretty: Bool) {
        self.machine = machine
        self.output = output
        self.pretty = pretty
    }

    static var greeting: JSONValue {
        .object([("QMP", .object([
            ("version", .object([("qemu", .object([("micro", .int(0)), ("minor", .int(2)), ("major", .int(7))])),
                                 ("package", .string("vmrun"))])),
            ("capabilities", .array([.string("oob")])),
        ]))])
    }

    func send(_ v: JSONValue) { output.send((pretty ? v.pretty() : v.compact()) + "\r\n") }

    func begin() {
        send(QMPSession.greeting)
    }

    func end() {
        if let subscription { machine.control.unsubscribe(subscription) }
    }

    /// Input bytes; complete top-level JSON values are executed in order.
    func feed(_ bytes: [UInt8]) {
        pending += bytes
        while let (value, used) = QMPSession.nextValue(pending) {
            pending.removeFirst(used)
            handle(value)
        }
        if pending.count > 1 << 20 { pending.removeAll() }   // no unbounded growth on garbage
    }

    /// Finds one complete JSON object/array at the start (after whitespace): its text and length.
    static func nextValue(_ b: [UInt8]) -> (String, Int)? {
        var i = 0
        while i < b.count, [0x20, 0x09, 0x0A, 0x0D].contains(b[i]) { i += 1 }
        guard i < b.count else { return nil }
        let start = i
        var depth = 0, inString = false, escape = false
        while i < b.count {
            let c = b[i]
            if inString {
                if escape { escape = false } else if c == 0x5C { escape = true } else if c == 0x22 { inString = false }
            } else if c == 0x22 { inString = true }
            else if c == 0x7B || c == 0x5B { depth += 1 }
            else if c == 0x7D || c == 0x5D {
                depth -= 1
                if depth <= 0 { return (String(decoding: b[start...i], as: UTF8.self), i + 1) }
            } else if depth == 0 {
                // A scalar at top level: consume to the next whitespace and report it as an error.
                var j = i
                while j < b.count, ![0x20, 0x09, 0x0A, 0x0D].contains(b[j]) { j += 1 }
                guard j < b.count else { return nil }
                return (String(decoding: b[start..<j], as: UTF8.self), j)
            }
            i += 1
        }
        return nil
    }

    static func error(_ cls: String, _ desc: String, id: JSONValue? = nil) -> JSONValue {
        var m: [(String, JSONValue)] = [("error", .object([("class", .string(cls)), ("desc", .string(desc))]))]
        if let id { m.append(("id", id)) }
        return .object(m)
    }

    private func handle(_ text: String) {
        guard let v = try? JSONValue.parse(text) else {
            send(QMPSession.error("GenericError", "JSON parse error, invalid keyword '\(text.prefix(32))'"))
            return
        }
        guard case .object(let members) = v else {
            send(QMPSession.error("GenericError", "QMP input must be a JSON object"))
            return
        }
        let id = v["id"]
        guard let cmd = (v["execute"] ?? v["exec-oob"])?.stringValue else {
            send(QMPSession.error("GenericError", "QMP input lacks member 'execute'", id: id))
            return
        }
        for (k, _) in members where !["execute", "exec-oob", "arguments", "id", "control"].contains(k) {
            send(QMPSession.error("GenericError", "QMP input member '\(k)' is unexpected", id: id))
            return
        }
        let args = v["arguments"] ?? .object([])
        guard case .object = args else {
            send(QMPSession.error("GenericError", "QMP input member 'arguments' must be an object", id: id))
            return
        }
        if !negotiated {
            guard cmd == "qmp_capabilities" else {
                send(QMPSession.error("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'", id: id))
                return
            }
            negotiated = true
            subscription = machine.control.subscribe { [weak self] e in self?.sendEvent(e) }
            reply(.object([]), id: id)
            return
        }
        if cmd == "qmp_capabilities" {
            send(QMPSession.error("CommandNotFound", "Capabilities negotiation is already complete, command ignored", id: id))
            return
        }
        QMPCommands.execute(cmd, args: args, machine: machine) { [self] result in
            switch result {
            case .success(let value): reply(value, id: id)
            case .failure(let e): send(QMPSession.error(e.errorClass, e.desc, id: id))
            }
        }
    }

    private func reply(_ value: JSONValue, id: JSONValue?) {
        var m: [(String, JSONValue)] = [("return", value)]
        if let id { m.append(("id", id)) }
        send(.object(m))
    }

    private func sendEvent(_ e: MachineEvent) {
        var m: [(String, JSONValue)] = [
            ("timestamp", .object([("seconds", .int(e.seconds)), ("microseconds", .int(e.microseconds))])),
            ("event", .string(e.name)),
        ]
        if let d = e.data { m.append(("data", d)) }
        send(.object(m))
    }
}
