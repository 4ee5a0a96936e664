// Which metadata contexts a LIST/SET_META_CONTEXT query selects, by QEMU's rules:
// "base:allocation" and "qemu:allocation-depth" and "qemu:dirty-bitmap:NAME" select themselves
// (the latter two only when the export offers them); when listing, a bare namespace ("base:",
// "qemu:", "qemu:dirty-bitmap:") selects everything under it; unknown names select nothing.
// The answer always comes in QEMU's order (base, depth, bitmaps), whatever the query order.

struct MetaContextQuery {
    let export: NBDExport
    let listing: Bool
    private var chosen: Set<NBDMetaContext> = []

    init(export: NBDExport, listing: Bool) {
        self.export = export
        self.listing = listing
    }

    private var bitmaps: [NBDMetaContext] {
        export.extraContexts.filter { if case .dirtyBitmap = $0 { return true } else { return false } }
    }

    private var offersDepth: Bool { export.extraContexts.contains(.allocationDepth) }

    mutating func selectAll() {
        chosen = Set(export.allContexts)
    }

    mutating func add(_ query: String) {
        if query.hasPrefix("base:") {
            let rest = query.dropFirst(5)
            if rest == "allocation" || (rest.isEmpty && listing) { chosen.insert(.baseAllocation) }
            return
        }
        guard query.hasPrefix("qemu:") else { return }
        let rest = query.dropFirst(5)
        if rest.isEmpty {
            if listing {
                if offersDepth { chosen.insert(.allocationDepth) }
                chosen.formUnion(bitmaps)
            }
            return
        }
        if rest == "allocation-depth" {
            if offersDepth { chosen.insert(.allocationDepth) }
            return
        }
        if rest.hasPrefix("dirty-bitmap:") {
            let name = String(rest.dropFirst(13))
            if name.isEmpty {
                if listing { chosen.formUnion(bitmaps) }
            } else if bitmaps.contains(.dirtyBitmap(name)) {
                chosen.insert(.dirtyBitmap(name))
            }
        }
    }

    var selected: [NBDMetaContext] {
        export.allContexts.filter { chosen.contains($0) }
    }
}
