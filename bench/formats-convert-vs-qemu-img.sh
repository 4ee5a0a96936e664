#!/usr/bin/env bash
# Converting a 1 GiB image of each format (vmdk sparse and streamOptimized, vdi, vhdx, vpc, qed)
# to raw, and raw to each format, ours against qemu-img; prints times, peak memory and ratios
# (qemu-img time / ours: above 1 means we are faster). The images hold 512 MiB of incompressible
# data in 32 MiB runs with holes between, made by qemu-img.
# Usage: bench/formats-convert-vs-qemu-img.sh [WORKDIR]   (needs ~6 GiB free; builds release first)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product imgtool >/dev/null
OURS=$PWD/.build/release/imgtool
M="python3 $PWD/bench/measure.py"
W=${1:-$(mktemp -d /var/tmp/fmtbench.XXXX)}
mkdir -p "$W"; cd "$W"
if [ ! -f src.raw ]; then
    truncate -s 1G src.raw
    for i in 0 2 4 6 8 10 12 14 16 18 20 22 24 26 28 30; do
        head -c 32M /dev/urandom | dd of=src.raw bs=1M seek=$((i * 32)) conv=notrunc status=none
    done
fi
make() {   # name format options
    [ -f "$1" ] || qemu-img convert -f raw -O "$2" ${3:+-o "$3"} src.raw "$1"
}
make src.vmdk vmdk ""
make stream.vmdk vmdk subformat=streamOptimized
make src.vdi vdi ""
make src.vhdx vhdx ""
make src.vpc vpc ""
make src.qed qed ""
sync
row() {   # name, our command..., --, qemu command...
    local name=$1; shift
    local ours=() theirs=() seen=0
    for a in "$@"; do if [ "$a" = "--" ]; then seen=1; elif [ $seen = 0 ]; then ours+=("$a"); else theirs+=("$a"); fi; done
    local to=999 ro=0 tq=999 rq=0 t r
    for _ in 1 2; do
        rm -f out.*; sync; read -r t r < <($M "${ours[@]}")
        if (( $(echo "$t < $to" | bc) )); then to=$t; ro=$r; fi
        rm -f out.*; sync; read -r t r < <($M "${theirs[@]}")
        if (( $(echo "$t < $tq" | bc) )); then tq=$t; rq=$r; fi
    done
    printf "%-28s ours %7.2fs %7d KiB   qemu-img %7.2fs %7d KiB   speed x%.2f  mem x%.2f\n" \
        "$name" "$to" "$ro" "$tq" "$rq" "$(echo "$tq / $to" | bc -l)" "$(echo "$ro / $rq" | bc -l)"
}
echo "workdir $W; $(nproc) cores"
for f in src.vmdk stream.vmdk src.vdi src.vhdx src.vpc src.qed; do
    row "convert $f->raw" $OURS convert -O raw $f out.raw -- qemu-img convert -O raw $f out.raw
done
for spec in "vmdk:" "vmdk:subformat=streamOptimized" "vdi:" "vhdx:" "vpc:" "qed:"; do
    fmt=${spec%%:*}; opt=${spec#*:}
    row "convert raw->$fmt${opt:+ ($opt)}" $OURS convert -O $fmt ${opt:+-o $opt} src.raw out.$fmt -- \
        qemu-img convert -O $fmt ${opt:+-o $opt} src.raw out.$fmt
done
