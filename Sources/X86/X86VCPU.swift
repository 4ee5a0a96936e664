// X86VCPU: the public face of the interpreter CPU. This is the API the machine codes against.
//
// Usage (one thread per vCPU):
//
//     let model = try CPUModel(parsing: "qemu64,+x2apic")      // QEMU's -cpu syntax
//     let cpu = X86VCPU(index: 0, platform: machine, model: model)
//     cpu.reset()                        // power-on state; index 0 runs, others wait for SIPI
//     var regs = cpu.registers           // or set up a boot-protocol entry directly:
//     regs.cs = .flatCode64(); regs.rip = entry; regs.cr0 = ...; cpu.registers = regs
//     switch cpu.run() {                 // returns when platform.shouldStop(cpu:) or on shutdown
//     case .stopRequested: ...           // pause/quit/reset requested by the machine
//     case .shutdown: ...                // triple fault: reset (or exit with -no-reboot)
//     }
//
// Contract details:
// - `run()` blocks the calling thread. HLT and wait-for-SIPI call `platform.waitForInterrupt`;
//   the platform must return from it when an interrupt/event arrives or when it wants the CPU to
//   stop (then `shouldStop` must return true). `shouldStop` is polled every few hundred blocks and
//   after every port/MMIO access.
// - Interrupts: the CPU asks `hasPendingInterrupt` at the same points and, when RFLAGS.IF allows,
//   calls `acknowledgeInterrupt` and delivers the vector. NMI/INIT/SIPI come from `takePendingEvents`.
// - `registers` may be read or written only while `run()` is not executing on another thread.
// - The TSC runs at `X86VCPU.tscFrequency` (1 GHz) from the host's monotonic clock; the platform's
//   TSC-deadline timer can compare against `X86VCPU.currentTSC(offset:)` semantics: guest TSC =
//   CLOCK_MONOTONIC nanoseconds + the offset the guest set through IA32_TSC.
// - CR8 writes are forwarded as `writeMSR(cpu:, index: 0x808 /* x2APIC TPR */, value: cr8 << 4)`.
// - The first vCPU created on a `GuestMemory` installs its `writeObserver` (decoded-code
//   invalidation); do not replace it afterwards. Call `GuestMemory.didWrite` after DMA/loader writes.
// - An instruction the interpreter does not implement raises #UD in the guest and is named once on
//   stderr with its address; guest input never crashes the host process.
// - Debugging: X86_TRACE_FAULTS=1 logs every exception, X86_TRACE_RIP=1 prints each vCPU's RIP about
//   once a second (hangs), X86_TRACE_BLOCKS=1 logs every block (slow).
//
// Status: real, protected (16/32-bit), long and compatibility mode; 32-bit/PAE/4-level paging with
// large pages, NX, WP, SMEP, A/D bits; IDT/IVT delivery with #DF and triple fault; SYSCALL/SYSRET,
// SYSENTER/SYSEXIT; the integer ISA, x87, MMX, SSE to SSE4.2; FXSAVE/XSAVE (x87+SSE); task
// switches, call and task gates, vm86, TF single-step, debug-register breakpoints, MXCSR and x87
// exception flags. Not yet: AVX/VEX, AES-NI, PCLMULQDQ (the README's table has the details).

public final class X86VCPU: @unchecked Sendable {
    public let index: Int
    public let model: CPUModel
    let core: UnsafeMutablePointer<CPUCore>

    /// TSC ticks per second.
    public static let tscFrequency: UInt64 = tscHz

    public init(index: Int, platform: any X86Platform, model: CPUModel = .qemu64) {
        self.index = index
        self.model = model
        core = .allocate(capacity: 1)
        core.initialize(to: CPUCore(index: index, platform: platform, model: model))
        if let fast = FastTier.bind(core) {
            core.pointee.fast = fast
            core.pointee.fastOps = FastTier.handlers
        }
        reset()
    }

    deinit {
        core.pointee.deallocate()
        core.deinitialize(count: 1)
        core.deallocate()
    }

