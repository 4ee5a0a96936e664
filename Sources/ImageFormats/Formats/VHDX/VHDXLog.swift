// The VHDX metadata log: a circular buffer of 4 KiB sectors holding entries (header "loge",
// descriptors "desc"/"zero", data sectors "data") that must be replayed before the image is used.
//
// `findActiveSequence` is QEMU's vhdx_log_search: the valid chain of entries (matching the header's
// log GUID, consecutive sequence numbers, good checksums) with the highest sequence number.
// `replay` writes its descriptors to the file (QEMU's vhdx_log_flush). `makeEntry` builds the one
// entry QEMU writes for a metadata update (vhdx_log_write), used by our BAT updates and tests.
// Every length and offset is bounded by the log and the file before it sizes a read or a write.
import Glibc

struct VHDXLogDescriptor {
    var isZero: Bool
    var fileOffset: UInt64
    var zeroLength: UInt64
    var leading: [UInt8]     // 8 bytes (desc)
    var trailing: [UInt8]    // 4 bytes (desc)
}

struct VHDXLogEntry {
    var sequence: UInt64
    var descriptors: [VHDXLogDescriptor]
    /// Data sectors' 4084-byte payloads, in descriptor order.
    var data: [[UInt8]]
    var flushedFileOffset: UInt64
    var lastFileOffset: UInt64
}

enum VHDXLog {
    static let sector = 4096

    /// Descriptor sectors for `n` descriptors (the first sector also holds the 64-byte header).
    static func descSectors(_ n: Int) -> Int { (n + 2 + 127) / 128 }

