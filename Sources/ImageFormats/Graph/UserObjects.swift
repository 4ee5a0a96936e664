// User-creatable objects: what `--object` (qemu-img, qemu-nbd) and `-object` (qemu-system) create,
// shared by the three programs.
//
// Design: QEMU keeps its objects in one process-wide container (/objects) that any layer resolves
// by id (the nbd driver's tls-creds=ID, an x509 object's passwordid=ID); so does this library
// (`UserObjects.shared`). One argument goes through QEMU's stages in QEMU's order, each with its
// messages: parse (Keyval.swift, in the program's dialect), check against the QAPI schema
// (ObjectSchema.swift), refuse a type the program cannot create ("invalid object type: X"; the
// catalog is per program, as QEMU's binaries differ), check the id, then create: duplicate ids,
// then the type's own completion, which loads what it needs at once, as QEMU does: a secret reads its
// file and decodes it (ObjectSecrets.swift), TLS credentials load their files into GnuTLS and
// authorization lists their rules (TLSObjects.swift). So a missing credential file is reported when
// the object is created, before any image is opened. Objects are created in argument order, and
// a later object can use an earlier one (a secret before the x509 credentials that name it).
// The programs only print: the texts here are QEMU's.
import Glibc
import NBD

/// The object types a program can create.
public struct ObjectCatalog: Sendable {
    public var types: Set<String>

    public init(types: Set<String>) { self.types = types }

    static let common: Set<String> = ["secret", "tls-creds-anon", "tls-creds-psk", "tls-creds-x509", "authz-simple",
                                      "authz-list", "authz-listfile"]
    /// qemu-img: secrets, TLS credentials (for the nbd driver) and authorization objects.
    public static let qemuImg = ObjectCatalog(types: common)
    /// qemu-nbd: the same and iothread (accepted; qemu-nbd does not use it either).
    public static let qemuNbd = ObjectCatalog(types: common.union(["iothread"]))
    /// qemu-system: the same, where iothreads run virtio-blk queues.
    public static let qemuSystem = ObjectCatalog(types: common.union(["iothread"]))

    /// QOM's class names, as "--object help" lists them (authz-listfile's class is authz-list-file).
    var classNames: [String] { types.map { $0 == "authz-listfile" ? "authz-list-file" : $0 }.sorted() }

    /// "List of user creatable objects:" and the class names.
    public var helpText: String {
        "List of user creatable objects:\n" + classNames.map { "  \($0)" }.joined(separator: "\n")
    }
}

/// One object, validated; once created, also what it made (secret bytes, TLS credentials, a check).
public struct UserObject: @unchecked Sendable {
    public var type: String
    public var id: String
    /// The properties, flat (dotted keys such as "rules.0.match"), booleans as "on"/"off".
    public var props: [String: String]

    enum Payload {
        case none
        case secret([UInt8])
        case tlsCredentials(NBDTLSCredentials)
        case authorization(@Sendable (String) -> Bool)
    }
    var payload = Payload.none

    public init(type: String, id: String, props: [String: String]) {
        self.type = type
        self.id = id
        self.props = props
    }

    public var isTLSCredentials: Bool { type.hasPrefix("tls-creds-") }
    /// A TLS credentials object's endpoint ("client" unless endpoint=server).
    public var endpoint: String { props["endpoint"] ?? "client" }

    /// The loaded credentials of a created tls-creds object.
    public var tlsCredentials: NBDTLSCredentials? {
        if case .tlsCredentials(let c) = payload { return c }
        return nil
    }

    /// The decision of a created authz object: may this identity (x509 DN, PSK user name) connect?
    public var authorization: (@Sendable (String) -> Bool)? {
        if case .authorization(let f) = payload { return f }
        return nil
    }
}

/// What one --object argument asks for.
public struct ObjectArgument: Sendable {
    /// The validated object (nil when help was asked for).
    public var object: UserObject?
    /// Help to print on stdout, after which QEMU exits with status 0.
    public var help: String?
}

