// A QMP (or HMP) monitor on a chardev: accepts clients on a unix/TCP socket, or talks on stdio,
// one session at a time per listening socket, as QEMU's monitor does. Each client gets a thread
// that reads its bytes and feeds a session; replies and events are written under one lock so that
// a reply and an event never interleave.
import Glibc

public final class MonitorServer: @unchecked Sendable {
    public enum Kind { case qmp(pretty: Bool), hmp }
    private let kind: Kind
    private let spec: ChardevSpec
    private let machine: PCMachine
    private var listenFD: Int32 = -1
    private var closed = false

    public init(spec: ChardevSpec, kind: Kind, machine: PCMachine) throws {
        self.spec = spec
        self.kind = kind
        self.machine = machine
        switch spec {
        case let .unixSocket(path, server, _):
            guard server else { throw SocketError(message: "monitor: client sockets are not supported") }
            listenFD = try Sockets.listenUnix(path)
        case let .tcpSocket(host, port, server, _):
            guard server else { throw SocketError(message: "monitor: client sockets are not supported") }
            listenFD = try Sockets.listenTCP(host: host, port: port)
        case .stdio, .null, .none: break
        default: throw SocketError(message: "monitor: unsupported chardev")
        }
    }

    /// Starts serving. With wait=on, blocks until the first client connects (as QEMU).
    public func start() {
        switch spec {
        case .stdio:
            spawn { self.serve(readFD: 0, writeFD: 1) }
        case .unixSocket(_, _, let wait), .tcpSocket(_, _, _, let wait):
            if wait, let c = Sockets.accept(listenFD) {
                spawn { self.serve(readFD: c, writeFD: c); self.acceptLoop() }
            } else {
                spawn { self.acceptLoop() }
            }
        default: break
        }
    }

    private func acceptLoop() {
        while !closed, listenFD >= 0, let c = Sockets.accept(listenFD) {
            serve(readFD: c, writeFD: c)
        }
    }

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        HostThread.start(name: "monitor", body)
    }

    private func serve(readFD: Int32, writeFD: Int32) {
        let out = MonitorOutput(fd: writeFD)
        switch kind {
        case .qmp(let pretty):
            let session = QMPSession(machine: machine, output: out, pretty: pretty)
            session.begin()
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buf.withUnsafeMutableBytes { read(readFD, $0.baseAddress!, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                session.feed(Array(buf[0..<n]))
            }
            session.end()
        case .hmp:
            let hmp = HMP(machine: machine)
            out.send("QEMU 7.2.0 monitor - type 'help' for more information\n(qemu) ")
            var line: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 1024)
            while true {
                let n = buf.withUnsafeMutableBytes { read(readFD, $0.baseAddress!, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                for b in buf[0..<n] {
                    if b == 0x0A || b == 0x0D {
                        let cmd = String(decoding: line, as: UTF8.self)
                        line.removeAll()
                        if cmd.isEmpty { continue }
                        let reply = hmp.execute(cmd)
                        out.send(reply.replacing("\r\n", with: "\n") + "(qemu) ")
                    } else { line.append(b) }
                }
            }
        }
        if readFD != 0 { Glibc.close(readFD) }
    }

    public func close() {
        closed = true
        if listenFD >= 0 {
            Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
            Glibc.close(listenFD)
            listenFD = -1
        }
        if case let .unixSocket(path, _, _) = spec { unlink(path) }
    }
}

/// Serialized writes to one monitor client.
final class MonitorOutput: @unchecked Sendable {
    private let fd: Int32
    private let lock = Condition()
    private(set) var broken = false
    init(fd: Int32) { self.fd = fd }
    func send(_ text: String) {
        lock.lock(); defer { lock.unlock() }
        if broken { return }
        if !Sockets.writeAll(fd, Array(text.utf8)) { broken = true }
    }
}
