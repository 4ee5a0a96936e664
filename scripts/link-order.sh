#!/usr/bin/env bash
# Regenerates scripts/link-order/{imgtool,nbdserver,vmrun}.txt: the functions each program runs on
# its common paths, which its release link packs together at the front of .text (lld
# --symbol-ordering-file, Package.swift).
#
# Why: the code a run executes is a few hundred KB, but lld lays it out scattered over the 5.8 MB of
# .text of a static-stdlib binary, and every page fault maps the whole page-cache folio (fault-around;
# 64 KB and more) around the faulting page: imgtool info kept 3.4 MB of .text resident. Packed, it
# touches far fewer folios (imgtool info ~7.8 -> ~6.5 MB peak RSS, convert -c 9.9 -> 8.6 MB).
# The list is a hint, not a contract: names that no longer exist are skipped, functions not listed
# keep the default order; a stale list only costs memory. Regenerate after large changes, then
# relink (rm -rf .build/release: SwiftPM does not track these files).
# Needs valgrind (callgrind) and qemu-utils. Usage: scripts/link-order.sh
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
mkdir -p scripts/link-order
for p in imgtool nbdserver vmrun; do touch "scripts/link-order/$p.txt"; done  # the release link reads them
swift build -c release >/dev/null
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
# valgrind 3.19 cannot read the DWARF 5 of the static Swift runtime: profile copies without it.
for p in imgtool nbdserver vmrun; do strip --strip-debug -o "$w/$p" ".build/release/$p"; done
cg() { valgrind -q --tool=callgrind --demangle=no --callgrind-out-file="$w/cg.$(basename "$1").%p" "$@" >/dev/null; }

# imgtool: a qcow2 holding random and compressible data, the everyday subcommands.
qemu-img create -q -f qcow2 "$w/a.qcow2" 256M
head -c 16M /dev/urandom > "$w/r.bin"
head -c 12M /dev/urandom | base64 -w 0 | head -c 16M > "$w/t.bin"
qemu-io -f qcow2 -c "write -s $w/r.bin 0 16M" -c "write -s $w/t.bin 64M 16M" "$w/a.qcow2" >/dev/null
i="$w/imgtool"
cg "$i" info "$w/a.qcow2"
cg "$i" info --output=json "$w/a.qcow2"
cg "$i" check "$w/a.qcow2"
cg "$i" map "$w/a.qcow2"
cg "$i" convert -O raw "$w/a.qcow2" "$w/o.raw"
cg "$i" convert -O qcow2 "$w/o.raw" "$w/o.qcow2"
cg "$i" convert -c -O qcow2 "$w/a.qcow2" "$w/c.qcow2"
cg "$i" compare "$w/a.qcow2" "$w/c.qcow2"
cg "$i" create -f qcow2 -b "$w/a.qcow2" -F qcow2 "$w/top.qcow2"
cg "$i" commit "$w/top.qcow2"

# nbdserver: one client copying the export (without -t the server exits when it leaves).
cg "$w/nbdserver" -r -f qcow2 -k "$w/n.sock" "$w/a.qcow2" &
for _ in $(seq 100); do [ -S "$w/n.sock" ] && break; sleep 0.2; done
nbdcopy "nbd+unix:///?socket=$w/n.sock" null:
wait

# vmrun: start up and spin in a two-byte BIOS loop for a while (SIGTERM ends it cleanly).
printf '\xeb\xfe' > "$w/loop.bin"; truncate -s 64K "$w/loop.bin"
printf '\xea\x00\x00\x00\xf0' | dd of="$w/loop.bin" bs=1 seek=$((0xfff0)) conv=notrunc 2>/dev/null
timeout -s TERM 20 valgrind -q --tool=callgrind --demangle=no --callgrind-out-file="$w/cg.vmrun.1" \
    "$w/vmrun" -accel tcg -m 64 -display none -nodefaults -bios "$w/loop.bin" >/dev/null 2>&1 || true

# Per program: every function that ran and is defined in it (libc's are not ours to order), those
# that more runs used first (start-up and shared paths at the very front), then by name.
for p in imgtool nbdserver vmrun; do
    nm --defined-only ".build/release/$p" | awk 'NF == 3 { print $3 }' | sort -u > "$w/defined"
    for f in "$w"/cg.$p.*; do sed -n "s/^c\?fn=([0-9]*) //p" "$f" | sed "s/'[0-9]*$//" | sort -u; done \
        | sort | uniq -c | awk '{ print $2, $1 }' | sort -k1,1 | join - "$w/defined" \
        | sort -k2,2nr -k1,1 | cut -d' ' -f1 > "scripts/link-order/$p.txt"
    echo "scripts/link-order/$p.txt: $(wc -l < "scripts/link-order/$p.txt") functions"
done