public final class UserObjects: @unchecked Sendable {
    /// The process's objects, as QEMU's /objects container.
    public static let shared = UserObjects()

    /// qemu-img and qemu-nbd parse keyval; qemu-system's -object is QemuOpts.
    public enum Dialect: Sendable { case keyval, qemuOpts }

    private let lock = NSLockLite()
    private var objects: [UserObject] = []

    public init() {}

    static func error(_ message: String, hint: String? = nil) -> BlockError {
        BlockError(.invalidArgument, message, errno: EINVAL, hint: hint)
    }

    // MARK: parsing and validation

    /// Parses and validates one argument with QEMU's messages, without creating anything.
    /// `takenIDs`: for QemuOpts, the ids of the earlier -object options (a duplicate is refused first).
    /// `warn` gets QemuOpts' deprecation warnings (short-form booleans) as soon as they are found.
    public static func parse(_ text: String, catalog: ObjectCatalog, dialect: Dialect = .keyval,
                             takenIDs: Set<String> = [], warn: (String) -> Void = { _ in }) throws(BlockError) -> ObjectArgument {
        var parsed: Keyval.Parsed
        let flavour: ObjectSchema.Flavour
        if text.hasPrefix("{") {
            flavour = .json
            do {
                parsed = Keyval.Parsed(tree: try JSONValue.parse(text))
            } catch let e as JSONParseError {
                throw error(e.message.hasPrefix("JSON parse error") ? e.message : "JSON parse error, \(e.message)")
            } catch {
                throw UserObjects.error("JSON parse error")
            }
            guard case .object = parsed.tree else {
                throw error("Invalid parameter type for '<anonymous>', expected: object")
            }
        } else if dialect == .keyval {
            flavour = .keyval
            parsed = try Keyval.parseKeyval(text, impliedKey: "qom-type")
        } else {
            flavour = .qemuOpts
            parsed = try Keyval.parseQemuOpts(text, impliedKey: "qom-type")
            parsed.warnings.forEach(warn)
            // QemuOpts checks its id before anything else.
            if let id = parsed.id {
                if !Keyval.isWellFormedID(id) { throw badID() }
                if takenIDs.contains(id) { throw error("Duplicate ID '\(id)' for object") }
            }
        }
        let members = parsed.tree.objectValue ?? []
        var visitor = ObjectSchema.Visitor(flavour: flavour)
        let typeValue = members.last { $0.0 == "qom-type" }?.1
        let typeName = try typeValue.map { v throws(BlockError) in try visitor.text(v, full: "qom-type", expected: "string") }
        if parsed.help || typeName == "help" || typeName == "?" {
            return ObjectArgument(object: nil, help: helpText(typeName, catalog: catalog))
        }
        guard let type = typeName else { throw error("Parameter 'qom-type' is missing") }
        guard ObjectSchema.qemuTypes.contains(type) else { throw error("Parameter 'qom-type' does not accept value '\(type)'") }
        var id = parsed.id
        if flavour != .qemuOpts, let v = members.last(where: { $0.0 == "id" })?.1 {
            id = try visitor.text(v, full: "id", expected: "string")
        }
        guard let id else { throw error("Parameter 'id' is missing") }
        if let schema = ObjectSchema.byType[type] {
            try visitor.visitStruct(members, schema.members, path: "", consumed: ["qom-type", "id"])
        }
        guard catalog.types.contains(type) else { throw error("invalid object type: \(type)") }
        if !Keyval.isWellFormedID(id) { throw badID() }
        var props: [String: String] = [:]
        for (k, v) in visitor.flat { props[k] = v }
        return ObjectArgument(object: UserObject(type: type, id: id, props: props), help: nil)
    }

    static func badID() -> BlockError {
        error("Parameter 'id' expects an identifier", hint: "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.")
    }

