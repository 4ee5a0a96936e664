// The raw format's driver entry points: probing (always the last resort), open and create.

public enum RawFormat: FormatDriver {
    public static let name = "raw"

    public static func probe(_ head: [UInt8], filename: String) -> Int { 1 }

    public static func open(file: any BlockNode, options: BlockOptions, context: OpenContext, probed: Bool) throws -> any BlockNode {
        try RawNode(file: file, options: options, probed: probed)
    }

    public static let createOptions: [CreateOptionSpec] = [
        CreateOptionSpec("size", .size, "Virtual disk size"),
    ]

    public static func create(filename: String, size: UInt64, options: BlockOptions) throws {
        let prealloc = try parsePreallocation(options.string("preallocation"), allowMetadata: false)
        try FileProtocol.create(filename: filename, size: size, preallocation: prealloc)
    }

    /// Parses preallocation=... with QEMU's message for a bad value.
    public static func parsePreallocation(_ value: String?, allowMetadata: Bool) throws -> Preallocation {
        guard let v = value else { return .off }
        guard let p = Preallocation(rawValue: v), allowMetadata || p != .metadata else {
            throw BlockError(.invalidArgument, "Invalid preallocation mode: '\(v)'", errno: 22)
        }
        return p
    }
}
