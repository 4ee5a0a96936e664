import CX86Fast
import Glibc

// The interpreter's internal CPU state: one plain struct, allocated once per vCPU and reached through
// an UnsafeMutablePointer, so the hot loop never pays class-field exclusivity checks or ARC.
//
// Registers live in a raw block: GPRs at byte offsets 8*n, so an 8-bit register (AL..R15B, and
// AH..BH at offsets 1, 9, 17, 25) is addressed by a byte offset the decoder computes once.
// Segment state is kept twice: the architectural cache (`segs`) and, per segment, the values the
// fast path needs (`segBase` with long mode's zero bases applied, and `segLimit`, the highest
// offset + 1 an access may end at without a slow check; 0 forces every access to the slow path).

/// A fault raised inside an instruction: delivered through the IDT by the run loop.
struct Fault: Error {
    var vector: UInt8
    var code: UInt32
    var hasCode: Bool
    static func gp(_ code: UInt32 = 0) -> Fault { Fault(vector: 13, code: code, hasCode: true) }
    static func ss(_ code: UInt32 = 0) -> Fault { Fault(vector: 12, code: code, hasCode: true) }
    static func np(_ code: UInt32) -> Fault { Fault(vector: 11, code: code, hasCode: true) }
    static func ts(_ code: UInt32) -> Fault { Fault(vector: 10, code: code, hasCode: true) }
    static var ud: Fault { Fault(vector: 6, code: 0, hasCode: false) }
    static var de: Fault { Fault(vector: 0, code: 0, hasCode: false) }
    static var nm: Fault { Fault(vector: 7, code: 0, hasCode: false) }
    static var mf: Fault { Fault(vector: 16, code: 0, hasCode: false) }
    static var xm: Fault { Fault(vector: 19, code: 0, hasCode: false) }
    static var ac: Fault { Fault(vector: 17, code: 0, hasCode: true) }
    /// Not an exception: the instruction asks the run loop to leave the block (HLT, mode switch).
    static var exitBlock: Fault { Fault(vector: 0xFF, code: 0, hasCode: false) }
}

/// Architectural segment cache (VMX access-rights layout for `attr`).
struct SegCache {
    var selector: UInt16 = 0
    var attr: UInt16 = 0x93
    var limit: UInt32 = 0xFFFF
    var base: UInt64 = 0
}

enum SegReg { static let es = 0, cs = 1, ss = 2, ds = 3, fs = 4, gs = 5, ldtr = 6, tr = 7 }

enum RFlag {
    static let cf: UInt64 = 1, pf: UInt64 = 4, af: UInt64 = 0x10, zf: UInt64 = 0x40, sf: UInt64 = 0x80
    static let tf: UInt64 = 0x100, ifl: UInt64 = 0x200, df: UInt64 = 0x400, of: UInt64 = 0x800
    static let iopl: UInt64 = 0x3000, nt: UInt64 = 0x4000, rf: UInt64 = 0x10000, vm: UInt64 = 0x20000
    static let ac: UInt64 = 0x40000, vif: UInt64 = 0x80000, vip: UInt64 = 0x100000, id: UInt64 = 0x200000
    static let arith: UInt64 = cf | pf | af | zf | sf | of
}

/// Decode mode: the default operand/address size of the code segment.
enum CodeMode: UInt8 { case m16 = 0, m32 = 1, m64 = 2 }

struct CPUCore {
    // Hot state.
    var r: UnsafeMutablePointer<UInt64>          // 16 GPRs (+ scratch)
    var rip: UInt64 = 0
    var flags: UInt64 = 2                          // RFLAGS; arithmetic bits valid when lop == 0
    var lop: UInt32 = 0                            // lazy flag op (LazyOp), 0 = materialized
    var lres: UInt64 = 0, ldst: UInt64 = 0, lsrc: UInt64 = 0, lcin: UInt64 = 0
    var segBase: UnsafeMutablePointer<UInt64>      // 6 effective bases
    var segEnd: UnsafeMutablePointer<UInt64>       // 6 fast-path exclusive ends (limit + 1)
    var tlb: UnsafeMutablePointer<TLBEntry>        // current privilege's TLB
    var cpl: Int = 0
    var mode: CodeMode = .m16
    var stopBlock = false
    /// The fast tier's view of this state and its table of handled operations (FastTier.swift);
    /// nil when the tier is off.
    var fast: UnsafeMutablePointer<X86FastCore>? = nil
    var fastOps: UnsafePointer<UInt8>? = nil

