// Thin typed wrappers over the KVM ioctls, one type per fd level (as rust-vmm's kvm-ioctls):
// `KVMSystem` (/dev/kvm), `KVMVM` (the VM fd), `KVMVCPUFd` (a vCPU fd and its mmap'd kvm_run).
// Every ioctl returns or throws `KVMError` carrying the ioctl's name and errno; nothing traps.
import CLinux
import Glibc

public struct KVMError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let errno: Int32
    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}

@inline(__always)
func kvmCheck(_ r: Int32, _ what: String) throws -> Int32 {
    if r < 0 { throw KVMError(operation: what, errno: -r) }
    return r
}

/// What this host's KVM is.
public enum KVMHost {
    /// The paravirtual nested KVM (module kvm_pvm) runs small guests but not unmodified Linux.
    public static var isPVM: Bool { access("/sys/module/kvm_pvm", F_OK) == 0 }
    public static var deviceExists: Bool { access("/dev/kvm", F_OK) == 0 }
    public static var deviceUsable: Bool { access("/dev/kvm", R_OK | W_OK) == 0 }
}

public final class KVMSystem: @unchecked Sendable {
    public let fd: Int32

    public init() throws {
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw KVMError(operation: "Could not access KVM kernel module", errno: errno) }
        self.fd = fd
        let version = clinux_kvm_ioctl_value(fd, clinux_KVM_GET_API_VERSION, 0)
        guard version == 12 else {
            close(fd)
            throw KVMError(operation: "KVM API version \(version) (need 12)", errno: EINVAL)
        }
    }

    deinit { close(fd) }

    public func checkExtension(_ cap: Int32) -> Int32 {
        max(0, clinux_kvm_ioctl_value(fd, clinux_KVM_CHECK_EXTENSION, UInt(cap)))
    }

    public func vcpuMmapSize() throws -> Int {
        Int(try kvmCheck(clinux_kvm_ioctl_value(fd, clinux_KVM_GET_VCPU_MMAP_SIZE, 0), "KVM_GET_VCPU_MMAP_SIZE"))
    }

    /// The CPUID leaves KVM can expose (KVM_GET_SUPPORTED_CPUID).
    public func supportedCPUID() throws -> [kvm_cpuid_entry2] {
        var n: UInt32 = 128
        while n <= 4096 {
            guard let c = clinux_kvm_cpuid_alloc(n) else { throw KVMError(operation: "cpuid", errno: ENOMEM) }
            defer { free(c) }
            let r = clinux_kvm_ioctl(fd, clinux_KVM_GET_SUPPORTED_CPUID, c, 1)
            if r == -E2BIG { n *= 2; continue }
            _ = try kvmCheck(r, "KVM_GET_SUPPORTED_CPUID")
            return (0..<c.pointee.nent).map { clinux_kvm_cpuid_entry(c, $0)!.pointee }
        }
        throw KVMError(operation: "KVM_GET_SUPPORTED_CPUID", errno: E2BIG)
    }

    public func createVM() throws -> KVMVM {
        let vmfd = try kvmCheck(clinux_kvm_ioctl_value(fd, clinux_KVM_CREATE_VM, 0), "KVM_CREATE_VM")
        return KVMVM(fd: vmfd, system: self)
    }
}

public final class KVMVM: @unchecked Sendable {
    public let fd: Int32
    public let system: KVMSystem

    init(fd: Int32, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    deinit { close(fd) }

    public func setUserMemoryRegion(slot: UInt32, guestPhysical: UInt64, size: UInt64,
                                    host: UnsafeMutableRawPointer, readOnly: Bool) throws {
        var r = kvm_userspace_memory_region()
        r.slot = slot
        r.flags = readOnly ? UInt32(KVM_MEM_READONLY) : 0
        r.guest_phys_addr = guestPhysical
        r.memory_size = size
        r.userspace_addr = UInt64(UInt(bitPattern: host))
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SET_USER_MEMORY_REGION, &r, 1), "KVM_SET_USER_MEMORY_REGION")
    }

    public func setTSSAddress(_ a: UInt64) throws {
        _ = try kvmCheck(clinux_kvm_ioctl_value(fd, clinux_KVM_SET_TSS_ADDR, UInt(a)), "KVM_SET_TSS_ADDR")
    }

    public func setIdentityMapAddress(_ a: UInt64) throws {
        var v = a
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SET_IDENTITY_MAP_ADDR, &v, 1), "KVM_SET_IDENTITY_MAP_ADDR")
    }

    public func createIRQChip() throws {
        _ = try kvmCheck(clinux_kvm_ioctl_value(fd, clinux_KVM_CREATE_IRQCHIP, 0), "KVM_CREATE_IRQCHIP")
        _ = try kvmCheck(clinux_kvm_set_pc_gsi_routing(fd), "KVM_SET_GSI_ROUTING")
    }

    public func createPIT() throws {
        var cfg = kvm_pit_config()
        cfg.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_CREATE_PIT2, &cfg, 1), "KVM_CREATE_PIT2")
    }

    /// In-kernel PIC (chip 0 master, 1 slave) and I/O APIC (chip 2) state.
    public func getIRQChip(_ id: UInt32) throws -> kvm_irqchip {
        var c = kvm_irqchip()
        c.chip_id = id
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_GET_IRQCHIP, &c, 1), "KVM_GET_IRQCHIP")
        return c
    }
    public func setIRQChip(_ chip: kvm_irqchip) throws {
        var c = chip
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SET_IRQCHIP, &c, 1), "KVM_SET_IRQCHIP")
    }
    public func getPIT() throws -> kvm_pit_state2 {
        var p = kvm_pit_state2()
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_GET_PIT2, &p, 1), "KVM_GET_PIT2")
        return p
    }
    public func setPIT(_ state: kvm_pit_state2) throws {
        var p = state
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SET_PIT2, &p, 1), "KVM_SET_PIT2")
    }

    public func irqLine(_ irq: UInt32, level: Bool) throws {
        var l = kvm_irq_level()
        l.irq = irq
        l.level = level ? 1 : 0
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_IRQ_LINE, &l, 1), "KVM_IRQ_LINE")
    }

    public func signalMSI(address: UInt64, data: UInt32) throws {
        var m = kvm_msi()
        m.address_lo = UInt32(truncatingIfNeeded: address)
        m.address_hi = UInt32(truncatingIfNeeded: address >> 32)
        m.data = data
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SIGNAL_MSI, &m, 1), "KVM_SIGNAL_MSI")
    }

    public func createVCPU(_ id: Int) throws -> KVMVCPUFd {
        let vfd = try kvmCheck(clinux_kvm_ioctl_value(fd, clinux_KVM_CREATE_VCPU, UInt(id)), "KVM_CREATE_VCPU")
        let size = try system.vcpuMmapSize()
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, vfd, 0)
        guard let p, p != MAP_FAILED else {
            let e = errno
            close(vfd)
            throw KVMError(operation: "mmap kvm_run", errno: e)
        }
        return KVMVCPUFd(fd: vfd, run: p, runSize: size, id: id)
    }
}

