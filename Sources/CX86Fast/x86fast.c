// The fast tier of the x86 interpreter (see Sources/X86/FastTier.swift for why it exists and how
// it is entered). Every handler does exactly what the Swift executor's case for the same operation
// does on its fast path, on the same registers, lazy flags and software TLB; anything else (a TLB
// miss, a page crossing, LOCK, an operand size or mode not handled here, any other operation)
// returns to Swift before the instruction has changed anything, and Swift runs it.
//
// Dispatch is threaded: each handler ends with its own indirect jump to the next handler (GCC's
// labels as values), so the host's branch predictor sees one jump per handler instead of a
// single shared one.
#include "x86fast.h"
#include "x86jit.h"
#include <string.h>

static uint8_t opMap[1024];

void x86fast_map(uint16_t op, uint8_t handler) {
    if (op < 1024) opMap[op] = handler;
}

const uint8_t *x86fast_handlers(void) { return opMap; }

uint8_t x86fast_handler(uint16_t op, uint8_t flags, uint8_t asz) {
    uint8_t h = op < 1024 ? opMap[op] : X86F_EXIT;
    if (flags & 1) return asz == 8 ? h : X86F_EXIT;   // a memory operand (32-bit addressing: Swift's)
    if (h >= X86F_ADD_RMR4 && h <= X86F_CMP_RMI8) {
        // Each ALU kind has six forms (rmr4 rrm4 rmi4 rmr8 rrm8 rmi8), as do their register forms.
        return (uint8_t)(X86F_ADD_RMR4_R + (h - X86F_ADD_RMR4));
    }
    switch (h) {
    case X86F_MOV_RMR4: return X86F_MOV_RMR4_R;
    case X86F_MOV_RRM4: return X86F_MOV_RRM4_R;
    case X86F_MOV_RMR8: return X86F_MOV_RMR8_R;
    case X86F_MOV_RRM8: return X86F_MOV_RRM8_R;
    case X86F_TEST_RMR4: return X86F_TEST_RMR4_R;
    case X86F_TEST_RMR8: return X86F_TEST_RMR8_R;
    case X86F_MOVZX8_4: return X86F_MOVZX8_4_R;
    case X86F_MOVZX16_4: return X86F_MOVZX16_4_R;
    case X86F_MOVZX8_8: return X86F_MOVZX8_8_R;
    case X86F_MOVZX16_8: return X86F_MOVZX16_8_R;
    default: return h;
    }
}

// Lazy flag kinds and DInst flag bits, as in Flags.swift and Ops.swift.
enum { K_NONE = 0, K_ADD = 1, K_ADC = 2, K_SUB = 3, K_SBB = 4, K_LOGIC = 5, K_INC = 6, K_DEC = 7, K_SHIFT = 8, K_MUL = 9 };
enum { F_MEM = 1, F_LOCK = 8, F_COUNT_CL = 64 };
enum { FL_CF = 1, FL_PF = 4, FL_AF = 0x10, FL_ZF = 0x40, FL_SF = 0x80, FL_OF = 0x800 };

#define M32 0xFFFFFFFFull
#define MASK(size) ((size) == 8 ? ~0ull : ((1ull << ((size) * 8)) - 1))
#define SIZECODE(size) ((size) == 1 ? 0u : (size) == 2 ? 1u : (size) == 4 ? 2u : 3u)

static inline uint64_t load_n(const void *h, unsigned size) {
    switch (size) {
    case 1: return *(const uint8_t *)h;
    case 2: { uint16_t v; memcpy(&v, h, 2); return v; }
    case 4: { uint32_t v; memcpy(&v, h, 4); return v; }
    default: { uint64_t v; memcpy(&v, h, 8); return v; }
    }
}

static inline void store_n(void *h, uint64_t v, unsigned size) {
    switch (size) {
    case 1: { uint8_t x = (uint8_t)v; memcpy(h, &x, 1); break; }
    case 2: { uint16_t x = (uint16_t)v; memcpy(h, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy(h, &x, 4); break; }
    default: memcpy(h, &v, 8); break;
    }
}

/// getReg/setReg: 8-bit registers are byte offsets into the register file, the others numbers;
/// a 32-bit write clears the upper half, 8- and 16-bit writes keep the rest.
static inline uint64_t get_reg(const uint64_t *r, unsigned code, unsigned size) {
    switch (size) {
    case 1: return ((const uint8_t *)r)[code];
    case 2: return r[code] & 0xFFFF;
    case 4: return r[code] & M32;
    default: return r[code];
    }
}

static inline void set_reg(uint64_t *r, unsigned code, unsigned size, uint64_t v) {
    switch (size) {
    case 1: ((uint8_t *)r)[code] = (uint8_t)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy((uint8_t *)r + code * 8, &x, 2); break; }
    case 4: r[code] = v & M32; break;
    default: r[code] = v; break;
    }
}

static inline int64_t sign_extend(uint64_t v, unsigned size) {
    unsigned sh = 64 - size * 8;
    return (int64_t)(v << sh) >> sh;
}

static inline uint64_t effective_address(const uint64_t *r, const struct X86FastInst *i) {
    // 64-bit addressing only: x86fast_handler leaves 32-bit addressing (a 0x67 prefix) to Swift.
    return i->disp + r[i->base] + (r[i->index] << i->scale);
}

/// The host address of a memory operand in 64-bit mode when the TLB has the page with the needed
/// tag and the access stays on it (fastHost in Operands.swift); NULL otherwise.
/// (A found flag and an out parameter rather than NULL for a miss, so that the handlers branch on
/// the checks themselves and not once more on the resulting pointer.)
static inline int lookup_host(const struct X86FastCore *c, const struct X86FastTLB *tlb,
                              const struct X86FastInst *i, uint64_t e, unsigned size, int write, void **out) {
    uint64_t lin;
    unsigned seg = i->seg;
    if (__builtin_expect(seg < 4, 1)) {
        lin = e;   // ES, CS, SS, DS: base 0 and no limit in 64-bit mode
    } else {
        if (e + size > c->segEnd[seg]) return 0;
        lin = c->segBase[seg] + e;
    }
    const struct X86FastTLB *t = &tlb[(lin >> 12) & 1023];
    uint64_t tag = write ? t->wtag : t->rtag;
    // Compared with the page of the access's last byte, which also rules out a page crossing:
    // entry k only ever holds pages equal to k modulo 1024, and the last byte's page is lin's
    // page or the next one.
    if (tag != (lin + size - 1) >> 12) return 0;
    *out = (void *)(uintptr_t)(lin + t->addend);
    return 1;
}

static inline void *host_address_at(const struct X86FastCore *c, const struct X86FastTLB *tlb,
                                    const struct X86FastInst *i, uint64_t e, unsigned size, int write) {
    void *h;
    return lookup_host(c, tlb, i, e, size, write, &h) ? h : NULL;
}

static inline void *host_address(const struct X86FastCore *c, const struct X86FastTLB *tlb, const uint64_t *r,
                                 const struct X86FastInst *i, unsigned size, int write) {
    return host_address_at(c, tlb, i, effective_address(r, i), size, write);
}

// MARK: host atomics (LOCK): on naturally aligned operands only; a split one goes to Swift.

#define ALIGNED(h, size) ((((uintptr_t)(h)) & ((size) - 1)) == 0)

/// Compare-and-swap of `size` bytes at `h`: true when *h was *expected and is now `desired`;
/// otherwise *expected becomes the value found.
static inline int cas_n(void *h, unsigned size, uint64_t *expected, uint64_t desired) {
    int ok;
    switch (size) {
    case 1: { uint8_t e = (uint8_t)*expected; ok = __atomic_compare_exchange_n((uint8_t *)h, &e, (uint8_t)desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); *expected = e; break; }
    case 2: { uint16_t e = (uint16_t)*expected; ok = __atomic_compare_exchange_n((uint16_t *)h, &e, (uint16_t)desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); *expected = e; break; }
    case 4: { uint32_t e = (uint32_t)*expected; ok = __atomic_compare_exchange_n((uint32_t *)h, &e, (uint32_t)desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); *expected = e; break; }
    default: ok = __atomic_compare_exchange_n((uint64_t *)h, expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); break;
    }
    return ok;
}

static inline uint64_t fetch_add_n(void *h, unsigned size, uint64_t v) {
    switch (size) {
    case 1: return __atomic_fetch_add((uint8_t *)h, (uint8_t)v, __ATOMIC_SEQ_CST);
    case 2: return __atomic_fetch_add((uint16_t *)h, (uint16_t)v, __ATOMIC_SEQ_CST);
    case 4: return __atomic_fetch_add((uint32_t *)h, (uint32_t)v, __ATOMIC_SEQ_CST);
    default: return __atomic_fetch_add((uint64_t *)h, v, __ATOMIC_SEQ_CST);
    }
}

/// The stack slot at `sp` (stackHost): 8 bytes on one page with the needed tag.
static inline void *stack_address(const struct X86FastTLB *tlb, uint64_t sp, int write) {
    const struct X86FastTLB *t = &tlb[(sp >> 12) & 1023];
    uint64_t tag = write ? t->wtag : t->rtag;
    if (tag != (sp + 7) >> 12) return NULL;   // the slot's last byte's page (see lookup_host)
    return (void *)(uintptr_t)(sp + t->addend);
}

