// The server's side of the fixed newstyle handshake: greeting, client flags, then option haggling
// until NBD_OPT_GO / NBD_OPT_EXPORT_NAME (transmission), NBD_OPT_ABORT or a hard disconnect.
//
// Behaviour and messages follow qemu-nbd (QEMU's nbd_negotiate_options): every option gets an
// answer unless the protocol leaves no way to answer (EXPORT_NAME of an unknown export, bad magic,
// an option longer than 32 MiB), in which case the connection is dropped with QEMU's message.
// With TLS configured, everything but STARTTLS and ABORT is refused until TLS is up (FORCEDTLS).
// One handler per option below; meta contexts live in MetaContextQuery.swift.

/// Server-wide settings the handshake needs.
public struct NBDServerPolicy: Sendable {
    public var exports: [NBDExport]
    /// Upgrades a transport to TLS after NBD_OPT_STARTTLS was acknowledged; nil: no TLS.
    public var tls: (@Sendable (NBDTransport) throws -> NBDTransport)?
    /// Whether to offer NBD_OPT_EXTENDED_HEADERS (on by default; tests turn it off to compare).
    public var allowExtendedHeaders: Bool
    /// -T: receives (event, text) for QEMU's trace points we have; nil costs nothing.
    public var trace: (@Sendable (String, String) -> Void)?

    public init(exports: [NBDExport], tls: (@Sendable (NBDTransport) throws -> NBDTransport)? = nil,
                allowExtendedHeaders: Bool = true) {
        self.exports = exports
        self.tls = tls
        self.allowExtendedHeaders = allowExtendedHeaders
    }

    func find(_ name: String) -> NBDExport? { exports.first { $0.name == name } }
}

public enum NBDHandshakeResult {
    case transmission(NBDSession)
    /// The client sent NBD_OPT_ABORT: a clean goodbye.
    case aborted
}

public final class NBDServerHandshake {
    let stream: NBDStream
    let policy: NBDServerPolicy
    private var mode: NBDMode = .exportName
    private var fixedNewstyle = false
    private var noZeroes = false
    private var tlsActive = false
    /// SET_META_CONTEXT result: the export it was for, and the contexts.
    private var meta: (export: NBDExport, contexts: [NBDMetaContext])?

    public init(stream: NBDStream, policy: NBDServerPolicy) {
        self.stream = stream
        self.policy = policy
    }

    /// Runs the handshake. Errors are hard disconnects, worded as QEMU words them.
    public func run() throws -> NBDHandshakeResult {
        var w = WireWriter(capacity: 18)
        w.u64(NBDMagic.initPassword)
        w.u64(NBDMagic.haveOptions)
        w.u16(UInt16(NBDHandshakeFlags([.fixedNewstyle, .noZeroes]).rawValue))
        try stream.write(w.bytes)

        let clientFlags = try read("flags") { try stream.readU32() }
        var flags = NBDHandshakeFlags(rawValue: clientFlags)
        if flags.contains(.fixedNewstyle) {
            fixedNewstyle = true
            mode = .simple
            flags.remove(.fixedNewstyle)
        }
        if flags.contains(.noZeroes) {
            noZeroes = true
            flags.remove(.noZeroes)
        }
        if flags.rawValue != 0 {
            throw NBDError.violation("Unknown client flags 0x\(String(flags.rawValue, radix: 16)) received")
        }
        while true {
            if let result = try nextOption() { return result }
        }
    }

