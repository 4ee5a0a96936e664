#!/bin/bash
# Interpreter speed: MIPS on a compute-loop guest (vs the same image under QEMU TCG), and, when the
# vmrun product exists in this checkout, Debian's kernel + busybox initramfs boot time vs QEMU TCG.
# Usage: bench/x86-speed.sh [--no-boot]
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests -c release -Xswiftc -enable-testing >/dev/null
XCTEST=$(ls -d .build/release/*.xctest | head -1)
X86_BENCH=1 "$XCTEST" X86Tests.BenchTests/testComputeLoopMIPS 2>&1 | grep '^x86-speed'

[ "${1:-}" = "--no-boot" ] && exit 0
eval "$(bench/x86-linux-assets.sh)"
APPEND="console=ttyS0 earlyprintk=serial,ttyS0"
timeboot() {  # prints seconds until the marker line appears on the serial console
    local out start end pid
    out=$(mktemp)
    start=$(date +%s.%N)
    timeout 300 "$@" -M pc -m 512 -nographic -no-reboot -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" </dev/null >"$out" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null && ! grep -q 'X86-USERSPACE-OK' "$out"; do sleep 0.05; done
    end=$(date +%s.%N)
    wait "$pid" 2>/dev/null || true
    if grep -q 'X86-USERSPACE-OK' "$out"; then python3 -c "print(round($end - $start, 2))"; else echo "no marker"; fi
    rm -f "$out"
}
Q=$(timeboot qemu-system-x86_64 -accel tcg)
echo "x86-speed: boot to userspace, qemu-system-x86_64 -accel tcg: ${Q} s"
if swift build -c release --product vmrun >/dev/null 2>&1; then
    V=$(timeboot .build/release/vmrun -accel tcg)
    V2=$(timeboot .build/release/vmrun -accel tcg -smp 2)
    echo "x86-speed: boot to userspace, vmrun -accel tcg: ${V} s (-smp 2: ${V2} s)"
else
    echo "x86-speed: vmrun is not in this checkout (merge the machine branch); CPU-only direct-boot harness (no interrupt controller, lpj preset) instead:"
    X86_LINUX_KERNEL="$KERNEL" X86_LINUX_INITRD="$INITRD" X86_LINUX_MARKER="Run /init" X86_LINUX_SECONDS=120 \
        "$XCTEST" X86Tests.LinuxBootHarness/testBootLinux 2>&1 | grep '^\[harness\]'
fi
