// The interpreter's fast tier: runs the common 64-bit integer instructions of a decoded block with
// threaded dispatch (one indirect jump per handler, which a switch in Swift cannot express), on the
// same state the Swift executor uses. See Sources/X86/FastTier.swift.
#ifndef X86FAST_H
#define X86FAST_H
#include <stdint.h>
#include <stddef.h>

struct X86Jit;

/// Mirrors X86's DInst (32 bytes; checked at start-up).
struct X86FastInst {
    uint64_t disp;
    uint64_t imm;
    uint16_t op;
    uint8_t len, osz, asz, reg, rm, base, index, scale, seg, flags;
    uint16_t aux;
    uint8_t fast;   // the fast tier's handler for this instruction (x86fast_handler), 0 = none
    uint8_t tail;   // guest instructions after this one in its block
};

/// Mirrors X86's TLBEntry (the fields the fast path reads).
struct X86FastTLB {
    uint64_t rtag, wtag, xtag, addend, physPage;
    uint8_t global;
};

/// Mirrors CPUCore's lazy flag fields, which are consecutive there: lop, lres, ldst, lsrc, lcin.
struct X86FastLazy {
    uint32_t op;
    uint32_t pad;
    uint64_t res, dst, src, cin;
};

/// Mirrors X86's BlockInfo (the fields block chaining reads).
struct X86FastBlock {
    uint64_t vaddr, phys, phys2;
    uint32_t gen, gen2;
    int32_t first, count;
    uint8_t mode;
    int32_t guestCount;
    uint64_t linkRIP0, linkRIP1;
    int32_t linkIdx0, linkIdx1;
    // The last successor on another page (a call, a return, a jump out of the page), checked
    // against the TLB and the page generations on every use: the fast tier's one-entry cache, so
    // that returning to the same caller or calling the same function skips the lookup table.
    uint64_t exitRIP;
    int32_t exitIdx;
};

/// Where one vCPU's state lives; filled once when the vCPU is created.
struct X86FastCore {
    uint64_t *regs;                 // GPRs at 8 * n (8-bit registers at byte offsets), 16 = zero
    uint64_t *rflags;               // arithmetic bits valid when lazy->op == 0
    struct X86FastLazy *lazy;
    struct X86FastTLB **tlb;        // the current privilege's TLB (1024 entries)
    const uint64_t *segBase;        // effective segment bases (FS, GS used here)
    const uint64_t *segEnd;         // fast-path exclusive ends
    // Block chaining, as the executor's: the block cache's arrays, the poll countdown and flag,
    // the retired-instruction count.
    struct X86FastBlock *infos;     // written only to record links and the exit cache
    const struct X86FastInst *insts;
    int64_t *pollCountdown;
    const uint8_t *pollNow;
    uint64_t *instructions;
    // Finding a block by RIP when no link leads there (the executor's peekBlock): the lookup
    // table (two-way sets: slots s and s + 1, s = the top `tableBits` bits of
    // RIP * 0x9E3779B97F4A7C15 made even; -1 = empty), the
    // current block count, and the code pages' generations.
    const int32_t *table;
    unsigned tableBits;
    const int64_t *infoCount;
    const uint32_t *codeGen;
    uint64_t codePages;
    // The code generator (x86jit.c; NULL when off) and the block cache's flush count, which
    // tells it that block indices have been reused.
    struct X86Jit *jit;
    const uint64_t *flushes;
    const int64_t *cpl;             // the current privilege level (CLI checks it against IOPL)
};

/// A code generator for a vCPU whose block cache holds `blocks` blocks, compiling a block once
/// it has been entered `threshold` times into a buffer of `buffer` bytes (at least 64 KiB; when
/// full, it starts over). Threshold 0: no generator, NULL.
struct X86Jit *x86jit_new(unsigned blocks, unsigned threshold, size_t buffer, const uint64_t *segBase, const uint64_t *segEnd);
void x86jit_free(struct X86Jit *jit);
/// Blocks compiled to host code so far.
uint64_t x86jit_compiled(const struct X86Jit *jit);

/// Where a run stopped: `next` is the first instruction not executed (== end when a block ran to
/// its end), `end` and `block` the block it is in (another one after chaining), `pc` the RIP at
/// `next` (or the branch target after a block's final branch).
struct X86FastResult {
    const struct X86FastInst *next;
    const struct X86FastInst *end;
    const struct X86FastBlock *block;
    uint64_t pc;
};

