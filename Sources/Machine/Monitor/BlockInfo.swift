// query-block / query-blockstats / info block for the machine's virtio disks, built from the block
// graph: the image chain (with backing images, feature B4), node names, cache mode, and the device's
// I/O counters. Key order follows what QEMU 7.2 prints.
import ImageFormats

enum BlockInfo {
    typealias Disk = (config: VirtioBlkConfig, device: VirtioBlock, pci: VirtioPCI, address: PCIAddress)

    static func backendName(_ d: Disk) -> String { d.config.drive.id }

    static func qdevPath(index: Int, _ d: Disk) -> String {
        if let id = d.config.deviceID { return "/machine/peripheral/\(id)/virtio-backend" }
        return "/machine/peripheral-anon/device[\(index)]/virtio-backend"
    }

    /// QEMU's auto node names are "#block" + 3 digits; ours are stable per object.
    static func nodeName(_ n: any BlockNode) -> String {
        let v = UInt(bitPattern: ObjectIdentifier(n).hashValue) % 1000
        let s = String(v)
        return "#block" + String(repeating: "0", count: 3 - s.count) + s
    }

    /// The format node's chain depth (number of backing images below it).
    static func depth(_ n: any BlockNode) -> Int {
        var d = 0
        var cur = n.backing
        while let b = cur { d += 1; cur = b.backing }
        return d
    }

    static func imageInfo(_ n: any BlockNode) -> JSONValue {
        var m: [(String, JSONValue)] = [
            ("virtual-size", .uint(n.size)), ("filename", .string(n.filename)), ("format", .string(n.driverName)),
        ]
        if let a = (n.fileChild ?? n).allocatedHostBytes() { m.append(("actual-size", .uint(a))) }
        m.append(("dirty-flag", .bool(false)))
        if let b = n.backing {
            m.append(("backing-filename", .string(b.filename)))
            m.append(("full-backing-filename", .string(b.filename)))
            m.append(("backing-image", imageInfo(b)))
        }
        if let f = n.formatSpecificInfo() { m.append(("format-specific", f)) }
        return .object(m)
    }

    static func queryBlock(index: Int, disk d: Disk) -> JSONValue {
        let n = d.config.drive.node
        var inserted: [(String, JSONValue)] = [
            ("iops_rd", .int(0)), ("detect_zeroes", .string(d.config.drive.detectZeroes)), ("image", imageInfo(n)),
            ("iops_wr", .int(0)), ("ro", .bool(d.config.drive.readOnly || n.isReadOnly)), ("node-name", .string(d.config.drive.nodeName ?? nodeName(n))),
            ("backing_file_depth", .int(Int64(depth(n)))), ("drv", .string(n.driverName)), ("iops", .int(0)),
            ("bps_wr", .int(0)), ("write_threshold", .int(0)),
        ]
        if let b = n.backing { inserted.append(("backing_file", .string(b.filename))) }
        inserted += [
            ("encrypted", .bool(false)), ("bps", .int(0)), ("bps_rd", .int(0)),
            ("cache", .object([("no-flush", .bool(d.config.drive.cache.noFlush)), ("direct", .bool(d.config.drive.cache.direct)),
                               ("writeback", .bool(d.config.drive.cache.writeback))])),
            ("file", .string(n.filename)),
        ]
        return .object([("io-status", .string("ok")), ("device", .string(backendName(d))), ("locked", .bool(false)),
                         ("removable", .bool(false)), ("inserted", .object(inserted)), ("qdev", .string(qdevPath(index: index, d))),
                         ("type", .string("unknown"))])
    }

    static func stats(_ s: BlockStats.Snapshot?, accounted: Bool) -> JSONValue {
        let s = s ?? BlockStats.Snapshot()
        func u(_ v: UInt64) -> JSONValue { .uint(v) }
        return .object([
            ("unmap_operations", u(s.unmapOps)), ("unmap_merged", u(0)), ("flush_total_time_ns", u(s.flushTimeNs)),
            ("wr_highest_offset", u(s.wrHighestOffset)), ("wr_total_time_ns", u(s.writeTimeNs)),
            ("failed_wr_operations", u(s.failedWriteOps)), ("failed_rd_operations", u(s.failedReadOps)), ("wr_merged", u(0)),
            ("wr_bytes", u(s.writeBytes)), ("timed_stats", .array([])), ("failed_unmap_operations", u(s.failedUnmapOps)),
            ("failed_flush_operations", u(s.failedFlushOps)), ("account_invalid", .bool(accounted)),
            ("rd_total_time_ns", u(s.readTimeNs)), ("invalid_unmap_operations", u(0)), ("flush_operations", u(s.flushOps)),
            ("wr_operations", u(s.writeOps)), ("unmap_bytes", u(s.unmapBytes)), ("rd_merged", u(0)), ("rd_bytes", u(s.readBytes)),
            ("unmap_total_time_ns", u(0)), ("invalid_flush_operations", u(0)), ("account_failed", .bool(accounted)),
            ("rd_operations", u(s.readOps)), ("invalid_wr_operations", u(0)), ("invalid_rd_operations", u(s.invalidOps)),
        ])
    }

    /// Stats of a node that is not a device's root: its file child as "parent", its backing image as
    /// "backing" (feature B4: every image of the chain appears, with the I/O that reached it when
    /// vmrun counts below the devices: see CountedNode).
    static func nodeStats(_ n: any BlockNode) -> JSONValue {
        let counted = CountedNode.stats(of: n)
        var m: [(String, JSONValue)] = [("stats", stats(counted, accounted: counted != nil))]
        if let f = n.fileChild { m.insert(("parent", nodeStats(f)), at: 0) }
        if let b = n.backing { m.append(("backing", nodeStats(b))) }
        m.append(("node-name", .string(nodeName(n))))
        return .object(m)
    }

    static func queryBlockstats(index: Int, disk d: Disk) -> JSONValue {
        let n = d.config.drive.node
        var m: [(String, JSONValue)] = [("device", .string(backendName(d)))]
        if let f = n.fileChild { m.append(("parent", nodeStats(f))) }
        m.append(("stats", stats(d.device.stats.snapshot, accounted: true)))
        if let b = n.backing { m.append(("backing", nodeStats(b))) }
        m.append(("node-name", .string(d.config.drive.nodeName ?? nodeName(n))))
        m.append(("qdev", .string(qdevPath(index: index, d))))
        return .object(m)
    }
}