    /// "--object TYPE,help" lists TYPE's properties; "help" or an unknown type lists the types.
    static func helpText(_ type: String?, catalog: ObjectCatalog) -> String {
        let schemaName = type == "authz-list-file" ? "authz-listfile" : type
        if let type, let s = schemaName, type != "authz-listfile", catalog.types.contains(s), let schema = ObjectSchema.byType[s] {
            return schema.helpText(type)
        }
        return catalog.helpText
    }

    // MARK: the container

    /// Creates a validated object: QEMU's property check ('loaded' is read-only), the duplicate id
    /// check, then the type's completion (loading secrets and credentials). Returns it as created.
    @discardableResult
    public func add(_ object: UserObject) throws(BlockError) -> UserObject {
        var o = object
        if o.props["loaded"] != nil { throw UserObjects.error("Property '\(o.type).loaded' is not writable") }
        if self.object(id: o.id) != nil {
            throw UserObjects.error("attempt to add duplicate property '\(o.id)' to object (type 'container')")
        }
        switch o.type {
        case "secret":
            o.payload = .secret(try ObjectSecrets.load(o, in: self))
        case "tls-creds-anon", "tls-creds-psk", "tls-creds-x509":
            o.payload = .tlsCredentials(try TLSObjects.credentials(o, in: self))
        case "authz-simple", "authz-list", "authz-listfile":
            o.payload = .authorization(try TLSObjects.authorization(o))
        default:
            break
        }
        lock.withLock { objects.append(o) }
        return o
    }

    /// Parses, validates and creates one argument; returns the help text instead when asked for.
    /// Warnings (QemuOpts only) go to `warn`.
    @discardableResult
    public func create(_ text: String, catalog: ObjectCatalog, dialect: Dialect = .keyval,
                       warn: (String) -> Void = { _ in }) throws(BlockError) -> String? {
        let a = try UserObjects.parse(text, catalog: catalog, dialect: dialect, warn: warn)
        if let h = a.help { return h }
        if let o = a.object { try add(o) }
        return nil
    }

    /// Puts already-made TLS credentials under an id (replacing an object with that id).
    public func register(id: String, credentials: NBDTLSCredentials) {
        let type: String
        switch credentials.kind {
        case .x509: type = "tls-creds-x509"
        case .psk: type = "tls-creds-psk"
        case .anon: type = "tls-creds-anon"
        }
        var o = UserObject(type: type, id: id, props: credentials.isServer ? ["endpoint": "server"] : [:])
        o.payload = .tlsCredentials(credentials)
        lock.withLock {
            objects.removeAll { $0.id == id }
            objects.append(o)
        }
    }

    public func object(id: String) -> UserObject? {
        lock.withLock { objects.first { $0.id == id } }
    }

    /// Every object, in creation order.
    public var all: [UserObject] { lock.withLock { objects } }

    /// Removes every object (tests).
    public func removeAll() { lock.withLock { objects.removeAll() } }

    // MARK: lookups with QEMU's messages

    /// A secret's bytes (qcrypto_secret_lookup).
    public func secret(id: String) throws(BlockError) -> [UInt8] {
        guard let o = object(id: id) else { throw UserObjects.error("No secret with id '\(id)'") }
        guard case .secret(let bytes) = o.payload else { throw UserObjects.error("Object with id '\(id)' is not a secret") }
        return bytes
    }

    /// A secret as text (qcrypto_secret_lookup_as_utf8).
    public func secretText(id: String) throws(BlockError) -> String {
        let bytes = try secret(id: id)
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw UserObjects.error("Data from secret \(id) is not valid UTF-8")
        }
        return s
    }

    /// The credentials a client (the nbd driver) uses, as block/nbd.c looks them up.
    public func clientCredentials(id: String) throws(BlockError) -> NBDTLSCredentials {
        guard let o = object(id: id) else { throw UserObjects.error("No TLS credentials with id '\(id)'") }
        guard let c = o.tlsCredentials else { throw UserObjects.error("Object with id '\(id)' is not TLS credentials") }
        guard o.endpoint == "client" else { throw UserObjects.error("Expected TLS credentials for a client endpoint") }
        return c
    }
}
