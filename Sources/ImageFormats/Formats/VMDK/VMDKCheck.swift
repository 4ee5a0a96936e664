// qemu-img check for VMDK (QEMU's vmdk_co_check): every grain's table entry must be readable and
// point inside its extent file. Repair is not supported (exit 63, as qemu-img).
import Glibc

extension VMDKNode {
    public func check(fix: CheckFix, log: (String) -> Void) throws -> CheckResult {
        if !fix.isEmpty { throw BlockError(.unsupported, "This image format does not support checks", errno: ENOTSUP) }
        var r = CheckResult()
        var pos: UInt64 = 0
        try rw.read {
            while pos < size {
                let e = try extent(at: pos)
                let want = e.endSector * 512 - pos
                let m: VMDKMapping
                do {
                    m = try metaLock.withLock { try e.lookup(pos, maxLength: want) }.0
                } catch {
                    log("ERROR: could not get cluster_offset for sector \(pos / 512)")
                    r.corruptions += 1
                    return
                }
                if m.kind == .data {
                    let len = e.file.size
                    let cs = e.clusterBytes
                    let grainStart = m.hostOffset - (e.compressed ? 0 : m.inGrain)
                    let grains = e.flat ? 1 : (m.inGrain + m.length + cs - 1) / cs
                    for g in 0..<grains where grainStart + (e.compressed ? 0 : g * cs) >= len {
                        log("ERROR: cluster offset for sector \((pos - m.inGrain + g * cs) / 512) points after EOF")
                        r.corruptions += 1
                        throw BlockError(.corrupt, "Invalid argument", errno: EINVAL)
                    }
                }
                pos += m.length
            }
        }
        return r
    }
}