    /// Power-on reset: real mode at F000:FFF0. The bootstrap processor (index 0) runs; the others
    /// wait for a startup IPI.
    public func reset() {
        core.pointee.resetArchitectural()
        // MTRRs survive INIT (resetArchitectural) but not a power-on reset.
        core.pointee.mtrr.removeAll()
        core.pointee.mtrrDefType = 0
        core.pointee.activity = index == 0 ? .running : .waitForSIPI
    }

    /// Writes an MSR as WRMSR at CPL 0 would (a firmware's set-up); false where WRMSR would fault.
    public func writeMSR(_ index: UInt32, _ value: UInt64) -> Bool {
        do throws(Fault) { try core.pointee.writeMSR(index, value); return true } catch { return false }
    }

    /// Reads an MSR as RDMSR at CPL 0 would; nil where RDMSR would fault.
    public func readMSR(_ index: UInt32) -> UInt64? {
        do throws(Fault) { return try core.pointee.readMSR(index) } catch { return nil }
    }

    /// The physical address width reported in CPUID 0x80000008 (36 where the leaf is absent, as
    /// firmware assumes).
    public var physicalAddressBits: Int {
        let (maxExt, _, _, _) = core.pointee.cpuid(0x8000_0000, 0)
        guard maxExt >= 0x8000_0008 else { return 36 }
        return Int(core.pointee.cpuid(0x8000_0008, 0).0 & 0xFF)
    }

    /// Runs guest code until the platform asks to stop or the guest shuts down (triple fault).
    public func run() -> X86ExitReason {
        core.pointee.run()
    }

    public var activityState: X86ActivityState {
        get { core.pointee.activity }
        set { core.pointee.activity = newValue; core.pointee.pollNow = true }
    }

    /// Instructions executed so far (approximate at block granularity when faults interrupt a block).
    public var instructionsRetired: UInt64 { core.pointee.instructions }

    /// Current guest TSC value.
    public var currentTSC: UInt64 { core.pointee.readTSC() }

    /// The architectural register state (GPRs, RIP, RFLAGS, segments, tables, CRs, EFER, MSRs).
    public var registers: X86Registers {
        get { core.pointee.exportRegisters() }
        set { core.pointee.importRegisters(newValue) }
    }

    /// The 512-byte FXSAVE image of the x87/MMX/SSE state (migration, debugging).
    public var fxsaveImage: [UInt8] {
        get { core.pointee.fxsaveImage() }
        set { core.pointee.loadFxsaveImage(newValue) }
    }
}

extension CPUCore {
    mutating func resetArchitectural() {
        for k in 0..<24 { r[k] = 0 }
        r[2] = UInt64(cpuidCache.basic.count > 1 ? cpuidCache.basic[1][0] : 0x600)
        rip = 0xFFF0
        flags = 2
        lop = 0
        for s in 0..<6 { segs[s] = SegCache(selector: 0, attr: 0x93, limit: 0xFFFF, base: 0) }
        segs[SegReg.cs] = SegCache(selector: 0xF000, attr: 0x9B, limit: 0xFFFF, base: 0xFFFF_0000)
        segs[SegReg.ldtr] = SegCache(selector: 0, attr: 0x82, limit: 0xFFFF, base: 0)
        segs[SegReg.tr] = SegCache(selector: 0, attr: 0x8B, limit: 0xFFFF, base: 0)
        gdtBase = 0; gdtLimit = 0xFFFF; idtBase = 0; idtLimit = 0xFFFF
        cr0 = 0x6000_0010; cr2 = 0; cr3 = 0; cr4 = 0; cr8 = 0; efer = 0; xcr0 = 1
        dr = (0, 0, 0, 0, 0xFFFF_0FF0, 0x400)
        star = 0; lstar = 0; cstar = 0; fmask = 0; kernelGSBase = 0
        sysenterCS = 0; sysenterESP = 0; sysenterEIP = 0; tscAux = 0
        pat = 0x0007_0406_0007_0406
        cpl = 0
        bp.hits = 0
        refreshBreakpoints()
        interruptShadow = false
        nmiBlocked = false
        shutdownRequested = false
        stopBlock = false
        pollNow = true
        mxcsr = 0x1F80
        for k in 0..<16 { xmm[k] = .zero }
        fpu.reset()
        flushTLB(keepGlobal: false)
        refreshMode()
    }

