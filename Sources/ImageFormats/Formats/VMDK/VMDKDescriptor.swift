// The VMDK text descriptor: `createType`, `CID`/`parentCID` (hex), `parentFileNameHint`, and the
// extent lines ("RW <sectors> SPARSE|FLAT|VMFS|VMFSSPARSE \"file\" [offset]"). Parsing mirrors
// QEMU's (strstr-style lookups, sscanf-shaped extent lines, lines that do not parse are skipped);
// `make` prints QEMU's creation template byte for byte; `withCID` is QEMU's vmdk_write_cid.

struct VMDKExtentLine {
    var access: String
    var sectors: Int64
    var type: String
    var filename: String
    var flatOffset: Int64
}

enum VMDKDescriptor {
    /// QEMU's vmdk_parse_description: the value in `name="value"`.
    static func value(_ desc: [UInt8], _ name: String) -> String? {
        guard let at = find(desc, name) else { return nil }
        var p = at + name.utf8.count + 2
        guard p < desc.count else { return nil }
        let start = p
        while p < desc.count && desc[p] != UInt8(ascii: "\"") { p += 1 }
        guard p < desc.count else { return nil }
        return String(decoding: desc[start..<p], as: UTF8.self)
    }

    /// QEMU's vmdk_read_cid: the hex number after the first "CID=" (or "parentCID=").
    static func cid(_ desc: [UInt8], parent: Bool) -> UInt32? {
        let key = parent ? "parentCID" : "CID"
        guard let at = find(desc, key) else { return nil }
        var p = at + key.utf8.count + 1
        while p < desc.count && (desc[p] == 0x20 || desc[p] == 0x09) { p += 1 }
        var v: UInt64 = 0
        var digits = 0
        if p + 1 < desc.count && desc[p] == UInt8(ascii: "0") && (desc[p + 1] | 0x20) == UInt8(ascii: "x") { p += 2 }
        while p < desc.count, let d = hexDigit(desc[p]) {
            v = min(v << 4 | UInt64(d), 0xffff_ffff_ffff)
            digits += 1
            p += 1
        }
        return digits > 0 ? UInt32(truncatingIfNeeded: v) : nil
    }

    /// `parentFileNameHint="..."`, or an error when the quote does not close (QEMU: -EINVAL).
    static func parentHint(_ desc: [UInt8]) throws -> String? {
        let key = "parentFileNameHint"
        guard let at = find(desc, key) else { return nil }
        let start = at + key.utf8.count + 2
        guard start <= desc.count else { throw BlockError(.invalidImage, "Invalid argument", errno: 22) }
        var p = start
        while p < desc.count && desc[p] != UInt8(ascii: "\"") && desc[p] != 0 { p += 1 }
        guard p < desc.count, desc[p] == UInt8(ascii: "\""), p - start <= 1023 else {
            throw BlockError(.invalidImage, "Invalid argument", errno: 22)
        }
        return String(decoding: desc[start..<p], as: UTF8.self)
    }

    static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }

    /// First occurrence of `needle` before any NUL (C strings end there).
    static func find(_ hay: [UInt8], _ needle: String) -> Int? {
        let n = Array(needle.utf8)
        let end = hay.firstIndex(of: 0) ?? hay.count
        guard end >= n.count else { return nil }
        var i = 0
        while i + n.count <= end {
            if hay[i] == n[0] && Array(hay[i..<i + n.count]) == n { return i }
            i += 1
        }
        return nil
    }

    /// The lines of the descriptor (up to the first NUL), with their raw text.
    static func lines(_ desc: [UInt8]) -> [String] {
        let end = desc.firstIndex(of: 0) ?? desc.count
        return desc[0..<end].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
    }

    /// One extent line, QEMU's sscanf("%10s %ld %10s \"%511[^\n\r\"]\" %ld"): nil when fewer than
    /// four fields match.
    static func parseExtentLine(_ line: String) -> (VMDKExtentLine, matches: Int)? {
        var s = Substring(line)
        func skipSpace() { while let c = s.first, c == " " || c == "\t" || c == "\r" { s.removeFirst() } }
        func word(_ max: Int) -> String? {
            skipSpace()
            var w = ""
            while let c = s.first, c != " " && c != "\t" && c != "\r" && c != "\n", w.count < max {
                w.append(c)
                s.removeFirst()
            }
            return w.isEmpty ? nil : w
        }
        func number() -> Int64? {
            skipSpace()
            var t = ""
            if let c = s.first, c == "-" || c == "+" { t.append(c); s.removeFirst() }
            while let c = s.first, c.isASCII, c.isNumber { t.append(c); s.removeFirst() }
            return Int64(t)
        }
        guard let access = word(10) else { return nil }
        guard let sectors = number() else { return nil }
        guard let type = word(10) else { return nil }
        skipSpace()
        guard s.first == "\"" else { return nil }
        s.removeFirst()
        var name = ""
        while let c = s.first, c != "\"" && c != "\n" && c != "\r", name.utf8.count < 511 {
            name.append(c)
            s.removeFirst()
        }
        guard !name.isEmpty, s.first == "\"" else { return nil }
        s.removeFirst()
        var e = VMDKExtentLine(access: access, sectors: sectors, type: type, filename: name, flatOffset: -1)
        if let off = number() {
            e.flatOffset = off
            return (e, 5)
        }
        return (e, 4)
    }

    /// QEMU's creation template.
    static func make(cid: UInt32, parentCID: UInt32, createType: String, parentHint: String?, extentLines: String,
                     hwVersion: String, cylinders: Int64, heads: UInt32, adapter: String, toolsVersion: String) -> String {
        "# Disk DescriptorFile\n"
            + "version=1\n"
            + "CID=\(String(cid, radix: 16))\n"
            + "parentCID=\(String(parentCID, radix: 16))\n"
            + "createType=\"\(createType)\"\n"
            + (parentHint.map { "parentFileNameHint=\"\($0)\"" } ?? "")
            + "\n"
            + "# Extent description\n"
            + extentLines
            + "\n"
            + "# The Disk Data Base\n"
            + "#DDB\n"
            + "\n"
            + "ddb.virtualHWVersion = \"\(hwVersion)\"\n"
            + "ddb.geometry.cylinders = \"\(cylinders)\"\n"
            + "ddb.geometry.heads = \"\(heads)\"\n"
            + "ddb.geometry.sectors = \"63\"\n"
            + "ddb.adapterType = \"\(adapter)\"\n"
            + "ddb.toolsVersion = \"\(toolsVersion)\"\n"
    }

    /// QEMU's vmdk_write_cid on a DESC_SIZE buffer: the text from "parentCID" on is kept, the
    /// number after "CID=" replaced. Nil when there is no "parentCID" (QEMU: -EINVAL).
    static func withCID(_ desc: [UInt8], _ cid: UInt32) -> [UInt8]? {
        var d = desc
        d[d.count - 1] = 0
        guard let pc = find(d, "parentCID") else { return nil }
        let end = d.firstIndex(of: 0) ?? d.count
        let tail = Array(d[pc..<end])
        guard let c = find(d, "CID") else { return d }
        var out = Array(d[0..<(c + 4)])
        out += Array((String(cid, radix: 16) + "\n").utf8)
        out += tail
        if out.count > d.count - 1 { out = Array(out[0..<(d.count - 1)]) }
        // snprintf/pstrcat leave the rest of the buffer as it was past the new terminator.
        var result = d
        for i in 0..<out.count { result[i] = out[i] }
        result[out.count] = 0
        return result
    }
}