// MARK: lazy flags (Flags.swift)

static inline void set_lazy(struct X86FastLazy *L, unsigned kind, unsigned size, uint64_t res, uint64_t dst, uint64_t src) {
    L->op = kind << 2 | SIZECODE(size);
    L->res = res; L->dst = dst; L->src = src;
}

static inline void set_logic(struct X86FastLazy *L, unsigned size, uint64_t res) {
    L->op = K_LOGIC << 2 | SIZECODE(size);
    L->res = res;
}

static inline uint64_t parity_even(uint64_t v) {
    uint64_t b = v & 0xFF;
    return ((0x6996u >> ((b ^ (b >> 4)) & 0xF)) & 1) ^ 1;
}

__attribute__((noinline)) static uint64_t arith_flags(const struct X86FastLazy *L, uint64_t rflags) {
    unsigned kind = L->op >> 2;
    if (kind == K_NONE) return rflags & (FL_CF | FL_PF | FL_AF | FL_ZF | FL_SF | FL_OF);
    unsigned size = 1u << (L->op & 3);
    uint64_t sb = 1ull << (size * 8 - 1);
    uint64_t res = L->res, dst = L->dst, src = L->src, f = 0;
    if (res == 0) f |= FL_ZF;
    if (res & sb) f |= FL_SF;
    f |= parity_even(res) << 2;
    switch (kind) {
    case K_ADD:
        if (res < dst) f |= FL_CF;
        if ((dst ^ res) & (src ^ res) & sb) f |= FL_OF;
        f |= (dst ^ src ^ res) & FL_AF;
        break;
    case K_ADC:
        if (L->cin ? res <= dst : res < dst) f |= FL_CF;
        if ((dst ^ res) & (src ^ res) & sb) f |= FL_OF;
        f |= (dst ^ src ^ res) & FL_AF;
        break;
    case K_SUB:
        if (dst < src) f |= FL_CF;
        if ((dst ^ src) & (dst ^ res) & sb) f |= FL_OF;
        f |= (dst ^ src ^ res) & FL_AF;
        break;
    case K_SBB:
        if (L->cin ? dst <= src : dst < src) f |= FL_CF;
        if ((dst ^ src) & (dst ^ res) & sb) f |= FL_OF;
        f |= (dst ^ src ^ res) & FL_AF;
        break;
    case K_INC:
        f |= L->cin;
        if ((dst ^ res) & (src ^ res) & sb) f |= FL_OF;
        f |= (dst ^ src ^ res) & FL_AF;
        break;
    case K_DEC:
        f |= L->cin;
        if ((dst ^ src) & (dst ^ res) & sb) f |= FL_OF;
        f |= (dst ^ src ^ res) & FL_AF;
        break;
    case K_SHIFT:
        f |= L->cin | L->dst << 11;
        break;
    case K_MUL:
        f |= L->cin;
        break;
    default:
        break;
    }
    return f;
}

static inline int carry_flag(const struct X86FastLazy *L, uint64_t rflags) {
    switch (L->op >> 2) {
    case K_NONE: return (rflags & FL_CF) != 0;
    case K_SUB: return L->dst < L->src;
    case K_ADD: return L->res < L->dst;
    case K_LOGIC: return 0;
    case K_SHIFT: return L->cin != 0;
    case K_ADC: return L->cin ? L->res <= L->dst : L->res < L->dst;
    case K_SBB: return L->cin ? L->dst <= L->src : L->dst < L->src;
    default: return (L->cin & FL_CF) != 0;   // INC, DEC, MUL keep CF there
    }
}

static inline int cond_from_flags(unsigned cc, uint64_t f) {
    int r;
    switch (cc >> 1) {
    case 0: r = (f & FL_OF) != 0; break;
    case 1: r = (f & FL_CF) != 0; break;
    case 2: r = (f & FL_ZF) != 0; break;
    case 3: r = (f & (FL_CF | FL_ZF)) != 0; break;
    case 4: r = (f & FL_SF) != 0; break;
    case 5: r = (f & FL_PF) != 0; break;
    case 6: r = ((f & FL_SF) != 0) != ((f & FL_OF) != 0); break;
    default: r = (f & FL_ZF) != 0 || (((f & FL_SF) != 0) != ((f & FL_OF) != 0)); break;
    }
    return (cc & 1) ? !r : r;
}

/// Condition `cc` (0-15, the Jcc order) from the lazy state, as `cond` in Flags.swift.
__attribute__((always_inline)) static inline int condition(const struct X86FastLazy *L, uint64_t rflags, unsigned cc) {
    unsigned kind = L->op >> 2;
    if (kind == K_SUB) {
        switch (cc) {
        case 2: return L->dst < L->src;
        case 3: return L->dst >= L->src;
        case 4: return L->dst == L->src;
        case 5: return L->dst != L->src;
        case 6: return L->dst <= L->src;
        case 7: return L->dst > L->src;
        default: break;
        }
    } else if (kind == K_LOGIC) {
        if (cc == 4) return L->res == 0;
        if (cc == 5) return L->res != 0;
    } else if (kind != K_NONE) {
        if (cc == 4) return L->res == 0;
        if (cc == 5) return L->res != 0;
    }
    return cond_from_flags(cc, arith_flags(L, rflags));
}

// MARK: operations

/// ALU kinds in opcode order: add, or, adc, sbb, and, sub, xor, cmp (`alu` in Integer.swift).
static inline uint64_t alu(struct X86FastLazy *L, uint64_t rflags, unsigned kind, uint64_t d, uint64_t s0, unsigned size) {
    uint64_t m = MASK(size), s = s0 & m, res, cy;
    switch (kind) {
    case 0: res = (d + s) & m; set_lazy(L, K_ADD, size, res, d, s); return res;
    case 1: res = d | s; set_logic(L, size, res); return res;
    case 2: cy = carry_flag(L, rflags); res = (d + s + cy) & m; L->cin = cy; set_lazy(L, K_ADC, size, res, d, s); return res;
    case 3: cy = carry_flag(L, rflags); res = (d - s - cy) & m; L->cin = cy; set_lazy(L, K_SBB, size, res, d, s); return res;
    case 4: res = d & s; set_logic(L, size, res); return res;
    case 6: res = d ^ s; set_logic(L, size, res); return res;
    default: res = (d - s) & m; set_lazy(L, K_SUB, size, res, d, s); return res;
    }
}

/// SHL (4), SHR (5), SAR (7) by a count of 1..31/63 (`shiftFast` in Integer.swift).
__attribute__((always_inline)) static inline uint64_t shift_fast(struct X86FastLazy *L, unsigned kind, uint64_t d, uint64_t count, unsigned size) {
    uint64_t msb = size * 8 - 1, m = MASK(size), res, src;
    if (kind == 4) {
        res = (d << count) & m; src = (d << (count - 1)) & m;
        L->cin = (src >> msb) & 1;
    } else if (kind == 5) {
        res = d >> count; src = d >> (count - 1);
        L->cin = src & 1;
    } else {
        int64_t sd = sign_extend(d, size);
        res = (uint64_t)(sd >> count) & m; src = (uint64_t)(sd >> (count - 1));
        L->cin = src & 1;
    }
    set_lazy(L, K_SHIFT, size, res, kind == 7 ? 0 : ((src ^ res) >> msb) & 1, 0);
    return res;
}

/// ROL (0) and ROR (1) by a non-zero count: CF and OF change, the other flags stay, so the lazy
/// state is materialized into RFLAGS (`shiftOp` in Integer.swift).
static inline uint64_t rotate(struct X86FastLazy *L, uint64_t *rflags, unsigned kind, uint64_t d, uint64_t count, unsigned size) {
    const uint64_t arith = FL_CF | FL_PF | FL_AF | FL_ZF | FL_SF | FL_OF;
    uint64_t bits = size * 8, m = MASK(size), msb = bits - 1, c = count % bits, res, cfb;
    uint64_t f = arith_flags(L, *rflags);
    if (kind == 0) {
        res = c == 0 ? d : ((d << c) | (d >> (bits - c))) & m;
        cfb = res & 1;
        f = (f & ~(uint64_t)(FL_CF | FL_OF)) | cfb | ((((res >> msb) ^ cfb) & 1) << 11);
    } else {
        res = c == 0 ? d : ((d >> c) | (d << (bits - c))) & m;
        cfb = (res >> msb) & 1;
        f = (f & ~(uint64_t)(FL_CF | FL_OF)) | cfb | ((((res >> msb) ^ (res >> (msb - 1))) & 1) << 11);
    }
    *rflags = (*rflags & ~arith) | (f & arith);
    L->op = 0;
    return res;
}

static inline void mul_flags(struct X86FastLazy *L, uint64_t low, int overflow, unsigned size) {
    L->cin = overflow ? (FL_CF | FL_OF) : 0;
    L->op = K_MUL << 2 | SIZECODE(size);
    L->res = low;
}

// MARK: atomic read-modify-writes and bit tests (out of line, see their handlers)
//
// Each returns 0, having changed nothing, when Swift must run the instruction (a TLB miss, a split
// operand: host atomics need natural alignment), else 1 with the instruction done.

