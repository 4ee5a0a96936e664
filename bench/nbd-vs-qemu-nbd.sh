#!/usr/bin/env bash
# nbdserver side by side with qemu-nbd and nbdkit's file plugin, in one run, on the issue's
# workloads; prints times and ratios (above 1 means nbdserver is faster).
#   nbdcopy of a 4 GiB raw image holding 1 GiB of data to null:, with and without --no-extents,
#   with 1 and 4 connections; random 4 KiB reads at queue depth 64 (fio's nbd engine);
#   the same random reads with --cache=none (O_DIRECT: every read reaches the disk, so requests
#   in flight together are what counts); memory per idle connection.
# Usage: bench/nbd-vs-qemu-nbd.sh [WORKDIR]   (needs ~1.2 GiB free; builds release first)
#   OURS=/path/to/nbdserver bench/nbd-vs-qemu-nbd.sh ...   measures that binary instead (no build).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${OURS:-}" ]; then
    swift build -c release --product nbdserver >/dev/null
    OURS=$PWD/.build/release/nbdserver
fi
W=${1:-$(mktemp -d /var/tmp/nbdbench.XXXX)}
mkdir -p "$W"; cd "$W"
if [ ! -f disk.raw ]; then
    truncate -s 4G disk.raw
    head -c 64M /dev/urandom > chunk.bin
    # 1 GiB of data in 16 runs of 64 MiB spread over the 4 GiB.
    for i in $(seq 0 15); do
        dd if=chunk.bin of=disk.raw bs=1M seek=$((i * 256)) conv=notrunc status=none
    done
    rm -f chunk.bin
fi
cat disk.raw > /dev/null   # warm the page cache: we measure the servers, not the disk

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start() {  # name, command...
    local sock=$W/$1.sock; shift
    rm -f "$sock"
    "$@" >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
}
start ours   $OURS -r -t -e 0 -f raw -k "$W/ours.sock" disk.raw
start qemu   qemu-nbd -r -t -e 0 -f raw -k "$W/qemu.sock" disk.raw
start nbdkit nbdkit -r -f -U "$W/nbdkit.sock" file disk.raw
start ours-direct $OURS -r -t -e 0 -f raw --cache=none -k "$W/ours-direct.sock" disk.raw
start qemu-direct qemu-nbd -r -t -e 0 -f raw --cache=none -k "$W/qemu-direct.sock" disk.raw

# Wall time is the best of 3 runs (after one untimed run); server CPU (user+system, from /proc) is the mean of the same
# runs: on a shared machine the CPU a server burns per workload is the steadier comparison.
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
measure() {  # pid, command... -> "best_wall mean_cpu"
    local pid=$1; shift
    local b=999 c=0 t s e c0 c1
    "$@" >/dev/null 2>&1 || true   # untimed: the image's pages back in the page cache after the other servers' runs
    for _ in 1 2 3; do
        c0=$(cpu "$pid"); s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); c1=$(cpu "$pid")
        t=$(echo "$e - $s" | bc -l)
        if (( $(echo "$t < $b" | bc -l) )); then b=$t; fi
        c=$((c + c1 - c0))
    done
    echo "$b $(echo "$c / 3 / $tick" | bc -l)"
}

echo "workdir $W; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "nbdcopy to null: of 4 GiB (1 GiB data): best wall time of 3, mean server CPU seconds"
printf "%-30s %16s %16s %16s %10s %10s\n" workload "ours wall/cpu" "qemu-nbd" "nbdkit" "qemu/ours" "kit/ours"
for conns in 1 4; do
    for ext in "" "--no-extents"; do
        name="nbdcopy -C $conns ${ext:-(extents)}"
        read -r wo co < <(measure "${pids[0]}" nbdcopy -C "$conns" $ext "nbd+unix:///?socket=$W/ours.sock" null:)
        read -r wq cq < <(measure "${pids[1]}" nbdcopy -C "$conns" $ext "nbd+unix:///?socket=$W/qemu.sock" null:)
        read -r wk ck < <(measure "${pids[2]}" nbdcopy -C "$conns" $ext "nbd+unix:///?socket=$W/nbdkit.sock" null:)
        printf "%-30s %7.2fs/%6.2fs %7.2fs/%6.2fs %7.2fs/%6.2fs %4.2fx/%4.2fx %4.2fx/%4.2fx\n" "$name" \
            "$wo" "$co" "$wq" "$cq" "$wk" "$ck" "$(echo "$wq / $wo" | bc -l)" "$(echo "$cq / ($co + 0.001)" | bc -l)" \
            "$(echo "$wk / $wo" | bc -l)" "$(echo "$ck / ($co + 0.001)" | bc -l)"
    done
