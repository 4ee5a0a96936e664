// The fast tier's code generator: a hot 64-bit block (entered `threshold` times) becomes host
// code that does what x86fast.c's handlers do, instruction by instruction, without their
// dispatch and operand decoding: register numbers, displacements and immediates become part of
// the code. It compiles a block from its first instruction up to the first one it does not
// handle (or the block's end, or its final JMP/CALL/RET), and returns that instruction to the
// threaded handlers, which go on from there; an instruction whose TLB lookup misses is returned
// the same way before anything of it has happened. A branch that leaves the block (a Jcc taken,
// the final JMP/CALL/RET) returns its target instead, and x86fast_run chains from there as after
// its own handlers (the exit never reads the instructions, which compiled code does not touch).
// Once x86fast_run has followed such an exit to another compiled block, x86jit_chain patches the
// exit to jump there directly, doing the chaining step (and, across pages, its checks) itself.
//
// The flags stay lazy, in the same fields with the same values as the handlers write. The host
// runs x86, so a compiled ADD/SUB/CMP/AND/OR/XOR/TEST sets the host's flags exactly as the
// guest's, and a fused compare-and-branch branches on them directly; a lone Jcc reloads the
// operands of the flag-writer before it in the block and redoes its compare.
#include "x86jit.h"
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { RAX = 0, RCX = 1, RDX = 2, RSI = 6, RDI = 7, R8 = 8, R9 = 9, R10 = 10, R11 = 11 };
// The compiled code's arguments, kept where the calling convention puts them: the guest's
// registers (8 bytes each, register 16 reads as 0), the lazy flags, the TLB.
#define REGS RDI
#define LAZY RSI
#define TLBR RDX
// Lazy flag fields (struct X86FastLazy).
enum { L_OP = 0, L_RES = 8, L_DST = 16, L_SRC = 24, L_CIN = 32 };

// Lazy flag kinds and DInst flag bits, as in x86fast.c.
enum { K_ADD = 1, K_ADC = 2, K_SUB = 3, K_SBB = 4, K_LOGIC = 5, K_INC = 6, K_DEC = 7, K_SHIFT = 8, K_MUL = 9 };
enum { F_MEM = 1, F_LOCK = 8, F_COUNT_CL = 64 };
// Host ALU operations, in opcode order (the same numbering as the guest's ALU kinds).
enum { A_ADD = 0, A_OR = 1, A_AND = 4, A_SUB = 5, A_XOR = 6, A_CMP = 7 };
// Shift-group digits.
enum { S_SHL = 4, S_SHR = 5, S_SAR = 7 };

#define M32 0xFFFFFFFFull
#define MASK(size) ((size) == 8 ? ~0ull : ((1ull << ((size) * 8)) - 1))
#define SIZECODE(size) ((size) == 1 ? 0u : (size) == 2 ? 1u : (size) == 4 ? 2u : 3u)

typedef struct {
    uint8_t *p, *end;
    int full;
    // Jumps to the block's exits, emitted after its code: where each rel32 is and what the exit
    // returns. At most three per instruction.
    struct { uint8_t *at; uint64_t a, b; } exits[3 * 64];
    int nexits;
} Emit;

static void byte(Emit *e, uint8_t x) {
    if (e->p < e->end) *e->p++ = x;
    else e->full = 1;
}
static void u32(Emit *e, uint32_t x) { for (int k = 0; k < 4; k++) byte(e, (uint8_t)(x >> (8 * k))); }
static void u64(Emit *e, uint64_t x) { for (int k = 0; k < 8; k++) byte(e, (uint8_t)(x >> (8 * k))); }
static int fits32(uint64_t v) { return (int64_t)v == (int32_t)(uint32_t)v; }

// MARK: encoding (registers RAX..R11 only; never RSP/RBP/R12/R13 as a base, so no SIB is needed)

static void rex(Emit *e, int w, int reg, int rm, int force) {
    uint8_t v = (uint8_t)(0x40 | w << 3 | ((reg >> 3) & 1) << 2 | ((rm >> 3) & 1));
    if (v != 0x40 || force) byte(e, v);
}
/// A byte register operand numbered 4-7 means SPL..DIL only with a REX prefix.
static int needs_rex8(int reg) { return reg >= 4 && reg < 8; }
static void modrm_mem(Emit *e, int reg, int base, int32_t disp) {
    if (disp == 0) byte(e, (uint8_t)((reg & 7) << 3 | (base & 7)));
    else if (disp >= -128 && disp <= 127) {
        byte(e, (uint8_t)(0x40 | (reg & 7) << 3 | (base & 7)));
        byte(e, (uint8_t)disp);
    } else {
        byte(e, (uint8_t)(0x80 | (reg & 7) << 3 | (base & 7)));
        u32(e, (uint32_t)disp);
    }
}
/// op reg, [base + disp] (or the reverse direction, by opcode) at operand size `size`.
static void op_mem(Emit *e, unsigned size, uint8_t op8, uint8_t op, int reg, int base, int32_t disp) {
    if (size == 2) byte(e, 0x66);
    rex(e, size == 8, reg, base, size == 1 && needs_rex8(reg));
    byte(e, size == 1 ? op8 : op);
    modrm_mem(e, reg, base, disp);
}
/// op rm, reg between registers at operand size `size`.
static void op_rr(Emit *e, unsigned size, uint8_t op8, uint8_t op, int reg, int rm) {
    if (size == 2) byte(e, 0x66);
    rex(e, size == 8, reg, rm, size == 1 && (needs_rex8(reg) || needs_rex8(rm)));
    byte(e, size == 1 ? op8 : op);
    byte(e, (uint8_t)(0xC0 | (reg & 7) << 3 | (rm & 7)));
}

