// A handshake whose socket is then handed to someone else (the Linux kernel's nbd driver, which
// speaks simple replies only): no structured replies, no meta contexts, no extended headers.
import Glibc

extension NBDClient {
    /// Negotiates `config.exportName` and returns the socket (ready for transmission) and the export.
    public static func handshakeForHandoff(_ address: SocketAddress, config: NBDClientConfig) throws
        -> (fd: Int32, details: NBDExportDetails)
    {
        let fd = try Sockets.connect(address)
        let transport = SocketTransport(fd: fd)
        let stream = NBDStream(transport: transport)
        var cfg = config
        cfg.structuredReplies = false
        cfg.extendedHeaders = false
        cfg.metaContexts = []
        do {
            let d = try ClientHandshake(stream: stream, config: cfg).connect()
            if stream.hasUnconsumedInput { throw NBDError.violation("server sent data after the handshake") }
            return (dup(fd), d)
        } catch {
            transport.close()
            throw error
        }
    }
}
