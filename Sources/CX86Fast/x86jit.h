// The fast tier's code generator (x86jit.c): hot 64-bit blocks compiled to host code, entered
// at a block's first instruction, handing back to the threaded handlers in x86fast.c at any
// instruction it does not compile. Private to CX86Fast.
#ifndef X86JIT_H
#define X86JIT_H
#include "x86fast.h"
#include <stddef.h>

/// Where compiled code stopped: b == 0, the handlers go on at instruction (const struct
/// X86FastInst *)a (the block's end marker, an instruction it does not compile, or one whose TLB
/// lookup missed: nothing of that one has happened); else the block was left by a branch (a Jcc
/// taken, JMP, CALL, RET) to RIP a, and the last b - 1 of the block's instructions did not run.
struct X86JitExit { uint64_t a, b; };

/// Compiled code for one block: runs the block's instructions from its first on `r`, `L` and `tlb`.
typedef struct X86JitExit (*X86JitCode)(uint64_t *r, struct X86FastLazy *L, const struct X86FastTLB *tlb);

/// What chained compiled blocks keep up to date as they go from one to the next (x86jit_chain),
/// for x86fast_run to pick up when the code returns: its poll countdown, instructions retired
/// beyond the first block's, the block it is in, and the exit it left by (to patch, or NULL).
struct X86JitRun {
    int64_t countdown;
    int64_t retired;
    const struct X86FastBlock *block;
    uint8_t *exit;
};

struct X86Jit {
    uint8_t *code;          // read/write/execute, `cap` bytes, `used` of them filled
    size_t used, cap;
    X86JitCode *entry;      // per block index: its code, or NULL
    uint16_t *hits;         // per block index: entries counted up to `threshold` (then compiled or given up)
    unsigned blocks;        // the block cache's capacity (BlockCache.infoSize)
    unsigned threshold;
    uint64_t flushes;       // the block cache's flush count when the entries were made
    uint64_t compiled;      // blocks compiled so far (for tests and diagnostics)
    struct X86JitRun run;
    const uint64_t *segBase, *segEnd;
};

/// Compiles the block of `count` instructions at `first` into `jit`'s buffer (emptying the
/// buffer first when it is full); NULL when its first instructions are not ones it compiles.
X86JitCode x86jit_compile(struct X86Jit *jit, const struct X86FastInst *first, int count);

/// Sends compiled exit `exit` (jit->run.exit after the code left a block for RIP `pc`) straight
/// into `next`'s compiled `code` from now on, when the poll countdown allows, as x86fast_run's
/// chaining would. `skipped`: the instructions of the exited block that the branch skipped.
/// A successor the links' rule lets it follow unchecked (same page, same generation) has `gen`
/// NULL; for any other, `gen` (and `gen2` for a block on two pages, else NULL) point at its code
/// pages' generation counters, and every pass checks what still_valid in x86fast.c checks: pc's
/// page in the instruction TLB at next's physical page, and both generations unchanged.
void x86jit_chain(struct X86Jit *jit, uint8_t *exit, const struct X86FastBlock *next, int64_t skipped, X86JitCode code,
                  uint64_t pc, const uint32_t *gen, const uint32_t *gen2);

/// Forgets every compiled block (the block cache was flushed: indices now name other blocks).
void x86jit_reset(struct X86Jit *jit);

#endif