static void load64(Emit *e, int h, int base, int32_t disp) { op_mem(e, 8, 0x8A, 0x8B, h, base, disp); }
static void store64(Emit *e, int h, int base, int32_t disp) { op_mem(e, 8, 0x88, 0x89, h, base, disp); }
/// h = the `size`-byte value at [base + disp], zero-extended.
static void load_zx(Emit *e, unsigned size, int h, int base, int32_t disp) {
    if (size >= 4) { op_mem(e, size, 0x8A, 0x8B, h, base, disp); return; }
    rex(e, 0, h, base, 0);
    byte(e, 0x0F);
    byte(e, size == 1 ? 0xB6 : 0xB7);
    modrm_mem(e, h, base, disp);
}
static void store_n(Emit *e, unsigned size, int h, int base, int32_t disp) { op_mem(e, size, 0x88, 0x89, h, base, disp); }
static void mov_rr(Emit *e, int dst, int src) { op_rr(e, 8, 0x88, 0x89, src, dst); }
/// h = v (64 bits).
static void mov_imm(Emit *e, int h, uint64_t v) {
    if (v <= M32) {
        rex(e, 0, 0, h, 0);
        byte(e, (uint8_t)(0xB8 + (h & 7)));
        u32(e, (uint32_t)v);
    } else if (fits32(v)) {
        rex(e, 1, 0, h, 0);
        byte(e, 0xC7);
        byte(e, (uint8_t)(0xC0 | (h & 7)));
        u32(e, (uint32_t)v);
    } else {
        rex(e, 1, 0, h, 0);
        byte(e, (uint8_t)(0xB8 + (h & 7)));
        u64(e, v);
    }
}
/// dst op= src at `size` (ALU operation `a`, or TEST when `test`).
static void alu_rr(Emit *e, unsigned size, unsigned a, int dst, int src) {
    op_rr(e, size, (uint8_t)(a * 8), (uint8_t)(a * 8 + 1), src, dst);
}
static void test_rr(Emit *e, unsigned size, int dst, int src) { op_rr(e, size, 0x84, 0x85, src, dst); }
/// h op= imm32 (sign-extended for 64 bits), 32 or 64 bits.
static void alu_imm(Emit *e, unsigned size, unsigned a, int h, uint32_t imm) {
    rex(e, size == 8, 0, h, 0);
    byte(e, 0x81);
    byte(e, (uint8_t)(0xC0 | a << 3 | (h & 7)));
    u32(e, imm);
}
static void shift_imm(Emit *e, unsigned size, unsigned digit, int h, unsigned n) {
    rex(e, size == 8, 0, h, 0);
    byte(e, 0xC1);
    byte(e, (uint8_t)(0xC0 | digit << 3 | (h & 7)));
    byte(e, (uint8_t)n);
}
/// A conditional jump (host condition `cc`, the guest's numbering) to an exit returning (a, b).
static void jcc_exit(Emit *e, unsigned cc, uint64_t a, uint64_t b) {
    byte(e, 0x0F);
    byte(e, (uint8_t)(0x80 | cc));
    if (e->nexits < (int)(sizeof e->exits / sizeof e->exits[0])) {
        e->exits[e->nexits].at = e->p;
        e->exits[e->nexits].a = a;
        e->exits[e->nexits].b = b;
        e->nexits++;
    } else {
        e->full = 1;
    }
    u32(e, 0);
}
/// Returns (a, b) (RAX, RDX: struct X86JitExit).
/// A short forward jump (condition cc, or always when cc is -1) whose target patch8 sets.
static uint8_t *jump8(Emit *e, int cc) {
    byte(e, cc < 0 ? 0xEB : (uint8_t)(0x70 | cc));
    uint8_t *at = e->p;
    byte(e, 0);
    return at;
}
static void patch8(Emit *e, uint8_t *at) {
    ptrdiff_t d = e->p - (at + 1);
    if (d > 127) e->full = 1;   // out of a short jump's reach: the code is not used
    if (!e->full) *at = (uint8_t)d;
}
/// The same with a 32-bit displacement (for jumps over more than 127 bytes), always taken.
static uint8_t *jump32(Emit *e) {
    byte(e, 0xE9);
    uint8_t *at = e->p;
    u32(e, 0);
    return at;
}
static void patch32(Emit *e, uint8_t *at) {
    if (e->full) return;
    int32_t d = (int32_t)(e->p - (at + 4));
    memcpy(at, &d, 4);
}

static void return_exit(Emit *e, uint64_t a, uint64_t b) {
    mov_imm(e, RAX, a);
    mov_imm(e, RDX, b);
    byte(e, 0xC3);
}
/// Returns to the handlers at instruction i.
static void return_to(Emit *e, const struct X86FastInst *i) { return_exit(e, (uintptr_t)i, 0); }
/// Leaves the block by branch instruction i to `target` (the instructions after i, i->tail of
/// them, did not run).
static uint64_t left_by(const struct X86FastInst *i) { return 1 + (uint64_t)i->tail; }

/// An exit to RIP `target` (a branch's, known here) that x86jit_chain can later send straight into
/// the successor's code: a JMP (to the return that follows it, until patched), then a return that
/// also leaves the JMP's address in jit->run.exit for x86fast_run to patch.
static void chainable_exit(Emit *e, const struct X86Jit *jit, uint64_t target, uint64_t b) {
    uint8_t *jmp = e->p;
    byte(e, 0xE9);
    u32(e, 0);
    mov_imm(e, R11, (uintptr_t)&jit->run.exit);
    mov_imm(e, RAX, (uintptr_t)jmp);
    store64(e, RAX, R11, 0);
    return_exit(e, target, b);
}
enum { CC_NE = 5, CC_A = 7, CC_LE = 14 };
/// Marks an exit (in Emit.exits) whose target is known here, for chainable_exit.
#define CHAINABLE (1ull << 63)

// MARK: guest memory

/// RAX = the host address of a `size`-byte access at the linear address in RAX, through the TLB
/// (the write tag for a write), or an exit to `inst` when the entry does not hold the page of the
/// access's last byte (which also rules out a page crossing: see lookup_host in x86fast.c).
static void tlb_lookup(Emit *e, unsigned size, int write, const struct X86FastInst *inst) {
    op_mem(e, 8, 0x8D, 0x8D, RCX, RAX, (int32_t)size - 1);   // lea rcx, [rax + size - 1]
    shift_imm(e, 8, S_SHR, RCX, 12);
    mov_rr(e, R8, RAX);
    shift_imm(e, 8, S_SHR, R8, 12);
    alu_imm(e, 4, A_AND, R8, 1023);
    rex(e, 1, R8, R8, 0);                                    // imul r8, r8, sizeof entry
    byte(e, 0x6B);
    byte(e, (uint8_t)(0xC0 | (R8 & 7) << 3 | (R8 & 7)));
    byte(e, (uint8_t)sizeof(struct X86FastTLB));
    alu_rr(e, 8, A_ADD, R8, TLBR);
    op_mem(e, 8, 0x3A, 0x3B, RCX, R8, write ? 8 : 0);        // cmp rcx, [r8 + tag]
    jcc_exit(e, CC_NE, (uintptr_t)inst, 0);
    op_mem(e, 8, 0x02, 0x03, RAX, R8, 24);                   // add rax, [r8 + addend]
}

/// RAX = the effective address of i's memory operand (64-bit addressing: x86fast_handler leaves
/// 32-bit addressing to Swift), as effective_address in x86fast.c.
static void effective_address(Emit *e, const struct X86FastInst *i) {
    if (i->base != 16) load64(e, RAX, REGS, i->base * 8);
    else mov_imm(e, RAX, 0);
    if (i->index != 16) {
        load64(e, RCX, REGS, i->index * 8);
        if (i->scale) shift_imm(e, 8, S_SHL, RCX, i->scale);
        alu_rr(e, 8, A_ADD, RAX, RCX);
    }
    if (i->disp) {
        if (fits32(i->disp)) alu_imm(e, 8, A_ADD, RAX, (uint32_t)i->disp);
        else { mov_imm(e, RCX, i->disp); alu_rr(e, 8, A_ADD, RAX, RCX); }
    }
}

/// RAX = the host address of i's memory operand (lookup_host in x86fast.c): FS and GS add their
/// base after the check against the segment's fast-path end.
static void host_address(Emit *e, const struct X86Jit *jit, const struct X86FastInst *i, unsigned size, int write) {
    effective_address(e, i);
    if (i->seg >= 4) {
        mov_imm(e, R11, (uintptr_t)&jit->segEnd[i->seg]);
        op_mem(e, 8, 0x8D, 0x8D, RCX, RAX, (int32_t)size);  // lea rcx, [rax + size]
        op_mem(e, 8, 0x3A, 0x3B, RCX, R11, 0);                // cmp rcx, [segEnd]
        jcc_exit(e, CC_A, (uintptr_t)i, 0);
        mov_imm(e, R11, (uintptr_t)&jit->segBase[i->seg]);
        op_mem(e, 8, 0x02, 0x03, RAX, R11, 0);                // add rax, [segBase]
    }
    tlb_lookup(e, size, write, i);
}

