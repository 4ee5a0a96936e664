// virtio: the split virtqueue against hostile rings, and virtio-blk end to end through the modern
// virtio-pci registers with a real block node (a raw file opened through the block graph).
import Foundation
import ImageFormats
import XCTest
@testable import Machine

/// Drives a VirtioPCI function the way Linux's virtio_pci_modern does, with rings in guest RAM.
struct FakeVirtioDriver {
    let ram: GuestRAM
    let pci: VirtioPCI
    let regs: any BusDevice
    static let desc: UInt64 = 0x10000, avail: UInt64 = 0x11000, used: UInt64 = 0x12000, buffers: UInt64 = 0x20000
    var availIdx: UInt16 = 0

    init(ram: GuestRAM, pci: VirtioPCI) {
        self.ram = ram
        self.pci = pci
        regs = pci.config.withLock { $0.bars[4]!.device }
    }

    func w(_ off: UInt64, _ size: Int, _ v: UInt64) { regs.busWrite(offset: off, size: size, value: v) }
    func r(_ off: UInt64, _ size: Int) -> UInt64 { regs.busRead(offset: off, size: size) }

    /// Reset, negotiate VERSION_1 (+ extra), set up queue 0 with 16 entries, DRIVER_OK.
    func start(extraFeatures: UInt64 = 0) -> Bool {
        w(0x14, 1, 0); w(0x14, 1, 1); w(0x14, 1, 3)
        w(0x08, 4, 0); w(0x0C, 4, extraFeatures & 0xFFFF_FFFF)
        w(0x08, 4, 1); w(0x0C, 4, 1)
        w(0x14, 1, 0x0B)
        guard r(0x14, 1) & 8 != 0 else { return false }
        w(0x16, 2, 0); w(0x18, 2, 16)
        w(0x20, 4, FakeVirtioDriver.desc); w(0x24, 4, 0)
        w(0x28, 4, FakeVirtioDriver.avail); w(0x2C, 4, 0)
        w(0x30, 4, FakeVirtioDriver.used); w(0x34, 4, 0)
        w(0x1C, 2, 1)
        w(0x14, 1, 0x0F)
        return r(0x1C, 2) == 1
    }

    func setDesc(_ i: Int, addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) {
        let a = FakeVirtioDriver.desc + UInt64(16 * i)
        ram.store(a, addr); ram.store(a + 8, len); ram.store(a + 12, flags); ram.store(a + 14, next)
    }

    mutating func submit(head: UInt16) {
        ram.store(FakeVirtioDriver.avail + 4 + 2 * UInt64(availIdx % 16), head)
        availIdx &+= 1
        ram.store(FakeVirtioDriver.avail + 2, availIdx)
        w(0x3000, 2, 0)
    }

    var usedIdx: UInt16 { ram.load(FakeVirtioDriver.used + 2, as: UInt16.self)! }
    func usedLen(_ i: Int) -> UInt32 { ram.load(FakeVirtioDriver.used + 4 + 8 * UInt64(i) + 4, as: UInt32.self)! }

    /// A three-descriptor block request: header, data, status.
    mutating func blockRequest(type: UInt32, sector: UInt64, data: [UInt8]? = nil, readLength: Int = 0) -> (UInt8, [UInt8]) {
        let hdr = FakeVirtioDriver.buffers, dat = hdr + 0x1000, st = hdr + 0x8000
        ram.store(hdr, type); ram.store(hdr + 4, UInt32(0)); ram.store(hdr + 8, sector)
        ram.store(st, UInt8(0xEE))
        let len = data?.count ?? readLength
        if let data { ram.write(dat, bytes: data) }
        setDesc(0, addr: hdr, len: 16, flags: 1, next: 1)
        if len > 0 {
            setDesc(1, addr: dat, len: UInt32(len), flags: data == nil ? 3 : 1, next: 2)
            setDesc(2, addr: st, len: 1, flags: 2, next: 0)
        } else {
            setDesc(0, addr: hdr, len: 16, flags: 1, next: 2)
            setDesc(2, addr: st, len: 1, flags: 2, next: 0)
        }
        submit(head: 0)
        return (ram.load(st, as: UInt8.self)!, ram.readBytes(dat, count: len)!)
    }
}

