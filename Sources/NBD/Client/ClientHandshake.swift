// The client's side of the handshake: from the server's greeting to transmission (or to the list of
// exports for `-L`).
//
// Order, as QEMU's and libnbd's clients do it: STARTTLS first when TLS is wanted; then extended
// headers (falling back to structured replies when refused); SET_META_CONTEXT for the contexts we
// want (base:allocation for sparse copies); then GO, with EXPORT_NAME as the fallback for servers
// that do not know GO, and for oldstyle servers the fixed greeting. Refusals are reported in QEMU's
// words with the server's own message appended.

public struct NBDClientConfig: Sendable {
    public var exportName: String = ""
    public var structuredReplies = true
    public var extendedHeaders = true
    /// Contexts to select (only those the server accepts are used).
    public var metaContexts: [String] = ["base:allocation"]
    /// Upgrades the socket to TLS after STARTTLS was acknowledged; nil: plain text.
    public var tls: (@Sendable (NBDTransport) throws -> NBDTransport)?

    public init(exportName: String = "") {
        self.exportName = exportName
    }
}

/// What the server said about the export.
public struct NBDExportDetails: Sendable {
    public var name: String
    public var description: String?
    public var size: UInt64
    public var flags: NBDTransmissionFlags
    public var minimumBlock: UInt32 = 0
    public var preferredBlock: UInt32 = 0
    public var maximumBlock: UInt32 = 0
    /// Contexts the server selected, id -> name.
    public var contexts: [(id: UInt32, name: String)] = []
    public var mode: NBDMode = .simple

    public func contextID(_ name: String) -> UInt32? { contexts.first { $0.name == name }?.id }
}

final class ClientHandshake {
    let stream: NBDStream
    let config: NBDClientConfig
    private(set) var fixedNewstyle = false
    private(set) var mode: NBDMode = .exportName
    private var serverNoZeroes = false
    private(set) var tlsActive = false

    init(stream: NBDStream, config: NBDClientConfig) {
        self.stream = stream
        self.config = config
    }

    // MARK: greeting

    /// Reads the greeting; returns the export details for an oldstyle server (no options then).
    func greet() throws -> NBDExportDetails? {
        let magic = try stream.readU64()
        if magic != NBDMagic.initPassword {
            throw NBDError.violation("Bad initial magic received: 0x\(String(magic, radix: 16))")
        }
        let second = try stream.readU64()
        if second == NBDMagic.oldstyle {
            let size = try stream.readU64()
            let flags = try stream.readU32()
            try stream.discard(124)
            if !config.exportName.isEmpty {
                throw NBDError(.invalidArgument, "Server does not support non-empty export names", errno: 22)
            }
            if config.tls != nil {
                throw NBDError(.tls, "Server does not support STARTTLS", errno: 22)
            }
            return NBDExportDetails(name: "", description: nil, size: size,
                                    flags: NBDTransmissionFlags(rawValue: UInt16(truncatingIfNeeded: flags)), mode: .exportName)
        }
        if second != NBDMagic.haveOptions {
            throw NBDError.violation("Bad server magic received: 0x\(String(second, radix: 16))")
        }
        let serverFlags = NBDHandshakeFlags(rawValue: UInt32(try stream.readU16()))
        fixedNewstyle = serverFlags.contains(.fixedNewstyle)
        serverNoZeroes = serverFlags.contains(.noZeroes)
        var ours: NBDHandshakeFlags = []
        if fixedNewstyle { ours.insert(.fixedNewstyle) }
        if serverNoZeroes { ours.insert(.noZeroes) }
        var w = WireWriter()
        w.u32(ours.rawValue)
        try stream.write(w.bytes)
        mode = fixedNewstyle ? .simple : .exportName
        if config.tls != nil {
            guard fixedNewstyle else {
                throw NBDError(.tls, "Server does not support STARTTLS", errno: 22)
            }
            try startTLS()
        }
        return nil
    }

    // MARK: options

    struct Reply {
        var type: NBDOptionReplyType
        var payload: [UInt8]
    }

    func send(_ option: NBDOption, _ payload: [UInt8] = []) throws {
        var w = WireWriter(capacity: 16 + payload.count)
        w.u64(NBDMagic.haveOptions)
        w.u32(option.rawValue)
        w.u32(UInt32(payload.count))
        w.raw(payload)
        try stream.write(w.bytes)
    }