/// Pushes R9 (the stack slot through the TLB, which uses RAX, RCX and R8, or an exit to i),
/// then RSP -= 8.
static void push_r9(Emit *e, const struct X86FastInst *i) {
    load64(e, RAX, REGS, 4 * 8);
    alu_imm(e, 8, A_SUB, RAX, 8);
    tlb_lookup(e, 8, 1, i);
    store64(e, R9, RAX, 0);
    load64(e, RCX, REGS, 4 * 8);
    alu_imm(e, 8, A_SUB, RCX, 8);
    store64(e, RCX, REGS, 4 * 8);
}
/// Pops into R9 (or an exit to i), then RSP += 8 + `release` (RET imm16).
static void pop_r9(Emit *e, const struct X86FastInst *i, uint32_t release) {
    load64(e, RAX, REGS, 4 * 8);
    tlb_lookup(e, 8, 0, i);
    load64(e, R9, RAX, 0);
    load64(e, RCX, REGS, 4 * 8);
    alu_imm(e, 8, A_ADD, RCX, 8 + release);
    store64(e, RCX, REGS, 4 * 8);
}

// MARK: lazy flags

static void lazy_op(Emit *e, unsigned kind, unsigned size) {
    rex(e, 0, 0, LAZY, 0);   // mov dword [lazy], imm32
    byte(e, 0xC7);
    modrm_mem(e, 0, LAZY, L_OP);
    u32(e, kind << 2 | SIZECODE(size));
}
/// set_lazy / set_logic of x86fast.c from host registers.
static void lazy_store(Emit *e, unsigned kind, unsigned size, int res, int dst, int src) {
    lazy_op(e, kind, size);
    store64(e, res, LAZY, L_RES);
    if (kind == K_LOGIC) return;
    store64(e, dst, LAZY, L_DST);
    store64(e, src, LAZY, L_SRC);
}

/// What the code knows about the lazy flags while compiling: which kind of instruction in this
/// block last wrote them, and at what size (kind 0: not known, or not one a lone Jcc can use).
struct FlagWriter { unsigned kind, size; };

// MARK: instructions

static void carry_to(Emit *e, const struct FlagWriter *fw, const struct X86FastInst *i, int h);

/// Where register `code` is for an access of `size` bytes: byte registers are byte offsets into
/// the register file (AH is 1), the others 8-byte slots.
static int32_t slot(unsigned code, unsigned size) { return size == 1 ? (int32_t)code : (int32_t)code * 8; }
/// set_reg: a 32-bit write clears the upper half (the value is zero-extended), 8- and 16-bit
/// writes keep the rest.
static void set_reg(Emit *e, unsigned size, int h, unsigned code) {
    if (size >= 4) store64(e, h, REGS, slot(code, size));
    else store_n(e, size, h, REGS, slot(code, size));
}

/// An ALU operation (kind `k`: add or adc sbb and sub xor cmp) in form `form` (rmr rrm rmi) at
/// `size` bytes, on memory or registers: ALU_RM / ALU_R_RM in x86fast.c.
static int alu(Emit *e, const struct X86Jit *jit, const struct X86FastInst *i, unsigned k, unsigned form, unsigned size,
               int isMem, struct FlagWriter *fw) {
    if (isMem && (i->flags & F_LOCK)) return 0;   // LOCK: locked_rmw
    if (size != 1 && size != 2 && size != 4 && size != 8) return 0;
    int carry = k == 2 || k == 3;   // ADC, SBB: CF into R8 first (it may exit), then into the host's CF
    if (form == 1) {   // reg op= r/m
        if (isMem) { host_address(e, jit, i, size, 0); mov_rr(e, R9, RAX); }
        if (carry) carry_to(e, fw, i, R8);
        if (isMem) load_zx(e, size, RCX, R9, 0);
        else load_zx(e, size, RCX, REGS, slot(i->rm, size));
        load_zx(e, size, R10, REGS, slot(i->reg, size));
    } else {           // r/m op= reg or imm
        if (isMem) { host_address(e, jit, i, size, k != A_CMP); mov_rr(e, R9, RAX); }
        if (carry) carry_to(e, fw, i, R8);
        if (isMem) load_zx(e, size, R10, R9, 0);
        else load_zx(e, size, R10, REGS, slot(i->rm, size));
        if (form == 0) load_zx(e, size, RCX, REGS, slot(i->reg, size));
        else mov_imm(e, RCX, i->imm & MASK(size));
    }
    mov_rr(e, R11, R10);
    if (carry) { rex(e, 0, 0, R8, 0); byte(e, 0x0F); byte(e, 0xBA); byte(e, (uint8_t)(0xC0 | 4 << 3 | (R8 & 7))); byte(e, 0); }   // bt r8d, 0
    alu_rr(e, size, k == A_CMP ? A_SUB : k, R11, RCX);
    unsigned kind = k == A_ADD ? K_ADD : k == 2 ? K_ADC : k == 3 ? K_SBB : (k == A_SUB || k == A_CMP) ? K_SUB : K_LOGIC;
    if (carry) store64(e, R8, LAZY, L_CIN);
    lazy_store(e, kind, size, R11, R10, RCX);
    fw->kind = kind; fw->size = size;
    if (k == A_CMP) return 1;
    if (form == 1) set_reg(e, size, R11, i->reg);
    else if (isMem) store_n(e, size, R11, R9, 0);
    else set_reg(e, size, R11, i->rm);
    return 1;
}

/// R10 = the r/m operand of `size` bytes (register or memory), zero-extended.
static void read_rm(Emit *e, const struct X86Jit *jit, const struct X86FastInst *i, unsigned size, int isMem) {
    if (isMem) { host_address(e, jit, i, size, 0); load_zx(e, size, R10, RAX, 0); }
    else load_zx(e, size, R10, REGS, slot(i->rm, size));
}

/// The host flags of the lazy flags' writer, `fw`, by redoing its operation on the operands it
/// left in the lazy fields, in scratch register h; 0 when the writer is not known here.
static int writer_flags(Emit *e, const struct FlagWriter *fw, int h) {
    unsigned size = fw->size;
    switch (fw->kind) {
    case K_INC: case K_DEC:   // all but CF, which INC/DEC keep (writer_known)
        op_mem(e, size, 0x8A, 0x8B, h, LAZY, L_DST);
        if (size == 2) byte(e, 0x66);
        rex(e, size == 8, 0, h, size == 1 && needs_rex8(h));
        byte(e, size == 1 ? 0xFE : 0xFF);
        byte(e, (uint8_t)(0xC0 | (fw->kind == K_DEC) << 3 | (h & 7)));
        return 1;
    case K_SUB:
        op_mem(e, size, 0x8A, 0x8B, h, LAZY, L_DST);
        op_mem(e, size, 0x3A, 0x3B, h, LAZY, L_SRC);   // cmp h, [src]
        return 1;
    case K_ADD:
        op_mem(e, size, 0x8A, 0x8B, h, LAZY, L_DST);
        op_mem(e, size, 0x02, 0x03, h, LAZY, L_SRC);   // add h, [src]
        return 1;
    case K_LOGIC:
        op_mem(e, size, 0x8A, 0x8B, h, LAZY, L_RES);
        test_rr(e, size, h, h);
        return 1;
    default:
        return 0;
    }
}

/// Whether condition cc can be had from the flags' writer `fw` (writer_flags): INC and DEC leave
/// CF as it was, so not the conditions that read it (B, AE, BE, A).
static int writer_known(const struct FlagWriter *fw, unsigned cc) {
    switch (fw->kind) {
    case K_SUB: case K_ADD: case K_LOGIC: return 1;
    case K_INC: case K_DEC: return ((cc & 15) >> 1) != 1 && ((cc & 15) >> 1) != 3;
    default: return 0;
    }
}

/// setcc into the byte of h (0F 90+cc).
static void setcc(Emit *e, unsigned cc, int h) {
    rex(e, 0, 0, h, needs_rex8(h));
    byte(e, 0x0F); byte(e, (uint8_t)(0x90 | cc)); byte(e, (uint8_t)(0xC0 | (h & 7)));
}
enum { CC_B = 2, CC_E = 4 };

