// Big- and little-endian field access on byte arrays, for on-disk headers and tables.
// Callers check bounds against the buffer they parse before reading (every header parser does).

extension Array where Element == UInt8 {
    @inline(__always) func be16(_ o: Int) -> UInt16 { UInt16(self[o]) << 8 | UInt16(self[o + 1]) }
    @inline(__always) func be32(_ o: Int) -> UInt32 {
        UInt32(self[o]) << 24 | UInt32(self[o + 1]) << 16 | UInt32(self[o + 2]) << 8 | UInt32(self[o + 3])
    }
    @inline(__always) func be64(_ o: Int) -> UInt64 { UInt64(be32(o)) << 32 | UInt64(be32(o + 4)) }
    @inline(__always) func le16(_ o: Int) -> UInt16 { UInt16(self[o]) | UInt16(self[o + 1]) << 8 }
    @inline(__always) func le32(_ o: Int) -> UInt32 {
        UInt32(self[o]) | UInt32(self[o + 1]) << 8 | UInt32(self[o + 2]) << 16 | UInt32(self[o + 3]) << 24
    }
    @inline(__always) func le64(_ o: Int) -> UInt64 { UInt64(le32(o)) | UInt64(le32(o + 4)) << 32 }

    @inline(__always) mutating func setBE16(_ o: Int, _ v: UInt16) {
        self[o] = UInt8(v >> 8); self[o + 1] = UInt8(truncatingIfNeeded: v)
    }
    @inline(__always) mutating func setBE32(_ o: Int, _ v: UInt32) {
        self[o] = UInt8(v >> 24); self[o + 1] = UInt8(truncatingIfNeeded: v >> 16)
        self[o + 2] = UInt8(truncatingIfNeeded: v >> 8); self[o + 3] = UInt8(truncatingIfNeeded: v)
    }
    @inline(__always) mutating func setBE64(_ o: Int, _ v: UInt64) {
        setBE32(o, UInt32(v >> 32)); setBE32(o + 4, UInt32(truncatingIfNeeded: v))
    }
    @inline(__always) mutating func setLE16(_ o: Int, _ v: UInt16) {
        self[o] = UInt8(truncatingIfNeeded: v); self[o + 1] = UInt8(v >> 8)
    }
    @inline(__always) mutating func setLE32(_ o: Int, _ v: UInt32) {
        for i in 0..<4 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }
    @inline(__always) mutating func setLE64(_ o: Int, _ v: UInt64) {
        for i in 0..<8 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    /// The bytes [o, o+n) as a string (non-UTF-8 bytes replaced), stopping at the first NUL.
    func cString(_ o: Int, _ n: Int) -> String {
        var end = o
        while end < o + n && self[end] != 0 { end += 1 }
        return String(decoding: self[o..<end], as: UTF8.self)
    }

    /// Whether every byte is zero (a fast path for zero detection in convert).
    var isAllZero: Bool {
        withUnsafeBytes { isZeroBuffer($0) }
    }
}

/// Whether a buffer is all zeroes, 8 bytes at a time.
public func isZeroBuffer(_ buf: UnsafeRawBufferPointer) -> Bool {
    guard let base = buf.baseAddress else { return true }
    let n = buf.count
    var i = 0
    while i < n && (Int(bitPattern: base + i) & 7) != 0 {
        if base.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
        i += 1
    }
    while i + 32 <= n {
        let a = base.load(fromByteOffset: i, as: UInt64.self) | base.load(fromByteOffset: i + 8, as: UInt64.self)
        let b = base.load(fromByteOffset: i + 16, as: UInt64.self) | base.load(fromByteOffset: i + 24, as: UInt64.self)
        if a | b != 0 { return false }
        i += 32
    }
    while i < n {
        if base.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
        i += 1
    }
    return true
}
