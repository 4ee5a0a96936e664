#!/bin/bash
# Fetches Debian's kernel and busybox-static (apt-get download, never installed) into a cache
# directory and builds a busybox initramfs whose /init prints a marker line and powers off.
# Prints the paths as shell assignments: KERNEL=... INITRD=...
set -euo pipefail
CACHE=${X86_ASSET_CACHE:-/tmp/x86-linux-assets}
mkdir -p "$CACHE"
cd "$CACHE"
if [ ! -f kernel/vmlinuz ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-6/ {print $2; exit}')
    pkg=${pkg:-$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1)}
    rm -rf kernel deb && mkdir -p kernel deb
    (cd deb && apt-get download "$pkg" >/dev/null 2>&1)
    dpkg -x deb/*.deb kernel/root
    cp kernel/root/boot/vmlinuz-* kernel/vmlinuz
    rm -rf deb kernel/root/lib/modules/*/kernel/sound kernel/root/lib/modules/*/kernel/drivers/gpu
fi
if [ ! -f initrd.gz ]; then
    rm -rf bb ird && mkdir -p bb ird/bin ird/dev ird/proc ird/sys
    (cd bb && apt-get download busybox-static >/dev/null 2>&1 && dpkg -x busybox-static*.deb root)
    cp bb/root/bin/busybox ird/bin/busybox
    cat > ird/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "X86-USERSPACE-OK $(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
poweroff -f
INIT
    chmod +x ird/init
    mknod -m 600 ird/dev/console c 5 1 2>/dev/null || true
    (cd ird && find . | cpio -o -H newc 2>/dev/null | gzip -9) > initrd.gz
    rm -rf bb
fi
echo "KERNEL=$CACHE/kernel/vmlinuz"
echo "INITRD=$CACHE/initrd.gz"
