#!/usr/bin/env bash
# Builds the Linux test guest in $1 (default /tmp/vmrun-linux-guest-7), once: Debian's kernel
# (linux-image-amd64, downloaded with apt-get download and unpacked with dpkg -x, never installed)
# and a busybox-static initramfs whose /init prints VMRUN-USERSPACE-OK, the first MTRR, the PAT
# line and the count of 'unchecked MSR access' warnings from dmesg, loads the virtio modules,
# prints the md5 of the first MiB of /dev/vda, writes GUEST-WROTE-THIS at byte 1 MiB, times
# sequential reads of the disk when the command line has vmrun.bench (buffered: VMRUN-READ, and
# O_DIRECT three times: VMRUN-DREAD; start and end in guest seconds, to the nanosecond where
# /proc/timer_list has it, and the disk's sectors), loads the floppy and psmouse drivers, prints the boot-log lines that show
# the machine's devices as VMRUN-DMESG lines (timestamps, table addresses and lengths dropped, so
# they compare with QEMU's), and powers off; with vmrun.idle it prints VMRUN-IDLE and waits instead (for memory measurements). The cache directory carries the version, so that worktrees with an
# older script do not keep rebuilding each other's guest.
set -euo pipefail
version=7
out=${1:-/tmp/vmrun-linux-guest-$version}
[ -f "$out/vmlinuz" ] && [ -f "$out/initrd.gz" ] && [ "$(cat "$out/version" 2>/dev/null)" = "$version" ] && exit 0
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$pkg" ] || { echo "make-linux-guest: cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
apt-get download "$pkg" >/dev/null 2>&1 || { echo "make-linux-guest: apt-get download $pkg failed" >&2; exit 1; }
dpkg -x ./*.deb x
kernel=$(ls x/boot/vmlinuz-*)
mods=$(ls -d x/lib/modules/*)
busybox=/bin/busybox
[ -x /usr/bin/busybox ] && busybox=/usr/bin/busybox
file "$busybox" 2>/dev/null | grep -q "statically linked" || { echo "make-linux-guest: needs busybox-static" >&2; exit 1; }
mkdir -p ird/bin ird/lib/modules ird/proc ird/sys ird/dev
cp "$busybox" ird/bin/busybox
for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_modern_dev virtio/virtio_pci_legacy_dev virtio/virtio_pci block/virtio_blk \
         block/floppy input/mouse/psmouse; do
    f=$(ls "$mods/kernel/drivers/$m".ko* | head -1)
    case "$f" in
        *.xz) xz -dc "$f" > "ird/lib/modules/$(basename "$m").ko" ;;
        *.zst) zstd -qdc "$f" > "ird/lib/modules/$(basename "$m").ko" ;;
        *) cp "$f" "ird/lib/modules/$(basename "$m").ko" ;;
    esac
done
cat > ird/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "VMRUN-USERSPACE-OK"
echo "VMRUN-CPUS $(grep -c ^processor /proc/cpuinfo)"
echo "VMRUN-MTRR $(head -1 /proc/mtrr)"
echo "VMRUN-PAT $(dmesg | grep -o 'x86/PAT: Configuration.*' | head -1)"
echo "VMRUN-MSR-WARNINGS $(dmesg | grep -c 'unchecked MSR access')"
# The floppy and PS/2 mouse drivers probe the floppy controller and the i8042's AUX device; the
# mouse's probe (about a second of guest time, as under QEMU) runs while the disk is used.
for m in floppy psmouse; do insmod /lib/modules/$m.ko 2>/dev/null || echo "VMRUN-DEVICE-MODULE-FAILED $m"; done
wait_mouse() { for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do [ -d /sys/devices/platform/i8042/serio1/input ] && break; sleep 0.2; done; }
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    insmod /lib/modules/$m.ko || echo "VMRUN-INSMOD-FAILED $m"
done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
if [ -b /dev/vda ]; then
    echo "VMRUN-VDA-MD5 $(dd if=/dev/vda bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1)"
    echo -n "GUEST-WROTE-THIS" | dd of=/dev/vda bs=1M seek=1 conv=notrunc 2>/dev/null
    sync
    echo "VMRUN-VDA-WRITTEN"
    if grep -q vmrun.bench /proc/cmdline; then
        wait_mouse   # nothing else running while the reads are timed
        # Guest time in nanoseconds into $ns, read by the shell itself (a forked reader would add
        # its start-up to every interval): from /proc/timer_list's third line ("now at N nsecs"),
        # else from /proc/uptime's centiseconds (too coarse for a read of a fraction of a second).
        now() {
            ns=""
            { read -r _; read -r _; read -r w1 w2 ns _; } 2>/dev/null < /proc/timer_list
            [ "$w1 $w2" = "now at" ] && return
            read -r up _ < /proc/uptime
            ns=$(( ${up%.*}${up#*.} * 10000000 ))   # "12.34" -> 1234 centiseconds (never 0-led: boot takes seconds)
        }
        # Prints "$1 <start s> <end s> <disk sectors>" for the interval from $t0 to $ns.
        report() {
            read -r sectors < /sys/block/vda/size
            printf '%s %d.%09d %d.%09d %s\n' "$1" $((t0 / 1000000000)) $((t0 % 1000000000)) \
                $((ns / 1000000000)) $((ns % 1000000000)) "$sectors"
        }
        # Sequential read of the whole disk.
        now; t0=$ns
        dd if=/dev/vda of=/dev/null bs=1M 2>/dev/null
        now; report VMRUN-READ
        # The same with O_DIRECT, three times (a benchmark takes the best, as it does for the
        # host's convert): the device's throughput without the guest's page cache.
        for k in 1 2 3; do
            now; t0=$ns
            dd if=/dev/vda of=/dev/null bs=1M iflag=direct 2>/dev/null
            now; report VMRUN-DREAD
        done
    fi
else
    echo "VMRUN-NO-VDA"
fi
wait_mouse
# Device lines of the boot log: ACPI tables, the I/O APIC, PCI functions (and whether firmware left
# them enabled) and interrupt links, PNP devices, the i8042, its ports, keyboard and mouse, the floppy
# controller, sleep states and GPEs.
dmesg | sed -E 's/^\[[^]]*\] //; s/^(ACPI: [A-Z]{4}) 0x[0-9A-F]+ [0-9A-F]+/\1/' \
    | grep -E '^(ACPI: (RSDP|RSDT|XSDT|FACP|DSDT|FACS|APIC|HPET|WAET|SSDT)|IOAPIC\[0\]: apic_id|pci 0000:00:..\..: \[|ACPI: PCI: Interrupt link|ACPI: .?_SB_\.LNK|pnp: PnP ACPI: found|[0-9a-f]{2}:[0-9a-f]{2}: ttyS0|rtc_cmos [0-9a-f:]+: registered|i8042: |serio: |input: |FDC [0-9]|.*: enabling device \(|ACPI: PM: \(supports|ACPI: Enabled [0-9]+ GPEs)' \
    | sed 's/^/VMRUN-DMESG /'
if grep -q vmrun.idle /proc/cmdline; then
    echo "VMRUN-IDLE"
    while true; do sleep 3600; done
fi
poweroff -f
INIT
chmod +x ird/init
(cd ird && find . | cpio -o -H newc 2>/dev/null | gzip -9) > "$out/initrd.gz"
cp "$kernel" "$out/vmlinuz"
echo "$version" > "$out/version"