    mutating func exportRegisters() -> X86Registers {
        var x = X86Registers()
        for k in 0..<16 { x.gpr[k] = r[k] }
        x.rip = rip
        x.rflags = rflags
        func seg(_ s: Int) -> X86Segment {
            let c = segs[s]
            return X86Segment(selector: c.selector, base: c.base, limit: c.limit, attributes: c.attr)
        }
        x.es = seg(0); x.cs = seg(1); x.ss = seg(2); x.ds = seg(3); x.fs = seg(4); x.gs = seg(5)
        x.ldtr = seg(6); x.tr = seg(7)
        x.gdt = X86TableRegister(base: gdtBase, limit: UInt16(truncatingIfNeeded: gdtLimit))
        x.idt = X86TableRegister(base: idtBase, limit: UInt16(truncatingIfNeeded: idtLimit))
        x.cr0 = cr0; x.cr2 = cr2; x.cr3 = cr3; x.cr4 = cr4; x.cr8 = cr8; x.efer = efer
        x.dr = [dr.0, dr.1, dr.2, dr.3, dr.4, dr.5, dr.4, dr.5]
        x.star = star; x.lstar = lstar; x.cstar = cstar; x.fmask = fmask; x.kernelGSBase = kernelGSBase
        x.sysenterCS = sysenterCS; x.sysenterESP = sysenterESP; x.sysenterEIP = sysenterEIP
        x.tscAux = tscAux; x.pat = pat
        return x
    }

    mutating func importRegisters(_ x: X86Registers) {
        for k in 0..<16 { r[k] = k < x.gpr.count ? x.gpr[k] : 0 }
        r[16] = 0
        rip = x.rip
        flags = (x.rflags & 0x3F_7FD7) | 2
        lop = 0
        func seg(_ s: X86Segment) -> SegCache {
            SegCache(selector: s.selector, attr: s.attributes, limit: s.limit, base: s.base)
        }
        segs[0] = seg(x.es); segs[1] = seg(x.cs); segs[2] = seg(x.ss); segs[3] = seg(x.ds)
        segs[4] = seg(x.fs); segs[5] = seg(x.gs); segs[6] = seg(x.ldtr); segs[7] = seg(x.tr)
        gdtBase = x.gdt.base; gdtLimit = UInt32(x.gdt.limit)
        idtBase = x.idt.base; idtLimit = UInt32(x.idt.limit)
        cr0 = x.cr0; cr2 = x.cr2; cr3 = x.cr3; cr4 = x.cr4; cr8 = x.cr8; efer = x.efer
        if x.dr.count >= 8 { dr = (x.dr[0], x.dr[1], x.dr[2], x.dr[3], x.dr[6], x.dr[7]) }
        star = x.star; lstar = x.lstar; cstar = x.cstar; fmask = x.fmask; kernelGSBase = x.kernelGSBase
        sysenterCS = x.sysenterCS; sysenterESP = x.sysenterESP; sysenterEIP = x.sysenterEIP
        tscAux = x.tscAux; pat = x.pat
        // CPL is the DPL of SS (real mode: 0; VM86: 3).
        cpl = !protectedMode ? 0 : (v86 ? 3 : Int((segs[SegReg.ss].attr >> 5) & 3))
        if protectedMode && !v86 && segs[SegReg.cs].attr & 0x2000 != 0 && efer & 0x400 != 0 {
            cpl = Int(segs[SegReg.cs].selector & 3)
        }
        refreshBreakpoints()
        flushTLB(keepGlobal: false)
        refreshMode()
        pollNow = true
    }
}