/// The byte of h = (a < b) or (a == b and cin), after cmp a, b: ADC's and SBB's carry with a carry in.
static void below_or_equal_with_cin(Emit *e, int h) {
    setcc(e, CC_B, h);
    setcc(e, CC_E, RAX);
    op_mem(e, 1, 0x22, 0x23, RAX, LAZY, L_CIN);   // and al, [cin]
    op_rr(e, 1, 0x08, 0x09, RAX, h);              // or hb, al
}

/// h = CF (0 or 1) from the lazy flags, as carry_flag in x86fast.c: worked out here when the
/// writer is known, else by its kind at run time; an exit to i when the flags are in RFLAGS
/// (no lazy kind), which the handlers read. Uses RAX besides h.
static void carry_to(Emit *e, const struct FlagWriter *fw, const struct X86FastInst *i, int h) {
    uint8_t *done[8];
    int n = 0;
    unsigned kind = fw->kind;
    if (kind == 0) {   // run-time dispatch on the kind
        op_mem(e, 4, 0x8A, 0x8B, RAX, LAZY, L_OP);
        shift_imm(e, 4, S_SHR, RAX, 2);
    }
    // One case: `k` (tested at run time when the kind is not known here) and its computation.
#define CARRY_CASE(k, body) \
    if (kind == 0 || kind == (k)) { \
        uint8_t *next_ = NULL; \
        if (kind == 0) { byte(e, 0x83); byte(e, 0xF8); byte(e, (k)); next_ = jump8(e, CC_NE); } \
        body; \
        if (next_) { done[n++] = jump32(e); patch8(e, next_); } \
    }
    CARRY_CASE(K_SUB, { load64(e, h, LAZY, L_DST); op_mem(e, 8, 0x3A, 0x3B, h, LAZY, L_SRC); setcc(e, CC_B, h); })   // dst < src
    CARRY_CASE(K_ADD, { load64(e, h, LAZY, L_RES); op_mem(e, 8, 0x3A, 0x3B, h, LAZY, L_DST); setcc(e, CC_B, h); })   // res < dst
    CARRY_CASE(K_LOGIC, { mov_imm(e, h, 0); })
    CARRY_CASE(K_ADC, { load64(e, h, LAZY, L_RES); op_mem(e, 8, 0x3A, 0x3B, h, LAZY, L_DST); below_or_equal_with_cin(e, h); })
    CARRY_CASE(K_SBB, { load64(e, h, LAZY, L_DST); op_mem(e, 8, 0x3A, 0x3B, h, LAZY, L_SRC); below_or_equal_with_cin(e, h); })
#undef CARRY_CASE
    if (kind == 0 || kind == K_INC || kind == K_DEC) {   // INC, DEC, MUL keep CF in cin; SHIFT's is cin != 0
        if (kind == 0) {
            byte(e, 0x83); byte(e, 0xF8); byte(e, K_SHIFT);
            uint8_t *notShift = jump8(e, CC_NE);
            load64(e, h, LAZY, L_CIN);
            test_rr(e, 8, h, h);
            setcc(e, CC_NE, h);
            done[n++] = jump32(e);
            patch8(e, notShift);
            byte(e, 0x83); byte(e, 0xE8); byte(e, K_INC);   // sub eax, K_INC: INC 0, DEC 1, MUL 3
            byte(e, 0x83); byte(e, 0xF8); byte(e, K_MUL - K_INC);
            jcc_exit(e, CC_A, (uintptr_t)i, 0);   // no kind (RFLAGS): the handlers
        }
        load64(e, h, LAZY, L_CIN);
        alu_imm(e, 4, A_AND, h, 1);
    }
    for (int k = 0; k < n; k++) patch32(e, done[k]);
    if (kind != K_INC && kind != K_DEC) {
        rex(e, 0, h, h, needs_rex8(h)); byte(e, 0x0F); byte(e, 0xB6); byte(e, (uint8_t)(0xC0 | (h & 7) << 3 | (h & 7)));   // movzx h32, hb
    }
}

/// TEST r/m, src: set_logic of their AND (src already in RCX, masked).
static void test_logic(Emit *e, unsigned size, struct FlagWriter *fw) {
    mov_rr(e, R11, R10);
    alu_rr(e, size, A_AND, R11, RCX);
    lazy_store(e, K_LOGIC, size, R11, 0, 0);
    fw->kind = K_LOGIC; fw->size = size;
}

/// CMP r/m, src: set_lazy of their SUB (the r/m operand in R10, src in RCX, masked), whose host
/// flags are the guest's.
static void compare_sub(Emit *e, unsigned size, struct FlagWriter *fw) {
    mov_rr(e, R11, R10);
    alu_rr(e, size, A_SUB, R11, RCX);
    lazy_store(e, K_SUB, size, R11, R10, RCX);
    fw->kind = K_SUB; fw->size = size;
}

/// The branch of a fused compare (host flags just set by the compare): taken leaves the block.
static void fused_branch(Emit *e, const struct X86FastInst *i) { jcc_exit(e, i->aux & 15, i->imm, left_by(i) | CHAINABLE); }

/// A shift's flags and result once its last step is done (shift_fast in x86fast.c): `src` holds
/// the value before that step, `res` the result; CF goes through R9, OF through `of` (0 for
/// SAR), and `zero` is a free register; the result goes back to the register at `slot`.
static void shift_done(Emit *e, unsigned kind, unsigned size, int src, int res, int of, int zero, int32_t slot) {
    unsigned msb = size * 8 - 1;
    mov_rr(e, R9, src);
    if (kind == S_SHL) shift_imm(e, size, S_SHR, R9, msb);
    else alu_imm(e, 4, A_AND, R9, 1);
    if (kind == S_SAR) {
        mov_imm(e, of, 0);
    } else {
        mov_rr(e, of, src);
        alu_rr(e, size, A_XOR, of, res);
        shift_imm(e, size, S_SHR, of, msb);
    }
    store64(e, R9, LAZY, L_CIN);
    lazy_op(e, K_SHIFT, size);
    store64(e, res, LAZY, L_RES);
    store64(e, of, LAZY, L_DST);
    mov_imm(e, zero, 0);
    store64(e, zero, LAZY, L_SRC);
    store64(e, res, REGS, slot);
}

/// SHL/SHR/SAR of a 32/64-bit register by CL (shift_fast in x86fast.c, the count known only at
/// run time): a zero count changes no flags, only a 32-bit register's upper half.
static int shift_cl(Emit *e, const struct X86FastInst *i, unsigned size, struct FlagWriter *fw) {
    unsigned kind = i->aux;
    int32_t slot = i->rm * 8;
    load_zx(e, 4, RCX, REGS, 1 * 8);
    alu_imm(e, 4, A_AND, RCX, size == 8 ? 0x3F : 0x1F);
    byte(e, 0x0F); byte(e, 0x80 | CC_E);   // jz: count 0
    uint8_t *zero = e->p;
    u32(e, 0);
    alu_imm(e, 4, A_SUB, RCX, 1);
    // R8 = the value before the last step, R10 = the result.
    unsigned w = (kind == S_SAR && size == 4) ? 8 : size;   // SAR of 32 bits works on the sign-extended value
    if (w != size) { rex(e, 1, R8, REGS, 0); byte(e, 0x63); modrm_mem(e, R8, REGS, slot); }   // movsxd r8, [slot]
    else load_zx(e, size, R8, REGS, slot);
    rex(e, w == 8, 0, R8, 0); byte(e, 0xD3); byte(e, (uint8_t)(0xC0 | kind << 3 | (R8 & 7)));   // shift r8, cl
    mov_rr(e, R10, R8);
    shift_imm(e, w, kind, R10, 1);
    if (w != size) op_rr(e, 4, 0x88, 0x89, R10, R10);   // mov r10d, r10d: masked to 32 bits
    shift_done(e, kind, size, R8, R10, R11, RAX, slot);
    uint8_t *done = jump32(e);
    patch32(e, zero);
    if (size == 4) { load_zx(e, 4, RAX, REGS, slot); store64(e, RAX, REGS, slot); }
    patch32(e, done);
    fw->kind = 0;   // K_SHIFT, or unchanged
    return 1;
}