final class VirtqueueTests: XCTestCase {
    func makeQueue() throws -> (GuestRAM, Virtqueue) {
        let ram = try GuestRAM(size: 1 << 20)
        ram.mapRAM(at: 0, size: 1 << 20, hostOffset: 0)
        let q = Virtqueue(ram: ram, maxSize: 16)
        q.config.descTable = 0x1000; q.config.availRing = 0x2000; q.config.usedRing = 0x3000
        try q.validate()
        q.config.ready = true
        return (ram, q)
    }

    func desc(_ ram: GuestRAM, _ i: Int, _ addr: UInt64, _ len: UInt32, _ flags: UInt16, _ next: UInt16, table: UInt64 = 0x1000) {
        let a = table + UInt64(16 * i)
        ram.store(a, addr); ram.store(a + 8, len); ram.store(a + 12, flags); ram.store(a + 14, next)
    }

    func post(_ ram: GuestRAM, _ heads: [UInt16]) {
        for (i, h) in heads.enumerated() { ram.store(0x2004 + 2 * UInt64(i), h) }
        ram.store(0x2002, UInt16(heads.count))
    }

    func testHostileChains() throws {
        let cases: [(String, (GuestRAM) -> Void, VirtqueueError)] = [
            ("loop", { ram in self.desc(ram, 0, 0x8000, 8, 1, 1); self.desc(ram, 1, 0x8000, 8, 1, 0) }, .chainTooLong),
            ("next out of range", { ram in self.desc(ram, 0, 0x8000, 8, 1, 99) }, .descriptorIndex(99)),
            ("buffer past RAM", { ram in self.desc(ram, 0, 0xFFFF0, 0x100, 0, 0) }, .bufferOutsideRAM(0xFFFF0, 0x100)),
            ("address wraps", { ram in self.desc(ram, 0, UInt64.max - 4, 16, 0, 0) }, .bufferOutsideRAM(UInt64.max - 4, 16)),
            ("indirect not multiple of 16", { ram in self.desc(ram, 0, 0x9000, 24, 4, 0) }, .badIndirect),
            ("nested indirect", { ram in
                self.desc(ram, 0, 0x9000, 16, 4, 0)
                self.desc(ram, 0, 0xA000, 16, 4, 0, table: 0x9000)
            }, .badIndirect),
            ("readable after writable", { ram in self.desc(ram, 0, 0x8000, 8, 3, 1); self.desc(ram, 1, 0x8000, 8, 0, 0) }, .readableAfterWritable),
        ]
        for (name, setup, expected) in cases {
            let (ram, q) = try makeQueue()
            setup(ram)
            post(ram, [0])
            XCTAssertThrowsError(try q.pop(), name) { XCTAssertEqual($0 as? VirtqueueError, expected, name) }
        }
    }

    func testAvailIndexJumpAndHeadOutOfRange() throws {
        let (ram, q) = try makeQueue()
        ram.store(0x2002, UInt16(40))
        XCTAssertThrowsError(try q.pop()) { XCTAssertEqual($0 as? VirtqueueError, .availIndexJump(40)) }
        let (ram2, q2) = try makeQueue()
        post(ram2, [500])
        XCTAssertThrowsError(try q2.pop()) { XCTAssertEqual($0 as? VirtqueueError, .descriptorIndex(500)) }
    }

    func testIndirectChainAndUsedRing() throws {
        let (ram, q) = try makeQueue()
        desc(ram, 0, 0x9000, 32, 4, 0)
        desc(ram, 0, 0x8000, 16, 1, 1, table: 0x9000)
        desc(ram, 1, 0x8100, 512, 2, 0, table: 0x9000)
        post(ram, [0])
        let chain = try XCTUnwrap(try q.pop())
        XCTAssertEqual(chain.buffers.map(\.length), [16, 512])
        XCTAssertEqual(chain.buffers.map(\.writable), [false, true])
        XCTAssertNil(try q.pop())
        XCTAssertTrue(q.push(head: chain.head, written: 512))
        XCTAssertEqual(ram.load(0x3002, as: UInt16.self), 1)
        XCTAssertEqual(ram.load(0x3008, as: UInt32.self), 512)
    }

    func testRingsOutsideRAMCannotBeEnabled() throws {
        let ram = try GuestRAM(size: 1 << 20)
        ram.mapRAM(at: 0, size: 1 << 20, hostOffset: 0)
        let q = Virtqueue(ram: ram, maxSize: 256)
        q.config.descTable = 0xFF100   // 256 * 16 bytes do not fit
        XCTAssertThrowsError(try q.validate())
    }
}

