#!/usr/bin/env bash
# Side by side with qemu-img, in one run, on the issue's workloads; prints times, peak memory and
# ratios (qemu-img / ours for time: above 1 means we are faster).
#   4 GiB image holding 1 GiB of incompressible data: convert qcow2->raw, raw->qcow2, qcow2->qcow2,
#   compressed convert (-c) of incompressible and of compressible (base64 text) data, commit of
#   1 GiB of overlay data into its base, check;
#   info and map on a 4 TiB sparse image.
# Usage: bench/imgtool-vs-qemu-img.sh [WORKDIR]   (needs ~12 GiB free; builds release first)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product imgtool >/dev/null
OURS=$PWD/.build/release/imgtool
M="python3 $PWD/bench/measure.py"
W=${1:-$(mktemp -d /var/tmp/imgbench.XXXX)}
mkdir -p "$W"; cd "$W"
if [ ! -f src.qcow2 ]; then
    qemu-img create -q -f qcow2 src.qcow2 4G
    # 1 GiB of random data in 64 MiB runs spread over the disk.
    for i in 0 4 8 12 16 20 24 28 32 36 40 44 48 52 56 60; do
        head -c 64M /dev/urandom > chunk.bin
        qemu-io -f qcow2 -c "write -s chunk.bin $((i * 64))M 64M" src.qcow2 >/dev/null
    done
    rm -f chunk.bin
    qemu-img convert -O raw src.qcow2 src.raw
fi
if [ ! -f text.qcow2 ]; then
    # 256 MiB of compressible data (base64 text) for -c with real compression work.
    head -c 192M /dev/urandom | base64 -w 0 | head -c 256M > text.bin
    qemu-img convert -q -f raw -O qcow2 text.bin text.qcow2
    rm -f text.bin
fi
sync
row() {   # name, our command..., --, qemu command...
    local name=$1; shift
    local ours=() theirs=() seen=0
    for a in "$@"; do if [ "$a" = "--" ]; then seen=1; elif [ $seen = 0 ]; then ours+=("$a"); else theirs+=("$a"); fi; done
    # One untimed run of each first (the sources back in the page cache: this host's memory
    # manager reclaims cold page cache in the background, and whoever read first paid for it),
    # then the best of three runs each, alternating, after sync: dirty page writeback from the
    # previous command must not be charged to the next one.
    rm -f out.*; ${PREP:-true}; "${ours[@]}" >/dev/null 2>&1 || true
    rm -f out.*; ${PREP:-true}; "${theirs[@]}" >/dev/null 2>&1 || true
    local to=999 ro=0 tq=999 rq=0 t r
    for _ in 1 2 3; do
        rm -f out.*; ${PREP:-true}; sync; read -r t r < <($M "${ours[@]}")
        if (( $(echo "$t < $to" | bc) )); then to=$t; ro=$r; fi
        rm -f out.*; ${PREP:-true}; sync; read -r t r < <($M "${theirs[@]}")
        if (( $(echo "$t < $tq" | bc) )); then tq=$t; rq=$r; fi
    done
    printf "%-28s ours %7.2fs %7d KiB   qemu-img %7.2fs %7d KiB   speed x%.2f  mem x%.2f\n" \
        "$name" "$to" "$ro" "$tq" "$rq" "$(echo "$tq / $to" | bc -l)" "$(echo "$ro / $rq" | bc -l)"
}
echo "workdir $W; $(nproc) cores"
row "convert qcow2->raw"   $OURS convert -O raw src.qcow2 out.raw -- qemu-img convert -O raw src.qcow2 out.raw
row "convert raw->qcow2"   $OURS convert -O qcow2 src.raw out.qcow2 -- qemu-img convert -O qcow2 src.raw out.qcow2
row "convert qcow2->qcow2" $OURS convert -O qcow2 src.qcow2 out.qcow2 -- qemu-img convert -O qcow2 src.qcow2 out.qcow2
row "convert -c (zlib)"    $OURS convert -c -O qcow2 src.qcow2 out.qcow2 -- qemu-img convert -c -O qcow2 src.qcow2 out.qcow2
row "convert -c (compressible)" $OURS convert -c -O qcow2 text.qcow2 out.qcow2 -- qemu-img convert -c -O qcow2 text.qcow2 out.qcow2
# commit: a fresh overlay holding the 1 GiB of data over an empty 4 GiB base before every run.
prep_commit() {
    qemu-img create -q -f qcow2 out.base.qcow2 4G
    cp src.qcow2 out.top.qcow2
    qemu-img rebase -u -b out.base.qcow2 -F qcow2 out.top.qcow2
}
PREP=prep_commit row "commit 1 GiB" $OURS commit out.top.qcow2 -- qemu-img commit out.top.qcow2
row "check 4 GiB"          $OURS check src.qcow2 -- qemu-img check src.qcow2
[ -f huge.qcow2 ] || qemu-img create -q -f qcow2 huge.qcow2 4T
row "info 4 TiB sparse"    $OURS info huge.qcow2 -- qemu-img info huge.qcow2
row "map 4 TiB sparse"     $OURS map huge.qcow2 -- qemu-img map huge.qcow2