/// SHL/SHR/SAR of a 32/64-bit register by an immediate count (shift_fast in x86fast.c).
static int shift(Emit *e, const struct X86FastInst *i, unsigned size, struct FlagWriter *fw) {
    unsigned kind = i->aux;
    if ((i->flags & F_MEM) || (kind != S_SHL && kind != S_SHR && kind != S_SAR)) return 0;
    if (i->flags & F_COUNT_CL) return shift_cl(e, i, size, fw);
    unsigned n = (unsigned)(i->imm & (size == 8 ? 0x3F : 0x1F));
    int32_t slot = i->rm * 8;
    if (n == 0) {   // no change, but a 32-bit register's upper half is cleared
        if (size == 4) { load_zx(e, 4, RAX, REGS, slot); store64(e, RAX, REGS, slot); }
        return 1;
    }
    // RCX = the value before the last step (`src` there), R8 = the result.
    if (kind == S_SAR && size == 4) {   // sign-extended to 64 bits, as sign_extend does
        rex(e, 1, RCX, REGS, 0);
        byte(e, 0x63);
        modrm_mem(e, RCX, REGS, slot);
        if (n > 1) shift_imm(e, 8, S_SAR, RCX, n - 1);
        mov_rr(e, R8, RCX);
        shift_imm(e, 8, S_SAR, R8, 1);
        op_rr(e, 4, 0x88, 0x89, R8, R8);   // mov r8d, r8d: the result masked to 32 bits
    } else {
        load_zx(e, size, RCX, REGS, slot);
        if (n > 1) shift_imm(e, size, kind, RCX, n - 1);
        mov_rr(e, R8, RCX);
        shift_imm(e, size, kind, R8, 1);
    }
    shift_done(e, kind, size, RCX, R8, R10, R11, slot);
    fw->kind = 0;
    return 1;
}