final class VirtioBlockTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vbt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func makeDisk(readOnly: Bool = false, discard: Bool = true, detectZeroes: String = "off") throws -> (FakeVirtioDriver, RecordingInterruptSink, VirtioBlock, String) {
        let path = dir.appendingPathComponent("disk.raw").path
        var content = [UInt8](repeating: 0, count: 1 << 20)
        for (i, b) in "SECTOR-ZERO-DATA".utf8.enumerated() { content[i] = b }
        FileManager.default.createFile(atPath: path, contents: Data(content))
        let node = try BlockGraph.open(filename: path, format: "raw",
                                       context: OpenContext(flags: readOnly ? [] : [.readWrite]))
        let ram = try GuestRAM(size: 1 << 20)
        ram.mapRAM(at: 0, size: 1 << 20, hostOffset: 0)
        var o = VirtioBlockOptions()
        o.serial = "SN-123"
        o.discard = discard
        o.detectZeroes = detectZeroes
        let dev = VirtioBlock(node: node, options: o)
        let sink = RecordingInterruptSink()
        let pci = VirtioPCI(name: "virtio-blk-pci", device: dev, ram: ram, sink: sink, bar1: 0, bar4: 0)
        pci.attachInterrupt(IRQLine(sink: sink, gsi: 11))
        return (FakeVirtioDriver(ram: ram, pci: pci), sink, dev, path)
    }

    func testConfigSpaceAndIdentity() throws {
        let (drv, _, _, _) = try makeDisk()
        let cfg = drv.pci.config.withLock { $0 }
        XCTAssertEqual(cfg.get16(0), 0x1AF4)
        XCTAssertEqual(cfg.get16(2), 0x1042)
        XCTAssertEqual(cfg.get16(0x2E), 2)
        XCTAssertEqual(drv.r(0x2000, 4) | drv.r(0x2004, 4) << 32, (1 << 20) / 512, "capacity in sectors")
        XCTAssertEqual(drv.r(0x12, 2), 1, "num_queues")
        drv.w(0x00, 4, 1)
        XCTAssertEqual(drv.r(0x04, 4) & 1, 1, "VERSION_1 offered")
    }

    func testFeaturesWeDidNotOfferAreRefused() throws {
        let (drv, _, _, _) = try makeDisk()
        XCTAssertFalse(drv.start(extraFeatures: 1 << 31))
    }

    func testReadWriteFlushGetIDThroughTheRings() throws {
        var (drv, sink, dev, path) = try makeDisk()
        XCTAssertTrue(drv.start())
        let (st, data) = drv.blockRequest(type: 0, sector: 0, readLength: 512)
        XCTAssertEqual(st, 0)
        XCTAssertEqual(Array(data.prefix(16)), Array("SECTOR-ZERO-DATA".utf8))
        XCTAssertEqual(drv.usedIdx, 1)
        XCTAssertEqual(drv.usedLen(0), 513)
        XCTAssertTrue(sink.level(11), "INTx without MSI-X")
        XCTAssertEqual(drv.r(0x1000, 1), 1, "ISR: queue interrupt")
        XCTAssertFalse(sink.level(11), "reading ISR lowers INTx")

        let payload = [UInt8](repeating: 0xAB, count: 1024)
        XCTAssertEqual(drv.blockRequest(type: 1, sector: 4, data: payload).0, 0)
        XCTAssertEqual(drv.blockRequest(type: 4, sector: 0).0, 0)
        let (idSt, id) = drv.blockRequest(type: 8, sector: 0, readLength: 20)
        XCTAssertEqual(idSt, 0)
        XCTAssertEqual(String(decoding: id.prefix { $0 != 0 }, as: UTF8.self), "SN-123")
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual([UInt8](onDisk[2048..<3072]), payload)
        let s = dev.stats.snapshot
        XCTAssertEqual(s.readOps, 1); XCTAssertEqual(s.writeOps, 1); XCTAssertEqual(s.flushOps, 1)
        XCTAssertEqual(s.writeBytes, 1024); XCTAssertEqual(s.wrHighestOffset, 3072)
    }

    /// A request whose data is scattered over many small guest buffers (some adjacent in memory,
    /// one split header): reads and writes go through the bounce buffer in large node requests.
    func testScatteredReadsAndWrites() throws {
        var (drv, _, dev, path) = try makeDisk()
        XCTAssertTrue(drv.start())
        let base = FakeVirtioDriver.buffers
        // 12 data pieces of 512 bytes: pieces 0-3 adjacent, the rest 4 KiB apart, in reverse order.
        func addrs() -> [UInt64] {
            (0..<12).map { (i: Int) -> UInt64 in
                if i < 4 { return base + 0x10000 + UInt64(512 * i) }
                return base + 0x40000 - UInt64(0x1000 * i)
            }
        }
        func chain(type: UInt32, sector: UInt64, writable: Bool) {
            let hdr = base, st = base + 0x8000
            ram(drv).store(hdr, type); ram(drv).store(hdr + 4, UInt32(0)); ram(drv).store(hdr + 8, sector)
            drv.setDesc(0, addr: hdr, len: 8, flags: 1, next: 1)            // the header in two pieces
            drv.setDesc(1, addr: hdr + 8, len: 8, flags: 1, next: 2)
            for (i, a) in addrs().enumerated() {
                drv.setDesc(2 + i, addr: a, len: 512, flags: writable ? 3 : 1, next: UInt16(3 + i))
            }
            drv.setDesc(14, addr: st, len: 1, flags: 2, next: 0)
        }
        func ram(_ d: FakeVirtioDriver) -> GuestRAM { d.ram }
        var pattern = [UInt8](repeating: 0, count: 12 * 512)
        for i in pattern.indices {
            let v: Int = i &* 7 &+ i / 512
            pattern[i] = UInt8(truncatingIfNeeded: v)
        }
        for (i, a) in addrs().enumerated() { drv.ram.write(a, bytes: Array(pattern[512 * i..<512 * (i + 1)])) }
        chain(type: 1, sector: 100, writable: false)
        drv.submit(head: 0)
        XCTAssertEqual(drv.ram.load(base + 0x8000, as: UInt8.self), 0)
        let onDisk = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(onDisk[51200..<51200 + pattern.count]), pattern, "gathered write")

        for a in addrs() { drv.ram.write(a, bytes: [UInt8](repeating: 0xCC, count: 512)) }
        chain(type: 0, sector: 100, writable: true)
        drv.submit(head: 0)
        XCTAssertEqual(drv.ram.load(base + 0x8000, as: UInt8.self), 0)
        var back: [UInt8] = []
        for a in addrs() { back += drv.ram.readBytes(a, count: 512)! }
        XCTAssertEqual(back, pattern, "scattered read")
        XCTAssertEqual(drv.usedLen(1), UInt32(pattern.count + 1))
        let s = dev.stats.snapshot
        XCTAssertEqual(s.readOps, 1); XCTAssertEqual(s.writeOps, 1); XCTAssertEqual(s.readBytes, UInt64(pattern.count))
    }

    /// With iothread=, requests run on the iothread; kicks coalesce and every request completes.
    func testIOThreadServesTheQueue() throws {
        let path = dir.appendingPathComponent("io.raw").path
        var content = [UInt8](repeating: 0, count: 1 << 20)
        for (i, b) in "IOTHREAD-SECTOR0".utf8.enumerated() { content[i] = b }
        FileManager.default.createFile(atPath: path, contents: Data(content))
        let node = try BlockGraph.open(filename: path, format: "raw", context: OpenContext(flags: [.readWrite]))
        let ram = try GuestRAM(size: 1 << 20)
        ram.mapRAM(at: 0, size: 1 << 20, hostOffset: 0)
        let io = IOThread(id: "io0")
        defer { io.stop() }
        let dev = VirtioBlock(node: node, options: VirtioBlockOptions(), iothread: io)
        let sink = RecordingInterruptSink()
        let pci = VirtioPCI(name: "virtio-blk-pci", device: dev, ram: ram, sink: sink, bar1: 0, bar4: 0)
        pci.attachInterrupt(IRQLine(sink: sink, gsi: 11))
        var drv = FakeVirtioDriver(ram: ram, pci: pci)
        XCTAssertTrue(drv.start())
        let base = FakeVirtioDriver.buffers
        // Eight reads of sector 0 posted at once (descriptors 3k, 3k+1, 3k+2), one notify each.
        for k in 0..<5 {
            let hdr = base + UInt64(0x100 * k), dat = base + 0x10000 + UInt64(0x1000 * k), st = base + 0x9000 + UInt64(k)
            ram.store(hdr, UInt32(0)); ram.store(hdr + 4, UInt32(0)); ram.store(hdr + 8, UInt64(0))
            ram.store(st, UInt8(0xEE))
            drv.setDesc(3 * k, addr: hdr, len: 16, flags: 1, next: UInt16(3 * k + 1))
            drv.setDesc(3 * k + 1, addr: dat, len: 512, flags: 3, next: UInt16(3 * k + 2))
            drv.setDesc(3 * k + 2, addr: st, len: 1, flags: 2, next: 0)
            drv.submit(head: UInt16(3 * k))
        }
        io.drain()
        XCTAssertEqual(drv.usedIdx, 5)
        for k in 0..<5 {
            XCTAssertEqual(ram.load(base + 0x9000 + UInt64(k), as: UInt8.self), 0)
            XCTAssertEqual(ram.readBytes(base + 0x10000 + UInt64(0x1000 * k), count: 16), Array("IOTHREAD-SECTOR0".utf8))
        }
        XCTAssertEqual(ram.load(FakeVirtioDriver.used, as: UInt16.self), 0, "notifications enabled again when idle")
        XCTAssertEqual(dev.stats.snapshot.readOps, 5)
    }

    /// Feature B4 below the device: with CountedNode installed, a qcow2 overlay's file child and its
    /// backing image (and the backing image's file) report the I/O that reached them.
    func testBlockstatsCountEveryNodeOfTheChain() throws {
        CountedNode.install()
        defer { BlockGraph.childInterposer = nil }
        let base = dir.appendingPathComponent("base.raw").path
        var content = [UInt8](repeating: 0, count: 1 << 20)
        for (i, b) in "BACKING-SECTOR-0".utf8.enumerated() { content[i] = b }
        FileManager.default.createFile(atPath: base, contents: Data(content))
        let top = dir.appendingPathComponent("top.qcow2").path
        guard let qcow2 = FormatRegistry.driver(named: "qcow2") else { return XCTFail("no qcow2") }
        try ImageCreator.create(filename: top, format: "qcow2", size: 1 << 20, options: CreateOptions(format: qcow2),
                                backingFile: base, backingFormat: "raw", skipBackingCheck: false, announce: nil)
        let node = try BlockGraph.open(filename: top, format: "qcow2", context: OpenContext(flags: [.readWrite]))
        defer { try? node.close() }
        XCTAssertTrue(node.fileChild is CountedNode)
        XCTAssertTrue(node.backing is CountedNode)
        XCTAssertEqual(node.backing?.driverName, "raw", "the filter is transparent")
        let ram = try GuestRAM(size: 1 << 20)
        ram.mapRAM(at: 0, size: 1 << 20, hostOffset: 0)
        let dev = VirtioBlock(node: node, options: VirtioBlockOptions())
        let sink = RecordingInterruptSink()
        let pci = VirtioPCI(name: "virtio-blk-pci", device: dev, ram: ram, sink: sink, bar1: 0, bar4: 0)
        var drv = FakeVirtioDriver(ram: ram, pci: pci)
        XCTAssertTrue(drv.start())
        let (st, data) = drv.blockRequest(type: 0, sector: 0, readLength: 4096)
        XCTAssertEqual(st, 0)
        XCTAssertEqual(Array(data.prefix(16)), Array("BACKING-SECTOR-0".utf8))
        XCTAssertEqual(CountedNode.stats(of: node.backing!)?.readBytes, 4096, "the unallocated read fell through to the backing image")
        XCTAssertEqual(CountedNode.stats(of: node.backing!.fileChild!)?.readBytes, 4096)
        // A sector written into an unallocated cluster: copy-on-write reads the rest of the cluster.
        XCTAssertEqual(drv.blockRequest(type: 1, sector: 64, data: [UInt8](repeating: 7, count: 512)).0, 0)

        let disk: BlockInfo.Disk = (VirtioBlkConfig(drive: DriveConfig(id: "d0", node: node, readOnly: false, discard: false)),
                                    dev, pci, PCIAddress(device: 2))
        let json = BlockInfo.queryBlockstats(index: 0, disk: disk).compact()
        let backing = try XCTUnwrap(CountedNode.stats(of: node.backing!))
        XCTAssertEqual(backing.readOps, 2)
        XCTAssertEqual(backing.readBytes, 4096 + 65536, "the guest's read and the cluster's copy-on-write")
        let file = try XCTUnwrap(CountedNode.stats(of: node.fileChild!))
        XCTAssertGreaterThan(file.writeOps, 0, "the overlay's own file took the write (data and metadata)")
        XCTAssertGreaterThanOrEqual(file.writeBytes, 512)
        XCTAssertTrue(json.contains("\"rd_bytes\": 69632"), json)
        XCTAssertEqual(dev.stats.snapshot.readBytes, 4096)
    }

    func testBadRequestsCompleteWithErrors() throws {
        var (drv, _, _, _) = try makeDisk()
        XCTAssertTrue(drv.start())
        XCTAssertEqual(drv.blockRequest(type: 0, sector: 2048, readLength: 512).0, 1, "past the end")
        XCTAssertEqual(drv.blockRequest(type: 0, sector: UInt64.max / 256, readLength: 512).0, 1, "sector overflow")
        XCTAssertEqual(drv.blockRequest(type: 0, sector: 0, readLength: 100).0, 1, "not a sector multiple")
        XCTAssertEqual(drv.blockRequest(type: 99, sector: 0).0, 2, "unsupported type")
        XCTAssertEqual(drv.usedIdx, 4, "every request completes")
    }

    func testDiscardAndWriteZeroes() throws {
        var (drv, _, _, path) = try makeDisk()
        XCTAssertTrue(drv.start())
        var seg = [UInt8](repeating: 0, count: 16)
        seg[0] = 0                 // sector 0
        seg[8] = 1                 // one sector
        XCTAssertEqual(drv.blockRequest(type: 13, sector: 0, data: seg).0, 0)
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual([UInt8](onDisk[0..<16]), [UInt8](repeating: 0, count: 16))
        seg[0] = 0xFF; seg[1] = 0xFF; seg[2] = 0xFF; seg[3] = 0xFF
        XCTAssertEqual(drv.blockRequest(type: 11, sector: 0, data: seg).0, 1, "discard past the end")
    }

    func testDetectZeroesUnmapPunchesHoles() throws {
        var (drv, _, dev, path) = try makeDisk(detectZeroes: "unmap")
        XCTAssertTrue(drv.start())
        XCTAssertEqual(drv.blockRequest(type: 1, sector: 0, data: [UInt8](repeating: 0, count: 65536)).0, 0)
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual([UInt8](onDisk[0..<16]), [UInt8](repeating: 0, count: 16))
        XCTAssertEqual(dev.stats.snapshot.writeOps, 1)
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertLessThan(Int(st.st_blocks) * 512, 1 << 20, "the zeroed range was deallocated")
    }

    func testWritesToReadOnlyDisksFail() throws {
        var (drv, _, _, _) = try makeDisk(readOnly: true)
        XCTAssertTrue(drv.start())
        drv.w(0x00, 4, 0)
        XCTAssertNotEqual(drv.r(0x04, 4) & (1 << 5), 0, "VIRTIO_BLK_F_RO offered")
        XCTAssertEqual(drv.blockRequest(type: 1, sector: 0, data: [UInt8](repeating: 1, count: 512)).0, 1)
    }

    func testBrokenRingMarksDeviceNeedsReset() throws {
        var (drv, _, _, _) = try makeDisk()
        XCTAssertTrue(drv.start())
        drv.setDesc(0, addr: 0x50000, len: 16, flags: 1, next: 0)   // loops on itself
        drv.submit(head: 0)
        XCTAssertNotEqual(drv.r(0x14, 1) & UInt64(VirtioStatus.needsReset), 0)
        drv.w(0x14, 1, 0)
        XCTAssertEqual(drv.r(0x14, 1), 0, "a reset clears it")
    }

    func testMSIXVectorsDeliverMessages() throws {
        var (drv, sink, _, _) = try makeDisk()
        let msix = drv.pci.config.withLock { $0.bars[1]!.device }
        XCTAssertTrue(drv.start())
        msix.busWrite(offset: 16, size: 4, value: 0xFEE0_0000)   // vector 1
        msix.busWrite(offset: 24, size: 4, value: 0x41)
        msix.busWrite(offset: 28, size: 4, value: 0)             // unmasked
        drv.w(0x16, 2, 0)
        drv.w(0x1A, 2, 1)
        XCTAssertEqual(drv.r(0x1A, 2), 1)
        drv.w(0x1A, 2, 77)
        XCTAssertEqual(drv.r(0x1A, 2), 0xFFFF, "vectors beyond the table read back as NO_VECTOR")
        drv.w(0x1A, 2, 1)
        let cap = drv.pci.msix.capabilityOffset
        drv.pci.config.withLock { $0.set16(cap + 2, $0.get16(cap + 2) | 0x8000) }
        sink.clear()
        _ = drv.blockRequest(type: 0, sector: 0, readLength: 512)
        XCTAssertEqual(sink.events, [.msi(0xFEE0_0000, 0x41)])
    }
}

