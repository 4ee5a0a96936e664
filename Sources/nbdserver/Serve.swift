// Serving: listen (or take the socket-activation descriptor), open the image, export it, write the
// pid file, then run the server until qemu-nbd would stop (last client gone without -t, or a
// signal). SIGTERM/SIGINT/SIGHUP end the server cleanly with status 0, as qemu-nbd does.
import Glibc
import ImageFormats
import NBD

enum Serve {
    static func run(_ a: ServerArguments, tls: TLSSetup?, activation: Int) -> Int32 {
        blockSignals()
        // Each client is one thread with one socket: raise the descriptor limit to what we may use.
        var lim = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim)
        }

        var listeners: [Int32]
        var socketPath = a.socketPath
        if a.device != nil && socketPath == nil {
            socketPath = "/var/lock/qemu-nbd-" + (a.device!.split(separator: "/").last.map(String.init) ?? "nbd")
        }
        if activation > 0 {
            listeners = [3]
        } else {
            let backlog: Int32 = a.persistent || a.shared == 0 ? SOMAXCONN : Int32(min(a.shared, Int(SOMAXCONN)))
            let address: NBD.SocketAddress = socketPath.map { .unix(path: $0) }
                ?? .inet(host: a.bindTo ?? "0.0.0.0", port: a.port ?? String(NBDLimits.defaultPort))
            do {
                listeners = try Sockets.listen(address, backlog: backlog)
            } catch let e as NBDError {
                Program.fail(e.message)
            } catch {
                Program.fail("\(error)")
            }
        }

        let node = ImageOpener.open(a)
        var settings = NBDExportSettings()
        settings.name = a.exportName ?? ""
        settings.description = a.description
        settings.readOnly = a.readOnly || a.loadSnapshot != nil
        settings.discard = a.discard == "unmap" ? .unmap : .ignore
        settings.detectZeroes = NBDExportSettings.DetectZeroes(rawValue: a.detectZeroes ?? "off") ?? .off
        settings.allocationDepth = a.allocationDepth
        settings.maxConnections = a.shared
        settings.writeThrough = a.cache == "writethrough" || a.cache == "directsync"
        settings.bitmaps = a.bitmaps
        let backend: BlockNodeNBDBackend
        do {
            backend = try BlockNodeNBDBackend(node: node, settings: settings)
            try backend.holdExportPermissions(writable: !(a.readOnly || a.loadSnapshot != nil))
        } catch let e as BlockError {
            Program.fail(e.message + (e.hint.map { "\n" + $0 } ?? ""))
        } catch {
            Program.fail("\(error)")
        }
        let export = backend.makeExport()

        var policy = NBDServerPolicy(exports: [export])
        policy.trace = Trace.hook
        if let t = tls {
            do {
                policy.tls = try t.serverUpgrade()
            } catch {
                Program.fail("Failed to get TLS creds: \(error)")
            }
        }
        var config = NBDServer.Configuration(policy: policy)
        config.maxConnections = a.shared
        config.persistent = a.persistent
        config.handshakeLimit = a.handshakeLimit
        config.verbose = a.verbose
        config.log = { Program.report($0) }
        let server = NBDServer(listeners: listeners, config: config)

        if let dev = a.device {
            KernelDevice.connect(device: dev, socketPath: socketPath!, verbose: a.verbose, image: a.file ?? "")
        }
        if let pf = a.pidFile { Daemon.writePidFile(pf) }
        if chdir("/") < 0 {
            Program.fail("Could not chdir to root directory: \(String(cString: strerror(errno)))")
        }
        Daemon.serverReady()
        Signals.watch { server.shutdown() }
        server.run()
        try? node.close()
        if let p = socketPath { unlink(p) }
        return 0
    }

    static func blockSignals() {
        signal(SIGPIPE, SIG_IGN)
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }
}

/// A thread that waits for the termination signals (blocked everywhere else) and runs a handler.
enum Signals {
    static func watch(_ handler: @escaping @Sendable () -> Void) {
        try? Threads.spawn(stackSize: 64 * 1024) {
            var set = sigset_t()
            sigemptyset(&set)
            for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, s) }
            var sig: Int32 = 0
            while sigwait(&set, &sig) != 0 {}
            handler()
        }
    }
}