/// Compiles instruction i: 1, or 2 when it is the block's final branch (which returns), or 0 (and
/// nothing emitted) when it is one the handlers must run.
static int instruction(Emit *e, const struct X86Jit *jit, const struct X86FastInst *i, struct FlagWriter *fw) {
    unsigned h = i->fast;
    // The sized forms (rmr4 rrm4 rmi4 rmr8 rrm8 rmi8 per kind), memory and register-only, and
    // the forms of any size (rmr rrm rmi per kind).
    if (h >= X86F_ADD_RMR4 && h <= X86F_CMP_RMI8)
        return alu(e, jit, i, (h - X86F_ADD_RMR4) / 6, (h - X86F_ADD_RMR4) % 3, (h - X86F_ADD_RMR4) % 6 < 3 ? 4 : 8, 1, fw);
    if (h >= X86F_ADD_RMR4_R && h <= X86F_CMP_RMI8_R)
        return alu(e, jit, i, (h - X86F_ADD_RMR4_R) / 6, (h - X86F_ADD_RMR4_R) % 3, (h - X86F_ADD_RMR4_R) % 6 < 3 ? 4 : 8, 0, fw);
    int isMem = (i->flags & F_MEM) != 0;
    if (h >= X86F_ADD_RMR && h <= X86F_CMP_RMI)
        return alu(e, jit, i, (h - X86F_ADD_RMR) / 3, (h - X86F_ADD_RMR) % 3, i->osz, isMem, fw);
    unsigned size;
    switch (h) {
    case X86F_NOP:
        return 1;
    case X86F_MOV_RMR4_R: load_zx(e, 4, RAX, REGS, i->reg * 8); store64(e, RAX, REGS, i->rm * 8); return 1;
    case X86F_MOV_RRM4_R: load_zx(e, 4, RAX, REGS, i->rm * 8); store64(e, RAX, REGS, i->reg * 8); return 1;
    case X86F_MOV_RMR8_R: load64(e, RAX, REGS, i->reg * 8); store64(e, RAX, REGS, i->rm * 8); return 1;
    case X86F_MOV_RRM8_R: load64(e, RAX, REGS, i->rm * 8); store64(e, RAX, REGS, i->reg * 8); return 1;
    case X86F_MOV_RMR4: case X86F_MOV_RMR8:   // memory (x86fast_handler)
        size = h == X86F_MOV_RMR4 ? 4 : 8;
        host_address(e, jit, i, size, 1);
        load64(e, RCX, REGS, i->reg * 8);
        store_n(e, size, RCX, RAX, 0);
        return 1;
    case X86F_MOV_RRM4: case X86F_MOV_RRM8:
        size = h == X86F_MOV_RRM4 ? 4 : 8;
        host_address(e, jit, i, size, 0);
        load_zx(e, size, RCX, RAX, 0);
        store64(e, RCX, REGS, i->reg * 8);
        return 1;
    case X86F_MOV_RI4: mov_imm(e, RAX, i->imm & M32); store64(e, RAX, REGS, i->reg * 8); return 1;
    case X86F_MOV_RI8: mov_imm(e, RAX, i->imm); store64(e, RAX, REGS, i->reg * 8); return 1;
    case X86F_MOV_RMI4: case X86F_MOV_RMI8: {
        size = h == X86F_MOV_RMI4 ? 4 : 8;
        uint64_t v = i->imm & MASK(size);
        if (isMem) {
            host_address(e, jit, i, size, 1);
            mov_imm(e, RCX, v);
            store_n(e, size, RCX, RAX, 0);
        } else {
            mov_imm(e, RAX, v);
            store64(e, RAX, REGS, i->rm * 8);
        }
        return 1;
    }
    case X86F_TEST_RMR4: case X86F_TEST_RMR8: case X86F_TEST_RMR4_R: case X86F_TEST_RMR8_R:
        size = (h == X86F_TEST_RMR4 || h == X86F_TEST_RMR4_R) ? 4 : 8;
        read_rm(e, jit, i, size, h == X86F_TEST_RMR4 || h == X86F_TEST_RMR8);
        load_zx(e, size, RCX, REGS, i->reg * 8);
        test_logic(e, size, fw);
        return 1;
    case X86F_TEST_RMI4: case X86F_TEST_RMI8:
        size = h == X86F_TEST_RMI4 ? 4 : 8;
        read_rm(e, jit, i, size, isMem);
        mov_imm(e, RCX, i->imm & MASK(size));
        test_logic(e, size, fw);
        return 1;
    case X86F_MOV_RMR: case X86F_MOV_RRM: case X86F_MOV_RMI: case X86F_MOV_RI:   // any size
        size = i->osz;
        if (size != 1 && size != 2 && size != 4 && size != 8) return 0;
        if (h == X86F_MOV_RI) { mov_imm(e, RCX, i->imm & MASK(size)); set_reg(e, size, RCX, i->reg); return 1; }
        if (h == X86F_MOV_RRM) {
            read_rm(e, jit, i, size, isMem);
            set_reg(e, size, R10, i->reg);
            return 1;
        }
        if (isMem) host_address(e, jit, i, size, 1);
        if (h == X86F_MOV_RMI) mov_imm(e, RCX, i->imm & MASK(size));
        else load_zx(e, size, RCX, REGS, slot(i->reg, size));
        if (isMem) store_n(e, size, RCX, RAX, 0);
        else set_reg(e, size, RCX, i->rm);
        return 1;
    case X86F_TEST_RMR: case X86F_TEST_RMI:
        size = i->osz;
        if (size != 1 && size != 2 && size != 4 && size != 8) return 0;
        read_rm(e, jit, i, size, isMem);
        if (h == X86F_TEST_RMI) mov_imm(e, RCX, i->imm & MASK(size));
        else load_zx(e, size, RCX, REGS, slot(i->reg, size));
        test_logic(e, size, fw);
        return 1;
    case X86F_SETCC: {   // the condition from the flags' writer, into a byte register or memory
        if (!writer_known(fw, i->aux)) return 0;
        if (isMem) { host_address(e, jit, i, 1, 1); mov_rr(e, R9, RAX); }
        writer_flags(e, fw, R10);
        byte(e, 0x0F); byte(e, (uint8_t)(0x90 | (i->aux & 15))); byte(e, 0xC1);   // setcc cl
        if (isMem) store_n(e, 1, RCX, R9, 0);
        else store_n(e, 1, RCX, REGS, slot(i->rm, 1));
        return 1;
    }
    case X86F_CMOVCC: {   // the source is read whether or not it moves; 32 bits clear the upper half
        size = i->osz;
        if ((size != 4 && size != 8) || !writer_known(fw, i->aux)) return 0;
        if (isMem) { host_address(e, jit, i, size, 0); load_zx(e, size, RCX, RAX, 0); }
        else load_zx(e, size, RCX, REGS, i->rm * 8);
        load_zx(e, size, RAX, REGS, i->reg * 8);
        writer_flags(e, fw, R10);
        byte(e, 0x48); byte(e, 0x0F); byte(e, (uint8_t)(0x40 | (i->aux & 15))); byte(e, 0xC1);   // cmovcc rax, rcx
        store64(e, RAX, REGS, i->reg * 8);
        return 1;
    }
    case X86F_NOT: case X86F_NEG: {   // NOT (no flags) and NEG (the flags of 0 - d), not LOCKed
        size = i->osz;
        if ((size != 1 && size != 2 && size != 4 && size != 8) || (isMem && (i->flags & F_LOCK))) return 0;
        if (isMem) { host_address(e, jit, i, size, 1); mov_rr(e, R9, RAX); load_zx(e, size, R10, R9, 0); }
        else load_zx(e, size, R10, REGS, slot(i->rm, size));
        if (h == X86F_NOT) {
            mov_rr(e, R11, R10);
            if (size == 2) byte(e, 0x66);
            rex(e, size == 8, 0, R11, 0);
            byte(e, size == 1 ? 0xF6 : 0xF7);
            byte(e, (uint8_t)(0xC0 | 2 << 3 | (R11 & 7)));   // not r11
        } else {
            mov_imm(e, R11, 0);
            alu_rr(e, size, A_SUB, R11, R10);
            mov_imm(e, RCX, 0);
            lazy_store(e, K_SUB, size, R11, RCX, R10);
            fw->kind = K_SUB; fw->size = size;
        }
        if (isMem) store_n(e, size, R11, R9, 0);
        else set_reg(e, size, R11, i->rm);
        return 1;
    }
    case X86F_MOVSX8: case X86F_MOVSX16: {   // from a byte (destination size in imm) or a word
        size = h == X86F_MOVSX8 ? (unsigned)i->imm : i->osz;
        unsigned from = h == X86F_MOVSX8 ? 1 : 2;
        if (size != 2 && size != 4 && size != 8) return 0;
        int base = REGS;
        int32_t disp = slot(i->rm, from);
        if (isMem) { host_address(e, jit, i, from, 0); base = RAX; disp = 0; }
        rex(e, 1, RCX, base, 0);
        byte(e, 0x0F);
        byte(e, from == 1 ? 0xBE : 0xBF);   // movsx rcx, byte/word
        modrm_mem(e, RCX, base, disp);
        if (size == 4) op_rr(e, 4, 0x88, 0x89, RCX, RCX);   // mov ecx, ecx: set_reg's 32-bit write
        set_reg(e, size, RCX, i->reg);
        return 1;
    }
    case X86F_CMPXCHG: {   // memory, 32/64 bits, naturally aligned: the host's LOCK CMPXCHG (op_cmpxchg)
        size = i->osz;
        if (!isMem || (size != 4 && size != 8)) return 0;
        host_address(e, jit, i, size, 1);
        byte(e, 0xA8); byte(e, (uint8_t)(size - 1));   // test al, size - 1
        jcc_exit(e, CC_NE, (uintptr_t)i, 0);
        mov_rr(e, R9, RAX);
        load_zx(e, size, RAX, REGS, 0);                // the accumulator
        mov_rr(e, R10, RAX);
        load_zx(e, size, RCX, REGS, i->reg * 8);
        byte(e, 0xF0);                                  // lock cmpxchg [r9], rcx
        rex(e, size == 8, RCX, R9, 0);
        byte(e, 0x0F); byte(e, 0xB1);
        modrm_mem(e, RCX, R9, 0);
        byte(e, 0x74);                                  // jz: stored, RAX keeps its value
        uint8_t *skip = e->p;
        byte(e, 0);
        store64(e, RAX, REGS, 0);                       // else RAX = what memory held (zero-extended)
        if (!e->full) *skip = (uint8_t)(e->p - (skip + 1));
        mov_rr(e, R11, R10);
        alu_rr(e, size, A_SUB, R11, RAX);
        lazy_store(e, K_SUB, size, R11, R10, RAX);
        fw->kind = K_SUB; fw->size = size;
        return 1;
    }
    case X86F_INC: case X86F_DEC: case X86F_INC4: case X86F_DEC4: case X86F_INC8: case X86F_DEC8: {
        // INC_DEC in x86fast.c: CF kept (into cin), the rest from d +/- 1.
        int dec = h == X86F_DEC || h == X86F_DEC4 || h == X86F_DEC8;
        size = (h == X86F_INC4 || h == X86F_DEC4) ? 4 : (h == X86F_INC8 || h == X86F_DEC8) ? 8 : i->osz;
        if ((size != 1 && size != 2 && size != 4 && size != 8) || (isMem && (i->flags & F_LOCK))) return 0;
        if (isMem) { host_address(e, jit, i, size, 1); mov_rr(e, R8, RAX); }
        carry_to(e, fw, i, R9);   // may exit: before anything is written
        if (isMem) load_zx(e, size, R10, R8, 0);
        else load_zx(e, size, R10, REGS, slot(i->rm, size));
        mov_rr(e, R11, R10);
        if (size == 2) byte(e, 0x66);
        rex(e, size == 8, 0, R11, 0);
        byte(e, size == 1 ? 0xFE : 0xFF);
        byte(e, (uint8_t)(0xC0 | dec << 3 | (R11 & 7)));   // inc/dec r11
        store64(e, R9, LAZY, L_CIN);
        mov_imm(e, RCX, 1);
        lazy_store(e, dec ? K_DEC : K_INC, size, R11, R10, RCX);
        fw->kind = dec ? K_DEC : K_INC; fw->size = size;
        if (isMem) store_n(e, size, R11, R8, 0);
        else set_reg(e, size, R11, i->rm);
        return 1;
    }
    case X86F_IMUL_RRM: case X86F_IMUL_RRMI: {   // IMUL2: 32/64 bits, CF = OF = the product did not fit
        size = i->osz;
        if ((size != 4 && size != 8) || (h == X86F_IMUL_RRMI && size == 8 && !fits32(i->imm))) return 0;
        if (isMem) { host_address(e, jit, i, size, 0); load_zx(e, size, RCX, RAX, 0); }
        else load_zx(e, size, RCX, REGS, i->rm * 8);
        if (h == X86F_IMUL_RRM) {
            load_zx(e, size, R11, REGS, i->reg * 8);
            rex(e, size == 8, R11, RCX, 0); byte(e, 0x0F); byte(e, 0xAF);   // imul r11, rcx
            byte(e, (uint8_t)(0xC0 | (R11 & 7) << 3 | (RCX & 7)));
        } else {
            rex(e, size == 8, R11, RCX, 0); byte(e, 0x69);                  // imul r11, rcx, imm32
            byte(e, (uint8_t)(0xC0 | (R11 & 7) << 3 | (RCX & 7)));
            u32(e, (uint32_t)i->imm);
        }
        rex(e, 0, 0, R9, 0); byte(e, 0x0F); byte(e, 0x90); byte(e, 0xC1);   // seto r9b
        rex(e, 0, R9, R9, 0); byte(e, 0x0F); byte(e, 0xB6); byte(e, (uint8_t)(0xC0 | (R9 & 7) << 3 | (R9 & 7)));
        rex(e, 0, 0, R9, 0); byte(e, 0xF7); byte(e, (uint8_t)(0xC0 | 3 << 3 | (R9 & 7)));   // neg r9d
        alu_imm(e, 4, A_AND, R9, 0x801);                                   // CF | OF, or 0
        store64(e, R9, LAZY, L_CIN);
        lazy_op(e, K_MUL, size);
        store64(e, R11, LAZY, L_RES);
        store64(e, R11, REGS, i->reg * 8);
        fw->kind = 0;
        return 1;
    }
    case X86F_LEA4: case X86F_LEA8:
        effective_address(e, i);
        if (h == X86F_LEA4) op_rr(e, 4, 0x88, 0x89, RAX, RAX);   // mov eax, eax
        store64(e, RAX, REGS, i->reg * 8);
        return 1;
    case X86F_MOVZX8_4: case X86F_MOVZX8_8: case X86F_MOVZX16_4: case X86F_MOVZX16_8:   // memory
        size = (h == X86F_MOVZX8_4 || h == X86F_MOVZX8_8) ? 1 : 2;
        host_address(e, jit, i, size, 0);
        load_zx(e, size, RCX, RAX, 0);
        store64(e, RCX, REGS, i->reg * 8);
        return 1;
    case X86F_MOVZX8_4_R: case X86F_MOVZX8_8_R:   // the source is a byte register: a byte offset
        load_zx(e, 1, RCX, REGS, i->rm);
        store64(e, RCX, REGS, i->reg * 8);
        return 1;
    case X86F_MOVZX16_4_R: case X86F_MOVZX16_8_R:
        load_zx(e, 2, RCX, REGS, i->rm * 8);
        store64(e, RCX, REGS, i->reg * 8);
        return 1;
    case X86F_MOVSXD: {
        if (i->osz != 4 && i->osz != 8) return 0;
        int base = REGS;
        int32_t disp = i->rm * 8;
        if (isMem) { host_address(e, jit, i, 4, 0); base = RAX; disp = 0; }
        if (i->osz == 8) { rex(e, 1, RCX, base, 0); byte(e, 0x63); modrm_mem(e, RCX, base, disp); }
        else load_zx(e, 4, RCX, base, disp);
        store64(e, RCX, REGS, i->reg * 8);
        return 1;
    }
    case X86F_PUSH:
        if (i->osz != 8) return 0;
        load64(e, R9, REGS, i->reg * 8);   // before RSP moves: PUSH RSP stores the old value
        push_r9(e, i);
        return 1;
    case X86F_POP:
        if (i->osz != 8) return 0;
        pop_r9(e, i, 0);
        store64(e, R9, REGS, i->reg * 8);   // after RSP: POP RSP loads RSP
        return 1;
    // The block's final branch: left with the branch's target, as BRANCH in x86fast.c.
    case X86F_JMP:
        chainable_exit(e, jit, i->imm, left_by(i));
        return 2;
    case X86F_CALL:   // pushes the return address (BlockCache keeps it in disp)
        if (i->osz != 8) return 0;
        mov_imm(e, R9, i->disp);
        push_r9(e, i);
        chainable_exit(e, jit, i->imm, left_by(i));
        return 2;
    case X86F_RET:
        if (i->osz != 8) return 0;
        pop_r9(e, i, (uint32_t)i->imm);
        mov_rr(e, RAX, R9);
        mov_imm(e, RDX, left_by(i));
        byte(e, 0xC3);
        return 2;
    case X86F_SHIFT4: return shift(e, i, 4, fw);
    case X86F_SHIFT8: return shift(e, i, 8, fw);
    case X86F_CMPJ_RR4: case X86F_CMPJ_RR8: case X86F_CMPJ_RI4: case X86F_CMPJ_RI8:
        size = (h == X86F_CMPJ_RR4 || h == X86F_CMPJ_RI4) ? 4 : 8;
        load_zx(e, size, R10, REGS, i->rm * 8);
        if (h == X86F_CMPJ_RR4 || h == X86F_CMPJ_RR8) load_zx(e, size, RCX, REGS, i->reg * 8);
        else mov_imm(e, RCX, i->disp & MASK(size));
        compare_sub(e, size, fw);
        fused_branch(e, i);
        return 1;
    case X86F_TESTJ_RR4: case X86F_TESTJ_RR8: case X86F_TESTJ_RR: case X86F_TESTJ_RI:
        size = h == X86F_TESTJ_RR4 ? 4 : h == X86F_TESTJ_RR8 ? 8 : i->osz;
        if (size != 1 && size != 2 && size != 4 && size != 8) return 0;
        load_zx(e, size, R10, REGS, slot(i->rm, size));
        if (h == X86F_TESTJ_RI) mov_imm(e, RCX, i->disp & MASK(size));
        else load_zx(e, size, RCX, REGS, slot(i->reg, size));
        test_logic(e, size, fw);
        fused_branch(e, i);
        return 1;
    case X86F_CMPJ_MI: case X86F_TESTJ_MI:
        size = i->osz;
        if (size != 1 && size != 2 && size != 4 && size != 8) return 0;
        host_address(e, jit, i, size, 0);
        load_zx(e, size, R10, RAX, 0);
        mov_imm(e, RCX, (uint64_t)(int64_t)(int8_t)i->reg & MASK(size));
        if (h == X86F_TESTJ_MI) test_logic(e, size, fw);
        else compare_sub(e, size, fw);
        fused_branch(e, i);
        return 1;
    case X86F_JCC:
        // The flags' writer is earlier in this block: its operation again, from the lazy fields.
        if (!writer_known(fw, i->aux)) return 0;
        writer_flags(e, fw, RAX);
        fused_branch(e, i);
        return 1;
    default:
        return 0;
    }
}