final class VirtioLegacyTests: XCTestCase {
    /// A transitional device read through the legacy I/O registers only, as a 0.9.5 driver does.
    func testLegacyInterfaceReadsASector() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("d.raw").path
        var content = [UInt8](repeating: 0, count: 1 << 20)
        for (i, b) in "LEGACY-SECTOR-0!".utf8.enumerated() { content[i] = b }
        FileManager.default.createFile(atPath: path, contents: Data(content))
        let node = try BlockGraph.open(filename: path, format: "raw", context: OpenContext(flags: [.readWrite]))
        let ram = try GuestRAM(size: 1 << 20)
        ram.mapRAM(at: 0, size: 1 << 20, hostOffset: 0)
        let sink = RecordingInterruptSink()
        let pci = VirtioPCI(name: "virtio-blk-pci", device: VirtioBlock(node: node, options: VirtioBlockOptions()),
                            ram: ram, sink: sink, bar1: 0, bar4: 0, legacy: true, bar0: 0xC000)
        pci.attachInterrupt(IRQLine(sink: sink, gsi: 10))
        let cfg = pci.config.withLock { $0 }
        XCTAssertEqual(cfg.get16(2), 0x1001, "transitional virtio-blk")
        XCTAssertEqual(cfg.get8(8), 0, "revision 0")
        let io = try XCTUnwrap(cfg.bars[0]?.device)
        XCTAssertEqual(io.busRead(offset: 0x14, size: 4) | io.busRead(offset: 0x18, size: 4) << 32, 2048, "capacity after the header")
        io.busWrite(offset: 0x12, size: 1, value: 3)
        io.busWrite(offset: 0x04, size: 4, value: io.busRead(offset: 0x00, size: 4))
        io.busWrite(offset: 0x0E, size: 2, value: 0)
        XCTAssertEqual(io.busRead(offset: 0x0C, size: 2), 256)
        io.busWrite(offset: 0x08, size: 4, value: 0x20)            // rings at 0x20000
        XCTAssertEqual(io.busRead(offset: 0x08, size: 4), 0x20)
        io.busWrite(offset: 0x12, size: 1, value: 7)               // DRIVER_OK
        let desc: UInt64 = 0x20000, avail = desc + 16 * 256, used: UInt64 = 0x22000
        let hdr: UInt64 = 0x40000, data: UInt64 = 0x41000, st: UInt64 = 0x42000
        ram.store(hdr, UInt32(0)); ram.store(hdr + 8, UInt64(0))
        func d(_ i: UInt64, _ a: UInt64, _ l: UInt32, _ f: UInt16, _ n: UInt16) {
            ram.store(desc + 16 * i, a); ram.store(desc + 16 * i + 8, l); ram.store(desc + 16 * i + 12, f); ram.store(desc + 16 * i + 14, n)
        }
        d(0, hdr, 16, 1, 1); d(1, data, 512, 3, 2); d(2, st, 1, 2, 0)
        ram.store(avail + 4, UInt16(0)); ram.store(avail + 2, UInt16(1))
        io.busWrite(offset: 0x10, size: 2, value: 0)
        XCTAssertEqual(ram.load(used + 2, as: UInt16.self), 1)
        XCTAssertEqual(ram.load(st, as: UInt8.self), 0)
        XCTAssertEqual(ram.readBytes(data, count: 16), Array("LEGACY-SECTOR-0!".utf8))
        XCTAssertTrue(sink.level(10))
        XCTAssertEqual(io.busRead(offset: 0x13, size: 1), 1)
        XCTAssertFalse(sink.level(10))
        io.busWrite(offset: 0x08, size: 4, value: 0xFFFFF)         // rings outside RAM: refused
        io.busWrite(offset: 0x12, size: 1, value: 0)
        XCTAssertEqual(io.busRead(offset: 0x12, size: 1), 0)
    }
}
