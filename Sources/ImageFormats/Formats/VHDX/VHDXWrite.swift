// VHDX writes (QEMU's vhdx_co_writev): the first guest-visible write gives the headers a new data
// GUID; blocks that are present are written in place; others get a new block at the 1 MiB-aligned
// end of the file (grown first, so it reads as zeroes), then their BAT entry goes through the log
// as in QEMU (entry written, flushed, applied, log emptied) so a crash never leaves a BAT entry
// half-written.
import Glibc

extension VHDXNode {
    /// QEMU's vhdx_update_header, twice: the inactive header gets the next sequence number.
    static func updateHeaders(_ file: any BlockNode, _ headers: inout [VHDXHeader], _ current: inout Int,
                              session: [UInt8], newDataGUID: Bool, logGUID: [UInt8]?) throws {
        let dataGUID = newDataGUID ? VHDX.randomGUID() : nil
        for _ in 0..<2 {
            let inactive = 1 - current
            var h = headers[inactive]
            h.sequence = headers[current].sequence + 1
            h.fileWriteGUID = session
            if let d = dataGUID { h.dataWriteGUID = d }
            if let l = logGUID { h.logGUID = l }
            try file.write(at: inactive == 0 ? VHDX.header1Offset : VHDX.header2Offset, bytes: h.sealed)
            try file.flush()
            headers[inactive] = h
            current = inactive
        }
    }

    func updateHeaders(newDataGUID: Bool, logGUID: [UInt8]?) throws {
        try VHDXNode.updateHeaders(file, &headers, &current, session: sessionGUID, newDataGUID: newDataGUID, logGUID: logGUID)
    }

    /// QEMU's vhdx_user_visible_write: a new data write GUID before the first change of guest data.
    func noteVisibleWrite() throws {
        guard metaLock.withLock({ firstVisibleWrite }) else { return }
        try rw.write {
            if metaLock.withLock({ firstVisibleWrite }) {
                try updateHeaders(newDataGUID: true, logGUID: nil)
                metaLock.withLock { firstVisibleWrite = false }
            }
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        try checkRequest(offset, UInt64(buffer.count))
        try noteVisibleWrite()
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let n = Int(min(blockSize - pos % blockSize, UInt64(buffer.count - done)))
            let part = UnsafeRawBufferPointer(rebasing: buffer[done..<done + n])
            let m = mapping(pos, maxLength: UInt64(n))
            switch m.state {
            case VHDX.fullyPresent:
                try rw.read { try file.write(at: m.host, from: part, flags: flags) }
            case VHDX.partiallyPresent, 4:
                throw BlockError(.io, "Input/output error", errno: EIO)
            default:
                try rw.write { try allocatingWrite(pos, part, flags: flags) }
            }
            done += n
        }
    }

    /// Under the exclusive lock: a new block for `pos`, the data, then the BAT entry via the log.
    private func allocatingWrite(_ pos: UInt64, _ part: UnsafeRawBufferPointer, flags: WriteFlags) throws {
        let m = mapping(pos, maxLength: UInt64(part.count))
        if m.state == VHDX.fullyPresent {
            try file.write(at: m.host, from: part, flags: flags)
            return
        }
        let newOffset = roundUp(file.size, VHDX.mib)
        guard newOffset >= VHDX.mib, newOffset <= UInt64(Int64.max) - blockSize else { throw BlockError(.io, "Bad address", errno: EFAULT) }
        try file.truncate(to: newOffset + blockSize, preallocation: .off, exact: true)
        try file.write(at: newOffset + pos % blockSize, from: part, flags: [])
        let index = meta.batIndex(block: pos / blockSize)
        let entry = newOffset | VHDX.fullyPresent
        try writeBATEntry(index: index, value: entry)
        metaLock.withLock { bat[index] = entry }
        if flags.contains(.fua) { try file.flush() }
    }

    /// QEMU's vhdx_log_write_and_flush for one BAT entry.
    func writeBATEntry(index: Int, value: UInt64) throws {
        let entryOffset = batOffset + UInt64(index) * 8
        let sectorOffset = entryOffset / 4096 * 4096
        var sector = try file.read(at: sectorOffset, count: 4096)
        sector.setLE64(Int(entryOffset - sectorOffset), value)
        try file.flush()
        let hdr = headers[current]
        guard UInt64(hdr.logLength) >= 8192 else { throw BlockError(.invalidArgument, "Invalid argument", errno: EINVAL) }
        let guid = VHDX.randomGUID()
        try updateHeaders(newDataGUID: false, logGUID: guid)
        let entry = VHDXLog.makeEntry(sequence: logSequence, logGUID: guid, fileOffset: sectorOffset, sectors: sector,
                                      fileLength: file.size)
        try file.write(at: hdr.logOffset, bytes: entry)
        logSequence += 1
        try file.flush()
        try file.write(at: sectorOffset, bytes: sector)
        try file.flush()
        try updateHeaders(newDataGUID: false, logGUID: [UInt8](repeating: 0, count: 16))
    }

    /// Blocks that are not present already read as zeroes; present ones are zeroed in place.
    public func writeZeroes(at offset: UInt64, length: UInt64, flags: WriteFlags) throws {
        guard !isReadOnly else { throw BlockError(.readOnly, "Block node is read-only", errno: EROFS) }
        try checkRequest(offset, length)
        var done: UInt64 = 0
        while done < length {
            let pos = offset + done
            let m = mapping(pos, maxLength: length - done)
            if m.state == VHDX.fullyPresent {
                try noteVisibleWrite()
                var f = flags
                f.remove(.noFallback)
                f.remove(.mayUnmap)
                try rw.read { try file.writeZeroes(at: m.host, length: m.length, flags: f) }
            }
            done += m.length
        }
    }

    public func discard(at offset: UInt64, length: UInt64) throws {}

    public func truncate(to newSize: UInt64, preallocation: Preallocation, exact: Bool) throws {
        throw BlockError(.unsupported, "Image format driver does not support resize", errno: ENOTSUP)
    }
}