static X86JitCode compile_block(struct X86Jit *jit, const struct X86FastInst *first, int count, int *full);

/// The emitter for new code at the buffer's free space (one per thread: vCPUs compile in parallel).
static Emit *emit_at_free(struct X86Jit *jit) {
    static __thread Emit e;
    e.p = jit->code + jit->used;
    e.end = jit->code + jit->cap;
    e.full = 0;
    e.nexits = 0;
    return &e;
}

X86JitCode x86jit_compile(struct X86Jit *jit, const struct X86FastInst *first, int count) {
    // At most a few hundred bytes an instruction, and its exits; a buffer that turns out to be
    // too full starts over once.
    size_t need = (size_t)(count + 1) * 512 + 3 * 64 * 40;
    if (jit->cap - jit->used < need) x86jit_reset(jit);
    for (int attempt = 0; ; attempt++) {
        int full = 0;
        X86JitCode code = compile_block(jit, first, count, &full);
        if (code || !full || attempt == 1 || jit->used == 0) return code;
        x86jit_reset(jit);
    }
}

/// x86jit_compile's work, at jit->used; sets *full when the buffer ran out.
static X86JitCode compile_block(struct X86Jit *jit, const struct X86FastInst *first, int count, int *full) {
    Emit *const e = emit_at_free(jit);
    uint8_t *start = e->p;
    struct FlagWriter fw = { 0, 0 };
    const struct X86FastInst *i = first;
    int compiled = 0;
    int done = 0;
    while (compiled <= count && (done = instruction(e, jit, i, &fw)) != 0) {
        compiled++;
        if (done == 2) break;   // the block's final branch, which returns by itself
        i++;
    }
    if (compiled < 2) return NULL;   // nothing gained over the handlers
    // Run to the end marker: on to the fall-through RIP, which it keeps.
    if (done != 2) {
        if (i->fast == X86F_END) chainable_exit(e, jit, i->imm, 1);
        else return_to(e, i);
    }
    // The exits, one stub per value.
    for (int k = 0; k < e->nexits; k++) {
        uint8_t *stub = NULL;
        for (int j = 0; j < k; j++) {
            if (e->exits[j].a == e->exits[k].a && e->exits[j].b == e->exits[k].b) {
                int32_t rel;
                memcpy(&rel, e->exits[j].at, 4);
                stub = e->exits[j].at + 4 + rel;
                break;
            }
        }
        if (!stub) {
            stub = e->p;
            if (e->exits[k].b & CHAINABLE) chainable_exit(e, jit, e->exits[k].a, e->exits[k].b & ~CHAINABLE);
            else return_exit(e, e->exits[k].a, e->exits[k].b);
        }
        int32_t rel = (int32_t)(stub - (e->exits[k].at + 4));
        memcpy(e->exits[k].at, &rel, 4);
    }
    if (e->full) { *full = 1; return NULL; }
    jit->used = (size_t)(e->p - jit->code + 15) & ~(size_t)15;
    jit->compiled++;
    return (X86JitCode)(void *)start;
}

