#!/usr/bin/env bash
# Storage server benchmark: the same dynamic VHD served by `strata disk plug --direct` and by
# `qemu-nbd -f vpc`, driven by `qemu-img bench` over a Unix socket in the same run. Prints
# throughput for each and the ratio (Strata / qemu-nbd: above 1, Strata is faster; each row a
# warm-up run then the median of 3, alternating the servers), and the
# Strata server's peak resident memory. Usage: bench/nbd.sh [--dir DIR] [--size-mib N]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${TMPDIR:-/tmp}
size_mib=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    *) echo "usage: bench/nbd.sh [--dir DIR] [--size-mib N]" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p strata-cli
strata=$PWD/target/release/strata
work=$(mktemp -d "$dir/strata-nbd-bench.XXXXXX")
export STRATA_RUN_DIR=$work/run
qpid=""
cleanup() {
  "$strata" disk unplug --all --discard >/dev/null 2>&1 || true
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

head -c "$((size_mib / 2))M" /dev/urandom > "$work/src.raw"
truncate -s "${size_mib}M" "$work/src.raw"
"$strata" disk convert "$work/src.raw" "$work/s.vhd" --type dynamic >/dev/null
cp "$work/s.vhd" "$work/q.vhd"
uri_s=$("$strata" disk plug "$work/s.vhd" --direct | head -n 1)
spid=$("$strata" disk query "$work/s.vhd" --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
qemu-nbd -f vpc -k "$work/q.sock" -t -x "" --cache=writeback "$work/q.vhd" &
qpid=$!
for _ in $(seq 100); do [ -S "$work/q.sock" ] && break; sleep 0.05; done
uri_q="nbd+unix:///?socket=$work/q.sock"

bytes=$((size_mib * 1024 * 1024))
step4k=$((100003 * 4096 % bytes))
# name, qemu-img bench arguments, bytes moved per run
run() {
  local uri=$1; shift
  local t0 t1
  # Both files leave the page cache before every run, so that neither server is favoured by
  # whatever the previous run left there (GNU dd: count=0 with nocache drops the whole file).
  dd if="$work/s.vhd" iflag=nocache count=0 status=none
  dd if="$work/q.vhd" iflag=nocache count=0 status=none
  t0=$(date +%s.%N)
  qemu-img bench -f raw "$@" "$uri" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
printf '| Workload (queue depth 1 and 16) | Strata | qemu-nbd | Ratio |\n|---|---:|---:|---:|\n'
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
row() {
  local label=$1 unit=$2 amount=$3; shift 3
  local ts tq a b c d e f
  run "$uri_s" "$@" >/dev/null; run "$uri_q" "$@" >/dev/null   # warm-up
  a=$(run "$uri_s" "$@"); b=$(run "$uri_q" "$@")
  c=$(run "$uri_s" "$@"); d=$(run "$uri_q" "$@")
  e=$(run "$uri_s" "$@"); f=$(run "$uri_q" "$@")
  ts=$(median "$a" "$c" "$e"); tq=$(median "$b" "$d" "$f")
  printf '| %s | %.0f %s | %.0f %s | %.2f× |\n' "$label" "$(echo "$amount / $ts" | bc -l)" "$unit" \
    "$(echo "$amount / $tq" | bc -l)" "$unit" "$(echo "$tq / $ts" | bc -l)"
}
for depth in 1 16; do
  row "4 KiB random reads, depth $depth" IOPS 20000 -d "$depth" -c 20000 -s 4096 -S "$step4k"
  row "4 KiB random writes, depth $depth" IOPS 20000 -w -d "$depth" -c 20000 -s 4096 -S "$step4k"
  row "1 MiB sequential reads, depth $depth" MiB/s "$size_mib" -d "$depth" -c "$size_mib" -s 1M
  row "1 MiB sequential writes, depth $depth" MiB/s "$size_mib" -w -d "$depth" -c "$size_mib" -s 1M
done
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$spid/status")
printf '\nStrata server peak resident memory: %s KiB (no cache is configured: the page cache serves)\n' "$hwm"
