// nbdserver's main sequence, in qemu-nbd's order (so that the same mistake gives the same message):
// options, objects, socket activation, TLS checks, list mode, kernel device, fork, listen, open the
// image, export it, pid file, chdir("/"), serve. Everything here is wiring; the protocol is in the
// NBD module and the image in ImageFormats.
import Glibc
import ImageFormats
import NBD

enum Program {
    static let name = "nbdserver"
    nonisolated(unsafe) static var path = "nbdserver"

    /// Writes "nbdserver: message" to stderr.
    static func report(_ message: String) {
        writeStderr("\(name): \(message)\n")
    }

    static func writeStderr(_ s: String) {
        var bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + off, $0.count - off) }
            if n <= 0 { if errno == EINTR { continue }; break }
            off += n
        }
    }

    static func fail(_ message: String) -> Never {
        report(message)
        exit(1)
    }

    static func main(_ argv: [String]) -> Int32 {
        path = argv.first ?? name
        var args: ServerArguments
        do {
            args = try ServerArguments.parse(Array(argv.dropFirst()), program: name, programPath: path)
        } catch let e as UsageError {
            if e.message.hasPrefix(path + ":") { writeStderr(e.message + "\n") } else { report(e.message) }
            if let h = e.hint { writeStderr(h + "\n") }
            return 1
        } catch {
            fail("\(error)")
        }
        // -T is applied while parsing in qemu-nbd: "-T x -V" warns about x before the version.
        Trace.configure(args.traces, report: report)
        switch args.action {
        case .help:
            print(Usage.text(path))
            return 0
        case .version:
            print(Usage.version(path))
            return 0
        default:
            break
        }
        // --object: created in order (credentials load now, so a missing file is reported first).
        for text in args.objects {
            do {
                if let help = try UserObjects.shared.create(text, catalog: .qemuNbd) {
                    print(help)
                    return 0
                }
            } catch {
                report(error.message)
                if let h = error.hint { writeStderr(h + "\n") }
                return 1
            }
        }

        let activation = Sockets.socketActivationCount()
        if activation > 0 {
            if let msg = socketActivationConflict(args) { fail(msg) }
            if activation > 1 { fail("qemu-nbd does not support socket activation with LISTEN_FDS > 1") }
        }
        let tls = resolveTLS(args)
        if args.selinuxLabel != nil { fail("SELinux support not enabled in this binary") }

        if args.action == .list {
            return ListMode.run(address: listAddress(args), tls: tls, hostname: args.tlsHostname ?? args.bindTo ?? "0.0.0.0")
        }
        if args.action == .disconnect {
            return KernelDevice.disconnect(args)
        }
        if args.device != nil && !args.verbose || args.fork {
            Daemon.forkWithErrorPipe(keepStderr: args.fork, activation: activation)
        }
        return Serve.run(args, tls: tls, activation: activation)
    }

    static func socketActivationConflict(_ a: ServerArguments) -> String? {
        if a.device != nil { return "NBD device can't be set when using socket activation" }
        if a.socketPath != nil { return "Unix socket can't be set when using socket activation" }
        if a.bindTo != nil { return "The interface can't be set when using socket activation" }
        if a.port != nil { return "TCP port number can't be set when using socket activation" }
        if a.selinuxLabel != nil { return "SELinux label can't be set when using socket activation" }
        if a.action == .list { return "List mode is incompatible with socket activation" }
        return nil
    }

    static func listAddress(_ a: ServerArguments) -> NBD.SocketAddress {
        if let p = a.socketPath { return .unix(path: p) }
        return .inet(host: a.bindTo ?? "0.0.0.0", port: a.port ?? String(NBDLimits.defaultPort))
    }

    /// --tls-creds / --tls-authz / --tls-hostname checks, with qemu-nbd's messages.
    static func resolveTLS(_ a: ServerArguments) -> TLSSetup? {
        guard let id = a.tlsCreds else {
            if a.tlsAuthz != nil { fail("--tls-authz is not permitted without --tls-creds") }
            if a.tlsHostname != nil { fail("--tls-hostname is not permitted without --tls-creds") }
            return nil
        }
        if a.device != nil { fail("TLS is not supported with a host device") }
        if a.tlsAuthz != nil && a.action == .list { fail("TLS authorization is incompatible with export list") }
        if a.tlsHostname != nil && a.action != .list { fail("TLS hostname is only supported with export list") }
        guard let creds = UserObjects.shared.object(id: id) else {
            fail("Failed to get TLS creds: No TLS credentials with id '\(id)'")
        }
        guard let credentials = creds.tlsCredentials else {
            fail("Failed to get TLS creds: Object with id '\(id)' is not TLS credentials")
        }
        let want = a.action == .list ? "client" : "server"
        if creds.endpoint != want {
            fail("Failed to get TLS creds: Expecting TLS credentials with a \(want) endpoint")
        }
        var authorize: (@Sendable (String) -> Bool)? = nil
        if let z = a.tlsAuthz {
            guard let o = UserObjects.shared.object(id: z) else {
                fail("Failed to get TLS authz: No authorization object with id '\(z)'")
            }
            authorize = o.authorization ?? { _ in false }
        }
        return TLSSetup(credentials: credentials, authorize: authorize)
    }
}