enum { RMW_INC = 8, RMW_DEC = 9, RMW_NOT = 10, RMW_NEG = 11 };

/// LOCK op [mem]: ALU kinds 0-6 except ADC/SBB (their CF input would change with every retry,
/// Swift runs those), INC, DEC, NOT, NEG; as one host compare-and-swap loop.
__attribute__((noinline)) static int locked_rmw(const struct X86FastCore *c, const struct X86FastTLB *tlb, const uint64_t *r,
                                                const struct X86FastInst *i, unsigned kind, uint64_t src, unsigned size) {
    if (kind == 2 || kind == 3 || kind == 7) return 0;
    void *h = host_address(c, tlb, r, i, size, 1);
    if (!h || !ALIGNED(h, size)) return 0;
    struct X86FastLazy *L = c->lazy;
    uint64_t m = MASK(size), cy = carry_flag(L, *c->rflags), d = load_n(h, size), v;
    for (;;) {
        switch (kind) {
        case RMW_INC: v = (d + 1) & m; break;
        case RMW_DEC: v = (d - 1) & m; break;
        case RMW_NOT: v = ~d & m; break;
        case RMW_NEG: v = (0 - d) & m; break;
        default: v = alu(L, *c->rflags, kind, d, src, size); break;
        }
        if (cas_n(h, size, &d, v)) break;
    }
    if (kind == RMW_INC || kind == RMW_DEC) {
        L->cin = cy;
        set_lazy(L, kind == RMW_INC ? K_INC : K_DEC, size, v, d, 1);
    } else if (kind == RMW_NEG) {
        set_lazy(L, K_SUB, size, v, 0, d);
    }
    return 1;
}

/// CMPXCHG (cmpxchg in StackOps.swift): in memory one host compare-and-swap, LOCK or not; the
/// flags are those of CMP accumulator, old value.
__attribute__((noinline)) static int op_cmpxchg(const struct X86FastCore *c, const struct X86FastTLB *tlb, uint64_t *r,
                                                const struct X86FastInst *i) {
    unsigned size = i->osz;
    uint64_t acc = get_reg(r, 0, size), src = get_reg(r, i->reg, size), cur;
    if (!(i->flags & F_MEM)) {
        cur = get_reg(r, i->rm, size);
        if (acc == cur) set_reg(r, i->rm, size, src); else set_reg(r, 0, size, cur);
    } else {
        void *h = host_address(c, tlb, r, i, size, 1);
        if (!h || !ALIGNED(h, size)) return 0;
        cur = acc;
        if (!cas_n(h, size, &cur, src)) set_reg(r, 0, size, cur);
    }
    set_lazy(c->lazy, K_SUB, size, (acc - cur) & MASK(size), acc, cur);
    return 1;
}

/// XADD (xadd in StackOps.swift): in memory one host fetch-and-add.
__attribute__((noinline)) static int op_xadd(const struct X86FastCore *c, const struct X86FastTLB *tlb, uint64_t *r,
                                             const struct X86FastInst *i) {
    unsigned size = i->osz;
    uint64_t s = get_reg(r, i->reg, size), d;
    if (!(i->flags & F_MEM)) {
        d = get_reg(r, i->rm, size);
        uint64_t v = alu(c->lazy, *c->rflags, 0, d, s, size);
        set_reg(r, i->reg, size, d);
        set_reg(r, i->rm, size, v);
        return 1;
    }
    void *h = host_address(c, tlb, r, i, size, 1);
    if (!h || !ALIGNED(h, size)) return 0;
    d = fetch_add_n(h, size, s) & MASK(size);
    (void)alu(c->lazy, *c->rflags, 0, d, s, size);
    set_reg(r, i->reg, size, d);
    return 1;
}

/// BT (0), BTS (1), BTR (2), BTC (3) (bitTest in Integer.swift): CF = the bit, the other
/// arithmetic flags as they were (materialized into RFLAGS). A register bit offset on a memory
/// operand is signed and may reach outside it.
__attribute__((noinline)) static int op_bit_test(const struct X86FastCore *c, const struct X86FastTLB *tlb, uint64_t *r,
                                                 const struct X86FastInst *i, unsigned bop, int immediate) {
    unsigned size = i->osz;
    if (size < 2) return 0;
    int64_t bits = (int64_t)size * 8;
    uint64_t raw = immediate ? i->imm : get_reg(r, i->reg, size), v, bit;
    if (!(i->flags & F_MEM)) {
        bit = 1ull << (raw & (uint64_t)(bits - 1));
        v = get_reg(r, i->rm, size);
        if (bop) set_reg(r, i->rm, size, bop == 1 ? v | bit : bop == 2 ? v & ~bit : v ^ bit);
    } else {
        uint64_t e = effective_address(r, i);
        if (immediate) {
            bit = 1ull << (raw & (uint64_t)(bits - 1));
        } else {
            int64_t off = sign_extend(raw, size);
            int64_t unitShift = size == 2 ? 4 : size == 4 ? 5 : 6;
            e += (uint64_t)((off >> unitShift) * (int64_t)size);
            e = i->asz == 8 ? e : (i->asz == 4 ? e & M32 : e & 0xFFFF);
            bit = 1ull << (uint64_t)(off & (bits - 1));
        }
        void *h = host_address_at(c, tlb, i, e, size, bop != 0);
        if (!h) return 0;
        if (bop && (i->flags & F_LOCK)) {
            if (!ALIGNED(h, size)) return 0;
            v = load_n(h, size);
            while (!cas_n(h, size, &v, bop == 1 ? v | bit : bop == 2 ? v & ~bit : v ^ bit)) {}
        } else {
            v = load_n(h, size);
            if (bop) store_n(h, bop == 1 ? v | bit : bop == 2 ? v & ~bit : v ^ bit, size);
        }
    }
    const uint64_t arith = FL_CF | FL_PF | FL_AF | FL_ZF | FL_SF | FL_OF;
    uint64_t f = (arith_flags(c->lazy, *c->rflags) & ~(uint64_t)FL_CF) | ((v & bit) != 0 ? FL_CF : 0);
    *c->rflags = (*c->rflags & ~arith) | (f & arith);
    c->lazy->op = 0;
    return 1;
}

/// The decoded, still valid 64-bit block at `pc` whose page is in the instruction TLB, or NULL
/// (peekBlock in BlockCache.swift).
static inline const struct X86FastBlock *peek_block(const struct X86FastCore *c, const struct X86FastTLB *tlb, uint64_t pc) {
    uint64_t page = pc >> 12;
    const struct X86FastTLB *e = &tlb[page & 1023];
    if (e->xtag != page) return NULL;
    uint64_t phys = e->physPage << 12 | (pc & 0xFFF);
    // The block's two-way set (BlockCache.lookup).
    const int32_t *set = c->table + (((pc * 0x9E3779B97F4A7C15ull) >> (64 - c->tableBits)) & ~(uint64_t)1);
    int32_t idx = set[0];
    if (idx < 0 || idx >= *c->infoCount) return NULL;
    const struct X86FastBlock *b = c->infos + idx;
    if (b->vaddr != pc) {
        idx = set[1];
        if (idx < 0 || idx >= *c->infoCount) return NULL;
        b = c->infos + idx;
        if (b->vaddr != pc) return NULL;
    }
    uint64_t codePage = phys >> 12;
    if (b->phys != phys || b->mode != 2) return NULL;
    if ((codePage < c->codePages ? c->codeGen[codePage] : 0) != b->gen) return NULL;
    if (b->phys2 != ~0ull && (b->phys2 < c->codePages ? c->codeGen[b->phys2] : 0) != b->gen2) return NULL;
    return b;
}

/// Whether `b`, a block built since the last flush and seen at `pc` before, is still the valid
/// block there: `pc`'s page is in the instruction TLB at b's physical address, and b's pages keep
/// their generations. (Its RIP and mode cannot have changed: blocks never change once built.)
static inline int still_valid(const struct X86FastCore *c, const struct X86FastTLB *tlb, const struct X86FastBlock *b, uint64_t pc) {
    uint64_t page = pc >> 12;
    const struct X86FastTLB *e = &tlb[page & 1023];
    if (e->xtag != page || (e->physPage << 12 | (pc & 0xFFF)) != b->phys) return 0;
    uint64_t codePage = b->phys >> 12;
    if ((codePage < c->codePages ? c->codeGen[codePage] : 0) != b->gen) return 0;
    if (b->phys2 != ~0ull && (b->phys2 < c->codePages ? c->codeGen[b->phys2] : 0) != b->gen2) return 0;
    return 1;
}