    func receive(_ option: NBDOption) throws -> Reply {
        let magic = try stream.readU64()
        if magic != NBDMagic.optionReply {
            throw NBDError.violation("Unexpected option reply magic 0x\(String(magic, radix: 16))")
        }
        let opt = try stream.readU32()
        if opt != option.rawValue {
            throw NBDError.violation("Unexpected option type \(opt) (\(NBDOption(rawValue: opt))), expected \(option.rawValue) (\(option))")
        }
        let type = NBDOptionReplyType(rawValue: try stream.readU32())
        let length = try stream.readU32()
        if length > UInt32(NBDLimits.maxBuffer) {
            throw NBDError.violation("server's reply to option \(option) is too long (\(length))")
        }
        return Reply(type: type, payload: try stream.readBytes(Int(length)))
    }

    /// QEMU's client wording for an option refusal, with the server's message when it sent one.
    func refusal(_ option: NBDOption, _ r: Reply) -> NBDError {
        var msg: String
        switch r.type {
        case .errUnsup: msg = "Unsupported option \(option.rawValue) (\(option))"
        case .errPolicy: msg = "Denied by server for option \(option.rawValue) (\(option))"
        case .errInvalid: msg = "Invalid parameters for option \(option.rawValue) (\(option))"
        case .errPlatform: msg = "Server lacks support for option \(option.rawValue) (\(option))"
        case .errTLSRequired:
            msg = "TLS negotiation required before option \(option.rawValue) (\(option))\nDid you forget a valid tls-creds?"
        case .errUnknown: msg = "Requested export not available"
        case .errShutdown: msg = "Server shutting down before option \(option.rawValue) (\(option))"
        case .errBlockSizeRequired: msg = "Server requires INFO_BLOCK_SIZE for option \(option.rawValue) (\(option))"
        case .errTooBig: msg = "Server considers option \(option.rawValue) (\(option)) too large"
        case .errExtHeaderRequired: msg = "Server wants extended headers for option \(option.rawValue) (\(option))"
        default: msg = "Unknown error code \(r.type.rawValue) for option \(option.rawValue) (\(option))"
        }
        if !r.payload.isEmpty {
            msg += "\nserver reported: " + String(decoding: r.payload, as: UTF8.self)
        }
        return NBDError(.optionRefused(r.type), msg, errno: r.type == .errUnknown ? 2 : 22)
    }

    /// Sends an option with no payload and expects a plain ACK; false when refused.
    func simpleOption(_ option: NBDOption) throws -> Bool {
        try send(option)
        let r = try receive(option)
        if r.type == .ack { return true }
        if r.type.isError { return false }
        throw NBDError.violation("Unexpected reply \(r.type) to option \(option)")
    }

    private func startTLS() throws {
        try send(.startTLS)
        let r = try receive(.startTLS)
        guard r.type == .ack else {
            if r.type.isError { throw refusal(.startTLS, r).prepending("Server don't support STARTTLS option: ") }
            throw NBDError.violation("Unexpected reply \(r.type) to STARTTLS")
        }
        guard let upgrade = config.tls else { return }
        try stream.replaceTransport(try upgrade(stream.transport))
        tlsActive = true
    }

    /// Negotiates reply style (extended, else structured).
    func negotiateReplies() throws {
        guard fixedNewstyle else { return }
        if config.extendedHeaders, try simpleOption(.extendedHeaders) {
            mode = .extended
            return
        }
        if config.structuredReplies, try simpleOption(.structuredReply) {
            mode = .structured
        }
    }

    func metaPayload(export: String, queries: [String]) -> [UInt8] {
        var w = WireWriter()
        w.string32(export)
        w.u32(UInt32(queries.count))
        for q in queries { w.string32(q) }
        return w.bytes
    }

    /// LIST/SET_META_CONTEXT; returns (id, name) pairs, empty when refused.
    func metaContexts(_ option: NBDOption, export: String, queries: [String]) throws -> [(id: UInt32, name: String)] {
        try send(option, metaPayload(export: export, queries: queries))
        var out: [(UInt32, String)] = []
        while true {
            let r = try receive(option)
            if r.type == .ack { return out }
            if r.type.isError { return [] }
            guard r.type == .metaContext, r.payload.count >= 4 else {
                throw NBDError.violation("Unexpected reply \(r.type) to option \(option)")
            }
            let id = r.payload.withUnsafeBytes { loadBE32($0, 0) }
            out.append((id, String(decoding: r.payload[4...], as: UTF8.self)))
        }
    }

