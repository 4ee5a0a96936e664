#!/usr/bin/env bash
# vmrun against qemu-system-x86_64, side by side in one run:
#   1. time from start to the guest's userspace marker (Debian kernel + busybox initramfs) with
#      QEMU -accel tcg and vmrun -accel tcg (and -accel kvm where KVM is real hardware, not PVM);
#   2. vmrun's own memory: RSS of an idle -m 512 guest (guest RAM is untouched, so this is vmrun);
#   3. an in-guest sequential read of a 64 MiB virtio disk (when the guest boots).
# Usage: bench/vmrun-boot.sh [guest-cache-dir]
set -uo pipefail
cd "$(dirname "$0")/.."
cache=${1:-/tmp/vmrun-linux-guest}
swift build -c release --product vmrun >/dev/null || exit 1
vmrun=.build/release/vmrun
bash Tests/vmrunTests/Fixtures/make-linux-guest.sh "$cache" || exit 1
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
truncate -s 64M "$work/disk.raw"

boot() {  # prints seconds to the marker, or "failed (...)"
    local bin=$1; shift
    local start end
    start=$(date +%s.%N)
    timeout 120 "$bin" "$@" -M pc -m 512 -display none -nodefaults -serial stdio -no-reboot \
        -kernel "$cache/vmlinuz" -initrd "$cache/initrd.gz" -append "console=ttyS0 quiet no_timer_check" \
        -drive "file=$work/disk.raw,format=raw,if=virtio" > "$work/out" 2>&1
    local rc=$?
    end=$(date +%s.%N)
    if grep -q VMRUN-USERSPACE-OK "$work/out"; then
        echo "$(echo "$end - $start" | bc) s to poweroff (rc $rc)"
    else
        echo "failed (rc $rc, no userspace marker)"
    fi
}

echo "== boot to userspace and poweroff"
echo "qemu -accel tcg:  $(boot qemu-system-x86_64 -accel tcg)"
echo "vmrun -accel tcg: $(boot $vmrun -accel tcg)"
if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then
    echo "vmrun -accel kvm: $(boot $vmrun -accel kvm)"
else
    echo "vmrun -accel kvm: skipped (no /dev/kvm, or PVM nested KVM)"
fi

echo "== vmrun's own memory (idle guest, -m 512)"
printf '\xeb\xfe' > "$work/loop.bin"; truncate -s 64K "$work/loop.bin"
printf '\xea\x00\x00\x00\xf0' | dd of="$work/loop.bin" bs=1 seek=$((0xfff0)) conv=notrunc 2>/dev/null
$vmrun -accel tcg -m 512 -display none -nodefaults -bios "$work/loop.bin" & pid=$!
sleep 2
echo "VmRSS $(awk '/VmRSS/{print $2, $3}' /proc/$pid/status)"
kill $pid; wait $pid 2>/dev/null

echo "== in-guest sequential read of 64 MiB (virtio-blk) vs converting the same image on the host"
head -c 64M /dev/urandom > "$work/disk.raw"
read_speed() {  # accelerator -> MB/s seen by the guest's dd
    timeout 300 $vmrun -accel "$1" -M pc -m 512 -display none -nodefaults -serial stdio -no-reboot \
        -kernel "$cache/vmlinuz" -initrd "$cache/initrd.gz" -append "console=ttyS0 quiet no_timer_check vmrun.bench" \
        -drive "file=$work/disk.raw,format=raw,if=virtio" 2>/dev/null | awk '/VMRUN-READ/{ if ($3 > $2) printf "%.1f MB/s", $4 * 512 / 1e6 / ($3 - $2); else print "too fast to time" }'
}
echo "vmrun -accel tcg, guest dd: $(read_speed tcg)"
conv=.build/release/imgtool
[ -x "$conv" ] || swift build -c release --product imgtool >/dev/null 2>&1
if [ -x "$conv" ] && "$conv" convert -O raw "$work/disk.raw" "$work/copy.raw" 2>/dev/null; then tool="imgtool"; else conv=qemu-img; tool="qemu-img"; fi
start=$(date +%s.%N); $conv convert -O raw "$work/disk.raw" "$work/copy2.raw"; end=$(date +%s.%N)
echo "$tool convert on the host: $(echo "67.108864 / ($end - $start)" | bc -l | cut -c1-6) MB/s"
