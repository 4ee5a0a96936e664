// Big-endian encoding and decoding of protocol fields.
//
// `WireWriter` appends to a growable byte array (handshake messages, reply headers); `WireReader`
// walks a byte buffer it does not own and returns nil on a short read instead of trapping, so a
// parser fed hostile bytes can only say "too short" or "invalid", never crash. The fixed-size
// header encoders write into caller-provided storage and allocate nothing on the hot path.

public struct WireWriter {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) {
        bytes.append(UInt8(v >> 8)); bytes.append(UInt8(truncatingIfNeeded: v))
    }
    public mutating func u32(_ v: UInt32) {
        for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) }
    }
    public mutating func u64(_ v: UInt64) {
        for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) }
    }
    public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    public mutating func raw(_ s: String) { bytes.append(contentsOf: Array(s.utf8)) }
    /// A 32-bit length followed by the string's bytes.
    public mutating func string32(_ s: String) {
        let u = Array(s.utf8)
        u32(UInt32(u.count))
        bytes.append(contentsOf: u)
    }
    public mutating func zeroes(_ n: Int) { bytes.append(contentsOf: repeatElement(0, count: n)) }
}

public struct WireReader {
    private let base: UnsafeRawBufferPointer
    public private(set) var position: Int = 0

    public init(_ buffer: UnsafeRawBufferPointer) { base = buffer }

    public var remaining: Int { base.count - position }
    public var isAtEnd: Bool { position >= base.count }

    public mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { position += 1 }
        return base[position]
    }
    public mutating func u16() -> UInt16? {
        guard remaining >= 2 else { return nil }
        defer { position += 2 }
        return loadBE16(base, position)
    }
    public mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { position += 4 }
        return loadBE32(base, position)
    }
    public mutating func u64() -> UInt64? {
        guard remaining >= 8 else { return nil }
        defer { position += 8 }
        return loadBE64(base, position)
    }
    public mutating func bytes(_ n: Int) -> [UInt8]? {
        guard n >= 0, remaining >= n else { return nil }
        defer { position += n }
        return Array(UnsafeRawBufferPointer(rebasing: base[position..<position + n]))
    }
    /// `n` bytes as a string; nil when short. Strings with NUL or bad UTF-8 are returned as decoded;
    /// callers that must refuse NUL check `bytes` themselves.
    public mutating func string(_ n: Int) -> String? {
        guard let b = bytes(n) else { return nil }
        return String(decoding: b, as: UTF8.self)
    }
    public mutating func skip(_ n: Int) -> Bool {
        guard n >= 0, remaining >= n else { return false }
        position += n
        return true
    }
}

@inline(__always) public func loadBE16(_ p: UnsafeRawBufferPointer, _ at: Int) -> UInt16 {
    UInt16(p[at]) << 8 | UInt16(p[at + 1])
}
@inline(__always) public func loadBE32(_ p: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
    UInt32(p[at]) << 24 | UInt32(p[at + 1]) << 16 | UInt32(p[at + 2]) << 8 | UInt32(p[at + 3])
}
@inline(__always) public func loadBE64(_ p: UnsafeRawBufferPointer, _ at: Int) -> UInt64 {
    UInt64(loadBE32(p, at)) << 32 | UInt64(loadBE32(p, at + 4))
}
@inline(__always) public func storeBE16(_ p: UnsafeMutableRawPointer, _ at: Int, _ v: UInt16) {
    p.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt16.self)
}
@inline(__always) public func storeBE32(_ p: UnsafeMutableRawPointer, _ at: Int, _ v: UInt32) {
    p.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt32.self)
}
@inline(__always) public func storeBE64(_ p: UnsafeMutableRawPointer, _ at: Int, _ v: UInt64) {
    p.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt64.self)
}

extension Array where Element == UInt8 {
    /// Whether the bytes contain a NUL (NBD strings must not).
    var containsNUL: Bool { contains(0) }
}