/// The successor of `cur` at `pc` from the lookup table (peek_block), remembered in `cur`: as
/// its first link when it lies on cur's page, with cur's generation, inside one page (the links'
/// rule, linkBlock in BlockCache.swift), else in its exit cache.
static inline const struct X86FastBlock *find_successor(const struct X86FastCore *c, const struct X86FastTLB *tlb,
                                                         struct X86FastBlock *cur, uint64_t pc) {
    const struct X86FastBlock *b = peek_block(c, tlb, pc);
    if (!b) return NULL;
    int32_t idx = (int32_t)(b - c->infos);
    if (((pc ^ cur->vaddr) >> 12) == 0 && (b->phys >> 12) == (cur->phys >> 12) && b->gen == cur->gen && b->phys2 == ~0ull) {
        cur->linkRIP1 = cur->linkRIP0; cur->linkIdx1 = cur->linkIdx0;
        cur->linkRIP0 = pc; cur->linkIdx0 = idx;
    } else {
        cur->exitRIP = pc; cur->exitIdx = idx;
    }
    return b;
}

struct X86FastResult x86fast_run(const struct X86FastCore *c, const struct X86FastInst *p,
                                 const struct X86FastInst *end, const struct X86FastBlock *block, uint64_t pc) {
    // 256 entries, so that any byte in the slot after a block (read but not used, see DISPATCH)
    // stays inside the table; the unused ones go back to Swift.
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Winitializer-overrides"
    static void *const labels[256] = {
        [0 ... 255] = &&bail,
        [X86F_END] = &&h_end,
        [X86F_NOP] = &&h_nop,
        [X86F_ADD_RMR4] = &&h_add_rmr4, [X86F_ADD_RRM4] = &&h_add_rrm4, [X86F_ADD_RMI4] = &&h_add_rmi4,
        [X86F_ADD_RMR8] = &&h_add_rmr8, [X86F_ADD_RRM8] = &&h_add_rrm8, [X86F_ADD_RMI8] = &&h_add_rmi8,
        [X86F_OR_RMR4] = &&h_or_rmr4, [X86F_OR_RRM4] = &&h_or_rrm4, [X86F_OR_RMI4] = &&h_or_rmi4,
        [X86F_OR_RMR8] = &&h_or_rmr8, [X86F_OR_RRM8] = &&h_or_rrm8, [X86F_OR_RMI8] = &&h_or_rmi8,
        [X86F_ADC_RMR4] = &&h_adc_rmr4, [X86F_ADC_RRM4] = &&h_adc_rrm4, [X86F_ADC_RMI4] = &&h_adc_rmi4,
        [X86F_ADC_RMR8] = &&h_adc_rmr8, [X86F_ADC_RRM8] = &&h_adc_rrm8, [X86F_ADC_RMI8] = &&h_adc_rmi8,
        [X86F_SBB_RMR4] = &&h_sbb_rmr4, [X86F_SBB_RRM4] = &&h_sbb_rrm4, [X86F_SBB_RMI4] = &&h_sbb_rmi4,
        [X86F_SBB_RMR8] = &&h_sbb_rmr8, [X86F_SBB_RRM8] = &&h_sbb_rrm8, [X86F_SBB_RMI8] = &&h_sbb_rmi8,
        [X86F_AND_RMR4] = &&h_and_rmr4, [X86F_AND_RRM4] = &&h_and_rrm4, [X86F_AND_RMI4] = &&h_and_rmi4,
        [X86F_AND_RMR8] = &&h_and_rmr8, [X86F_AND_RRM8] = &&h_and_rrm8, [X86F_AND_RMI8] = &&h_and_rmi8,
        [X86F_SUB_RMR4] = &&h_sub_rmr4, [X86F_SUB_RRM4] = &&h_sub_rrm4, [X86F_SUB_RMI4] = &&h_sub_rmi4,
        [X86F_SUB_RMR8] = &&h_sub_rmr8, [X86F_SUB_RRM8] = &&h_sub_rrm8, [X86F_SUB_RMI8] = &&h_sub_rmi8,
        [X86F_XOR_RMR4] = &&h_xor_rmr4, [X86F_XOR_RRM4] = &&h_xor_rrm4, [X86F_XOR_RMI4] = &&h_xor_rmi4,
        [X86F_XOR_RMR8] = &&h_xor_rmr8, [X86F_XOR_RRM8] = &&h_xor_rrm8, [X86F_XOR_RMI8] = &&h_xor_rmi8,
        [X86F_CMP_RMR4] = &&h_cmp_rmr4, [X86F_CMP_RRM4] = &&h_cmp_rrm4, [X86F_CMP_RMI4] = &&h_cmp_rmi4,
        [X86F_CMP_RMR8] = &&h_cmp_rmr8, [X86F_CMP_RRM8] = &&h_cmp_rrm8, [X86F_CMP_RMI8] = &&h_cmp_rmi8,
        [X86F_MOV_RMR4] = &&h_mov_rmr4, [X86F_MOV_RRM4] = &&h_mov_rrm4, [X86F_MOV_RMI4] = &&h_mov_rmi4,
        [X86F_MOV_RI4] = &&h_mov_ri4, [X86F_MOV_RMR8] = &&h_mov_rmr8, [X86F_MOV_RRM8] = &&h_mov_rrm8,
        [X86F_MOV_RMI8] = &&h_mov_rmi8, [X86F_MOV_RI8] = &&h_mov_ri8,
        [X86F_MOV_RMR] = &&h_mov_rmr, [X86F_MOV_RRM] = &&h_mov_rrm,
        [X86F_TEST_RMR4] = &&h_test_rmr4, [X86F_TEST_RMI4] = &&h_test_rmi4,
        [X86F_TEST_RMR8] = &&h_test_rmr8, [X86F_TEST_RMI8] = &&h_test_rmi8,
        [X86F_LEA4] = &&h_lea4, [X86F_LEA8] = &&h_lea8,
        [X86F_MOVZX8_4] = &&h_movzx8_4, [X86F_MOVZX16_4] = &&h_movzx16_4,
        [X86F_MOVZX8_8] = &&h_movzx8_8, [X86F_MOVZX16_8] = &&h_movzx16_8, [X86F_MOVSXD] = &&h_movsxd,
        [X86F_MOVSX8] = &&h_movsx8, [X86F_MOVSX16] = &&h_movsx16,
        [X86F_SHIFT4] = &&h_shift4, [X86F_SHIFT8] = &&h_shift8,
        [X86F_INC4] = &&h_inc4, [X86F_DEC4] = &&h_dec4, [X86F_INC8] = &&h_inc8, [X86F_DEC8] = &&h_dec8,
        [X86F_IMUL_RRM] = &&h_imul_rrm, [X86F_IMUL_RRMI] = &&h_imul_rrmi,
        [X86F_CMPJ_RR4] = &&h_cmpj_rr4, [X86F_CMPJ_RR8] = &&h_cmpj_rr8,
        [X86F_CMPJ_RI4] = &&h_cmpj_ri4, [X86F_CMPJ_RI8] = &&h_cmpj_ri8,
        [X86F_TESTJ_RR4] = &&h_testj_rr4, [X86F_TESTJ_RR8] = &&h_testj_rr8,
        [X86F_TESTJ_RI] = &&h_testj_ri, [X86F_TESTJ_RR] = &&h_testj_rr,
        [X86F_CMPJ_MI] = &&h_cmpj_mi, [X86F_TESTJ_MI] = &&h_testj_mi,
        [X86F_JCC] = &&h_jcc, [X86F_JMP] = &&h_jmp, [X86F_CALL] = &&h_call, [X86F_RET] = &&h_ret,
        [X86F_PUSH] = &&h_push, [X86F_POP] = &&h_pop, [X86F_SETCC] = &&h_setcc, [X86F_CMOVCC] = &&h_cmovcc,
        [X86F_ADD_RMR] = &&h_add_rmr, [X86F_ADD_RRM] = &&h_add_rrm, [X86F_ADD_RMI] = &&h_add_rmi,
        [X86F_OR_RMR] = &&h_or_rmr, [X86F_OR_RRM] = &&h_or_rrm, [X86F_OR_RMI] = &&h_or_rmi,
        [X86F_ADC_RMR] = &&h_adc_rmr, [X86F_ADC_RRM] = &&h_adc_rrm, [X86F_ADC_RMI] = &&h_adc_rmi,
        [X86F_SBB_RMR] = &&h_sbb_rmr, [X86F_SBB_RRM] = &&h_sbb_rrm, [X86F_SBB_RMI] = &&h_sbb_rmi,
        [X86F_AND_RMR] = &&h_and_rmr, [X86F_AND_RRM] = &&h_and_rrm, [X86F_AND_RMI] = &&h_and_rmi,
        [X86F_SUB_RMR] = &&h_sub_rmr, [X86F_SUB_RRM] = &&h_sub_rrm, [X86F_SUB_RMI] = &&h_sub_rmi,
        [X86F_XOR_RMR] = &&h_xor_rmr, [X86F_XOR_RRM] = &&h_xor_rrm, [X86F_XOR_RMI] = &&h_xor_rmi,
        [X86F_CMP_RMR] = &&h_cmp_rmr, [X86F_CMP_RRM] = &&h_cmp_rrm, [X86F_CMP_RMI] = &&h_cmp_rmi,
        [X86F_TEST_RMR] = &&h_test_rmr, [X86F_TEST_RMI] = &&h_test_rmi, [X86F_NOT] = &&h_not, [X86F_NEG] = &&h_neg,
        [X86F_INC] = &&h_inc, [X86F_DEC] = &&h_dec, [X86F_MOV_RMI] = &&h_mov_rmi, [X86F_MOV_RI] = &&h_mov_ri,
        [X86F_SHIFT] = &&h_shift,
        [X86F_ADD_RMR4_R] = &&h_add_rmr4_r, [X86F_ADD_RRM4_R] = &&h_add_rrm4_r, [X86F_ADD_RMI4_R] = &&h_add_rmi4_r,
        [X86F_ADD_RMR8_R] = &&h_add_rmr8_r, [X86F_ADD_RRM8_R] = &&h_add_rrm8_r, [X86F_ADD_RMI8_R] = &&h_add_rmi8_r,
        [X86F_OR_RMR4_R] = &&h_or_rmr4_r, [X86F_OR_RRM4_R] = &&h_or_rrm4_r, [X86F_OR_RMI4_R] = &&h_or_rmi4_r,
        [X86F_OR_RMR8_R] = &&h_or_rmr8_r, [X86F_OR_RRM8_R] = &&h_or_rrm8_r, [X86F_OR_RMI8_R] = &&h_or_rmi8_r,
        [X86F_ADC_RMR4_R] = &&h_adc_rmr4_r, [X86F_ADC_RRM4_R] = &&h_adc_rrm4_r, [X86F_ADC_RMI4_R] = &&h_adc_rmi4_r,
        [X86F_ADC_RMR8_R] = &&h_adc_rmr8_r, [X86F_ADC_RRM8_R] = &&h_adc_rrm8_r, [X86F_ADC_RMI8_R] = &&h_adc_rmi8_r,
        [X86F_SBB_RMR4_R] = &&h_sbb_rmr4_r, [X86F_SBB_RRM4_R] = &&h_sbb_rrm4_r, [X86F_SBB_RMI4_R] = &&h_sbb_rmi4_r,
        [X86F_SBB_RMR8_R] = &&h_sbb_rmr8_r, [X86F_SBB_RRM8_R] = &&h_sbb_rrm8_r, [X86F_SBB_RMI8_R] = &&h_sbb_rmi8_r,
        [X86F_AND_RMR4_R] = &&h_and_rmr4_r, [X86F_AND_RRM4_R] = &&h_and_rrm4_r, [X86F_AND_RMI4_R] = &&h_and_rmi4_r,
        [X86F_AND_RMR8_R] = &&h_and_rmr8_r, [X86F_AND_RRM8_R] = &&h_and_rrm8_r, [X86F_AND_RMI8_R] = &&h_and_rmi8_r,
        [X86F_SUB_RMR4_R] = &&h_sub_rmr4_r, [X86F_SUB_RRM4_R] = &&h_sub_rrm4_r, [X86F_SUB_RMI4_R] = &&h_sub_rmi4_r,
        [X86F_SUB_RMR8_R] = &&h_sub_rmr8_r, [X86F_SUB_RRM8_R] = &&h_sub_rrm8_r, [X86F_SUB_RMI8_R] = &&h_sub_rmi8_r,
        [X86F_XOR_RMR4_R] = &&h_xor_rmr4_r, [X86F_XOR_RRM4_R] = &&h_xor_rrm4_r, [X86F_XOR_RMI4_R] = &&h_xor_rmi4_r,
        [X86F_XOR_RMR8_R] = &&h_xor_rmr8_r, [X86F_XOR_RRM8_R] = &&h_xor_rrm8_r, [X86F_XOR_RMI8_R] = &&h_xor_rmi8_r,
        [X86F_CMP_RMR4_R] = &&h_cmp_rmr4_r, [X86F_CMP_RRM4_R] = &&h_cmp_rrm4_r, [X86F_CMP_RMI4_R] = &&h_cmp_rmi4_r,
        [X86F_CMP_RMR8_R] = &&h_cmp_rmr8_r, [X86F_CMP_RRM8_R] = &&h_cmp_rrm8_r, [X86F_CMP_RMI8_R] = &&h_cmp_rmi8_r,
        [X86F_MOV_RMR4_R] = &&h_mov_rmr4_r, [X86F_MOV_RRM4_R] = &&h_mov_rrm4_r, [X86F_MOV_RMR8_R] = &&h_mov_rmr8_r,
        [X86F_MOV_RRM8_R] = &&h_mov_rrm8_r, [X86F_TEST_RMR4_R] = &&h_test_rmr4_r, [X86F_TEST_RMR8_R] = &&h_test_rmr8_r,
        [X86F_MOVZX8_4_R] = &&h_movzx8_4_r, [X86F_MOVZX16_4_R] = &&h_movzx16_4_r, [X86F_MOVZX8_8_R] = &&h_movzx8_8_r,
        [X86F_MOVZX16_8_R] = &&h_movzx16_8_r,
        [X86F_CMPXCHG] = &&h_cmpxchg, [X86F_XADD] = &&h_xadd,
        [X86F_BT_I] = &&h_bt_i, [X86F_BTS_I] = &&h_bts_i, [X86F_BTR_I] = &&h_btr_i, [X86F_BTC_I] = &&h_btc_i,
        [X86F_BT_R] = &&h_bt_r, [X86F_BTS_R] = &&h_bts_r, [X86F_BTR_R] = &&h_btr_r, [X86F_BTC_R] = &&h_btc_r,
        [X86F_CBW] = &&h_cbw, [X86F_BSWAP] = &&h_bswap, [X86F_PUSH_I] = &&h_push_i, [X86F_LEAVE] = &&h_leave,
        [X86F_CLI] = &&h_cli, [X86F_PUSHF] = &&h_pushf,
    };
    _Static_assert(X86F_COUNT <= 256, "handler numbers must fit the dispatch table");
#pragma clang diagnostic pop
    uint64_t *const r = c->regs;
    struct X86FastLazy *const L = c->lazy;
    const struct X86FastTLB *const tlb = *c->tlb;
    const struct X86FastInst *i;
    // Chaining state kept in locals while running and written back on return: nothing in here
    // sets pollNow, so a run that starts without it can chain until the countdown runs out (and
    // one that may not chain runs with a countdown of 0, which never does).
    const int chain = block != NULL && !*c->pollNow;
    int64_t countdown = chain ? *c->pollCountdown : 0;
    uint64_t retired = 0;
    // RIP is not kept per instruction: `pc` is the RIP where this run began (`start`) or, once it
    // has chained, where the current block begins, until a branch sets it to the branch's target.
    // The RIP of an instruction that goes back to Swift is worked out from the lengths before it;
    // a block that runs to its end finds its fall-through RIP in its end marker, and a CALL its
    // return address in its disp. Neither that start nor the block's end is kept while running:
    // the countdown tells whether the run has chained, and `block` which block it is in.
    const struct X86FastInst *const start = p;
    const int64_t countdown0 = countdown;
    // The code generator's blocks are named by their index in the block cache, which a flush
    // (in Swift, between runs) gives to other blocks.
    struct X86Jit *const jit = c->jit;
    if (jit && jit->flushes != *c->flushes) {
        x86jit_reset(jit);
        jit->flushes = *c->flushes;
    }
    if (jit) jit->run.exit = NULL;
    int64_t jskip = 0;   // instructions the last compiled exit's branch skipped

// Next instruction: its handler. After a block's last instruction comes its X86F_END marker,
// whose handler is `done`, so nothing here compares positions; each handler has its own copy of
// this jump (one shared indirect jump is predicted far worse by the host).
#define DISPATCH() do { \
        i = p; \
        goto *labels[i->fast]; \
    } while (0)
