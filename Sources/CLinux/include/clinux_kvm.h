// KVM for Swift: the ioctl request numbers (function-like macros never import) as constants, a
// retrying ioctl wrapper, and the signal plumbing that kicks a vCPU thread out of KVM_RUN.
// <linux/kvm.h> itself imports cleanly, so its structs (kvm_run, kvm_regs, kvm_sregs, ...) are used
// from Swift directly. No _GNU_SOURCE here (see shared/SWIFT-LINUX.md).
#ifndef CLINUX_KVM_H
#define CLINUX_KVM_H
#include <stdint.h>
#include <linux/kvm.h>
#include <pthread.h>

// System ioctls (on /dev/kvm).
extern const unsigned long clinux_KVM_GET_API_VERSION;
extern const unsigned long clinux_KVM_CREATE_VM;
extern const unsigned long clinux_KVM_CHECK_EXTENSION;
extern const unsigned long clinux_KVM_GET_VCPU_MMAP_SIZE;
extern const unsigned long clinux_KVM_GET_SUPPORTED_CPUID;
// VM ioctls.
extern const unsigned long clinux_KVM_CREATE_VCPU;
extern const unsigned long clinux_KVM_SET_USER_MEMORY_REGION;
extern const unsigned long clinux_KVM_SET_TSS_ADDR;
extern const unsigned long clinux_KVM_SET_IDENTITY_MAP_ADDR;
extern const unsigned long clinux_KVM_CREATE_IRQCHIP;
extern const unsigned long clinux_KVM_CREATE_PIT2;
extern const unsigned long clinux_KVM_IRQ_LINE;
extern const unsigned long clinux_KVM_IRQ_LINE_STATUS;
extern const unsigned long clinux_KVM_SIGNAL_MSI;
extern const unsigned long clinux_KVM_SET_CLOCK;
extern const unsigned long clinux_KVM_GET_IRQCHIP;
extern const unsigned long clinux_KVM_SET_IRQCHIP;
extern const unsigned long clinux_KVM_GET_PIT2;
extern const unsigned long clinux_KVM_SET_PIT2;
// vCPU ioctls.
extern const unsigned long clinux_KVM_RUN;
extern const unsigned long clinux_KVM_GET_REGS;
extern const unsigned long clinux_KVM_SET_REGS;
extern const unsigned long clinux_KVM_GET_SREGS;
extern const unsigned long clinux_KVM_SET_SREGS;
extern const unsigned long clinux_KVM_SET_CPUID2;
extern const unsigned long clinux_KVM_SET_MSRS;
extern const unsigned long clinux_KVM_GET_MSRS;
extern const unsigned long clinux_KVM_SET_FPU;
extern const unsigned long clinux_KVM_GET_LAPIC;
extern const unsigned long clinux_KVM_SET_LAPIC;
extern const unsigned long clinux_KVM_GET_MP_STATE;
extern const unsigned long clinux_KVM_SET_MP_STATE;
extern const unsigned long clinux_KVM_NMI;

/// ioctl with a pointer argument, retried on EINTR unless `retry_eintr` is 0 (KVM_RUN must see EINTR).
/// Returns the ioctl's result, or -errno.
int clinux_kvm_ioctl(int fd, unsigned long request, void *arg, int retry_eintr);
/// ioctl with an integer argument (KVM_CREATE_VM, KVM_CHECK_EXTENSION, KVM_SET_TSS_ADDR, ...).
/// Returns the result, or -errno.
int clinux_kvm_ioctl_value(int fd, unsigned long request, unsigned long value);

/// kvm_cpuid2 with room for `max_entries` entries (calloc'd; free with free()).
struct kvm_cpuid2 *clinux_kvm_cpuid_alloc(uint32_t max_entries);
struct kvm_cpuid_entry2 *clinux_kvm_cpuid_entry(struct kvm_cpuid2 *cpuid, uint32_t index);
/// kvm_msrs with room for `count` entries (calloc'd; free with free()).
struct kvm_msrs *clinux_kvm_msrs_alloc(uint32_t count);
struct kvm_msr_entry *clinux_kvm_msrs_entry(struct kvm_msrs *msrs, uint32_t index);

/// Installs a no-op handler (without SA_RESTART) for `signo`, so that a signal sent to a vCPU thread
/// makes KVM_RUN return -EINTR. Returns 0 or -errno.
int clinux_install_kick_handler(int signo);
/// Sends `signo` to one thread. Returns 0 or the error number.
int clinux_thread_kick(pthread_t thread, int signo);
/// The calling thread's id, for clinux_thread_kick.
pthread_t clinux_thread_self(void);
/// The calling thread's kernel thread id (gettid).
int clinux_gettid(void);
/// Names the calling thread (pthread_setname_np; at most 15 bytes). Returns 0 or the error number.
int clinux_set_thread_name(const char *name);
/// Unblocks `signo` in the calling thread.
int clinux_unblock_signal(int signo);

/// Installs QEMU's pc GSI routing: GSI 0-7 and 8-15 to the PICs (except 2), GSI 0 to I/O APIC pin 2,
/// GSI 1-23 (except 2) to the same I/O APIC pin. Returns 0 or -errno.
int clinux_kvm_set_pc_gsi_routing(int vmfd);

#endif
