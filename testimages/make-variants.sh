#!/usr/bin/env bash
# Makes the qcow2 image variants the tests read, with qemu-img and qemu-io (the oracle), in DIR.
# Each variant NAME gets NAME.qcow2 (plus its backing or data files) and NAME.raw, the oracle's
# raw rendering of the guest view (qemu-img convert -O raw). Prints the variant names, one a line.
# Usage: make-variants.sh DIR
set -euo pipefail
dir=${1:?usage: make-variants.sh DIR}
mkdir -p "$dir"
cd "$dir"
qi() { qemu-io -f qcow2 "$@" >/dev/null; }

# A pattern of writes that exercises data, zero clusters, partial clusters and compression.
fill() {
    local img=$1
    qi -c 'write -P 0x11 0 64k' -c 'write -P 0x22 100k 200k' -c 'write -P 0x33 1M 4k' \
       -c 'write -z 2M 128k' -c 'write -P 0x44 3M 1M' -c 'write -z 3200k 64k' \
       -c 'write -P 0x55 5M 512' -c 'write -P 0x66 7M 100' "$img"
}

variant() {
    local name=$1; shift
    qemu-img create -q -f qcow2 "$@" "$name.qcow2" 8M
    fill "$name.qcow2"
    echo "$name"
}

variant default
variant c512 -o cluster_size=512
variant c2m -o cluster_size=2M
variant v2 -o compat=0.10
variant r1 -o refcount_bits=1
variant r64 -o refcount_bits=64
variant lazy -o lazy_refcounts=on
variant extl2 -o extended_l2=on
variant extl2small -o extended_l2=on,cluster_size=16k
variant prealloc -o preallocation=metadata
variant datafile -o data_file="$PWD/datafile.data"
variant datafileraw -o data_file="$PWD/datafileraw.data",data_file_raw=on

# Compressed clusters, zlib and zstd, written by qemu-img convert -c.
for ct in zlib zstd; do
    qemu-img convert -q -c -O qcow2 -o compression_type=$ct default.qcow2 "comp$ct.qcow2"
    qi -c 'write -P 0x77 64k 4k' "comp$ct.qcow2"        # a partial overwrite of a compressed cluster
    echo "comp$ct"
done

# A backing chain three deep, with a backing file shorter than its overlay.
qemu-img create -q -f qcow2 chain0.qcow2 2M
qi -c 'write -P 0xa1 0 2M' chain0.qcow2
qemu-img create -q -f qcow2 -b chain0.qcow2 -F qcow2 chain1.qcow2 4M
qi -c 'write -P 0xa2 512k 512k' -c 'write -z 1M 64k' chain1.qcow2
qemu-img create -q -f qcow2 -b chain1.qcow2 -F qcow2 chain2.qcow2 8M
qi -c 'write -P 0xa3 960k 128k' -c 'write -P 0xa4 6M 64k' chain2.qcow2
echo chain2

# An internal snapshot: the active layer changes after it.
qemu-img create -q -f qcow2 snap.qcow2 8M
qi -c 'write -P 0xb1 0 1M' snap.qcow2
qemu-img snapshot -c first snap.qcow2
qi -c 'write -P 0xb2 512k 1M' snap.qcow2
echo snap

for f in *.qcow2; do
    qemu-img convert -O raw "$f" "${f%.qcow2}.raw"
done
qemu-img convert -O raw -l first snap.qcow2 snap-first.raw
