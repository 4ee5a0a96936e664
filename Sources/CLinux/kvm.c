// KVM ioctl numbers and helpers for Swift (see clinux_kvm.h). Compiled with _GNU_SOURCE.
#include "clinux_kvm.h"
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

const unsigned long clinux_KVM_GET_API_VERSION = KVM_GET_API_VERSION;
const unsigned long clinux_KVM_CREATE_VM = KVM_CREATE_VM;
const unsigned long clinux_KVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
const unsigned long clinux_KVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
const unsigned long clinux_KVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
const unsigned long clinux_KVM_CREATE_VCPU = KVM_CREATE_VCPU;
const unsigned long clinux_KVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
const unsigned long clinux_KVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
const unsigned long clinux_KVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
const unsigned long clinux_KVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
const unsigned long clinux_KVM_CREATE_PIT2 = KVM_CREATE_PIT2;
const unsigned long clinux_KVM_IRQ_LINE = KVM_IRQ_LINE;
const unsigned long clinux_KVM_IRQ_LINE_STATUS = KVM_IRQ_LINE_STATUS;
const unsigned long clinux_KVM_SIGNAL_MSI = KVM_SIGNAL_MSI;
const unsigned long clinux_KVM_SET_CLOCK = KVM_SET_CLOCK;
const unsigned long clinux_KVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
const unsigned long clinux_KVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
const unsigned long clinux_KVM_GET_PIT2 = KVM_GET_PIT2;
const unsigned long clinux_KVM_SET_PIT2 = KVM_SET_PIT2;
const unsigned long clinux_KVM_RUN = KVM_RUN;
const unsigned long clinux_KVM_GET_REGS = KVM_GET_REGS;
const unsigned long clinux_KVM_SET_REGS = KVM_SET_REGS;
const unsigned long clinux_KVM_GET_SREGS = KVM_GET_SREGS;
const unsigned long clinux_KVM_SET_SREGS = KVM_SET_SREGS;
const unsigned long clinux_KVM_SET_CPUID2 = KVM_SET_CPUID2;
const unsigned long clinux_KVM_SET_MSRS = KVM_SET_MSRS;
const unsigned long clinux_KVM_GET_MSRS = KVM_GET_MSRS;
const unsigned long clinux_KVM_SET_FPU = KVM_SET_FPU;
const unsigned long clinux_KVM_GET_LAPIC = KVM_GET_LAPIC;
const unsigned long clinux_KVM_SET_LAPIC = KVM_SET_LAPIC;
const unsigned long clinux_KVM_GET_MP_STATE = KVM_GET_MP_STATE;
const unsigned long clinux_KVM_SET_MP_STATE = KVM_SET_MP_STATE;
const unsigned long clinux_KVM_NMI = KVM_NMI;

int clinux_kvm_ioctl(int fd, unsigned long request, void *arg, int retry_eintr) {
    int r;
    do { r = ioctl(fd, request, arg); } while (r < 0 && errno == EINTR && retry_eintr);
    return r < 0 ? -errno : r;
}

int clinux_kvm_ioctl_value(int fd, unsigned long request, unsigned long value) {
    int r;
    do { r = ioctl(fd, request, value); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

struct kvm_cpuid2 *clinux_kvm_cpuid_alloc(uint32_t max_entries) {
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (size_t)max_entries * sizeof(struct kvm_cpuid_entry2));
    if (c) c->nent = max_entries;
    return c;
}

struct kvm_cpuid_entry2 *clinux_kvm_cpuid_entry(struct kvm_cpuid2 *cpuid, uint32_t index) {
    return &cpuid->entries[index];
}

struct kvm_msrs *clinux_kvm_msrs_alloc(uint32_t count) {
    struct kvm_msrs *m = calloc(1, sizeof(*m) + (size_t)count * sizeof(struct kvm_msr_entry));
    if (m) m->nmsrs = count;
    return m;
}

struct kvm_msr_entry *clinux_kvm_msrs_entry(struct kvm_msrs *msrs, uint32_t index) {
    return &msrs->entries[index];
}

static void kick_handler(int signo) { (void)signo; }

int clinux_install_kick_handler(int signo) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;  // no SA_RESTART: KVM_RUN returns EINTR
    sigemptyset(&sa.sa_mask);
    return sigaction(signo, &sa, NULL) < 0 ? -errno : 0;
}

int clinux_thread_kick(pthread_t thread, int signo) { return pthread_kill(thread, signo); }

pthread_t clinux_thread_self(void) { return pthread_self(); }

int clinux_unblock_signal(int signo) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

int clinux_kvm_set_pc_gsi_routing(int vmfd) {
    enum { MAX = 64 };
    struct kvm_irq_routing *r = calloc(1, sizeof(*r) + MAX * sizeof(struct kvm_irq_routing_entry));
    if (!r) return -ENOMEM;
    unsigned n = 0;
    for (unsigned i = 0; i < 16; i++) {
        if (i == 2) continue;
        r->entries[n].gsi = i;
        r->entries[n].type = KVM_IRQ_ROUTING_IRQCHIP;
        r->entries[n].u.irqchip.irqchip = i < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
        r->entries[n].u.irqchip.pin = i % 8;
        n++;
    }
    for (unsigned i = 0; i < 24; i++) {
        if (i == 2) continue;
        r->entries[n].gsi = i;
        r->entries[n].type = KVM_IRQ_ROUTING_IRQCHIP;
        r->entries[n].u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        r->entries[n].u.irqchip.pin = i == 0 ? 2 : i;
        n++;
    }
    r->nr = n;
    int ret = ioctl(vmfd, KVM_SET_GSI_ROUTING, r);
    ret = ret < 0 ? -errno : 0;
    free(r);
    return ret;
}

int clinux_gettid(void) { return (int)gettid(); }

int clinux_set_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }
