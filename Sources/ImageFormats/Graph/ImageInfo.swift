// What `qemu-img info` reports about a node and its subgraph: QEMU's BlockNodeInfo and
// BlockGraphInfo (8.0+: every node lists its children), as JSON in QEMU's key order. The human
// form is printed from the same data by imgtool.

public enum ImageInfo {
    /// BlockGraphInfo of `node`: its BlockNodeInfo plus "children" (file, data-file; the backing
    /// child is left out, as qemu-img opens each image of a chain on its own).
    public static func graph(_ node: any BlockNode) -> JSONValue {
        var members = nodeMembers(node)
        var children: [JSONValue] = []
        for c in node.children where c.name != "backing" {
            children.append(.qdict([("name", .string(c.name)), ("info", graph(c.node))]))
        }
        members.append(("children", .array(children)))
        return .qdict(members)
    }

    /// BlockNodeInfo members in schema order.
    public static func nodeMembers(_ node: any BlockNode) -> [(String, JSONValue)] {
        var m: [(String, JSONValue)] = [
            ("filename", .string(node.filename)),
            ("format", .string(node.driverName)),
        ]
        let di = node.driverInfo()
        if let di { m.append(("dirty-flag", .bool(di.isDirty))) }
        if let a = node.allocatedHostBytes() { m.append(("actual-size", .uint(a))) }
        m.append(("virtual-size", .uint(node.size)))
        if let cs = di?.clusterSize { m.append(("cluster-size", .uint(cs))) }
        if let b = node.recordedBacking {
            m.append(("backing-filename", .string(b.name)))
            m.append(("full-backing-filename", .string(BlockGraph.resolveBackingPath(b.name, relativeTo: node.filename))))
            if let f = b.format { m.append(("backing-filename-format", .string(f))) }
        }
        let snaps = node.snapshots
        if !snaps.isEmpty {
            m.append(("snapshots", .array(snaps.map(snapshotJSON))))
        }
        if let fs = node.formatSpecificInfo() { m.append(("format-specific", qdictDeep(fs))) }
        return m
    }

    /// QEMU's SnapshotInfo.
    public static func snapshotJSON(_ s: SnapshotInfo) -> JSONValue {
        var m: [(String, JSONValue)] = [
            ("id", .string(s.id)), ("name", .string(s.name)), ("vm-state-size", .uint(s.vmStateSize)),
            ("date-sec", .uint(UInt64(s.dateSec))), ("date-nsec", .uint(UInt64(s.dateNsec))),
            ("vm-clock-sec", .uint(s.vmClockNsec / 1_000_000_000)), ("vm-clock-nsec", .uint(s.vmClockNsec % 1_000_000_000)),
        ]
        if let ic = s.icount { m.append(("icount", .uint(ic))) }
        return .qdict(m)
    }

    /// Re-orders every object inside `v` the QDict way (drivers build theirs in schema order).
    public static func qdictDeep(_ v: JSONValue) -> JSONValue {
        switch v {
        case .object(let members): return .qdict(members.map { ($0.0, qdictDeep($0.1)) })
        case .array(let items): return .array(items.map(qdictDeep))
        default: return v
        }
    }
}
