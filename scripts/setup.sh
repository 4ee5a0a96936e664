#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the demo need (idempotent).
# Build: zlib, zstd and libdeflate headers. Oracles and guest material: QEMU's tools, nbdkit, libnbd,
# SeaBIOS, OVMF, Debian's kernel package (unpacked at test time, never installed), busybox and
# acpica-tools (iasl disassembles our DSDT in a test); gnutls-bin and openssl make test certificates.
# Benchmarks: GNU time (bench/measure.py reads its peak RSS).
set -euo pipefail
pkgs=(zlib1g-dev libzstd-dev libdeflate-dev pkg-config libgnutls28-dev fio
      qemu-utils qemu-system-x86 qemu-block-extra nbdkit libnbd-bin python3-libnbd
      seabios ovmf busybox-static cpio nasm gnutls-bin openssl bc time acpica-tools)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
