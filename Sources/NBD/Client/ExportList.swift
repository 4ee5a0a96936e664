// Listing a server's exports with everything it says about each (qemu-nbd -L, nbdinfo --list):
// NBD_OPT_LIST for the names, then NBD_OPT_INFO and NBD_OPT_LIST_META_CONTEXT per export, then a
// polite NBD_OPT_ABORT.

public struct NBDListedExport: Sendable {
    public var name: String
    public var description: String
    /// nil when the server refused NBD_OPT_INFO for it.
    public var details: NBDExportDetails?
    public var contexts: [String]
}

extension NBDClient {
    public static func listExports(_ address: SocketAddress, config: NBDClientConfig) throws -> [NBDListedExport] {
        let fd = try Sockets.connect(address)
        let stream = NBDStream(transport: SocketTransport(fd: fd))
        defer { stream.transport.close() }
        var cfg = config
        cfg.extendedHeaders = false
        let hs = ClientHandshake(stream: stream, config: cfg)
        if try hs.greet() != nil || !hs.fixedNewstyle {
            throw NBDError(.invalidArgument, "Server does not support export lists", errno: 95)
        }
        try hs.negotiateReplies()
        var out: [NBDListedExport] = []
        for (name, description) in try hs.listExports() {
            var item = NBDListedExport(name: name, description: description, details: nil, contexts: [])
            item.details = try? hs.infoOrGo(.info, export: name)
            if hs.mode >= .structured {
                item.contexts = try hs.metaContexts(.listMetaContext, export: name, queries: []).map(\.name)
            }
            out.append(item)
        }
        hs.abort()
        return out
    }
}
