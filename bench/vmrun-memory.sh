#!/usr/bin/env bash
# vmrun's own memory: resident set size minus the resident part of guest RAM (the one anonymous
# mapping of exactly -m bytes), in two states:
#   1. an idle guest spinning in a 64 KiB BIOS (nothing booted: the floor);
#   2. Debian's kernel + busybox initramfs booted to userspace under the interpreter, idle
#      (vmrun.idle: the guest waits instead of powering off), with a virtio disk attached.
# The target (issue 8) is under 20 MiB. QEMU's numbers for the same guests are printed beside.
# Usage: bench/vmrun-memory.sh [guest-cache-dir]   (VMRUN=path picks a vmrun binary)
set -uo pipefail
cd "$(dirname "$0")/.."
cache=${1:-/tmp/vmrun-linux-guest-7}
if [ -z "${VMRUN:-}" ]; then
    swift build -c release --product vmrun >/dev/null || exit 1
    VMRUN=.build/release/vmrun
fi
bash Tests/vmrunTests/Fixtures/make-linux-guest.sh "$cache" || exit 1
work=$(mktemp -d); trap 'rm -rf "$work"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null' EXIT
truncate -s 64M "$work/disk.raw"
mem_mib=512

# own_kib PID: RSS minus the resident pages of the guest-RAM mapping, and the breakdown.
own_kib() {
    python3 - "$1" "$mem_mib" <<'PY'
import re, sys
pid, ram = sys.argv[1], int(sys.argv[2]) * 1024
rows, cur = [], None
for line in open(f"/proc/{pid}/smaps"):
    m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
    if m:
        cur = [(int(m.group(2), 16) - int(m.group(1), 16)) // 1024, m.group(3) or "[anon]", 0]
        rows.append(cur)
    elif line.startswith("Rss:"):
        cur[2] = int(line.split()[1])
total = sum(r[2] for r in rows)
guest = sum(r[2] for r in rows if r[1] == "[anon]" and r[0] == ram)
files = {}
for size, name, rss in rows:
    key = "anonymous" if name.startswith("[") else name.split("/")[-1]
    if not (name == "[anon]" and size == ram):
        files[key] = files.get(key, 0) + rss
top = ", ".join(f"{k} {v // 1024}.{(v % 1024) * 10 // 1024}" for k, v in sorted(files.items(), key=lambda kv: -kv[1])[:6])
print(f"{(total - guest) / 1024:.1f} MiB own (RSS {total / 1024:.1f} MiB, guest RAM resident {guest / 1024:.1f} MiB; largest, MiB: {top})")
PY
}

wait_for() {  # file pattern seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

echo "== idle BIOS loop (-m $mem_mib, nothing booted)"
printf '\xeb\xfe' > "$work/loop.bin"; truncate -s 64K "$work/loop.bin"
printf '\xea\x00\x00\x00\xf0' | dd of="$work/loop.bin" bs=1 seek=$((0xfff0)) conv=notrunc 2>/dev/null
$VMRUN -accel tcg -m $mem_mib -display none -nodefaults -bios "$work/loop.bin" & pid=$!
sleep 2
echo "vmrun: $(own_kib $pid)"
kill $pid; wait $pid 2>/dev/null; pid=

echo "== Linux booted to userspace, idle (-m $mem_mib, one virtio disk)"
linux() {  # binary args...
    local bin=$1; shift
    "$bin" "$@" -M pc -m $mem_mib -display none -nodefaults -serial "file:$work/serial" -no-reboot \
        -kernel "$cache/vmlinuz" -initrd "$cache/initrd.gz" -append "console=ttyS0 quiet no_timer_check vmrun.idle" \
        -drive "file=$work/disk.raw,format=raw,if=virtio" 2>/dev/null & pid=$!
    if wait_for "$work/serial" VMRUN-IDLE 300; then
        sleep 1
        echo "$(own_kib $pid)"
    else
        echo "did not reach VMRUN-IDLE"
    fi
    kill $pid 2>/dev/null; wait $pid 2>/dev/null; pid=
    rm -f "$work/serial"
}
echo "vmrun -accel tcg: $(linux $VMRUN -accel tcg)"
echo "qemu -accel tcg:  $(linux qemu-system-x86_64 -accel tcg)"
