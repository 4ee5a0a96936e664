#!/usr/bin/env bash
# The main job on built-in defaults, end to end, saying what happens at each step:
#   build -> make an image (imgtool) -> convert it (compressed qcow2) -> check and compare it ->
#   serve it over NBD (nbdserver) -> boot a Linux VM whose disk is that NBD export (vmrun) ->
#   show that the guest read the right bytes and that its write landed in the image.
# Needs Debian 12 with Swift 6.3 and root or sudo (it installs its packages). DEMO_DIR keeps files.
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Setting up (Debian packages) and building imgtool, nbdserver and vmrun (release)"
bash scripts/setup.sh
swift build -c release --product imgtool >/dev/null
swift build -c release --product nbdserver >/dev/null
swift build -c release --product vmrun >/dev/null
B=$root/.build/release
W=${DEMO_DIR:-$(mktemp -d /tmp/vmtoolkit-demo.XXXX)}
mkdir -p "$W"
cd "$W"
echo "working in $W"

say "1. Make a 64 MiB raw disk image and put 4 MiB of data at its start"
rm -f disk.raw disk.qcow2 data.raw
head -c 4M /dev/urandom > data.raw
run "$B/imgtool" create -f raw disk.raw 64M
run dd if=data.raw of=disk.raw conv=notrunc status=none
run "$B/imgtool" info -f raw disk.raw

say "2. Convert it to a compressed qcow2 (sparse: only the data is stored), check and compare"
run "$B/imgtool" convert -p -c -f raw -O qcow2 disk.raw disk.qcow2
run "$B/imgtool" info disk.qcow2
run "$B/imgtool" check disk.qcow2
run "$B/imgtool" compare -f raw -F qcow2 disk.raw disk.qcow2
run "$B/imgtool" map --output=json disk.qcow2

say "3. Serve the converted image over NBD (nbdserver, qemu-nbd's flags)"
sock=$W/nbd.sock
rm -f "$sock"
"$B/nbdserver" -f qcow2 -t -k "$sock" disk.qcow2 &
nbdpid=$!
trap 'kill $nbdpid 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
printf '$ nbdserver -f qcow2 -t -k %s disk.qcow2 &   (pid %s)\n' "$sock" "$nbdpid"
run "$B/imgtool" info "nbd+unix:///?socket=$sock"
command -v nbdinfo >/dev/null && run nbdinfo "nbd+unix:///?socket=$sock" | head -8

say "4. Boot Debian's Linux kernel (busybox initramfs) in vmrun with the NBD export as its virtio disk"
guest=$W/guest
bash "$root/Tests/vmrunTests/Fixtures/make-linux-guest.sh" "$guest"
expected=$(head -c 1048576 data.raw | md5sum | cut -d' ' -f1)
echo "md5 of the first MiB, seen from the host: $expected"
run "$B/vmrun" -M pc -m 512 -display none -nodefaults -serial stdio -no-reboot \
    -kernel "$guest/vmlinuz" -initrd "$guest/initrd.gz" -append "console=ttyS0 quiet no_timer_check" \
    -drive "file=nbd+unix:///?socket=$sock,format=raw,if=virtio" | tee vm.log | grep -E "VMRUN|vda" || true
grep -q "VMRUN-VDA-MD5 $expected" vm.log && echo "-> the guest read the same bytes through NBD" \
    || { echo "-> the guest did not see the expected data (see $W/vm.log)"; exit 1; }

say "5. After the guest powered off: its write is in the image, which checks clean"
kill $nbdpid 2>/dev/null || true
wait $nbdpid 2>/dev/null || true
trap - EXIT
run "$B/imgtool" check disk.qcow2
"$B/imgtool" dd if=disk.qcow2 of=after.raw bs=1M count=2
if [ "$(dd if=after.raw bs=1 skip=1048576 count=16 2>/dev/null)" = "GUEST-WROTE-THIS" ]; then
    echo "-> found GUEST-WROTE-THIS at 1 MiB, written by the guest through virtio-blk -> NBD -> qcow2"
else
    echo "-> the guest's write is missing"; exit 1
fi
say "Done: image made, converted, served over NBD and booted; files in $W"
