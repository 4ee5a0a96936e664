// One KVM vCPU: its run loop (on its own thread), exit dispatch, and reset to an entry state.
//
// Exits go to the machine's `VCPUHost`: port I/O (KVM may batch `count` string transfers in the
// kvm_run data area; the offset and size come from the kernel but are still checked against the
// mapping), MMIO, and the events that end a run: SHUTDOWN (triple fault) becomes a reset request,
// FAIL_ENTRY / INTERNAL_ERROR a fatal error, both after which the thread idles until the control
// thread pauses or stops it.
import CLinux
import Glibc

final class KVMVCPU: @unchecked Sendable {
    let fd: KVMVCPUFd
    let gate: VCPUGate
    let host: any VCPUHost
    private let initialRegs: kvm_regs
    private let initialSregs: kvm_sregs
    private let initialLAPIC: kvm_lapic_state
    private var thread: pthread_t?
    private let threadLock = NSLockLike()

    init(fd: KVMVCPUFd, gate: VCPUGate, host: any VCPUHost) throws {
        self.fd = fd
        self.gate = gate
        self.host = host
        initialRegs = try fd.getRegs()
        initialSregs = try fd.getSregs()
        initialLAPIC = try fd.getLAPIC()
    }

    /// Back to power-on state; the boot CPU then gets `entry` (APs wait for INIT/SIPI).
    func reset(entry: CPUEntry?) throws {
        try fd.setRegs(initialRegs)
        try fd.setSregs(initialSregs)
        try fd.setLAPIC(initialLAPIC)
        try fd.setMPState(UInt32(fd.id == 0 ? KVM_MP_STATE_RUNNABLE : KVM_MP_STATE_UNINITIALIZED))
        guard let entry else { return }
        switch entry {
        case .reset: break
        case let .protected32(eip, esi, eax, ebx, gdtBase, gdtLimit):
            var s = initialSregs
            s.cs = KVMVCPU.flatSegment(selector: 0x10, code: true)
            s.ds = KVMVCPU.flatSegment(selector: 0x18, code: false)
            s.es = s.ds; s.ss = s.ds; s.fs = s.ds; s.gs = s.ds
            s.gdt.base = UInt64(gdtBase)
            s.gdt.limit = gdtLimit
            s.idt.base = 0
            s.idt.limit = 0
            s.cr0 = 0x11   // PE | ET
            s.cr4 = 0
            s.efer = 0
            try fd.setSregs(s)
            var r = kvm_regs()
            r.rip = UInt64(eip)
            r.rsi = UInt64(esi)
            r.rax = UInt64(eax)
            r.rbx = UInt64(ebx)
            r.rflags = 0x2
            try fd.setRegs(r)
        }
    }

    static func flatSegment(selector: UInt16, code: Bool) -> kvm_segment {
        var seg = kvm_segment()
        seg.base = 0
        seg.limit = 0xFFFF_FFFF
        seg.selector = selector
        seg.type = code ? 0xB : 0x3
        seg.present = 1
        seg.dpl = 0
        seg.db = 1
        seg.s = 1
        seg.l = 0
        seg.g = 1
        return seg
    }

    func kick() {
        fd.run.pointee.immediate_exit = 1
        threadLock.lock()
        let t = thread
        threadLock.unlock()
        if let t { _ = clinux_thread_kick(t, KVMAccelerator.kickSignal) }
    }

    func loop() {
        _ = clinux_unblock_signal(KVMAccelerator.kickSignal)
        threadLock.lock()
        thread = clinux_thread_self()
        threadLock.unlock()
        defer {
            threadLock.lock()
            thread = nil
            threadLock.unlock()
            gate.threadEnded()
        }
        while true {
            if gate.mustStop, gate.checkpoint() == .quit { return }
            do {
                guard try fd.runOnce() else {
                    fd.run.pointee.immediate_exit = 0
                    continue
                }
            } catch {
                host.cpuFailed(cpu: fd.id, message: "\(error)")
                idleUntilStopped()
                continue
            }
            if !handleExit() { idleUntilStopped() }
        }
    }

    private func idleUntilStopped() {
        while !gate.mustStop { usleep(1000) }
    }