    private func read<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as NBDError where e.kind == .eof || e.kind == .io {
            throw e.prepending("Failed to read \(what): ")
        }
    }

    /// Reads and answers one option; a result ends the handshake.
    private func nextOption() throws -> NBDHandshakeResult? {
        let magic = try read("opts magic") { try stream.readU64() }
        if magic != NBDMagic.haveOptions {
            throw NBDError.violation("Bad magic received")
        }
        let option = NBDOption(rawValue: try read("option") { try stream.readU32() })
        let length = try read("option length") { try stream.readU32() }
        if length > UInt32(NBDLimits.maxBuffer) {
            throw NBDError.violation("len (\(length) ) is larger than max len (\(NBDLimits.maxBuffer))")
        }
        policy.trace?("nbd_negotiate_options_check_option", "Checking option \(option.rawValue) (\(option))")
        let opt = OptionReader(stream: stream, option: option, length: length)
        do {
            if policy.tls != nil && !tlsActive {
                return try beforeTLS(opt)
            }
            if !fixedNewstyle {
                if option == .exportName { return try exportName(opt) }
                throw NBDError.violation("Unsupported option \(option.rawValue) (\(option))")
            }
            return try dispatch(opt)
        } catch is OptionAnswered {
            return nil
        }
    }

    /// FORCEDTLS: only STARTTLS (and ABORT) before the upgrade.
    private func beforeTLS(_ opt: OptionReader) throws -> NBDHandshakeResult? {
        let hex = String(opt.option.rawValue, radix: 16)
        guard fixedNewstyle else {
            throw NBDError.violation("Unsupported option 0x\(hex)")
        }
        switch opt.option {
        case .startTLS:
            if opt.remaining > 0 {
                try opt.rejectLength()
                throw NBDError.violation("option '\(opt.option)' has unexpected length")
            }
            try startTLS(opt)
            return nil
        case .exportName:
            throw NBDError.violation("Option 0x\(hex) not permitted before TLS")
        default:
            do {
                try opt.dropAndReply(.errTLSRequired, "Option 0x\(hex) not permitted before TLS")
            } catch where opt.option == .abort {
                // The client may hang up without reading the reply to its ABORT.
            }
            return opt.option == .abort ? .aborted : nil
        }
    }

    private func dispatch(_ opt: OptionReader) throws -> NBDHandshakeResult? {
        switch opt.option {
        case .list:
            if opt.remaining > 0 { try opt.rejectLength(); return nil }
            try list(opt)
        case .abort:
            try? opt.reply(.ack)
            return .aborted
        case .exportName:
            return try exportName(opt)
        case .info, .go:
            if let session = try infoOrGo(opt) { return .transmission(session) }
        case .startTLS:
            if opt.remaining > 0 { try opt.rejectLength(); return nil }
            if tlsActive {
                try opt.replyError(.errInvalid, "TLS already enabled")
            } else {
                try opt.replyError(.errPolicy, "TLS not configured")
            }
        case .structuredReply:
            if opt.remaining > 0 { try opt.rejectLength(); return nil }
            if mode >= .extended {
                try opt.replyError(.errExtHeaderRequired, "extended headers already negotiated")
            } else if mode >= .structured {
                try opt.replyError(.errInvalid, "structured reply already negotiated")
            } else {
                try opt.reply(.ack)
                mode = .structured
            }
        case .extendedHeaders where policy.allowExtendedHeaders:
            if opt.remaining > 0 { try opt.rejectLength(); return nil }
            if mode >= .extended {
                try opt.replyError(.errInvalid, "extended headers already negotiated")
            } else {
                try opt.reply(.ack)
                mode = .extended
            }
        case .listMetaContext, .setMetaContext:
            try metaContexts(opt)
        default:
            try opt.dropAndReply(.errUnsup, "Unsupported option \(opt.option.rawValue) (\(opt.option))")
        }
        return nil
    }

    // MARK: handlers

    private func startTLS(_ opt: OptionReader) throws {
        try opt.reply(.ack)
        if stream.hasUnconsumedInput {
            throw NBDError.violation("client sent data after NBD_OPT_STARTTLS before the TLS handshake")
        }
        guard let upgrade = policy.tls else { return }
        let tlsTransport = try upgrade(stream.transport)
        try stream.replaceTransport(tlsTransport)
        tlsActive = true
    }

    private func list(_ opt: OptionReader) throws {
        for e in policy.exports {
            var w = WireWriter()
            w.string32(e.name)
            w.raw(e.description ?? "")
            try opt.reply(.server, w.bytes)
        }
        try opt.reply(.ack)
    }

    private func exportName(_ opt: OptionReader) throws -> NBDHandshakeResult {
        if mode >= .extended {
            throw NBDError.violation("Extended headers already negotiated, no more NBD_OPT_EXPORT_NAME")
        }
        if opt.remaining > UInt64(NBDLimits.maxString) {
            throw NBDError.violation("Bad length received")
        }
        let name = String(decoding: try read("export name") { try stream.readBytes(Int(opt.remaining)) }, as: UTF8.self)
        guard let export = policy.find(name) else {
            throw NBDError.violation("export not found")
        }
        var w = WireWriter(capacity: 134)
        w.u64(export.size)
        w.u16(export.flags(for: mode).rawValue)
        if !noZeroes { w.zeroes(124) }
        try stream.write(w.bytes)
        return .transmission(session(for: export, checkAlignment: 0))
    }

    private func session(for export: NBDExport, checkAlignment: UInt32) -> NBDSession {
        var contexts: [(UInt32, NBDMetaContext)] = []
        if let m = meta, m.export === export {
            contexts = m.contexts.map { (export.contextID($0), $0) }
        }
        return NBDSession(export: export, mode: mode, contexts: contexts, checkAlignment: checkAlignment, tls: tlsActive)
    }

    /// NBD_OPT_INFO and NBD_OPT_GO (QEMU's nbd_negotiate_handle_info).
    private func infoOrGo(_ opt: OptionReader) throws -> NBDSession? {
        let name = try opt.name()
        var requests = try opt.u16()
        var sendName = false
        var wantsBlockSize = false
        while requests > 0 {
            requests -= 1
            switch try opt.u16() {
            case NBDInfo.name: sendName = true
            case NBDInfo.blockSize: wantsBlockSize = true
            default: break
            }
        }
        if opt.remaining > 0 { try opt.rejectLength(); return nil }
        guard let export = policy.find(name) else {
            try opt.replyError(.errUnknown, "export '\(sanitizedName(name))' not present")
            return nil
        }
        if sendName { try opt.reply(.info, info(NBDInfo.name) { $0.raw(name) }) }
        if let d = export.description { try opt.reply(.info, info(NBDInfo.description) { $0.raw(d) }) }
        let honoursBlockSize = opt.option == .info || wantsBlockSize
        let minimum = honoursBlockSize ? export.minimumBlock : 1
        try opt.reply(.info, info(NBDInfo.blockSize) {
            $0.u32(minimum)
            $0.u32(max(export.preferredBlock, minimum))
            $0.u32(export.maximumBlock)
        })
        try opt.reply(.info, info(NBDInfo.export) {
            $0.u64(export.size)
            $0.u16(export.flags(for: mode).rawValue)
        })
        if opt.option == .info && !wantsBlockSize && export.minimumBlock > 1 {
            try opt.replyError(.errBlockSizeRequired, "request NBD_INFO_BLOCK_SIZE to use this export")
            return nil
        }
        try opt.reply(.ack)
        return opt.option == .go ? session(for: export, checkAlignment: honoursBlockSize ? minimum : 0) : nil
    }

    private func info(_ type: UInt16, _ body: (inout WireWriter) -> Void) -> [UInt8] {
        var w = WireWriter()
        w.u16(type)
        body(&w)
        return w.bytes
    }

    /// NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
    private func metaContexts(_ opt: OptionReader) throws {
        let isSet = opt.option == .setMetaContext
        if isSet && mode < .structured {
            try opt.invalid("request option '\(opt.option)' when structured reply is not negotiated")
        }
        if isSet { meta = nil }
        let name = try opt.name()
        guard let export = policy.find(name) else {
            try opt.dropAndReply(.errUnknown, "export '\(sanitizedName(name))' not present")
            return
        }
        let count = try opt.u32()
        var query = MetaContextQuery(export: export, listing: !isSet)
        if !isSet && count == 0 {
            query.selectAll()
        } else {
            for _ in 0..<count {
                let len = try opt.u32()
                if len > UInt32(NBDLimits.maxString) {
                    try opt.skip(UInt64(len))
                    continue
                }
                query.add(try opt.string(Int(len)))
            }
        }
        if opt.remaining > 0 { try opt.rejectLength(); return }
        let selected = query.selected
        for c in selected {
            var w = WireWriter()
            w.u32(isSet ? export.contextID(c) : 0)
            w.raw(c.name)
            try opt.reply(.metaContext, w.bytes)
        }
        try opt.reply(.ack)
        if isSet { meta = (export, selected) }
    }
}