    /// Reads `count` log sectors from ring position `pos`, wrapping.
    static func readSectors(_ file: any BlockNode, logOffset: UInt64, logLength: UInt64, pos: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count * sector)
        var p = pos
        for _ in 0..<count {
            out += try file.read(at: logOffset + p, count: sector)
            p += UInt64(sector)
            if p >= logLength { p = 0 }
        }
        return out
    }

    /// Validates and decodes the entry at ring position `pos`; nil when it is not a valid entry.
    static func entry(at pos: UInt64, file: any BlockNode, logOffset: UInt64, logLength: UInt64,
                      logGUID: [UInt8]) throws -> (VHDXLogEntry, sectors: Int)? {
        let head = try readSectors(file, logOffset: logOffset, logLength: logLength, pos: pos, count: 1)
        guard head.le32(0) == 0x6567_6f6c else { return nil }   // "loge"
        let entryLength = UInt64(head.le32(8))
        let seq = head.le64(16)
        let count = Int(head.le32(24))
        guard entryLength <= logLength, entryLength % UInt64(sector) == 0, entryLength > 0, seq != 0,
              Array(head[32..<48]) == logGUID, UInt64(count) * 32 <= entryLength else { return nil }
        let dsec = descSectors(count)
        let total = Int(entryLength) / sector
        guard dsec <= total else { return nil }
        let all = try readSectors(file, logOffset: logOffset, logLength: logLength, pos: pos, count: total)
        guard VHDX.crc32c(all, zeroingAt: 4) == head.le32(4) else { return nil }
        var descs: [VHDXLogDescriptor] = []
        var dataCount = 0
        for i in 0..<count {
            let o = 64 + i * 32
            let sig = all.le32(o)
            let off = all.le64(o + 16)
            guard all.le64(o + 24) == seq, off % UInt64(sector) == 0 else { return nil }
            if sig == 0x6f72_657a {          // "zero"
                let len = all.le64(o + 8)
                guard len % UInt64(sector) == 0 else { return nil }
                descs.append(VHDXLogDescriptor(isZero: true, fileOffset: off, zeroLength: len, leading: [], trailing: []))
            } else if sig == 0x6373_6564 {   // "desc"
                descs.append(VHDXLogDescriptor(isZero: false, fileOffset: off, zeroLength: 0,
                                               leading: Array(all[(o + 8)..<(o + 16)]), trailing: Array(all[(o + 4)..<(o + 8)])))
                dataCount += 1
            } else {
                return nil
            }
        }
        guard dsec + dataCount <= total else { return nil }
        var data: [[UInt8]] = []
        for i in 0..<dataCount {
            let o = (dsec + i) * sector
            let dseq = UInt64(all.le32(o + 4)) << 32 | UInt64(all.le32(o + 4092))
            guard all.le32(o) == 0x6174_6164, dseq == seq else { return nil }   // "data"
            data.append(Array(all[(o + 8)..<(o + 4092)]))
        }
        return (VHDXLogEntry(sequence: seq, descriptors: descs, data: data,
                             flushedFileOffset: all.le64(48), lastFileOffset: all.le64(56)), total)
    }

    /// QEMU's vhdx_log_search: the active sequence of entries (empty when the log holds none).
    static func findActiveSequence(_ file: any BlockNode, header: VHDXHeader) throws -> [VHDXLogEntry] {
        let offset = header.logOffset
        let length = UInt64(header.logLength)
        var best: [VHDXLogEntry] = []
        var pos: UInt64 = 0
        while pos < length {
            guard let (first, n) = try entry(at: pos, file: file, logOffset: offset, logLength: length, logGUID: header.logGUID) else {
                pos += UInt64(sector)
                continue
            }
            var chain = [first]
            var next = (pos + UInt64(n * sector)) % length
            var steps = n
            while steps * sector < Int(length),
                  let (e, m) = try entry(at: next, file: file, logOffset: offset, logLength: length, logGUID: header.logGUID),
                  e.sequence == chain.last!.sequence + 1 {
                chain.append(e)
                next = (next + UInt64(m * sector)) % length
                steps += m
            }
            if best.isEmpty || chain.last!.sequence > best.last!.sequence { best = chain }
            pos += UInt64(n * sector)
        }
        return best
    }

    /// QEMU's vhdx_log_flush: writes every descriptor of the sequence to the file.
    static func replay(_ entries: [VHDXLogEntry], file: any BlockNode) throws {
        for e in entries {
            let fileLength = file.size
            if e.flushedFileOffset > fileLength { throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL) }
            // A log can extend the file, but not without bound.
            let limit = max(fileLength, e.lastFileOffset)
            if e.lastFileOffset > fileLength + (1 << 36) { throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL) }
            var dataIndex = 0
            for d in e.descriptors {
                let len = d.isZero ? d.zeroLength : UInt64(sector)
                let (end, o) = d.fileOffset.addingReportingOverflow(len)
                if o || end > limit { throw BlockError(.invalidImage, "Invalid argument", errno: EINVAL) }
                if d.isZero {
                    var done: UInt64 = 0
                    let zeroes = [UInt8](repeating: 0, count: sector)
                    while done < len {
                        try file.write(at: d.fileOffset + done, bytes: zeroes)
                        done += UInt64(sector)
                    }
                } else {
                    try file.write(at: d.fileOffset, bytes: d.leading + e.data[dataIndex] + d.trailing)
                    dataIndex += 1
                }
            }
            if file.size < e.lastFileOffset {
                let newSize = roundUp(e.lastFileOffset, VHDX.mib)
                try file.truncate(to: newSize, preallocation: .off, exact: false)
            }
        }
        try file.flush()
    }

    /// One log entry writing `data` (whole 4 KiB sectors, already merged) at `fileOffset`
    /// (QEMU's vhdx_log_write, without the ring bookkeeping: entries start at the log's start).
    static func makeEntry(sequence: UInt64, logGUID: [UInt8], fileOffset: UInt64, sectors data: [UInt8],
                          fileLength: UInt64) -> [UInt8] {
        let n = data.count / sector
        let dsec = descSectors(n)
        var b = [UInt8](repeating: 0, count: (dsec + n) * sector)
        b.setLE32(0, 0x6567_6f6c)
        b.setLE32(8, UInt32(b.count))
        b.setLE32(12, 0)
        b.setLE64(16, sequence)
        b.setLE32(24, UInt32(n))
        b.replaceSubrange(32..<48, with: logGUID)
        b.setLE64(48, fileLength)
        b.setLE64(56, fileLength)
        for i in 0..<n {
            let o = 64 + i * 32
            let src = i * sector
            b.setLE32(o, 0x6373_6564)
            b.replaceSubrange((o + 4)..<(o + 8), with: data[(src + 4092)..<(src + 4096)])
            b.replaceSubrange((o + 8)..<(o + 16), with: data[src..<(src + 8)])
            b.setLE64(o + 16, fileOffset + UInt64(src))
            b.setLE64(o + 24, sequence)
            let d = (dsec + i) * sector
            b.setLE32(d, 0x6174_6164)
            b.setLE32(d + 4, UInt32(sequence >> 32))
            b.replaceSubrange((d + 8)..<(d + 4092), with: data[(src + 8)..<(src + 4092)])
            b.setLE32(d + 4092, UInt32(truncatingIfNeeded: sequence))
        }
        VHDX.setChecksum(&b, at: 4)
        return b
    }
}