/// Handler numbers; X86 maps its Op values onto them with x86fast_map.
enum {
    X86F_EXIT = 0,
    X86F_NOP,
    X86F_ADD_RMR4, X86F_ADD_RRM4, X86F_ADD_RMI4, X86F_ADD_RMR8, X86F_ADD_RRM8, X86F_ADD_RMI8,
    X86F_OR_RMR4, X86F_OR_RRM4, X86F_OR_RMI4, X86F_OR_RMR8, X86F_OR_RRM8, X86F_OR_RMI8,
    X86F_ADC_RMR4, X86F_ADC_RRM4, X86F_ADC_RMI4, X86F_ADC_RMR8, X86F_ADC_RRM8, X86F_ADC_RMI8,
    X86F_SBB_RMR4, X86F_SBB_RRM4, X86F_SBB_RMI4, X86F_SBB_RMR8, X86F_SBB_RRM8, X86F_SBB_RMI8,
    X86F_AND_RMR4, X86F_AND_RRM4, X86F_AND_RMI4, X86F_AND_RMR8, X86F_AND_RRM8, X86F_AND_RMI8,
    X86F_SUB_RMR4, X86F_SUB_RRM4, X86F_SUB_RMI4, X86F_SUB_RMR8, X86F_SUB_RRM8, X86F_SUB_RMI8,
    X86F_XOR_RMR4, X86F_XOR_RRM4, X86F_XOR_RMI4, X86F_XOR_RMR8, X86F_XOR_RRM8, X86F_XOR_RMI8,
    X86F_CMP_RMR4, X86F_CMP_RRM4, X86F_CMP_RMI4, X86F_CMP_RMR8, X86F_CMP_RRM8, X86F_CMP_RMI8,
    X86F_MOV_RMR4, X86F_MOV_RRM4, X86F_MOV_RMI4, X86F_MOV_RI4, X86F_MOV_RMR8, X86F_MOV_RRM8, X86F_MOV_RMI8, X86F_MOV_RI8,
    X86F_MOV_RMR, X86F_MOV_RRM,
    X86F_TEST_RMR4, X86F_TEST_RMI4, X86F_TEST_RMR8, X86F_TEST_RMI8,
    X86F_LEA4, X86F_LEA8,
    X86F_MOVZX8_4, X86F_MOVZX16_4, X86F_MOVZX8_8, X86F_MOVZX16_8, X86F_MOVSXD, X86F_MOVSX8, X86F_MOVSX16,
    X86F_SHIFT4, X86F_SHIFT8,
    X86F_INC4, X86F_DEC4, X86F_INC8, X86F_DEC8,
    X86F_IMUL_RRM, X86F_IMUL_RRMI,
    X86F_CMPJ_RR4, X86F_CMPJ_RR8, X86F_CMPJ_RI4, X86F_CMPJ_RI8, X86F_TESTJ_RR4, X86F_TESTJ_RR8,
    X86F_JCC, X86F_JMP, X86F_CALL, X86F_RET, X86F_PUSH, X86F_POP,
    X86F_SETCC, X86F_CMOVCC,
    // The same operations at any operand size (8/16-bit registers are byte offsets).
    X86F_ADD_RMR, X86F_ADD_RRM, X86F_ADD_RMI, X86F_OR_RMR, X86F_OR_RRM, X86F_OR_RMI,
    X86F_ADC_RMR, X86F_ADC_RRM, X86F_ADC_RMI, X86F_SBB_RMR, X86F_SBB_RRM, X86F_SBB_RMI,
    X86F_AND_RMR, X86F_AND_RRM, X86F_AND_RMI, X86F_SUB_RMR, X86F_SUB_RRM, X86F_SUB_RMI,
    X86F_XOR_RMR, X86F_XOR_RRM, X86F_XOR_RMI, X86F_CMP_RMR, X86F_CMP_RRM, X86F_CMP_RMI,
    X86F_TEST_RMR, X86F_TEST_RMI, X86F_NOT, X86F_NEG, X86F_INC, X86F_DEC, X86F_MOV_RMI, X86F_MOV_RI,
    X86F_SHIFT,
    // Register-only forms (no memory operand), chosen per instruction by x86fast_handler.
    X86F_ADD_RMR4_R, X86F_ADD_RRM4_R, X86F_ADD_RMI4_R, X86F_ADD_RMR8_R, X86F_ADD_RRM8_R, X86F_ADD_RMI8_R,
    X86F_OR_RMR4_R, X86F_OR_RRM4_R, X86F_OR_RMI4_R, X86F_OR_RMR8_R, X86F_OR_RRM8_R, X86F_OR_RMI8_R,
    X86F_ADC_RMR4_R, X86F_ADC_RRM4_R, X86F_ADC_RMI4_R, X86F_ADC_RMR8_R, X86F_ADC_RRM8_R, X86F_ADC_RMI8_R,
    X86F_SBB_RMR4_R, X86F_SBB_RRM4_R, X86F_SBB_RMI4_R, X86F_SBB_RMR8_R, X86F_SBB_RRM8_R, X86F_SBB_RMI8_R,
    X86F_AND_RMR4_R, X86F_AND_RRM4_R, X86F_AND_RMI4_R, X86F_AND_RMR8_R, X86F_AND_RRM8_R, X86F_AND_RMI8_R,
    X86F_SUB_RMR4_R, X86F_SUB_RRM4_R, X86F_SUB_RMI4_R, X86F_SUB_RMR8_R, X86F_SUB_RRM8_R, X86F_SUB_RMI8_R,
    X86F_XOR_RMR4_R, X86F_XOR_RRM4_R, X86F_XOR_RMI4_R, X86F_XOR_RMR8_R, X86F_XOR_RRM8_R, X86F_XOR_RMI8_R,
    X86F_CMP_RMR4_R, X86F_CMP_RRM4_R, X86F_CMP_RMI4_R, X86F_CMP_RMR8_R, X86F_CMP_RRM8_R, X86F_CMP_RMI8_R,
    X86F_MOV_RMR4_R, X86F_MOV_RRM4_R, X86F_MOV_RMR8_R, X86F_MOV_RRM8_R,
    X86F_TEST_RMR4_R, X86F_TEST_RMR8_R, X86F_MOVZX8_4_R, X86F_MOVZX16_4_R, X86F_MOVZX8_8_R, X86F_MOVZX16_8_R,
    // LOCKable read-modify-writes that are atomic on the host (CMPXCHG and XADD on memory always
    // are), and the bit tests with immediate and register bit offsets.
    X86F_CMPXCHG, X86F_XADD,
    X86F_BT_I, X86F_BTS_I, X86F_BTR_I, X86F_BTC_I, X86F_BT_R, X86F_BTS_R, X86F_BTR_R, X86F_BTC_R,
    // TEST + Jcc at any operand size: register and immediate, register and register.
    X86F_TESTJ_RI, X86F_TESTJ_RR,
    // CMP/TEST of memory with a byte-sized immediate (in `reg`, sign-extended) + Jcc, any size.
    X86F_CMPJ_MI, X86F_TESTJ_MI,
    // CBW/CWDE/CDQE, BSWAP, PUSH imm, LEAVE, CLI (CPL <= IOPL), PUSHF: cheap, and each of them
    // sent the kernel's block layer back to Swift tens of thousands of times a second.
    X86F_CBW, X86F_BSWAP, X86F_PUSH_I, X86F_LEAVE, X86F_CLI, X86F_PUSHF,
    // The marker after every decoded block (not an instruction): the block's end.
    X86F_END,
    X86F_COUNT
};

/// Routes operation number `op` (< 1024) to `handler` (X86F_EXIT: not handled here).
void x86fast_map(uint16_t op, uint8_t handler);

/// The operation-to-handler table x86fast_map fills (1024 entries).
const uint8_t *x86fast_handlers(void);

/// The handler for one decoded instruction (its operation, DInst flags and address size): the
/// operation's, or its register-only form when the instruction has no memory operand, or none for
/// a memory operand with 32-bit addressing. Stored in the instruction when its block is built.
uint8_t x86fast_handler(uint16_t op, uint8_t flags, uint8_t asz);

/// Runs instructions from `p` up to `end`, the end of decoded block `block` (where its X86F_END marker
/// is; 64-bit mode), until one needs
/// the Swift executor (an operation or a case the fast tier does not handle, a TLB miss, a fault):
/// that one is not executed, and nothing of it has happened. At a block's end it continues into
/// the block's linked successor (unless `block` is NULL, or a poll is due), as the executor would.
struct X86FastResult x86fast_run(const struct X86FastCore *core, const struct X86FastInst *p,
                                 const struct X86FastInst *end, const struct X86FastBlock *block, uint64_t pc);

#endif