// (Handlers advance `i` alone; `p` is brought up to date where the run stops.)
// (The empty asm keeps the compiler from computing the next instruction's address twice, once
// for `i` and once for the handler load, which cost two extra instructions per dispatch.)
#define NEXT() do { i++; __asm__("" : "+r"(i)); goto *labels[i->fast]; } while (0)
// JMP, CALL and RET always end their block.
#define BRANCH(target) do { pc = (target); goto done; } while (0)
// A conditional branch, which need not end its block (64-bit blocks run on past them): taken, the
// block is left there (the instructions after it, counted on entry, come off the count: the last
// one's tail is 0); not taken, the block goes on.
#define CBRANCH(taken) do { \
        if (taken) { \
            pc = i->imm; \
            retired -= i->tail; \
            goto done; \
        } \
        NEXT(); \
    } while (0)
// Entering block `blk` at its first instruction (p): its compiled code, once it has been entered
// `threshold` times (x86jit.c), which returns where the handlers go on, or where the branch by
// which it left the block went (and how many instructions it skipped), as CBRANCH and BRANCH do.
#define ENTER_BLOCK(blk) do { \
        if (jit) { \
            int32_t bi_ = (int32_t)((blk) - c->infos); \
            X86JitCode f_ = jit->entry[bi_]; \
            if (!f_ && jit->hits[bi_] < jit->threshold && ++jit->hits[bi_] == jit->threshold) \
                f_ = jit->entry[bi_] = x86jit_compile(jit, p, (blk)->count); \
            if (f_) { \
                jit->run.countdown = countdown; \
                jit->run.retired = 0; \
                jit->run.block = (blk); \
                struct X86JitExit x_ = f_(r, L, tlb); \
                countdown = jit->run.countdown; \
                retired += (uint64_t)jit->run.retired; \
                if (jit->run.block != (blk)) { \
                    block = jit->run.block;   /* chained on: pc is where that block begins */ \
                    pc = block->vaddr; \
                } \
                if (x_.b) { \
                    pc = x_.a; \
                    jskip = (int64_t)x_.b - 1; \
                    retired -= x_.b - 1; \
                    goto done; \
                } \
                p = (const struct X86FastInst *)(uintptr_t)x_.a; \
            } \
        } \
    } while (0)