public final class KVMVCPUFd: @unchecked Sendable {
    public let fd: Int32
    public let id: Int
    /// The shared kvm_run page(s).
    public let runBase: UnsafeMutableRawPointer
    let runSize: Int
    public var run: UnsafeMutablePointer<kvm_run> { runBase.assumingMemoryBound(to: kvm_run.self) }

    init(fd: Int32, run: UnsafeMutableRawPointer, runSize: Int, id: Int) {
        self.fd = fd
        self.runBase = run
        self.runSize = runSize
        self.id = id
    }

    deinit {
        munmap(runBase, runSize)
        close(fd)
    }

    /// KVM_RUN once. Returns false when interrupted (EINTR/EAGAIN), true after a real exit.
    public func runOnce() throws -> Bool {
        let r = clinux_kvm_ioctl(fd, clinux_KVM_RUN, nil, 0)
        if r == -EINTR || r == -EAGAIN { return false }
        _ = try kvmCheck(r, "KVM_RUN")
        return true
    }

    public func getRegs() throws -> kvm_regs {
        var r = kvm_regs()
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_GET_REGS, &r, 1), "KVM_GET_REGS")
        return r
    }
    public func setRegs(_ regs: kvm_regs) throws {
        var r = regs
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SET_REGS, &r, 1), "KVM_SET_REGS")
    }
    public func getSregs() throws -> kvm_sregs {
        var r = kvm_sregs()
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_GET_SREGS, &r, 1), "KVM_GET_SREGS")
        return r
    }
    public func setSregs(_ s: kvm_sregs) throws {
        var r = s
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SET_SREGS, &r, 1), "KVM_SET_SREGS")
    }
    public func getMPState() throws -> UInt32 {
        var m = kvm_mp_state()
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_GET_MP_STATE, &m, 1), "KVM_GET_MP_STATE")
        return m.mp_state
    }
    public func setMPState(_ state: UInt32) throws {
        var m = kvm_mp_state()
        m.mp_state = state
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SET_MP_STATE, &m, 1), "KVM_SET_MP_STATE")
    }
    public func getLAPIC() throws -> kvm_lapic_state {
        var l = kvm_lapic_state()
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_GET_LAPIC, &l, 1), "KVM_GET_LAPIC")
        return l
    }
    public func setLAPIC(_ state: kvm_lapic_state) throws {
        var l = state
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SET_LAPIC, &l, 1), "KVM_SET_LAPIC")
    }

    public func setCPUID(_ entries: [kvm_cpuid_entry2]) throws {
        guard let c = clinux_kvm_cpuid_alloc(UInt32(entries.count)) else { throw KVMError(operation: "cpuid", errno: ENOMEM) }
        defer { free(c) }
        for (i, e) in entries.enumerated() { clinux_kvm_cpuid_entry(c, UInt32(i))!.pointee = e }
        _ = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SET_CPUID2, c, 1), "KVM_SET_CPUID2")
    }

    public func setMSRs(_ msrs: [(UInt32, UInt64)]) throws {
        guard let m = clinux_kvm_msrs_alloc(UInt32(msrs.count)) else { throw KVMError(operation: "msrs", errno: ENOMEM) }
        defer { free(m) }
        for (i, (index, value)) in msrs.enumerated() {
            let e = clinux_kvm_msrs_entry(m, UInt32(i))!
            e.pointee.index = index
            e.pointee.data = value
        }
        let n = try kvmCheck(clinux_kvm_ioctl(fd, clinux_KVM_SET_MSRS, m, 1), "KVM_SET_MSRS")
        if Int(n) != msrs.count {
            throw KVMError(operation: "KVM_SET_MSRS (MSR \(String(msrs[Int(n)].0, radix: 16)) refused)", errno: EINVAL)
        }
    }
}
