// The QED header: 64 little-endian bytes at offset 0 of a header area of `header_size` clusters
// (the backing file name lives in that area).
//
// Offsets: magic 0 ("QED\0"), cluster size 4, table size 8 (clusters per L1/L2 table), header
// size 12 (clusters), features 16, compat features 24, autoclear features 32, L1 offset 40,
// image size 48, backing name offset 56, backing name size 60. Validation is QEMU's
// bdrv_qed_do_open, in its order and with its messages (QEMU's table-offset check rejects
// table_size=1 images; we keep that behaviour so both tools agree).
import Glibc

enum QED {
    static let magic: UInt32 = 0x0044_4551          // "QED\0"
    static let headerStructSize = 64
    static let featureBackingFile: UInt64 = 1
    static let featureNeedCheck: UInt64 = 2
    static let featureBackingNoProbe: UInt64 = 4
    static let featureMask: UInt64 = 7
    static let autoclearMask: UInt64 = 0
    static let minClusterSize: UInt32 = 4096
    static let maxClusterSize: UInt32 = 64 << 20
    static let minTableSize: UInt32 = 1
    static let maxTableSize: UInt32 = 16
    static let defaultClusterSize: UInt32 = 65536
    static let defaultTableSize: UInt32 = 4
    /// L2 entry meaning "reads as zeroes" (QED_ZERO_CLUSTER).
    static let zeroCluster: UInt64 = 1

    static func isPowerOf2(_ v: UInt32) -> Bool { v != 0 && v & (v - 1) == 0 }
    static func clusterSizeValid(_ v: UInt32) -> Bool { isPowerOf2(v) && v >= minClusterSize && v <= maxClusterSize }
    static func tableSizeValid(_ v: UInt32) -> Bool { isPowerOf2(v) && v >= minTableSize && v <= maxTableSize }
    static func maxImageSize(clusterSize: UInt32, tableSize: UInt32) -> UInt64 {
        let entries = UInt64(clusterSize) * UInt64(tableSize) / 8
        return entries.multipliedReportingOverflow(by: entries).partialValue
            .multipliedReportingOverflow(by: UInt64(clusterSize)).partialValue
    }
    static func imageSizeValid(_ size: UInt64, clusterSize: UInt32, tableSize: UInt32) -> Bool {
        size % 512 == 0 && size <= maxImageSize(clusterSize: clusterSize, tableSize: tableSize)
    }
}

struct QEDHeader {
    var clusterSize: UInt32
    var tableSize: UInt32
    var headerSize: UInt32
    var features: UInt64
    var compatFeatures: UInt64
    var autoclearFeatures: UInt64
    var l1TableOffset: UInt64
    var imageSize: UInt64
    var backingNameOffset: UInt32
    var backingNameSize: UInt32

    var clusterBytes: UInt64 { UInt64(clusterSize) }
    var tableBytes: UInt64 { UInt64(clusterSize) * UInt64(tableSize) }
    var headerBytes: UInt64 { UInt64(headerSize) * UInt64(clusterSize) }

    init(clusterSize: UInt32, tableSize: UInt32, imageSize: UInt64) {
        self.clusterSize = clusterSize
        self.tableSize = tableSize
        headerSize = 1
        features = 0; compatFeatures = 0; autoclearFeatures = 0
        l1TableOffset = UInt64(clusterSize)
        self.imageSize = imageSize
        backingNameOffset = 0; backingNameSize = 0
    }

    init(_ b: [UInt8]) {
        clusterSize = b.le32(4); tableSize = b.le32(8); headerSize = b.le32(12)
        features = b.le64(16); compatFeatures = b.le64(24); autoclearFeatures = b.le64(32)
        l1TableOffset = b.le64(40); imageSize = b.le64(48)
        backingNameOffset = b.le32(56); backingNameSize = b.le32(60)
    }

    var bytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: QED.headerStructSize)
        b.setLE32(0, QED.magic); b.setLE32(4, clusterSize); b.setLE32(8, tableSize); b.setLE32(12, headerSize)
        b.setLE64(16, features); b.setLE64(24, compatFeatures); b.setLE64(32, autoclearFeatures)
        b.setLE64(40, l1TableOffset); b.setLE64(48, imageSize)
        b.setLE32(56, backingNameOffset); b.setLE32(60, backingNameSize)
        return b
    }

    /// QEMU's qed_check_cluster_offset: aligned, past the header, inside the file.
    func clusterOffsetValid(_ offset: UInt64, fileSize: UInt64) -> Bool {
        offset & (clusterBytes - 1) == 0 && offset >= headerBytes && offset < fileSize
    }

    /// QEMU's qed_check_table_offset (first and last cluster of the table valid).
    func tableOffsetValid(_ offset: UInt64, fileSize: UInt64) -> Bool {
        let (end, o) = offset.addingReportingOverflow(UInt64(tableSize - 1) * clusterBytes)
        if o || end <= offset { return false }
        return clusterOffsetValid(offset, fileSize: fileSize) && clusterOffsetValid(end, fileSize: fileSize)
    }

    /// Parses and validates; `fileSize` is the file length rounded down to a cluster.
    static func parse(_ raw: [UInt8], fileLength: UInt64) throws -> (QEDHeader, fileSize: UInt64) {
        guard raw.count >= QED.headerStructSize, raw.le32(0) == QED.magic else {
            throw BlockError.invalid("Image not in QED format")
        }
        let h = QEDHeader(raw)
        if h.features & ~QED.featureMask != 0 {
            throw BlockError.unsupported("Unsupported QED features: \(String(h.features & ~QED.featureMask, radix: 16))")
        }
        guard QED.clusterSizeValid(h.clusterSize) else { throw BlockError.invalid("QED cluster size is invalid") }
        let fileSize = fileLength & ~(h.clusterBytes - 1)
        guard QED.tableSizeValid(h.tableSize) else { throw BlockError.invalid("QED table size is invalid") }
        guard QED.imageSizeValid(h.imageSize, clusterSize: h.clusterSize, tableSize: h.tableSize) else {
            throw BlockError.invalid("QED image size is invalid")
        }
        guard h.tableOffsetValid(h.l1TableOffset, fileSize: fileSize) else {
            throw BlockError.invalid("QED table offset is invalid")
        }
        guard h.headerSize <= UInt32.max / h.clusterSize else { throw BlockError.invalid("QED header size is too large") }
        if h.features & QED.featureBackingFile != 0 {
            if UInt64(h.backingNameOffset) + UInt64(h.backingNameSize) > h.headerBytes {
                throw BlockError.invalid("QED backing filename offset is invalid")
            }
        }
        return (h, fileSize)
    }
}