#define IS_MEM (i->flags & F_MEM)
#define RFLAGS (*c->rflags)
// A memory operand's host address, or back to Swift.
#define HOST(var, size, write) void *var; if (!lookup_host(c, tlb, i, effective_address(r, i), (size), (write), &var)) goto bail

// rm op= src (and CMP, which writes nothing), as aluRm in Integer.swift.
#define ALU_RM(kind, size, src) do { \
        uint64_t s_ = (src); \
        if (!IS_MEM) { \
            uint64_t v_ = alu(L, RFLAGS, (kind), get_reg(r, i->rm, (size)), s_, (size)); \
            if ((kind) != 7) set_reg(r, i->rm, (size), v_); \
        } else if (i->flags & F_LOCK) { \
            if (!locked_rmw(c, tlb, r, i, (kind), s_, (size))) goto bail; \
        } else { \
            HOST(h_, (size), (kind) != 7); \
            uint64_t v_ = alu(L, RFLAGS, (kind), load_n(h_, (size)), s_, (size)); \
            if ((kind) != 7) store_n(h_, v_, (size)); \
        } \
        NEXT(); \
    } while (0)
// reg op= rm.
#define ALU_R_RM(kind, size) do { \
        uint64_t s_; \
        if (!IS_MEM) s_ = get_reg(r, i->rm, (size)); \
        else { HOST(h_, (size), 0); s_ = load_n(h_, (size)); } \
        uint64_t v_ = alu(L, RFLAGS, (kind), get_reg(r, i->reg, (size)), s_, (size)); \
        if ((kind) != 7) set_reg(r, i->reg, (size), v_); \
        NEXT(); \
    } while (0)
// The value of the r/m operand (register or memory) into `var`.
#define READ_RM(var, size) uint64_t var; \
    if (!IS_MEM) var = get_reg(r, i->rm, (size)); \
    else { HOST(hr_, (size), 0); var = load_n(hr_, (size)); }
#define WRITE_RM(size, value) do { \
        if (!IS_MEM) set_reg(r, i->rm, (size), (value)); \
        else { HOST(hw_, (size), 1); store_n(hw_, (value), (size)); } \
    } while (0)

// The 32- and 64-bit forms, which x86fast_handler gives memory operands only (a register operand
// gets the _R form), and the forms of any size, which take both.
#define ALU_GROUP_SIZED(name, kind) \
    h_##name##_rmr4: ALU_RM(kind, 4, get_reg(r, i->reg, 4)); \
    h_##name##_rrm4: ALU_R_RM(kind, 4); \
    h_##name##_rmi4: ALU_RM(kind, 4, i->imm); \
    h_##name##_rmr8: ALU_RM(kind, 8, r[i->reg]); \
    h_##name##_rrm8: ALU_R_RM(kind, 8); \
    h_##name##_rmi8: ALU_RM(kind, 8, i->imm);
#define ALU_GROUP_ANY(name, kind) \
    h_##name##_rmr: ALU_RM(kind, i->osz, get_reg(r, i->reg, i->osz)); \
    h_##name##_rrm: ALU_R_RM(kind, i->osz); \
    h_##name##_rmi: ALU_RM(kind, i->osz, i->imm);

    if (block && p == c->insts + block->first) ENTER_BLOCK(block);
    DISPATCH();

#undef IS_MEM
#define IS_MEM 1
    ALU_GROUP_SIZED(add, 0)
    ALU_GROUP_SIZED(or, 1)
    ALU_GROUP_SIZED(adc, 2)
    ALU_GROUP_SIZED(sbb, 3)
    ALU_GROUP_SIZED(and, 4)
    ALU_GROUP_SIZED(sub, 5)
    ALU_GROUP_SIZED(xor, 6)
    ALU_GROUP_SIZED(cmp, 7)
    // MOV, TEST and MOVZX forms with register-only variants (x86fast_handler): memory here.
h_mov_rmr4: WRITE_RM(4, r[i->reg] & M32); NEXT();
h_mov_rrm4: { READ_RM(v, 4); r[i->reg] = v; NEXT(); }
h_mov_rmr8: WRITE_RM(8, r[i->reg]); NEXT();
h_mov_rrm8: { READ_RM(v, 8); r[i->reg] = v; NEXT(); }
h_test_rmr4: { READ_RM(v, 4); set_logic(L, 4, v & r[i->reg] & M32); NEXT(); }
h_test_rmr8: { READ_RM(v, 8); set_logic(L, 8, v & r[i->reg]); NEXT(); }
h_movzx8_4: { READ_RM(v, 1); r[i->reg] = v; NEXT(); }
h_movzx16_4: { READ_RM(v, 2); r[i->reg] = v; NEXT(); }
h_movzx8_8: { READ_RM(v, 1); r[i->reg] = v; NEXT(); }
h_movzx16_8: { READ_RM(v, 2); r[i->reg] = v; NEXT(); }
#undef IS_MEM
#define IS_MEM (i->flags & F_MEM)
    ALU_GROUP_ANY(add, 0)
    ALU_GROUP_ANY(or, 1)
    ALU_GROUP_ANY(adc, 2)
    ALU_GROUP_ANY(sbb, 3)
    ALU_GROUP_ANY(and, 4)
    ALU_GROUP_ANY(sub, 5)
    ALU_GROUP_ANY(xor, 6)
    ALU_GROUP_ANY(cmp, 7)

h_nop:
    NEXT();

    // Register-only forms: the same bodies with the memory branch compiled out.
#undef IS_MEM
#define IS_MEM 0
#define ALU_GROUP_R(name, kind) \
    h_##name##_rmr4_r: ALU_RM(kind, 4, get_reg(r, i->reg, 4)); \
    h_##name##_rrm4_r: ALU_R_RM(kind, 4); \
    h_##name##_rmi4_r: ALU_RM(kind, 4, i->imm); \
    h_##name##_rmr8_r: ALU_RM(kind, 8, r[i->reg]); \
    h_##name##_rrm8_r: ALU_R_RM(kind, 8); \
    h_##name##_rmi8_r: ALU_RM(kind, 8, i->imm);
    ALU_GROUP_R(add, 0)
    ALU_GROUP_R(or, 1)
    ALU_GROUP_R(adc, 2)
    ALU_GROUP_R(sbb, 3)
    ALU_GROUP_R(and, 4)
    ALU_GROUP_R(sub, 5)
    ALU_GROUP_R(xor, 6)
    ALU_GROUP_R(cmp, 7)
h_mov_rmr4_r: r[i->rm] = r[i->reg] & M32; NEXT();
h_mov_rrm4_r: r[i->reg] = r[i->rm] & M32; NEXT();
h_mov_rmr8_r: r[i->rm] = r[i->reg]; NEXT();
h_mov_rrm8_r: r[i->reg] = r[i->rm]; NEXT();
h_test_rmr4_r: set_logic(L, 4, r[i->rm] & r[i->reg] & M32); NEXT();
h_test_rmr8_r: set_logic(L, 8, r[i->rm] & r[i->reg]); NEXT();
h_movzx8_4_r: r[i->reg] = ((const uint8_t *)r)[i->rm]; NEXT();
h_movzx16_4_r: r[i->reg] = r[i->rm] & 0xFFFF; NEXT();
h_movzx8_8_r: r[i->reg] = ((const uint8_t *)r)[i->rm]; NEXT();
h_movzx16_8_r: r[i->reg] = r[i->rm] & 0xFFFF; NEXT();
#undef IS_MEM
#define IS_MEM (i->flags & F_MEM)

h_mov_rmi4: WRITE_RM(4, i->imm & M32); NEXT();
h_mov_ri4: r[i->reg] = i->imm & M32; NEXT();
h_mov_rmi8: WRITE_RM(8, i->imm); NEXT();
h_mov_ri8: r[i->reg] = i->imm; NEXT();
h_mov_rmr: {
    unsigned size = i->osz;
    WRITE_RM(size, get_reg(r, i->reg, size));
    NEXT();
}
h_mov_rrm: {
    unsigned size = i->osz;
    READ_RM(v, size);
    set_reg(r, i->reg, size, v);
    NEXT();
}

h_test_rmi4: { READ_RM(v, 4); set_logic(L, 4, v & i->imm & M32); NEXT(); }
h_test_rmi8: { READ_RM(v, 8); set_logic(L, 8, v & i->imm); NEXT(); }

h_test_rmr: { unsigned size = i->osz; READ_RM(v, size); set_logic(L, size, v & get_reg(r, i->reg, size)); NEXT(); }
h_test_rmi: { unsigned size = i->osz; READ_RM(v, size); set_logic(L, size, v & i->imm & MASK(size)); NEXT(); }
h_mov_rmi: { unsigned size = i->osz; WRITE_RM(size, i->imm); NEXT(); }
h_mov_ri: set_reg(r, i->reg, i->osz, i->imm); NEXT();

