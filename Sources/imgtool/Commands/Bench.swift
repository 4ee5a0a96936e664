// imgtool bench: qemu-img bench's request generator: N requests of a given size at a given depth,
// reads or writes, optional flushes, timed.
import Glibc
import ImageFormats

private let optFlushInterval: Int32 = 256, optNoDrain: Int32 = 257, optPattern: Int32 = 258, optImageOpts: Int32 = 259,
            optObject: Int32 = 260

func runBench(_ args: [String]) throws -> Int32 {
    var src = ImageSource()
    var count = 75000, depth = 64, bufSize = 4096, flushInterval = 0
    var offset: UInt64 = 0
    var step: Int?
    var write = false, pattern: UInt8 = 0, cache = "writeback", quiet = false
    let (events, operands) = getopt(args, "hc:d:f:ni:o:qs:S:t:wU", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "flush-interval", hasArgument: true, code: optFlushInterval),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "pattern", hasArgument: true, code: optPattern),
        LongOption(name: "no-drain", hasArgument: false, code: optNoDrain),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "force-share", hasArgument: false, code: Character("U").code),
    ])
    func positive(_ v: String, _ what: String) throws -> Int {
        guard let n = Int(v), n > 0 else { throw fail("Invalid \(what) specified") }
        return n
    }
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optFlushInterval:
            guard let n = Int(v!), n >= 0 else { throw fail("Invalid flush interval specified") }
            flushInterval = n
        case optPattern:
            guard let n = Int(v!), (0...255).contains(n) else { throw fail("Invalid pattern byte specified") }
            pattern = UInt8(n)
        case optImageOpts: src.imageOpts = true
        case optNoDrain: break
        case optObject: try createObject(v!)
        default:
            switch c.optionChar {
            case "h": printHelp(); return 0
            case "c": count = try positive(v!, "request count")
            case "d": depth = try positive(v!, "queue depth")
            case "f": src.format = v
            case "n": cache = "none"
            case "i": guard ["threads", "native", "io_uring"].contains(v!) else { throw fail("Invalid aio option: \(v!)") }
            case "o": offset = try parseSize(v!, name: "offset")
            case "q": quiet = true
            case "s": bufSize = Int(try parseSize(v!, name: "buffer size"))
            case "S": step = Int(try parseSize(v!, name: "step_size"))
            case "t": cache = v!
            case "w": write = true
            case "U": src.forceShare = true
            default: break
            }
        }
    }
    _ = quiet
    guard operands.count == 1 else { throw usageError("Expecting one image file name") }
    if flushInterval > 0 && !write { throw fail("--flush-interval is only available in write tests") }
    if flushInterval > 0 && flushInterval < depth { throw fail("Flush interval can't be smaller than depth") }
    guard let mode = try? CacheMode.parse(cache) else { throw fail("Invalid cache mode") }
    src.cache = mode
    let stepSize = step ?? bufSize
    let node = try openImage(operands[0], src, flags: write ? [.readWrite] : [])
    defer { _ = closeImage(node) }
    out("Sending \(count) \(write ? "write" : "read") requests, \(bufSize) bytes each, \(depth) in parallel (starting at offset \(offset), step size \(stepSize))")
    if flushInterval > 0 { out("Sending flush every \(flushInterval) requests") }
    Stdout.shared.flush()
    let size = node.size
    guard offset + UInt64(bufSize) <= size || size == 0 else { throw fail("Request would exceed the image size") }
    // `depth` requests in flight: one thread per slot, up to a sane number of threads.
    let threads = min(depth, 64, count)
    let state = BenchState(count: count, flushInterval: flushInterval)
    var ts0 = timespec(), ts1 = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts0)
    let (fill, reqSize, start, isWrite) = (pattern, bufSize, offset, write)
    runThreads(threads) { _ in
        let bufSize = reqSize, offset = start, write = isWrite
        var buf = [UInt8](repeating: fill, count: bufSize)
        while let i = state.next() {
            var off = offset + UInt64(i) * UInt64(stepSize)
            if size > UInt64(bufSize) { off %= (size - UInt64(bufSize) + 1) }
            do {
                if write {
                    try buf.withUnsafeBytes { try node.write(at: off, from: $0, flags: []) }
                    if state.shouldFlush(i) { try node.flush() }
                } else {
                    try buf.withUnsafeMutableBytes { try node.read(at: off, into: $0) }
                }
            } catch {
                state.fail(error)
                return
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &ts1)
    if let e = state.error {
        report(e)
        return 1
    }
    let secs = Double(ts1.tv_sec - ts0.tv_sec) + Double(ts1.tv_nsec - ts0.tv_nsec) / 1e9
    out(cFormat("Run completed in %3.3f seconds.", secs))
    return 0
}

/// Hands out request numbers to the bench threads.
final class BenchState: @unchecked Sendable {
    private let monitor = Monitor()
    private var issued = 0
    let count: Int
    let flushInterval: Int
    private(set) var error: Error?

    init(count: Int, flushInterval: Int) {
        self.count = count
        self.flushInterval = flushInterval
    }

    func next() -> Int? {
        monitor.locked {
            guard issued < count, error == nil else { return nil }
            issued += 1
            return issued - 1
        }
    }

    func shouldFlush(_ i: Int) -> Bool { flushInterval > 0 && (i + 1) % flushInterval == 0 }

    func fail(_ e: Error) { monitor.locked { if error == nil { error = e } } }
}
