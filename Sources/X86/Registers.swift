// The architectural register state of one vCPU as the outside world sees it.
//
// `X86Registers` is a plain value: the machine's loader fills one to enter the Linux boot protocol
// (32-bit or 64-bit entry) directly, QMP reads one for query-cpus-fast, migration copies it. The
// interpreter keeps its own faster internal layout and converts at `X86VCPU.registers` get/set.
//
// Segment attributes use the VMX/KVM "access rights" layout, so the machine can share code with
// its KVM back end: bits 0-3 type, 4 S (code/data), 5-6 DPL, 7 P, 12 AVL, 13 L, 14 D/B, 15 G.

/// A segment register: the visible selector and the hidden descriptor cache.
public struct X86Segment: Sendable, Equatable {
    public var selector: UInt16
    public var base: UInt64
    /// Byte-granular limit (already scaled when G is set).
    public var limit: UInt32
    public var attributes: UInt16

    public init(selector: UInt16 = 0, base: UInt64 = 0, limit: UInt32 = 0xFFFF, attributes: UInt16 = 0x93) {
        self.selector = selector
        self.base = base
        self.limit = limit
        self.attributes = attributes
    }

    public var type: UInt16 { attributes & 0xF }
    public var isCodeOrData: Bool { attributes & 0x10 != 0 }
    public var dpl: Int { Int(attributes >> 5) & 3 }
    public var present: Bool { attributes & 0x80 != 0 }
    public var long: Bool { attributes & 0x2000 != 0 }
    public var defaultBig: Bool { attributes & 0x4000 != 0 }
    public var granularity: Bool { attributes & 0x8000 != 0 }

    /// Flat 4 GiB segments as a boot loader sets them up.
    public static func flatCode32(selector: UInt16 = 0x10) -> X86Segment {
        X86Segment(selector: selector, base: 0, limit: 0xFFFF_FFFF, attributes: 0xC09B)
    }
    public static func flatCode64(selector: UInt16 = 0x10) -> X86Segment {
        X86Segment(selector: selector, base: 0, limit: 0xFFFF_FFFF, attributes: 0xA09B)
    }
    public static func flatData(selector: UInt16 = 0x18) -> X86Segment {
        X86Segment(selector: selector, base: 0, limit: 0xFFFF_FFFF, attributes: 0xC093)
    }
}

/// A descriptor-table register (GDTR, IDTR).
public struct X86TableRegister: Sendable, Equatable {
    public var base: UInt64
    public var limit: UInt16
    public init(base: UInt64 = 0, limit: UInt16 = 0xFFFF) {
        self.base = base
        self.limit = limit
    }
}

/// Everything the loader, the monitor and migration need from a CPU (FPU/SSE state excepted: see
/// `X86VCPU.fxsaveImage`).
public struct X86Registers: Sendable, Equatable {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15 in encoding order.
    public var gpr: [UInt64] = Array(repeating: 0, count: 16)
    public var rip: UInt64 = 0
    public var rflags: UInt64 = 2

    public var es = X86Segment(), cs = X86Segment(), ss = X86Segment()
    public var ds = X86Segment(), fs = X86Segment(), gs = X86Segment()
    public var ldtr = X86Segment(selector: 0, base: 0, limit: 0xFFFF, attributes: 0x82)
    public var tr = X86Segment(selector: 0, base: 0, limit: 0xFFFF, attributes: 0x8B)
    public var gdt = X86TableRegister()
    public var idt = X86TableRegister()

    public var cr0: UInt64 = 0x6000_0010
    public var cr2: UInt64 = 0
    public var cr3: UInt64 = 0
    public var cr4: UInt64 = 0
    public var cr8: UInt64 = 0
    public var efer: UInt64 = 0
    public var dr: [UInt64] = [0, 0, 0, 0, 0xFFFF_0FF0, 0x400, 0xFFFF_0FF0, 0x400]

    // System MSRs the CPU owns (the APIC base and x2APIC MSRs belong to the platform).
    public var star: UInt64 = 0
    public var lstar: UInt64 = 0
    public var cstar: UInt64 = 0
    public var fmask: UInt64 = 0
    public var kernelGSBase: UInt64 = 0
    public var sysenterCS: UInt64 = 0
    public var sysenterESP: UInt64 = 0
    public var sysenterEIP: UInt64 = 0
    public var tscAux: UInt64 = 0
    public var pat: UInt64 = 0x0007_0406_0007_0406

    public init() {}

    public var rax: UInt64 { get { gpr[0] } set { gpr[0] = newValue } }
    public var rcx: UInt64 { get { gpr[1] } set { gpr[1] = newValue } }
    public var rdx: UInt64 { get { gpr[2] } set { gpr[2] = newValue } }
    public var rbx: UInt64 { get { gpr[3] } set { gpr[3] = newValue } }
    public var rsp: UInt64 { get { gpr[4] } set { gpr[4] = newValue } }
    public var rbp: UInt64 { get { gpr[5] } set { gpr[5] = newValue } }
    public var rsi: UInt64 { get { gpr[6] } set { gpr[6] = newValue } }
    public var rdi: UInt64 { get { gpr[7] } set { gpr[7] = newValue } }
}

/// Why `X86VCPU.run()` returned.
public enum X86ExitReason: Sendable, Equatable {
    /// `X86Platform.shouldStop(cpu:)` said so; calling `run()` again continues where it stopped.
    case stopRequested
    /// Triple fault (or a shutdown cycle): the machine resets or quits, as -no-reboot says.
    case shutdown
}

/// What a vCPU is doing between instructions.
public enum X86ActivityState: Sendable, Equatable {
    case running
    /// After HLT, until an interrupt, NMI or INIT.
    case halted
    /// An application processor after INIT, until a startup IPI.
    case waitForSIPI
}