// NOT (no flags) and NEG (flags of 0 - d), register or unlocked memory (notNeg in Integer.swift).
#define NOT_NEG(neg) do { \
        unsigned size_ = i->osz; uint64_t m_ = MASK(size_), d_, v_; void *h_ = NULL; \
        if (!IS_MEM) d_ = get_reg(r, i->rm, size_); \
        else { \
            if (i->flags & F_LOCK) { \
                if (!locked_rmw(c, tlb, r, i, (neg) ? RMW_NEG : RMW_NOT, 0, size_)) goto bail; \
                NEXT(); \
            } \
            h_ = host_address(c, tlb, r, i, size_, 1); if (!h_) goto bail; \
            d_ = load_n(h_, size_); \
        } \
        if (neg) { v_ = (0 - d_) & m_; set_lazy(L, K_SUB, size_, v_, 0, d_); } else v_ = ~d_ & m_; \
        if (!IS_MEM) set_reg(r, i->rm, size_, v_); else store_n(h_, v_, size_); \
        NEXT(); \
    } while (0)
h_not: NOT_NEG(0);
h_neg: NOT_NEG(1);

h_lea4: r[i->reg] = effective_address(r, i) & M32; NEXT();
h_lea8: r[i->reg] = effective_address(r, i); NEXT();

h_movsxd: {
    unsigned size = i->osz;
    if (size != 4 && size != 8) goto bail;
    READ_RM(v, 4);
    r[i->reg] = size == 8 ? (uint64_t)(int64_t)(int32_t)(uint32_t)v : v;
    NEXT();
}

// MOVSX from a byte (the destination size is in imm: the source's register is a byte offset) or
// from a word.
h_movsx8: {
    unsigned size = (unsigned)i->imm;
    if (size != 2 && size != 4 && size != 8) goto bail;
    READ_RM(v, 1);
    set_reg(r, i->reg, size, (uint64_t)(int64_t)(int8_t)(uint8_t)v);
    NEXT();
}
h_movsx16: {
    unsigned size = i->osz;
    READ_RM(v, 2);
    set_reg(r, i->reg, size, (uint64_t)(int64_t)(int16_t)(uint16_t)v);
    NEXT();
}

h_shift4:
    if (IS_MEM || i->aux < 4 || i->aux == 6) goto h_shift;
    {
        uint64_t n = ((i->flags & F_COUNT_CL) ? r[1] : i->imm) & 0x1F;
        uint64_t d = r[i->rm] & M32;
        r[i->rm] = n ? shift_fast(L, i->aux, d, n, 4) : d;
    }
    NEXT();
h_shift8:
    if (IS_MEM || i->aux < 4 || i->aux == 6) goto h_shift;
    {
        uint64_t n = ((i->flags & F_COUNT_CL) ? r[1] : i->imm) & 0x3F;
        if (n) r[i->rm] = shift_fast(L, i->aux, r[i->rm], n, 8);
    }
    NEXT();

// Any size, register or unlocked memory, ROL/ROR/SHL/SAL/SHR/SAR (RCL/RCR go to Swift), as
// shiftGroup: a zero count changes nothing but a 32-bit register's upper half (and a memory
// operand must still be writable).
h_shift: {
    unsigned size = i->osz, kind = i->aux;
    if (kind == 2 || kind == 3) goto bail;
    uint64_t n = ((i->flags & F_COUNT_CL) ? (r[1] & 0xFF) : i->imm) & (size == 8 ? 0x3F : 0x1F);
    void *h = NULL;
    uint64_t d;
    if (!IS_MEM) d = get_reg(r, i->rm, size);
    else {
        if (i->flags & F_LOCK) goto bail;
        h = host_address(c, tlb, r, i, size, 1);
        if (!h) goto bail;
        d = load_n(h, size);
    }
    uint64_t v = d;
    if (n) v = kind <= 1 ? rotate(L, c->rflags, kind, d, n, size) : shift_fast(L, kind == 6 ? 4 : kind, d, n, size);
    if (!IS_MEM) { if (n || size == 4) set_reg(r, i->rm, size, v); }
    else if (n) store_n(h, v, size);
    NEXT();
}

// INC/DEC keep CF: it goes to `cin` (incDec in Integer.swift).
#define INC_DEC(kind, size) do { \
        uint64_t cy_ = carry_flag(L, RFLAGS), m_ = MASK(size), d_, v_; \
        if (!IS_MEM) { \
            d_ = get_reg(r, i->rm, (size)); \
            v_ = ((kind) == K_INC ? d_ + 1 : d_ - 1) & m_; \
            set_reg(r, i->rm, (size), v_); \
        } else { \
            if (i->flags & F_LOCK) { \
                if (!locked_rmw(c, tlb, r, i, (kind) == K_INC ? RMW_INC : RMW_DEC, 0, (size))) goto bail; \
                NEXT(); \
            } \
            HOST(h_, (size), 1); \
            d_ = load_n(h_, (size)); \
            v_ = ((kind) == K_INC ? d_ + 1 : d_ - 1) & m_; \
            store_n(h_, v_, (size)); \
        } \
        L->cin = cy_; \
        set_lazy(L, (kind), (size), v_, d_, 1); \
        NEXT(); \
    } while (0)
h_inc: INC_DEC(K_INC, i->osz);
h_dec: INC_DEC(K_DEC, i->osz);
h_inc4: INC_DEC(K_INC, 4);
h_dec4: INC_DEC(K_DEC, 4);
h_inc8: INC_DEC(K_INC, 8);
h_dec8: INC_DEC(K_DEC, 8);

// IMUL reg, r/m and IMUL reg, r/m, imm (imul2 in Integer.swift): the r/m operand times `factor`
// (the register or the immediate), 32 or 64 bits; CF = OF = the product did not fit.
#define IMUL2(factor) do { \
        unsigned size_ = i->osz; \
        if (size_ == 4) { \
            READ_RM(b_, 4); \
            int64_t prod_ = (int64_t)(int32_t)(uint32_t)(factor) * (int64_t)(int32_t)(uint32_t)b_; \
            uint64_t lo_ = (uint64_t)prod_ & M32; \
            r[i->reg] = lo_; \
            mul_flags(L, lo_, prod_ != sign_extend(lo_, 4), 4); \
        } else if (size_ == 8) { \
            READ_RM(b_, 8); \
            int64_t prod_; \
            int ovf_ = __builtin_mul_overflow((int64_t)(factor), (int64_t)b_, &prod_); \
            r[i->reg] = (uint64_t)prod_; \
            mul_flags(L, (uint64_t)prod_, ovf_, 8); \
        } else { \
            goto bail; \
        } \
        NEXT(); \
    } while (0)
h_imul_rrm: IMUL2(r[i->reg]);
h_imul_rrmi: IMUL2(i->imm);

// Fused CMP/TEST + Jcc (the executor's cmpj/testj cases).
#define CMPJ(size, srcexpr) do { \
        uint64_t m_ = MASK(size), d_ = r[i->rm] & m_, s_ = (srcexpr) & m_; \
        set_lazy(L, K_SUB, (size), (d_ - s_) & m_, d_, s_); \
        int t_; \
        switch (i->aux) { \
        case 2: t_ = d_ < s_; break; \
        case 3: t_ = d_ >= s_; break; \
        case 4: t_ = d_ == s_; break; \
        case 5: t_ = d_ != s_; break; \
        case 6: t_ = d_ <= s_; break; \
        case 7: t_ = d_ > s_; break; \
        case 12: t_ = sign_extend(d_, (size)) < sign_extend(s_, (size)); break; \
        case 13: t_ = sign_extend(d_, (size)) >= sign_extend(s_, (size)); break; \
        case 14: t_ = sign_extend(d_, (size)) <= sign_extend(s_, (size)); break; \
        case 15: t_ = sign_extend(d_, (size)) > sign_extend(s_, (size)); break; \
        default: t_ = condition(L, RFLAGS, i->aux); break; \
        } \
        CBRANCH(t_); \
    } while (0)
h_cmpj_rr4: CMPJ(4, r[i->reg]);
h_cmpj_rr8: CMPJ(8, r[i->reg]);
h_cmpj_ri4: CMPJ(4, i->disp);
h_cmpj_ri8: CMPJ(8, i->disp);
// The branch after a TEST whose result is `value` at `size` bytes.
#define TEST_BRANCH(value, size) do { \
        uint64_t v_ = (value), sign_ = 1ull << ((size) * 8 - 1); \
        set_logic(L, (size), v_); \
        int t_; \
        switch (i->aux) { \
        case 4: t_ = v_ == 0; break; \
        case 5: t_ = v_ != 0; break; \
        case 8: t_ = (v_ & sign_) != 0; break; \
        case 9: t_ = (v_ & sign_) == 0; break; \
        default: t_ = condition(L, RFLAGS, i->aux); break; \
        } \
        CBRANCH(t_); \
    } while (0)
