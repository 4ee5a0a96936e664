import XCTest
import Foundation
import ImageFormats

final class FileAndRawTests: XCTestCase {
    func testRawReadWriteZeroesAndStatus() throws {
        let dir = TempDir()
        let path = dir.file("a.raw")
        try FileProtocol.create(filename: path, size: 4 << 20, preallocation: .off)
        let node = try BlockGraph.open(filename: path, format: "raw", context: OpenContext(flags: .readWrite))
        defer { try? node.close() }
        XCTAssertEqual(node.size, 4 << 20)
        let data = pseudoRandomBytes(65536, seed: 7)
        try node.write(at: 1 << 20, bytes: data)
        XCTAssertEqual(try node.read(at: 1 << 20, count: 65536), data)
        // Status: hole, data, hole.
        let e0 = try node.blockStatus(at: 0, length: 4 << 20)
        XCTAssertTrue(e0.flags.contains(.zero))
        XCTAssertEqual(e0.length, 1 << 20)
        let e1 = try node.blockStatus(at: 1 << 20, length: 4 << 20)
        XCTAssertTrue(e1.flags.contains(.data))
        XCTAssertEqual(e1.length, 65536)
        try node.writeZeroes(at: 1 << 20, length: 4096, flags: .mayUnmap)
        XCTAssertEqual(try node.read(at: 1 << 20, count: 4096), [UInt8](repeating: 0, count: 4096))
        XCTAssertEqual(try node.read(at: (1 << 20) + 4096, count: 16), Array(data[4096..<4112]))
        XCTAssertThrowsError(try node.read(at: (4 << 20) - 1, count: 2))
    }

    func testProbingAndMissingFile() throws {
        let dir = TempDir()
        XCTAssertThrowsError(try BlockGraph.open(filename: dir.file("nope"), context: OpenContext())) { e in
            XCTAssertEqual((e as? BlockError)?.message, "Could not open '\(dir.file("nope"))': No such file or directory")
        }
        let path = dir.file("b.img")
        try FileProtocol.create(filename: path, size: 1 << 20, preallocation: .off)
        var warnings: [String] = []
        let node = try BlockGraph.open(filename: path, context: OpenContext(flags: .readWrite), warn: { warnings.append($0) })
        defer { try? node.close() }
        XCTAssertEqual(node.driverName, "raw")
        XCTAssertEqual(warnings.count, 1)
        // A probed raw image refuses a write that would make it look like qcow2.
        XCTAssertThrowsError(try node.write(at: 0, bytes: [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3]))
        XCTAssertNoThrow(try node.write(at: 0, bytes: [1, 2, 3]))
    }

    func testLockingAgainstQemuImg() throws {
        try requireQemuImg()
        let dir = TempDir()
        let path = dir.file("c.raw")
        try FileProtocol.create(filename: path, size: 1 << 20, preallocation: .off)
        let writer = try BlockGraph.open(filename: path, format: "raw", context: OpenContext(flags: .readWrite))
        // convert's source refuses to share writing, so it conflicts with our writer.
        let r = try runProcess("qemu-img", ["convert", "-f", "raw", path, "-O", "raw", dir.file("out.raw")])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "qemu-img: Could not open '\(path)': Failed to get shared \"write\" lock\nIs another process using the image [\(path)]?\n")
        // -U shares everything.
        XCTAssertEqual(try runProcess("qemu-img", ["convert", "-U", "-f", "raw", path, "-O", "raw", dir.file("out.raw")]).status, 0)
        // And our own convert-style opener is refused the same way.
        XCTAssertThrowsError(try BlockGraph.open(filename: path, format: "raw", context: OpenContext(flags: .noShare))) { e in
            XCTAssertEqual((e as? BlockError)?.message, "Failed to get shared \"write\" lock")
            XCTAssertEqual((e as? BlockError)?.hint, "Is another process using the image [\(path)]?")
        }
        try writer.close()
        XCTAssertEqual(try runProcess("qemu-img", ["convert", "-f", "raw", path, "-O", "raw", dir.file("out.raw")]).status, 0)
    }

    /// Scatter reads (virtio-blk fills a guest's pages with them): preadv through raw and file,
    /// the bounce-buffer default, more pieces than one preadv takes, empty pieces, the end of the
    /// file reading as zeroes, and a request past the node's end refused.
    func testScatteredReads() throws {
        let dir = TempDir()
        let path = dir.file("s.raw")
        let data = pseudoRandomBytes(2 << 20, seed: 11)
        FileManager.default.createFile(atPath: path, contents: Data(data))
        let node = try BlockGraph.open(filename: path, format: "raw", context: OpenContext())
        defer { try? node.close() }
        var sizes: [Int] = []
        var total = 0, k = 0
        while true {   // 1500 pieces of 0 to 1499 bytes (a 4 KiB page every so often)
            let n = k % 97 == 0 ? 4096 : (k * 7919) % 1500
            if total + n > (2 << 20) - 12345 || sizes.count == 1500 { break }
            sizes.append(n); total += n; k += 1
        }
        XCTAssertEqual(sizes.count, 1500)
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 4096)
        defer { storage.deallocate() }
        var pieces: [UnsafeMutableRawBufferPointer] = []
        var pos = 0
        for n in sizes { pieces.append(UnsafeMutableRawBufferPointer(rebasing: storage[pos..<pos + n])); pos += n }
        let expected = Array(data[12345..<12345 + total])
        storage.initializeMemory(as: UInt8.self, repeating: 0xAA)
        try node.readScattered(at: 12345, into: pieces)
        XCTAssertEqual(Array(storage), expected)
        storage.initializeMemory(as: UInt8.self, repeating: 0xAA)
        try node.readThroughBounce(at: 12345, into: pieces)
        XCTAssertEqual(Array(storage), expected)
        XCTAssertThrowsError(try node.readScattered(at: (2 << 20) - 100, into: [pieces[1], pieces[2], pieces[3]]))

        // Past the end of the file itself (the file layer): the rest reads as zero.
        let file = try PosixFile.open(path, flags: O_RDONLY)
        defer { file.close() }
        storage.initializeMemory(as: UInt8.self, repeating: 0xAA)
        let tail = [UnsafeMutableRawBufferPointer(rebasing: storage[0..<3000]), UnsafeMutableRawBufferPointer(rebasing: storage[3000..<9000])]
        try file.readScattered(at: UInt64((2 << 20) - 5000), into: tail)
        XCTAssertEqual(Array(storage[0..<5000]), Array(data[((2 << 20) - 5000)...]))
        XCTAssertEqual(Array(storage[5000..<9000]), [UInt8](repeating: 0, count: 4000))
    }
}
