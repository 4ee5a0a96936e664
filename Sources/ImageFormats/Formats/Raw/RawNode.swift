// The `raw` format: the file's bytes are the disk's bytes, optionally a window (offset, size) of them.
//
// When raw was guessed by probing rather than named, QEMU refuses writes that would make the first
// sector look like another format (a guest could otherwise turn its disk into a qcow2 header pointing
// at host files); we do the same, with the same warning at open time (printed by the tools).
import Glibc

public final class RawNode: BlockNode, @unchecked Sendable {
    public let driverName = "raw"
    public let file: any BlockNode
    public let windowOffset: UInt64
    private let fixedSize: UInt64?
    /// Raw was guessed by probing, so writes that would change the probed format are refused.
    public let probed: Bool

    public var filename: String { file.filename }
    public var isReadOnly: Bool { file.isReadOnly }
    public var children: [BlockChild] { [BlockChild(name: "file", node: file)] }
    public var requestAlignment: UInt64 { file.requestAlignment }
    public var hasZeroInit: Bool { windowOffset == 0 && fixedSize == nil && file.hasZeroInit }

    public var size: UInt64 {
        if let s = fixedSize { return s }
        let f = file.size
        return f > windowOffset ? f - windowOffset : 0
    }

    public init(file: any BlockNode, options: BlockOptions, probed: Bool) throws {
        self.file = file
        self.probed = probed
        self.windowOffset = try options.size("offset") ?? 0
        self.fixedSize = try options.size("size")
        let fsize = file.size
        if windowOffset > fsize {
            throw BlockError(.invalidArgument, "The sum of offset (\(windowOffset)) and size (\(fixedSize ?? 0)) has to be smaller or equal to the  actual size of the containing file (\(fsize))", errno: EINVAL)
        }
        if let s = fixedSize, windowOffset + s > fsize {
            throw BlockError(.invalidArgument, "The sum of offset (\(windowOffset)) and size (\(s)) has to be smaller or equal to the  actual size of the containing file (\(fsize))", errno: EINVAL)
        }
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRequest(offset, UInt64(buffer.count))
        try file.read(at: offset + windowOffset, into: buffer)
    }

    public func readScattered(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer]) throws {
        try checkRequest(offset, buffers.reduce(0) { $0 + UInt64($1.count) })
        try file.readScattered(at: offset + windowOffset, into: buffers)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        if fixedSize != nil { try checkRequest(offset, UInt64(buffer.count)) }
        if probed && offset < UInt64(FormatRegistry.probeSize) && buffer.count > 0 {
            try checkProbedWrite(at: offset, buffer)
        }
        try file.write(at: offset + windowOffset, from: buffer, flags: flags)
    }

    /// The guard for probed raw images: the first sector must not start to look like another format.
    private func checkProbedWrite(at offset: UInt64, _ buffer: UnsafeRawBufferPointer) throws {
        var head = try file.read(at: windowOffset, count: FormatRegistry.probeSize)
        let n = min(buffer.count, FormatRegistry.probeSize - Int(offset))
        for i in 0..<n { head[Int(offset) + i] = buffer[i] }
        if FormatRegistry.probe(head, filename: filename) != "raw" {
            throw BlockError(.permission, "Writing to the first sector of an image guessed as raw would change its format", errno: EPERM)
        }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws {
        if fixedSize != nil { try checkRequest(offset, length) }
        try file.writeZeroes(at: offset + windowOffset, length: length, flags: flags)
    }

    public func discard(at offset: UInt64, length: UInt64) throws {
        if fixedSize != nil { try checkRequest(offset, length) }
        try file.discard(at: offset + windowOffset, length: length)
    }

    public func flush() throws { try file.flush() }

    public func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws {
        if fixedSize != nil || windowOffset != 0 {
            throw BlockError(.unsupported, "Cannot resize a raw image with an offset or a fixed size", errno: ENOTSUP)
        }
        try file.truncate(to: newSize, preallocation: preallocation, exact: exact)
    }

    public func driverBlockStatus(at offset: UInt64, length: UInt64, wantZero: Bool) throws -> BlockExtent {
        BlockExtent(flags: [.raw, .offsetValid], length: length, hostOffset: offset + windowOffset, file: file)
    }

    public func allocatedHostBytes() -> UInt64? { file.allocatedHostBytes() }
    public func driverInfo() -> DriverInfo? { file.driverInfo() }

    public func close() throws { try file.close() }
}

extension RawNode: HostMappedNode {
    public var canWriteDirect: Bool { (file as? any HostMappedNode)?.canWriteDirect ?? false }

    public func hostExtent(at offset: UInt64, length: UInt64) throws -> HostExtent? {
        guard let f = file as? any HostMappedNode, offset < size else { return nil }
        return try f.hostExtent(at: offset + windowOffset, length: min(length, size - offset))
    }

    public func writeDirect(at offset: UInt64, length: UInt64, fill: (HostExtent) throws -> Void) throws -> UInt64 {
        guard let f = file as? any HostMappedNode else { return 0 }
        // A probed raw image's first sector is checked against the data, which we do not see here.
        if probed && offset < UInt64(FormatRegistry.probeSize) { return 0 }
        if fixedSize != nil { try checkRequest(offset, length) }
        return try f.writeDirect(at: offset + windowOffset, length: length, fill: fill)
    }
}