done

# With one connection nbdcopy is a single thread, so its own CPU time (user + system, mostly the
# copy out of the socket and its zero checks) bounds the wall time whatever the server does: the
# best ratio any server could reach against qemu-nbd is qemu-nbd's wall time over that floor.
client_cpu() {  # nbdcopy arguments... -> least user+system seconds of nbdcopy itself over 3 runs
    local best=999 t
    for _ in 1 2 3; do
        /usr/bin/time -o "$W/time.txt" -f "%U %S" nbdcopy "$@" >/dev/null 2>&1
        t=$(awk '{print $1 + $2}' "$W/time.txt")
        if (( $(echo "$t < $best" | bc -l) )); then best=$t; fi
    done
    echo "$best"
}
if [ -x /usr/bin/time ]; then
    for ext in "" "--no-extents"; do
        f=$(client_cpu -C 1 $ext "nbd+unix:///?socket=$W/ours.sock" null:)
        read -r wq _ < <(measure "${pids[1]}" nbdcopy -C 1 $ext "nbd+unix:///?socket=$W/qemu.sock" null:)
        printf "%-30s nbdcopy alone needs %.2fs of CPU: at best %.2fx qemu-nbd (%.2fs) for any server\n" \
            "nbdcopy -C 1 ${ext:-(extents)}" "$f" "$(echo "$wq / $f" | bc -l)" "$wq"
    done
fi

if command -v fio >/dev/null && fio --enghelp=nbd >/dev/null 2>&1; then
    iops() {
        fio --name=rr --ioengine=nbd --uri="nbd+unix:///?socket=$W/$1.sock" --rw=randread --bs=4k --iodepth=64 \
            --size=4G --runtime=8 --time_based --output-format=json --output="$W/fio.json" >/dev/null 2>&1; cat "$W/fio.json" |
            python3 -c 'import json,sys; print(int(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))'
    }
    io=$(iops ours); iq=$(iops qemu); ik=$(iops nbdkit)
    printf "%-34s %9s %9s %9s %11.2fx %11.2fx\n" "fio randread 4k qd64 (IOPS)" "$io" "$iq" "$ik" \
        "$(echo "$io / $iq" | bc -l)" "$(echo "$io / $ik" | bc -l)"
    # nbdkit's file plugin has no O_DIRECT mode (its cache=none only drops pages after use): no column.
    io=$(iops ours-direct); iq=$(iops qemu-direct)
    printf "%-34s %9s %9s %9s %11.2fx\n" "  same, --cache=none (IOPS)" "$io" "$iq" "-" "$(echo "$io / $iq" | bc -l)"
else
    echo "fio with the nbd engine is not installed: random-read row skipped"
fi

# Memory per idle connection: RSS growth of each server for 1000 clients parked after NBD_OPT_GO.
idle() {
    python3 - "$1" "$2" <<'EOF'
import os, socket, struct, sys, time
pid, path = int(sys.argv[1]), sys.argv[2]
def rss():
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS:"): return int(l.split()[1])
# Count all processes of a forking server too (none of ours fork).
before = rss()
conns = []
for _ in range(1000):
    s = socket.socket(socket.AF_UNIX); s.connect(path)
    s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 7, len(b"\0\0\0\0\0\0")) + b"\0\0\0\0\0\0")
    conns.append(s)
ack = struct.pack(">QIII", 0x3e889045565a9, 7, 1, 0)
for s in conns:
    s.settimeout(5); got = b""
    while ack not in got:
        d = s.recv(4096)
        if not d: break
        got += d
time.sleep(0.3)
print((rss() - before) * 1024 // len(conns))
EOF
}
printf "%-34s %8sB %8sB %8sB\n" "memory per idle connection" "$(idle "${pids[0]}" "$W/ours.sock")" \
    "$(idle "${pids[1]}" "$W/qemu.sock")" "$(idle "${pids[2]}" "$W/nbdkit.sock")"
