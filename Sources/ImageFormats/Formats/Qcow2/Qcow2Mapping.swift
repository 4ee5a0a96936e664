// Guest offset -> host offset: reading L1/L2 entries and classifying (sub)clusters.
//
// A lookup returns a plan, not bytes (the Cloud Hypervisor habit): the type of the run starting at
// the guest offset, how long the run is, and where its bytes are. The caller does the data I/O
// without holding the metadata lock. Runs never cross an L2 table; normal runs are host-contiguous.

/// QEMU's QCow2SubclusterType.
enum Qcow2ClusterType: Equatable {
    case unallocatedPlain     // reads from backing (or zero)
    case unallocatedAlloc     // extended L2: host cluster reserved, subcluster unallocated
    case zeroPlain            // reads as zero, no host cluster
    case zeroAlloc            // reads as zero, host cluster preallocated
    case normal               // data at hostOffset
    case compressed           // compressed cluster (descriptor in l2Entry)
}

struct Qcow2Mapping {
    var type: Qcow2ClusterType
    /// Bytes from the queried offset that share this mapping.
    var length: UInt64
    /// Host offset of the queried byte (normal, zeroAlloc, unallocatedAlloc).
    var hostOffset: UInt64
    /// The raw L2 entry (for compressed clusters: the descriptor).
    var l2Entry: UInt64
    /// The cluster's L2 entry has QCOW_OFLAG_COPIED (refcount exactly one): writable in place.
    var copied: Bool
}

extension Qcow2Meta {
    /// Decodes a compressed cluster descriptor: host offset and the bytes to read.
    func compressedLocation(_ entry: UInt64) -> (offset: UInt64, size: UInt64) {
        let shift = 62 - (clusterBits - 8)
        let offsetMask = (UInt64(1) << shift) - 1
        let sectorsMask = (UInt64(1) << (clusterBits - 8)) - 1
        let offset = entry & offsetMask
        let sectors = ((entry >> shift) & sectorsMask) + 1
        return (offset, sectors * 512 - (offset & 511))
    }

    /// Reads L2 entry `index` (and its subcluster bitmap) of the table at `l2Offset`.
    func l2Entry(table l2Offset: UInt64, index: UInt64) throws -> (entry: UInt64, bitmap: UInt64) {
        let ext = isExtendedL2
        return try l2Cache.read(l2Offset) { t in
            let o = Int(index * (ext ? 16 : 8))
            return (t.be64(o), ext ? t.be64(o + 8) : 0)
        }
    }

    /// The type of subcluster `sc` of a cluster with this entry (QEMU's qcow2_get_subcluster_type).
    func subclusterType(entry: UInt64, bitmap: UInt64, sc: UInt64, l2Offset: UInt64, index: UInt64) throws -> Qcow2ClusterType {
        if entry & Qcow2.oflagCompressed != 0 {
            if isExtendedL2 && bitmap != 0 {
                throw try signalCorruption("Invalid cluster entry found (L2 offset: \(hex(l2Offset)), L2 index: \(hex(index)))")
            }
            return .compressed
        }
        let offset = entry & Qcow2.l2OffsetMask
        let allocated = offset != 0 || (hasDataFile && entry & Qcow2.oflagCopied != 0)
        if isExtendedL2 {
            let a = (bitmap >> sc) & 1 != 0
            let z = (bitmap >> (32 + sc)) & 1 != 0
            if a && z {
                throw try signalCorruption("Invalid cluster entry found (L2 offset: \(hex(l2Offset)), L2 index: \(hex(index)))")
            }
            if a {
                guard allocated else {
                    throw try signalCorruption("Invalid cluster entry found (L2 offset: \(hex(l2Offset)), L2 index: \(hex(index)))")
                }
                return .normal
            }
            if z { return allocated ? .zeroAlloc : .zeroPlain }
            return allocated ? .unallocatedAlloc : .unallocatedPlain
        }
        if entry & Qcow2.oflagZero != 0 && header.version >= 3 {
            return allocated ? .zeroAlloc : .zeroPlain
        }
        return allocated ? .normal : .unallocatedPlain
    }

    /// The mapping of the run starting at guest `offset`, at most `maxLength` bytes.
    func lookup(_ offset: UInt64, maxLength: UInt64) throws -> Qcow2Mapping {
        let l1Index = offset / l2Coverage
        let inTable = offset % l2Coverage
        let tableRemaining = l2Coverage - inTable
        let limit = min(maxLength, tableRemaining)
        guard l1Index < UInt64(l1Table.count) else {
            return Qcow2Mapping(type: .unallocatedPlain, length: limit, hostOffset: 0, l2Entry: 0, copied: false)
        }
        let l1e = l1Table[Int(l1Index)]
        let l2Offset = l1e & Qcow2.l1OffsetMask
        if l2Offset == 0 {
            return Qcow2Mapping(type: .unallocatedPlain, length: limit, hostOffset: 0, l2Entry: 0, copied: false)
        }
        if l2Offset % clusterSize != 0 {
            throw try signalCorruption("L2 table offset \(hex(l2Offset)) unaligned (L1 index: \(hex(l1Index)))")
        }
        var index = inTable / clusterSize
        let scSize = subclusterSize
        var sc = (offset % clusterSize) / scSize
        let (entry, bitmap) = try l2Entry(table: l2Offset, index: index)
        let type = try subclusterType(entry: entry, bitmap: bitmap, sc: sc, l2Offset: l2Offset, index: index)
        let hostBase = entry & Qcow2.l2OffsetMask
        if type == .normal || type == .zeroAlloc || type == .unallocatedAlloc, hostBase % clusterSize != 0 {
            throw try signalCorruption("Cluster allocation offset \(hex(hostBase)) unaligned (L2 offset: \(hex(l2Offset)), L2 index: \(hex(index)))")
        }
        let copied = entry & Qcow2.oflagCopied != 0
        var result = Qcow2Mapping(type: type, length: 0, hostOffset: hostBase + offset % clusterSize, l2Entry: entry, copied: copied)
        if type == .compressed {
            result.length = min(limit, clusterSize - offset % clusterSize)
            return result
        }
        // Extend over following subclusters and clusters of the same type (host-contiguous for
        // types with a host offset).
        var length = scSize - offset % scSize
        var expectedHost = hostBase + (sc + 1) * scSize
        sc += 1
        var curEntry = entry, curBitmap = bitmap
        while length < limit {
            if sc == header.subclustersPerCluster {
                index += 1
                sc = 0
                if index >= l2Entries { break }
                (curEntry, curBitmap) = try l2Entry(table: l2Offset, index: index)
                if curEntry & Qcow2.oflagCopied != entry & Qcow2.oflagCopied && type != .unallocatedPlain && type != .zeroPlain { break }
            }
            let t = try subclusterType(entry: curEntry, bitmap: curBitmap, sc: sc, l2Offset: l2Offset, index: index)
            if t != type { break }
            if t == .normal || t == .zeroAlloc || t == .unallocatedAlloc {
                let h = (curEntry & Qcow2.l2OffsetMask) + sc * scSize
                if h != expectedHost { break }
                if (curEntry & Qcow2.oflagCopied != 0) != copied { break }
            }
            length += scSize
            expectedHost += scSize
            sc += 1
        }
        result.length = min(length, limit)
        return result
    }
}
