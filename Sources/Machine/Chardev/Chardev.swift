// A character device back end at run time: where a UART's output goes and where its input comes
// from. Input arrives on a reader thread and is handed to `onInput` (which applies back pressure by
// blocking until the UART has room). Socket back ends serve one client at a time; output with no
// client connected is dropped, as QEMU does.
//
// stdio on a terminal switches it to raw mode (restored at exit) when it is the multiplexed
// `mon:stdio` console, where Ctrl-A x quits and Ctrl-A Ctrl-A sends a literal Ctrl-A.
import Glibc

public final class Chardev: SerialOutput, @unchecked Sendable {
    public let spec: ChardevSpec
    private var outFD: Int32 = -1
    private var listenFD: Int32 = -1
    private let lock = Condition()
    private var clientFD: Int32 = -1
    private var onInput: (@Sendable ([UInt8]) -> Void)?
    /// Ctrl-A x on a mux console.
    public var onQuitKey: (@Sendable () -> Void)?
    /// The human monitor behind Ctrl-A c on a mux console: takes a command line, returns the reply.
    public var monitor: (@Sendable (String) -> String)?
    private var inMonitor = false
    private var monitorLine: [UInt8] = []
    nonisolated(unsafe) private static var savedTermios: termios?

    public init(spec: ChardevSpec) throws {
        self.spec = spec
        switch spec {
        case .stdio: outFD = 1
        case .null, .none, .chardevRef: break
        case .file(let path):
            outFD = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
            guard outFD >= 0 else {
                throw SocketError(message: "Could not open '\(path)': \(String(cString: strerror(errno)))")
            }
        case let .unixSocket(path, server, _):
            if server { listenFD = try Sockets.listenUnix(path) } else { clientFD = try Sockets.connectUnix(path) }
        case let .tcpSocket(host, port, server, _):
            guard server else { throw SocketError(message: "tcp client chardevs are not supported") }
            listenFD = try Sockets.listenTCP(host: host, port: port)
        }
    }

    /// Blocks until a client connects when the spec says wait=on (QEMU's start-up behaviour).
    public func waitForClientIfNeeded() {
        switch spec {
        case let .unixSocket(path, true, true):
            Diagnostics.info("info: QEMU waiting for connection on: disconnected:unix:\(path),server=on")
        case let .tcpSocket(host, port, true, true):
            Diagnostics.info("info: QEMU waiting for connection on: disconnected:tcp:\(host):\(port),server=on")
        default: return
        }
        if let c = Sockets.accept(listenFD) { lock.lock(); clientFD = c; lock.unlock() }
    }

    public func serialWrite(_ bytes: [UInt8]) {
        if outFD >= 0 {
            _ = bytes.withUnsafeBytes { write(outFD, $0.baseAddress!, $0.count) }
            return
        }
        lock.lock()
        let c = clientFD
        lock.unlock()
        if c >= 0 { Sockets.writeAll(c, bytes) }
    }

    /// Starts the input side.
    public func startInput(_ handler: @escaping @Sendable ([UInt8]) -> Void) {
        onInput = handler
        switch spec {
        case .stdio(let mux):
            if mux && isatty(0) != 0 { Chardev.enterRawMode() }
            spawn { self.readLoop(fd: 0, mux: mux) }
        case .unixSocket, .tcpSocket:
            spawn { self.serveClients() }
        default: break
        }
    }

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        HostThread.start(name: "chardev", body)
    }

    private func serveClients() {
        while true {
            lock.lock()
            var c = clientFD
            lock.unlock()
            if c < 0 {
                guard listenFD >= 0, let n = Sockets.accept(listenFD) else { return }
                lock.lock(); clientFD = n; lock.unlock()
                c = n
            }
            readLoop(fd: c, mux: false)
            lock.lock()
            if clientFD == c { Glibc.close(c); clientFD = -1 }
            lock.unlock()
            if listenFD < 0 { return }
        }
    }

    private func readLoop(fd: Int32, mux: Bool) {
        var buf = [UInt8](repeating: 0, count: 256)
        var escape = false
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            var data = Array(buf[0..<n])
            if mux {
                var out: [UInt8] = []
                for b in data {
                    if escape {
                        escape = false
                        if b == UInt8(ascii: "x") { Diagnostics.write("QEMU: Terminated\r\n"); onQuitKey?(); continue }
                        if b == UInt8(ascii: "c"), monitor != nil {
                            inMonitor.toggle()
                            monitorLine.removeAll()
                            if inMonitor { writeOut("QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) ") }
                            continue
                        }
                        if b == 0x01 { out.append(0x01) }
                        continue
                    }
                    if b == 0x01 { escape = true; continue }
                    if inMonitor { monitorByte(b); continue }
                    out.append(b)
                }
                data = out
            }
            if !data.isEmpty { onInput?(data) }
        }
    }

    private func writeOut(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { write(1, $0.baseAddress!, $0.count) }
    }

    /// Line editing for the mux monitor (echo, backspace, enter).
    private func monitorByte(_ b: UInt8) {
        switch b {
        case 0x0D, 0x0A:
            writeOut("\r\n")
            let line = String(decoding: monitorLine, as: UTF8.self)
            monitorLine.removeAll()
            if !line.isEmpty, let monitor { writeOut(monitor(line)) }
            writeOut("(qemu) ")
        case 0x7F, 0x08:
            if !monitorLine.isEmpty { monitorLine.removeLast(); writeOut("\u{8} \u{8}") }
        default:
            monitorLine.append(b)
            writeOut(String(decoding: [b], as: UTF8.self))
        }
    }

    static func enterRawMode() {
        var t = termios()
        guard tcgetattr(0, &t) == 0 else { return }
        savedTermios = t
        cfmakeraw(&t)
        t.c_oflag |= tcflag_t(OPOST)   // keep \n -> \r\n on output
        tcsetattr(0, TCSANOW, &t)
        atexit { Chardev.restoreTerminal() }
    }

    public static func restoreTerminal() {
        if var t = savedTermios { tcsetattr(0, TCSANOW, &t) }
    }

    public func close() {
        if listenFD >= 0 { Glibc.shutdown(listenFD, Int32(SHUT_RDWR)); Glibc.close(listenFD); listenFD = -1 }
        lock.lock()
        if clientFD >= 0 { Glibc.shutdown(clientFD, Int32(SHUT_RDWR)) }
        lock.unlock()
        if case .file = spec, outFD >= 0 { Glibc.close(outFD) }
    }
}