    // Architectural state off the hot path.
    var segs: UnsafeMutablePointer<SegCache>       // ES CS SS DS FS GS LDTR TR
    var gdtBase: UInt64 = 0, gdtLimit: UInt32 = 0xFFFF
    var idtBase: UInt64 = 0, idtLimit: UInt32 = 0x3FF
    var cr0: UInt64 = 0x6000_0010, cr2: UInt64 = 0, cr3: UInt64 = 0, cr4: UInt64 = 0, cr8: UInt64 = 0
    var efer: UInt64 = 0
    var xcr0: UInt64 = 1
    var dr: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0xFFFF_0FF0, 0x400)
    /// DR7 summarised for the places that check breakpoints (Breakpoints.swift).
    var bp = Breakpoints()
    var star: UInt64 = 0, lstar: UInt64 = 0, cstar: UInt64 = 0, fmask: UInt64 = 0, kernelGSBase: UInt64 = 0
    var sysenterCS: UInt64 = 0, sysenterESP: UInt64 = 0, sysenterEIP: UInt64 = 0
    var tscAux: UInt64 = 0, pat: UInt64 = 0x0007_0406_0007_0406, tscOffset: Int64 = 0
    var miscEnable: UInt64 = 1, mtrrDefType: UInt64 = 0
    var mtrr: [UInt32: UInt64] = [:]
    var sysretWide = false
    /// Debug tracing from the environment: X86_TRACE_FAULTS=1 logs every exception, X86_TRACE_BLOCKS=1 every block.
    let traceFaults = environmentFlag("X86_TRACE_FAULTS")
    let traceBlocks = environmentFlag("X86_TRACE_BLOCKS")
    /// X86_TRACE_RIP=1 prints RIP and state about once a second (watchdog for hangs); a larger
    /// number is the interval in microseconds, which makes it a sampling profiler of guest code.
    let traceRIP = environmentFlag("X86_TRACE_RIP")
    let traceRIPInterval = environmentInterval("X86_TRACE_RIP")
    var nextRIPTrace: UInt64 = 0

    // Events and activity.
    var activity: X86ActivityState = .running
    var interruptShadow = false
    var nmiBlocked = false
    var pollNow = true
    var pollCountdown = 0
    var shutdownRequested = false
    var instructions: UInt64 = 0

    // Memory system.
    var tlbKernel: UnsafeMutablePointer<TLBEntry>
    var tlbUser: UnsafeMutablePointer<TLBEntry>
    var code: CodeTracker
    var ram: GuestMemory
    var platformRef: any X86Platform
    let index: Int
    var model: CPUModel
    var cpuidCache: CPUIDTable
    let decoderFeatures: DecoderFeatures

    // Decoded-block cache.
    var blocks: BlockCache

    // FPU/SSE state.
    var fpu: FPUState
    var xmm: UnsafeMutablePointer<SIMD2<UInt64>>   // 16 registers
    var mxcsr: UInt32 = 0x1F80

    init(index: Int, platform: any X86Platform, model: CPUModel) {
        self.index = index
        self.platformRef = platform
        self.model = model
        self.ram = platform.memory
        self.code = CodeTracker.shared(for: platform.memory)
        r = .allocate(capacity: 24); r.initialize(repeating: 0, count: 24)
        segBase = .allocate(capacity: 8); segBase.initialize(repeating: 0, count: 8)
        segEnd = .allocate(capacity: 8); segEnd.initialize(repeating: 0x10000, count: 8)
        segs = .allocate(capacity: 8); segs.initialize(repeating: SegCache(), count: 8)
        tlbKernel = .allocate(capacity: tlbSize); tlbKernel.initialize(repeating: .invalid, count: tlbSize)
        tlbUser = .allocate(capacity: tlbSize); tlbUser.initialize(repeating: .invalid, count: tlbSize)
        tlb = tlbKernel
        xmm = .allocate(capacity: 16); xmm.initialize(repeating: .zero, count: 16)
        fpu = FPUState()
        cpuidCache = CPUIDTable(model: model, index: index)
        decoderFeatures = DecoderFeatures(model: model)
        blocks = BlockCache()
    }

    mutating func deallocate() {
        r.deallocate(); segBase.deallocate(); segEnd.deallocate(); segs.deallocate()
        tlbKernel.deallocate(); tlbUser.deallocate(); xmm.deallocate()
        blocks.deallocate()
        fpu.deallocate()
        if let fast { x86jit_free(fast.pointee.jit); fast.deallocate() }
    }

    var regsRaw: UnsafeMutableRawPointer { mutating get { UnsafeMutableRawPointer(r) } }

    // MARK: mode bookkeeping

    var protectedMode: Bool { mutating get { cr0 & 1 != 0 } }
    var pagingOn: Bool { mutating get { cr0 & 0x8000_0000 != 0 } }
    var longModeActive: Bool { mutating get { efer & 0x400 != 0 } }
    var v86: Bool { mutating get { flags & RFlag.vm != 0 } }

    /// Recomputes the decode mode, the fast segment arrays and the current TLB after any change of
    /// CR0, EFER, CS, a segment register or CPL.
    mutating func refreshMode() {
        let cs = segs[SegReg.cs]
        if longModeActive && cs.attr & 0x2000 != 0 && protectedMode {
            mode = .m64
        } else if protectedMode && !v86 && cs.attr & 0x4000 != 0 {
            mode = .m32
        } else {
            mode = .m16
        }
        for s in 0..<6 { refreshSegment(s) }
        tlb = cpl == 3 ? tlbUser : tlbKernel
    }

    mutating func refreshSegment(_ s: Int) {
        let c = segs[s]
        if mode == .m64 {
            segBase[s] = (s == SegReg.fs || s == SegReg.gs) ? c.base : 0
            segEnd[s] = UInt64.max
            return
        }
        segBase[s] = c.base & 0xFFFF_FFFF
        if protectedMode && !v86 {
            // Unusable (null) and expand-down data segments take the slow path on every access.
            let type = c.attr & 0xF
            if c.attr & 0x80 == 0 || (c.attr & 0x18 == 0x10 && type & 0x4 != 0) {
                segEnd[s] = 0
                return
            }
        }
        segEnd[s] = UInt64(c.limit) + 1
    }

    @inline(__always) var platformP: any X86Platform { mutating get { platformRef } }
}
