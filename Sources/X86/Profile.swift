// A guest profiler for finding where interpreter time goes, compiled in only with
// `-Xswiftc -DX86_PROFILE`: counts executed operations (by `Op`) and block entries (by guest RIP),
// and prints the top entries to stderr about every two seconds of wall time, then starts over.
// Glibc, not Foundation: the release programs link the standard library statically without it.
#if X86_PROFILE
import Glibc

nonisolated(unsafe) let profOps = UnsafeMutablePointer<UInt64>.allocate(capacity: 1024)
nonisolated(unsafe) var profBlocks: [UInt64: UInt64] = [:]
nonisolated(unsafe) var profNext: UInt64 = 0
nonisolated(unsafe) var profStart: UInt64 = 0
nonisolated(unsafe) var profInsts: UInt64 = 0
nonisolated(unsafe) var profBuilt: UInt64 = 0
nonisolated(unsafe) var profHalt: UInt64 = 0
nonisolated(unsafe) var profHalts: UInt64 = 0
nonisolated(unsafe) var profWhy = [UInt64](repeating: 0, count: 4)
nonisolated(unsafe) var profBuiltAt: [UInt64: UInt64] = [:]
/// Adjacent operations inside one block (candidates for fused forms), and the previous one seen.
nonisolated(unsafe) let profPairs = UnsafeMutablePointer<UInt64>.allocate(capacity: 1024 * 1024)
nonisolated(unsafe) var profPrev = -1

extension CPUCore {
    @inline(__always) func profOp(_ op: Op, first: Bool) {
        profOps[Int(op.rawValue)] &+= 1
        if !first && profPrev >= 0 { profPairs[profPrev * 1024 + Int(op.rawValue)] &+= 1 }
        profPrev = Int(op.rawValue)
    }
    func profBlock(_ b: UnsafeMutablePointer<BlockInfo>) { profBlocks[b.pointee.vaddr, default: 0] &+= UInt64(b.pointee.guestCount) }

    mutating func profTick() {
        let now = monotonicNanos()
        if profStart == 0 {
            profStart = now; profNext = now + 2_000_000_000
            for k in 0..<1024 { profOps[k] = 0 }
            profPairs.initialize(repeating: 0, count: 1024 * 1024)
        }
        if now < profNext { return }
        var total: UInt64 = 0
        var ops: [(UInt64, Int)] = []
        for k in 0..<1024 where profOps[k] != 0 { total &+= profOps[k]; ops.append((profOps[k], k)) }
        ops.sort { $0.0 > $1.0 }
        var s = "prof: t=\((now - profStart) / 1_000_000) ms dispatches=\(total) guest=\(instructions - profInsts) halted=\(profHalt / 1_000_000)ms/\(profHalts) blocksBuilt=\(profBuilt) why(empty,other,stale,flush)=\(profWhy) rip=\(String(rip, radix: 16)) mode=\(mode)\n"
        for (n, k) in ops.prefix(40) {
            s += "  op \(Op(rawValue: UInt16(k)).map { "\($0)" } ?? "?") \(n) \(n * 1000 / max(total, 1))‰\n"
        }
        var pairs: [(UInt64, Int)] = []
        for k in 0..<(1024 * 1024) where profPairs[k] != 0 { pairs.append((profPairs[k], k)) }
        pairs.sort { $0.0 > $1.0 }
        for (n, k) in pairs.prefix(30) {
            let a = Op(rawValue: UInt16(k / 1024)).map { "\($0)" } ?? "?", b = Op(rawValue: UInt16(k % 1024)).map { "\($0)" } ?? "?"
            s += "  pair \(a) \(b) \(n) \(n * 1000 / max(total, 1))‰\n"
        }
        profPairs.update(repeating: 0, count: 1024 * 1024)
        let bl = profBlocks.sorted { $0.value > $1.value }.prefix(30)
        for (rip, n) in bl { s += "  block \(String(rip, radix: 16)) \(n)\n" }
        for (rip, n) in profBuiltAt.sorted(by: { $0.value > $1.value }).prefix(15) { s += "  built \(String(rip, radix: 16)) \(n)\n" }
        profBuiltAt.removeAll(keepingCapacity: true); profWhy = [0, 0, 0, 0]
        _ = s.withCString { write(2, $0, strlen($0)) }
        for k in 0..<1024 { profOps[k] = 0 }
        profBlocks.removeAll(keepingCapacity: true)
        profInsts = instructions
        profBuilt = 0
        profHalt = 0; profHalts = 0
        profNext = now + 2_000_000_000
    }
}
#endif
