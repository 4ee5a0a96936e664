#!/usr/bin/env bash
# Makes vmdk, vdi, vhdx, vpc and qed image variants with qemu-img and qemu-io (the oracle) in DIR.
# Each variant NAME gets its image (plus extents or backing files) and NAME.raw, the oracle's raw
# rendering of the guest view (qemu-img convert -O raw). Prints "NAME FORMAT FILE", one a line.
# Usage: make-format-variants.sh DIR
set -euo pipefail
dir=${1:?usage: make-format-variants.sh DIR}
mkdir -p "$dir"
cd "$dir"

# Data, zeroes, partial blocks and a tail, over 20 MiB.
fill() {
    local fmt=$1 img=$2
    qemu-io -f "$fmt" -c 'write -P 0x11 0 64k' -c 'write -P 0x22 100k 200k' -c 'write -P 0x33 1M 4k' \
        -c 'write -z 2M 128k' -c 'write -P 0x44 3M 1M' -c 'write -P 0x55 9M 512' \
        -c 'write -P 0x66 19M 100' "$img" >/dev/null
}

variant() {
    local name=$1 fmt=$2 ext=$3; shift 3
    qemu-img create -q -f "$fmt" "$@" "$name.$ext" 20M
    fill "$fmt" "$name.$ext"
    qemu-img convert -f "$fmt" -O raw "$name.$ext" "$name.raw"
    echo "$name $fmt $name.$ext"
}

# A source for the formats qemu-io cannot write in place (streamOptimized).
qemu-img create -q -f raw src.img 20M
fill raw src.img
converted() {
    local name=$1 fmt=$2 ext=$3; shift 3
    qemu-img convert -f raw -O "$fmt" "$@" src.img "$name.$ext"
    qemu-img convert -f "$fmt" -O raw "$name.$ext" "$name.raw"
    echo "$name $fmt $name.$ext"
}

variant vdi-dynamic vdi vdi
variant vdi-static vdi vdi -o static=on
variant vpc-dynamic vpc vpc
variant vpc-fixed vpc vpc -o subformat=fixed
variant vpc-forcesize vpc vpc -o force_size=on
variant vhdx-dynamic vhdx vhdx
variant vhdx-fixed vhdx vhdx -o subformat=fixed
variant vhdx-bs1m vhdx vhdx -o block_size=1M,log_size=2M
variant vhdx-nozero vhdx vhdx -o block_state_zero=off
variant qed-default qed qed
variant qed-small qed qed -o cluster_size=4k,table_size=2
variant vmdk-sparse vmdk vmdk
variant vmdk-zeroed vmdk vmdk -o zeroed_grain=on,adapter_type=lsilogic
variant vmdk-flat vmdk vmdk -o subformat=monolithicFlat
variant vmdk-2gsparse vmdk vmdk -o subformat=twoGbMaxExtentSparse
variant vmdk-2gflat vmdk vmdk -o subformat=twoGbMaxExtentFlat
converted vmdk-stream vmdk vmdk -o subformat=streamOptimized
converted vpc-converted vpc vpc

# Backing chains: qed over qcow2 and over raw; vmdk over vmdk.
qemu-img create -q -f qcow2 base.qcow2 20M
qemu-io -f qcow2 -c 'write -P 0x77 0 20M' base.qcow2 >/dev/null
qemu-img create -q -f qed -b base.qcow2 -F qcow2 qed-backing.qed
qemu-io -f qed -c 'write -P 0x88 64k 8k' -c 'write -z 1M 64k' -c 'write -P 0x99 5M 1M' qed-backing.qed >/dev/null
qemu-img convert -O raw qed-backing.qed qed-backing.raw
echo "qed-backing qed qed-backing.qed"
qemu-img create -q -f qed -b src.img -F raw qed-rawbacking.qed
qemu-io -f qed -c 'write -P 0xaa 3M 4k' qed-rawbacking.qed >/dev/null
qemu-img convert -O raw qed-rawbacking.qed qed-rawbacking.raw
echo "qed-rawbacking qed qed-rawbacking.qed"
qemu-img create -q -f vmdk vmdk-base.vmdk 20M
qemu-io -f vmdk -c 'write -P 0x5a 0 20M' vmdk-base.vmdk >/dev/null
qemu-img create -q -f vmdk -b vmdk-base.vmdk -F vmdk vmdk-backing.vmdk
qemu-io -f vmdk -c 'write -P 0xa5 100k 8k' -c 'write -P 0xa6 7M 1M' vmdk-backing.vmdk >/dev/null
qemu-img convert -O raw vmdk-backing.vmdk vmdk-backing.raw
echo "vmdk-backing vmdk vmdk-backing.vmdk"
