#!/usr/bin/env bash
# Sets up (Debian packages), builds, and runs every test. The same command CI runs.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
swift build --build-tests
swift test --skip-build "$@"
if [ $# -eq 0 ]; then
    # The fast tier's guests once more on the Swift executor alone, so that its own code for the
    # forms the fast tier normally takes (fused compare-and-branch, folded NOPs, LOCKed
    # operations) is compared with QEMU too.
    X86_NO_FAST_TIER=1 swift test --skip-build --filter FastTierGuestTests
    # And with every block compiled to host code on its first entry (Sources/CX86Fast/x86jit.c),
    # so that the code generator runs each of those forms, page crossings and TLB misses too.
    X86_JIT_THRESHOLD=1 swift test --skip-build --filter FastTierGuestTests
fi