    /// Dispatches one exit; false when the vCPU cannot continue.
    private func handleExit() -> Bool {
        let run = fd.run
        let cpu = fd.id
        switch Int32(bitPattern: run.pointee.exit_reason) {
        case KVM_EXIT_IO:
            let io = run.pointee.io
            let size = Int(io.size)
            let count = Int(io.count)
            let offset = Int(io.data_offset)
            guard size == 1 || size == 2 || size == 4, count >= 0,
                  offset >= 0, offset + size * count <= fd.runSize else {
                host.cpuFailed(cpu: cpu, message: "malformed KVM_EXIT_IO")
                return false
            }
            let data = fd.runBase + offset
            for i in 0..<count {
                let p = data + i * size
                if io.direction == UInt8(KVM_EXIT_IO_OUT) {
                    let v: UInt32
                    switch size {
                    case 1: v = UInt32(p.load(as: UInt8.self))
                    case 2: v = UInt32(p.loadUnaligned(as: UInt16.self))
                    default: v = p.loadUnaligned(as: UInt32.self)
                    }
                    host.portWrite(cpu: cpu, port: io.port, size: size, value: v)
                } else {
                    let v = host.portRead(cpu: cpu, port: io.port, size: size)
                    switch size {
                    case 1: p.storeBytes(of: UInt8(truncatingIfNeeded: v), as: UInt8.self)
                    case 2: p.storeBytes(of: UInt16(truncatingIfNeeded: v), as: UInt16.self)
                    default: p.storeBytes(of: v, as: UInt32.self)
                    }
                }
            }
            return true
        case KVM_EXIT_MMIO:
            let addr = run.pointee.mmio.phys_addr
            let len = Int(run.pointee.mmio.len)
            guard len >= 1 && len <= 8 else {
                host.cpuFailed(cpu: cpu, message: "malformed KVM_EXIT_MMIO")
                return false
            }
            return withUnsafeMutableBytes(of: &run.pointee.mmio.data) { bytes -> Bool in
                if run.pointee.mmio.is_write != 0 {
                    var v: UInt64 = 0
                    for i in 0..<len { v |= UInt64(bytes[i]) << (8 * UInt64(i)) }
                    host.mmioWrite(cpu: cpu, address: addr, size: len, value: v)
                } else {
                    let v = host.mmioRead(cpu: cpu, address: addr, size: len)
                    for i in 0..<len { bytes[i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
                }
                return true
            }
        case KVM_EXIT_HLT:
            usleep(100)
            return true
        case KVM_EXIT_INTR, KVM_EXIT_IRQ_WINDOW_OPEN:
            return true
        case KVM_EXIT_SHUTDOWN:
            host.cpuRequestedReset(cpu: cpu, reason: "triple fault")
            return false
        case KVM_EXIT_SYSTEM_EVENT:
            host.cpuRequestedReset(cpu: cpu, reason: "system event \(run.pointee.system_event.type)")
            return false
        case KVM_EXIT_FAIL_ENTRY:
            let why = run.pointee.fail_entry.hardware_entry_failure_reason
            host.cpuFailed(cpu: cpu, message: "KVM: entry failed, hardware error 0x\(String(why, radix: 16))")
            return false
        case KVM_EXIT_INTERNAL_ERROR:
            let sub = run.pointee.internal.suberror
            host.cpuFailed(cpu: cpu, message: "KVM internal error. Suberror: \(sub)\(registerDump())")
            return false
        default:
            host.cpuFailed(cpu: cpu, message: "KVM: unhandled exit reason \(run.pointee.exit_reason)\(registerDump())")
            return false
        }
    }

    private func registerDump() -> String {
        guard let r = try? fd.getRegs(), let s = try? fd.getSregs() else { return "" }
        func h(_ v: UInt64) -> String { String(v, radix: 16) }
        return "\nRIP=\(h(r.rip)) RSP=\(h(r.rsp)) RAX=\(h(r.rax)) CS=\(h(UInt64(s.cs.selector)))/\(h(s.cs.base)) CR0=\(h(s.cr0))"
    }
}

/// A pthread mutex for the few places a Mutex<T> does not fit (guarding a pthread_t).
final class NSLockLike: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    func lock() { pthread_mutex_lock(&m) }
    func unlock() { pthread_mutex_unlock(&m) }
}