    /// INFO or GO; nil when the server does not know the option (fall back to EXPORT_NAME).
    func infoOrGo(_ option: NBDOption, export: String) throws -> NBDExportDetails? {
        var w = WireWriter()
        w.string32(export)
        w.u16(3)
        w.u16(NBDInfo.blockSize)
        w.u16(NBDInfo.name)
        w.u16(NBDInfo.description)
        try send(option, w.bytes)
        var d = NBDExportDetails(name: export, description: nil, size: 0, flags: [], mode: mode)
        var sawExport = false
        while true {
            let r = try receive(option)
            if r.type == .ack {
                guard sawExport else { throw NBDError.violation("Server did not send NBD_INFO_EXPORT") }
                return d
            }
            if r.type == .errUnsup { return nil }
            if r.type.isError { throw refusal(option, r) }
            guard r.type == .info else { throw NBDError.violation("Unexpected reply \(r.type) to option \(option)") }
            try r.payload.withUnsafeBytes { raw in
                var rd = WireReader(raw)
                guard let item = rd.u16() else { throw NBDError.violation("truncated NBD_REP_INFO") }
                switch item {
                case NBDInfo.export:
                    guard let size = rd.u64(), let flags = rd.u16() else { throw NBDError.violation("truncated NBD_INFO_EXPORT") }
                    d.size = size
                    d.flags = NBDTransmissionFlags(rawValue: flags)
                    sawExport = true
                case NBDInfo.name:
                    d.name = rd.string(rd.remaining) ?? export
                case NBDInfo.description:
                    d.description = rd.string(rd.remaining)
                case NBDInfo.blockSize:
                    guard let a = rd.u32(), let b = rd.u32(), let c = rd.u32() else {
                        throw NBDError.violation("truncated NBD_INFO_BLOCK_SIZE")
                    }
                    d.minimumBlock = a
                    d.preferredBlock = b
                    d.maximumBlock = c
                default:
                    break
                }
            }
        }
    }

    /// NBD_OPT_EXPORT_NAME: no way back; the server hangs up if it dislikes the name.
    func exportName(_ name: String) throws -> NBDExportDetails {
        var w = WireWriter()
        w.raw(name)
        try send(.exportName, w.bytes)
        let size = try stream.readU64()
        let flags = try stream.readU16()
        if !serverNoZeroes { try stream.discard(124) }
        return NBDExportDetails(name: name, description: nil, size: size, flags: NBDTransmissionFlags(rawValue: flags), mode: mode)
    }

    /// The whole handshake up to transmission.
    func connect() throws -> NBDExportDetails {
        if let old = try greet() { return old }
        try negotiateReplies()
        var contexts: [(UInt32, String)] = []
        if mode >= .structured && !config.metaContexts.isEmpty {
            contexts = try metaContexts(.setMetaContext, export: config.exportName, queries: config.metaContexts)
        }
        if fixedNewstyle, var d = try infoOrGo(.go, export: config.exportName) {
            d.contexts = contexts
            d.mode = mode
            return d
        }
        if mode == .extended {
            throw NBDError.violation("server negotiated extended headers but does not support NBD_OPT_GO")
        }
        var d = try exportName(config.exportName)
        d.contexts = contexts
        return d
    }

    /// The export list (NBD_OPT_LIST), then NBD_OPT_ABORT is up to the caller.
    func listExports() throws -> [(name: String, description: String)] {
        try send(.list)
        var out: [(String, String)] = []
        while true {
            let r = try receive(.list)
            if r.type == .ack { return out }
            if r.type.isError { throw refusal(.list, r) }
            guard r.type == .server else { throw NBDError.violation("Unexpected reply \(r.type) to option list") }
            try r.payload.withUnsafeBytes { raw in
                var rd = WireReader(raw)
                guard let len = rd.u32(), len <= UInt32(rd.remaining), let name = rd.string(Int(len)) else {
                    throw NBDError.violation("malformed NBD_REP_SERVER")
                }
                out.append((name, rd.string(rd.remaining) ?? ""))
            }
        }
    }

    func abort() {
        try? send(.abort)
        _ = try? receive(.abort)
    }
}
