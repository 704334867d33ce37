#!/usr/bin/env bash
# Diagnostic companion of run.sh: where does qemu-img's convert advantage come from? Times Strata
# and qemu-img convert with its default settings, without zero detection (-S 0: writes zeros like
# Strata does inside a non-zero 2 MiB chunk), without parallel requests (-m 1: one request at a
# time, like Strata), and with both, on the same half-zero image as run.sh. Needs the binaries
# run.sh builds.
#
# Usage: bench/convert-variants.sh [--quick] [--runs N] [--dir DIR]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE=$((2 << 30))
RUNS=3
DIR=${TMPDIR:-/tmp}
while (($#)); do
    case $1 in
        --quick) SIZE=$((256 << 20)) ;;
        --runs) RUNS=$2; shift ;;
        --dir) DIR=$2; shift ;;
        *) echo "convert-variants.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
STRATA=${CARGO_TARGET_DIR:-$ROOT/target}/release/strata
VHDBENCH=${CARGO_TARGET_DIR:-$ROOT/bench/vhdbench/target}/release/vhdbench
for b in "$STRATA" "$VHDBENCH"; do
    [[ -x $b ]] || { echo "convert-variants.sh: $b is missing: run bench/run.sh first" >&2; exit 1; }
done

W=$(mktemp -d "$DIR/strata-variants.XXXXXX")
trap 'rm -rf "$W"' EXIT
"$VHDBENCH" mkraw "$W/src.raw" --size "$SIZE" --data 1M --period 2M >/dev/null
"$STRATA" disk convert "$W/src.raw" "$W/src.vhd" --type dynamic >/dev/null

declare -A T
# one NAME SRC OUT CMD... : evict SRC from the page cache, time CMD plus an fsync of OUT.
one() {
    local name=$1 src=$2 out=$3 t0 t1
    shift 3
    sync
    dd if="$src" iflag=nocache count=0 status=none
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    sync "$out"
    t1=$(date +%s.%N)
    T[$name]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') "
    rm -f "$out"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END { if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

names=(strata qemu qemu-S0 qemu-m1 qemu-m1-S0)
for ((r = 1; r <= RUNS; r++)); do
    echo "-- round $r/$RUNS" >&2
    for n in "${names[@]}"; do
        case $n in
            strata) a=() ;;
            qemu) a=() ;;
            qemu-S0) a=(-S 0) ;;
            qemu-m1) a=(-m 1) ;;
            qemu-m1-S0) a=(-m 1 -S 0) ;;
        esac
        if [[ $n == strata ]]; then
            one "r2d $n" "$W/src.raw" "$W/o.vhd" "$STRATA" disk convert "$W/src.raw" "$W/o.vhd" --type dynamic
            one "d2r $n" "$W/src.vhd" "$W/o.raw" "$STRATA" disk convert "$W/src.vhd" "$W/o.raw" --type raw
        else
            one "r2d $n" "$W/src.raw" "$W/o.vhd" qemu-img convert "${a[@]}" -f raw -O vpc -o force_size=on "$W/src.raw" "$W/o.vhd"
            one "d2r $n" "$W/src.vhd" "$W/o.raw" qemu-img convert "${a[@]}" -f vpc -O raw "$W/src.vhd" "$W/o.raw"
        fi
    done
done

echo "| convert, $((SIZE >> 20)) MiB, half zeros (median of $RUNS, s) | raw → dynamic | dynamic → raw |"
echo "|---|---:|---:|"
for n in "${names[@]}"; do
    case $n in
        strata) label="Strata" ;;
        qemu) label="qemu-img (defaults: 4 KiB zero detection, 8 parallel requests)" ;;
        qemu-S0) label="qemu-img -S 0 (no zero detection)" ;;
        qemu-m1) label="qemu-img -m 1 (one request at a time)" ;;
        qemu-m1-S0) label="qemu-img -m 1 -S 0 (both: the same work as Strata)" ;;
    esac
    # shellcheck disable=SC2086
    echo "| $label | $(median ${T["r2d $n"]}) | $(median ${T["d2r $n"]}) |"
done
echo
echo "All runs:"
for n in "${names[@]}"; do printf '  %-12s r2d: %s  d2r: %s\n' "$n" "${T["r2d $n"]}" "${T["d2r $n"]}"; done
echo "Load average: $(cut -d' ' -f1-3 /proc/loadavg)"