#define TESTJ(size) TEST_BRANCH(r[i->rm] & r[i->reg] & MASK(size), size)
h_testj_rr4: TESTJ(4);
h_testj_rr8: TESTJ(8);
// Any size (8-bit registers are byte offsets): the immediate is in disp.
#define TESTJ_ANY(srcexpr) do { \
        unsigned size_ = i->osz; \
        TEST_BRANCH(get_reg(r, i->rm, size_) & (srcexpr) & MASK(size_), size_); \
    } while (0)
h_testj_ri: TESTJ_ANY(i->disp);
h_cmpj_mi: {
    unsigned size = i->osz;
    uint64_t m = MASK(size), s = (uint64_t)(int64_t)(int8_t)i->reg & m;
    HOST(h, size, 0);
    uint64_t d = load_n(h, size);
    set_lazy(L, K_SUB, size, (d - s) & m, d, s);
    CBRANCH(condition(L, RFLAGS, i->aux));
}
h_testj_mi: {
    unsigned size = i->osz;
    HOST(h, size, 0);
    set_logic(L, size, load_n(h, size) & (uint64_t)(int64_t)(int8_t)i->reg & MASK(size));
    CBRANCH(condition(L, RFLAGS, i->aux));
}
h_testj_rr: TESTJ_ANY(get_reg(r, i->reg, size_));

h_jcc: CBRANCH(condition(L, RFLAGS, i->aux));
h_jmp: BRANCH(i->imm);
h_call: {
    if (i->osz != 8) goto bail;
    void *h = stack_address(tlb, r[4] - 8, 1);
    if (!h) goto bail;
    memcpy(h, &i->disp, 8);   // the return address (BlockCache puts it there)
    r[4] -= 8;
    BRANCH(i->imm);
}
h_ret: {
    if (i->osz != 8) goto bail;
    void *h = stack_address(tlb, r[4], 0);
    if (!h) goto bail;
    uint64_t target;
    memcpy(&target, h, 8);
    r[4] += 8 + i->imm;
    BRANCH(target);
}
h_push: {
    if (i->osz != 8) goto bail;
    void *h = stack_address(tlb, r[4] - 8, 1);
    if (!h) goto bail;
    memcpy(h, &r[i->reg], 8);
    r[4] -= 8;
    NEXT();
}
h_pop: {
    if (i->osz != 8) goto bail;
    void *h = stack_address(tlb, r[4], 0);
    if (!h) goto bail;
    uint64_t v;
    memcpy(&v, h, 8);
    r[4] += 8;
    r[i->reg] = v;
    NEXT();
}

h_push_i: {   // the immediate is sign-extended already
    if (i->osz != 8) goto bail;
    void *h = stack_address(tlb, r[4] - 8, 1);
    if (!h) goto bail;
    memcpy(h, &i->imm, 8);
    r[4] -= 8;
    NEXT();
}
h_leave: {   // RSP = RBP, then POP RBP
    if (i->osz != 8) goto bail;
    void *h = stack_address(tlb, r[5], 0);
    if (!h) goto bail;
    uint64_t v;
    memcpy(&v, h, 8);
    r[4] = r[5] + 8;
    r[5] = v;
    NEXT();
}
h_pushf: {   // RFLAGS with the arithmetic flags worked out, VM and RF cleared
    if (i->osz != 8) goto bail;
    void *h = stack_address(tlb, r[4] - 8, 1);
    if (!h) goto bail;
    const uint64_t arith = FL_CF | FL_PF | FL_AF | FL_ZF | FL_SF | FL_OF;
    uint64_t v = ((RFLAGS & ~arith) | arith_flags(L, RFLAGS) | 2) & 0xFCFFFF;
    memcpy(h, &v, 8);
    r[4] -= 8;
    NEXT();
}
h_cli:   // (a #GP above IOPL is Swift's)
    if (*c->cpl > (int64_t)((RFLAGS >> 12) & 3)) goto bail;
    RFLAGS &= ~(uint64_t)0x200;
    NEXT();
h_cbw:   // CBW/CWDE/CDQE: AL/AX/EAX sign-extended into AX/EAX/RAX
    if (i->osz == 8) r[0] = (uint64_t)(int64_t)(int32_t)r[0];
    else if (i->osz == 4) r[0] = (uint32_t)(int32_t)(int16_t)r[0];
    else r[0] = (r[0] & ~0xFFFFull) | (uint16_t)(int16_t)(int8_t)r[0];
    NEXT();
h_bswap:
    if (i->osz == 8) r[i->reg] = __builtin_bswap64(r[i->reg]);
    else if (i->osz == 4) r[i->reg] = __builtin_bswap32((uint32_t)r[i->reg]);
    else goto bail;
    NEXT();

h_setcc: {
    uint64_t v = condition(L, RFLAGS, i->aux) ? 1 : 0;
    WRITE_RM(1, v);
    NEXT();
}
h_cmovcc: {
    unsigned size = i->osz;
    if (size != 4 && size != 8) goto bail;
    READ_RM(v, size);
    if (condition(L, RFLAGS, i->aux)) r[i->reg] = v;
    else if (size == 4) r[i->reg] &= M32;
    NEXT();
}

// LOCKed or always-atomic read-modify-writes and bit tests: out of line (they are rare next to
// the rest, and inline they would crowd the hot handlers' registers).
h_cmpxchg: if (!op_cmpxchg(c, tlb, r, i)) goto bail; NEXT();
h_xadd: if (!op_xadd(c, tlb, r, i)) goto bail; NEXT();
h_bt_i: if (!op_bit_test(c, tlb, r, i, 0, 1)) goto bail; NEXT();
h_bts_i: if (!op_bit_test(c, tlb, r, i, 1, 1)) goto bail; NEXT();
h_btr_i: if (!op_bit_test(c, tlb, r, i, 2, 1)) goto bail; NEXT();
h_btc_i: if (!op_bit_test(c, tlb, r, i, 3, 1)) goto bail; NEXT();
h_bt_r: if (!op_bit_test(c, tlb, r, i, 0, 0)) goto bail; NEXT();
h_bts_r: if (!op_bit_test(c, tlb, r, i, 1, 0)) goto bail; NEXT();
h_btr_r: if (!op_bit_test(c, tlb, r, i, 2, 0)) goto bail; NEXT();
h_btc_r: if (!op_bit_test(c, tlb, r, i, 3, 0)) goto bail; NEXT();

h_end:
    pc = i->imm;   // the block ran to its end: its fall-through RIP
done:
    // The block ran to its end: into its linked successor, as execBlock's chaining does (the
    // links are only made between valid blocks of one page; execBlock checks the rest), unless a
    // poll is due, which execBlock's own chaining step then finds.
    if (countdown > 1) {
        // Swift hands over its block cache's entry: the links and exit cache are ours to update.
        struct X86FastBlock *cur = (struct X86FastBlock *)block;
        const struct X86FastBlock *nb;
        if (cur->linkRIP0 == pc) nb = c->infos + cur->linkIdx0;
        else if (cur->linkRIP1 == pc) nb = c->infos + cur->linkIdx1;
        else if (cur->exitRIP == pc && still_valid(c, tlb, c->infos + cur->exitIdx, pc)) nb = c->infos + cur->exitIdx;
        else if (!(nb = find_successor(c, tlb, cur, pc))) goto at_end;
        // Compiled code left cur by a branch to nb: next time straight into nb's code, unchecked
        // where the links' rule allows, else with still_valid's checks on every pass.
        if (jit && jit->run.exit) {
            uint8_t *ex = jit->run.exit;
            jit->run.exit = NULL;
            X86JitCode nc = jit->entry[nb - c->infos];
            uint64_t p1 = nb->phys >> 12, p2 = nb->phys2;   // (phys2 is a page number)
            if (!nc) {
                // not compiled (yet)
            } else if (((pc ^ cur->vaddr) >> 12) == 0 && p1 == (cur->phys >> 12) && nb->gen == cur->gen
                       && nb->phys2 == ~0ull && cur->phys2 == ~0ull) {
                x86jit_chain(jit, ex, nb, jskip, nc, pc, NULL, NULL);
            } else if (p1 < c->codePages && (nb->phys2 == ~0ull || p2 < c->codePages)) {
                x86jit_chain(jit, ex, nb, jskip, nc, pc, c->codeGen + p1, nb->phys2 == ~0ull ? NULL : c->codeGen + p2);
            }
        }
        countdown -= 1;
        retired += (uint64_t)(int64_t)nb->guestCount;
        block = nb;
        p = c->insts + nb->first;
        ENTER_BLOCK(nb);
        DISPATCH();
    }
at_end:
    if (jit) jit->run.exit = NULL;
    // Stopped after a block's last instruction (pc is where it went): at the block's end.
    if (countdown != countdown0) end = c->insts + block->first + block->count;
    p = end;
    goto out;
bail:
    // Instruction i goes to Swift: its RIP, and the end of its block.
    p = i;
    if (countdown != countdown0) end = c->insts + block->first + block->count;
    for (const struct X86FastInst *q = countdown != countdown0 ? c->insts + block->first : start; q < p; q++) pc += q->len;
out:
    if (chain) *c->pollCountdown = countdown;
    *c->instructions += retired;
    return (struct X86FastResult){ p, end, block, pc };
}
