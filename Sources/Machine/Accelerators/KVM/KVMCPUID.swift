// The CPUID a KVM vCPU sees: what KVM supports on this host (like QEMU's `-cpu host`), with the
// per-vCPU topology fields filled in: the initial APIC ID (leaf 1 EBX[31:24]), the logical processor
// count (leaf 1 EBX[23:16], HTT), and the x2APIC ID of leaves 0xB and 0x1F.
import CLinux

enum KVMCPUID {
    static func entries(from supported: [kvm_cpuid_entry2], apicID: UInt32, cpuCount: Int) -> [kvm_cpuid_entry2] {
        supported.map { e in
            var e = e
            switch e.function {
            case 1:
                e.ebx = (e.ebx & 0x0000_FFFF) | (apicID << 24) | (UInt32(min(cpuCount, 255)) << 16)
                if cpuCount > 1 { e.edx |= 1 << 28 }
            case 0xB, 0x1F:
                e.edx = apicID
            default: break
            }
            return e
        }
    }
}