void x86jit_chain(struct X86Jit *jit, uint8_t *exit, const struct X86FastBlock *next, int64_t skipped, X86JitCode code,
                  uint64_t pc, const uint32_t *gen, const uint32_t *gen2) {
    // [a successor on another page: still_valid's checks, each failure the exit's own return]
    // mov r11, &run; if countdown <= 1 the exit's own return (after the JMP); else countdown -= 1,
    // retired += next's count - skipped, run.block = next, on into next's code. (As the chaining
    // step in x86fast_run.)
    Emit *const e = emit_at_free(jit);
    uint8_t *start = e->p;
    uint8_t *fail[5];
    int nfail = 0;
    if (gen) {
        // pc's page in the instruction TLB at next's physical page, and next's pages at its generations.
        int32_t entry = (int32_t)(((pc >> 12) & 1023) * sizeof(struct X86FastTLB));
        load64(e, RAX, TLBR, entry + (int32_t)offsetof(struct X86FastTLB, xtag));
        mov_imm(e, RCX, pc >> 12);
        alu_rr(e, 8, A_CMP, RAX, RCX);
        byte(e, 0x0F); byte(e, 0x80 | CC_NE); fail[nfail++] = e->p; u32(e, 0);
        load64(e, RAX, TLBR, entry + (int32_t)offsetof(struct X86FastTLB, physPage));
        shift_imm(e, 8, S_SHL, RAX, 12);
        mov_imm(e, RCX, next->phys & ~0xFFFull);
        alu_rr(e, 8, A_CMP, RAX, RCX);
        byte(e, 0x0F); byte(e, 0x80 | CC_NE); fail[nfail++] = e->p; u32(e, 0);
        const uint32_t *gens[2] = { gen, gen2 };
        const uint32_t want[2] = { next->gen, next->gen2 };
        for (int k = 0; k < 2; k++) {
            if (!gens[k]) continue;
            mov_imm(e, R11, (uintptr_t)gens[k]);
            rex(e, 0, 0, R11, 0); byte(e, 0x81); modrm_mem(e, 7, R11, 0); u32(e, want[k]);   // cmp dword [r11], gen
            byte(e, 0x0F); byte(e, 0x80 | CC_NE); fail[nfail++] = e->p; u32(e, 0);
        }
    }
    mov_imm(e, R11, (uintptr_t)&jit->run);
    rex(e, 1, 0, R11, 0); byte(e, 0x83); modrm_mem(e, 7, R11, (int32_t)offsetof(struct X86JitRun, countdown)); byte(e, 1);
    byte(e, 0x0F); byte(e, 0x80 | CC_LE);
    fail[nfail++] = e->p;
    u32(e, 0);
    rex(e, 1, 0, R11, 0); byte(e, 0xFF); modrm_mem(e, 1, R11, (int32_t)offsetof(struct X86JitRun, countdown));
    rex(e, 1, 0, R11, 0); byte(e, 0x81); modrm_mem(e, 0, R11, (int32_t)offsetof(struct X86JitRun, retired));
    u32(e, (uint32_t)(int32_t)((int64_t)next->guestCount - skipped));
    mov_imm(e, RAX, (uintptr_t)next);
    store64(e, RAX, R11, (int32_t)offsetof(struct X86JitRun, block));
    byte(e, 0xE9);
    uint8_t *rel2 = e->p;
    u32(e, 0);
    if (e->full) return;
    for (int k = 0; k < nfail; k++) {
        int32_t d = (int32_t)((exit + 5) - (fail[k] + 4));
        memcpy(fail[k], &d, 4);
    }
    int32_t d = (int32_t)((uint8_t *)(void *)code - (rel2 + 4));
    memcpy(rel2, &d, 4);
    jit->used = (size_t)(e->p - jit->code + 15) & ~(size_t)15;
    d = (int32_t)(start - (exit + 5));   // the exit's JMP now goes here
    memcpy(exit + 1, &d, 4);
}

void x86jit_reset(struct X86Jit *jit) {
    // The code's pages go back to the host (vmrun's own memory stays bounded by the buffer).
    if (jit->used) madvise(jit->code, jit->cap, MADV_DONTNEED);
    jit->used = 0;
    memset(jit->entry, 0, sizeof(X86JitCode) * jit->blocks);
    memset(jit->hits, 0, sizeof(uint16_t) * jit->blocks);
}

struct X86Jit *x86jit_new(unsigned blocks, unsigned threshold, size_t buffer, const uint64_t *segBase, const uint64_t *segEnd) {
    if (threshold == 0 || buffer < (64u << 10)) return NULL;
    struct X86Jit *jit = calloc(1, sizeof *jit);
    if (!jit) return NULL;
    jit->cap = buffer;
    void *code = mmap(NULL, jit->cap, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    jit->entry = calloc(blocks, sizeof(X86JitCode));
    jit->hits = calloc(blocks, sizeof(uint16_t));
    if (code == MAP_FAILED || !jit->entry || !jit->hits) {
        if (code != MAP_FAILED) munmap(code, jit->cap);
        free(jit->entry); free(jit->hits); free(jit);
        return NULL;
    }
    jit->code = code;
    jit->blocks = blocks;
    jit->threshold = threshold > 0xFFFF ? 0xFFFF : threshold;
    jit->segBase = segBase;
    jit->segEnd = segEnd;
    return jit;
}

uint64_t x86jit_compiled(const struct X86Jit *jit) { return jit ? jit->compiled : 0; }

void x86jit_free(struct X86Jit *jit) {
    if (!jit) return;
    munmap(jit->code, jit->cap);
    free(jit->entry); free(jit->hits); free(jit);
}
