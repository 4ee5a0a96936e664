#!/bin/bash
# Host instructions per guest instruction (callgrind's Ir count, so immune to machine noise) for the
# guest loops of BenchTests.testCallgrindLoop, from two runs with 1 and 3 repetitions (the difference
# drops the fixed cost of XCTest, assembling and booting the guest).
# Usage: bench/x86-callgrind.sh [loop...]   (loops: compute x87 string call; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${NO_BUILD:-}" ] || swift build --build-tests -c release -Xswiftc -enable-testing >/dev/null
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# Valgrind cannot read Swift's DWARF 5 debug information: measure a copy without it.
XCTEST="$OUT/xctest"
cp "$(ls -d .build/release/*.xctest | head -1)" "$XCTEST"
objcopy --strip-debug "$XCTEST"
run() {  # loop reps -> "guest_instructions host_instructions"
    local log="$OUT/$1.$2.log"
    [ -f "$OUT/$1.img" ] || X86_CALLGRIND_LOOP=$1 X86_CALLGRIND_IMAGE="$OUT/$1.img" "$XCTEST" X86Tests.BenchTests/testCallgrindLoop >/dev/null 2>&1
    X86_CALLGRIND_LOOP=$1 X86_CALLGRIND_REPS=$2 X86_CALLGRIND_IMAGE="$OUT/$1.img" valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$1.$2" \
        "$XCTEST" X86Tests.BenchTests/testCallgrindLoop >"$log" 2>&1 || true
    local g h
    g=$(grep -o 'reps [0-9]*: [0-9]* guest' "$log" | awk '{print $3}')
    h=$(grep -o 'Collected : [0-9]*' "$log" | awk '{print $3}')
    echo "$g $h"
}
for loop in "${@:-compute x87 string call}"; do
    for l in $loop; do
        read -r g1 h1 < <(run "$l" 1)
        read -r g3 h3 < <(run "$l" 3)
        python3 -c "print('x86-callgrind: $l: %.2f host instructions per guest instruction, %d per repetition (%d guest instructions)' % (($h3 - $h1) / ($g3 - $g1), ($h3 - $h1) / 2, ($g3 - $g1) / 2))"
    done
done
