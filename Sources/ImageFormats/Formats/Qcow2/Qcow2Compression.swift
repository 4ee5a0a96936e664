// Compressed clusters: raw deflate (zlib, window 2^12 as QEMU writes it) and zstd, behind one type.
//
// Decompression stops once a whole cluster is produced: the stored size is rounded up to 512-byte
// sectors, so trailing bytes (possibly the start of the next compressed cluster) are ignored.
// Compression reports "does not fit" when the result would not be smaller than a cluster, and the
// caller then writes the cluster uncompressed (as QEMU does).
import CDeflate
import CZlib
import CZstd
import Glibc

enum Qcow2CompressionType: UInt8, Sendable {
    case zlib = 0
    case zstd = 1

    var name: String { self == .zlib ? "zlib" : "zstd" }

    init?(name: String) {
        switch name {
        case "zlib": self = .zlib
        case "zstd": self = .zstd
        default: return nil
        }
    }
}

enum Qcow2Compression {
    /// Decompresses `input` into exactly `output.count` bytes.
    static func decompress(_ type: Qcow2CompressionType, _ input: UnsafeRawBufferPointer,
                           into output: UnsafeMutableRawBufferPointer) throws {
        switch type {
        case .zlib: try inflateRaw(input, into: output)
        case .zstd: try zstdDecompress(input, into: output)
        }
    }

    /// Compresses `input` into `output` (capacity: cluster size - 1). Returns the compressed length,
    /// or nil when the data does not compress into that space.
    static func compress(_ type: Qcow2CompressionType, _ input: UnsafeRawBufferPointer,
                         into output: UnsafeMutableRawBufferPointer) -> Int? {
        switch type {
        case .zlib: return deflateRaw(input, into: output)
        case .zstd: return zstdCompress(input, into: output)
        }
    }

    private static func corrupt() -> BlockError {
        BlockError(.corrupt, "Could not decompress a compressed cluster", errno: 5)
    }

    static func inflateRaw(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        var s = z_stream()
        // Window 15 reads data written with any smaller window too.
        guard inflateInit2_(&s, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { throw corrupt() }
        defer { inflateEnd(&s) }
        s.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        s.avail_in = UInt32(input.count)
        s.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        s.avail_out = UInt32(output.count)
        let r = inflate(&s, Z_FINISH)
        // Z_BUF_ERROR with a full output is fine: the input had trailing sector padding.
        guard r == Z_STREAM_END || ((r == Z_BUF_ERROR || r == Z_OK) && s.avail_out == 0) else { throw corrupt() }
        guard s.avail_out == 0 else { throw corrupt() }
    }

    /// Raw deflate with libdeflate (several times faster than zlib at the same ratio). A small
    /// sample is tried first: data that does not shrink there is not worth a full attempt.
    static func deflateRaw(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
        let c = DeflateCompressors.current()
        if input.count >= 16384 {
            // Three 1 KiB samples; random data compresses to more than its size.
            var sampleOut = [UInt8](repeating: 0, count: 2048)
            var total = 0
            for start in [0, input.count / 2, input.count - 1024] {
                let n = sampleOut.withUnsafeMutableBytes {
                    libdeflate_deflate_compress(c, input.baseAddress! + start, 1024, $0.baseAddress, 2048)
                }
                total += n == 0 ? 2048 : n
            }
            if total >= 3 * 1024 * 99 / 100 { return nil }
        }
        let n = libdeflate_deflate_compress(c, input.baseAddress, input.count, output.baseAddress, output.count)
        return n == 0 ? nil : n
    }

    /// zlib's raw deflate (kept for comparison and as a reference implementation).
    static func deflateRawZlib(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
        var s = z_stream()
        guard deflateInit2_(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY,
                            ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        defer { deflateEnd(&s) }
        s.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        s.avail_in = UInt32(input.count)
        s.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        s.avail_out = UInt32(output.count)
        let r = deflate(&s, Z_FINISH)
        guard r == Z_STREAM_END else { return nil }
        return output.count - Int(s.avail_out)
    }

    static func zstdDecompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        guard let dctx = ZSTD_createDCtx() else { throw corrupt() }
        defer { ZSTD_freeDCtx(dctx) }
        var inBuf = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuf = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        // Stream until the cluster is complete; the input may end with sector padding.
        while outBuf.pos < outBuf.size {
            let r = ZSTD_decompressStream(dctx, &outBuf, &inBuf)
            if ZSTD_isError(r) != 0 { throw corrupt() }
            if r == 0 && outBuf.pos < outBuf.size { throw corrupt() }   // frame ended early
            if inBuf.pos == inBuf.size && outBuf.pos < outBuf.size && r != 0 { throw corrupt() }
        }
    }

    static func zstdCompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
        let r = ZSTD_compress(output.baseAddress, output.count, input.baseAddress, input.count, 0)
        if ZSTD_isError(r) != 0 { return nil }
        return r
    }
}

/// One libdeflate compressor per thread (they are not thread-safe and are costly to create).
enum DeflateCompressors {
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { p in libdeflate_free_compressor(OpaquePointer(p)) }
        return k
    }()

    static func current() -> OpaquePointer {
        if let p = pthread_getspecific(key) { return OpaquePointer(p) }
        let c = libdeflate_alloc_compressor(3)!
        pthread_setspecific(key, UnsafeRawPointer(c))
        return c
    }
}
