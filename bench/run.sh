#!/usr/bin/env bash
# Strata vs qemu-img benchmarks: convert (both directions), 4 KiB writes with periodic flushes,
# in-place merge, peak memory. See bench/README.md for what is measured and how.
#
# Usage: bench/run.sh [--quick] [--runs N] [--dir DIR] [--out FILE] [--keep] [--no-build]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

QUICK=0
RUNS=""
DIR=${TMPDIR:-/tmp}
OUT=""
KEEP=0
BUILD=1
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --runs) RUNS=$2; shift ;;
        --dir) DIR=$2; shift ;;
        --out) OUT=$2; shift ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

MiB=$((1 << 20))
GiB=$((1 << 30))
if ((QUICK)); then
    SIZE=$((256 * MiB)) # convert image, write-test disk, small merge parent
    BIG=$((1 * GiB))    # large merge parent
    WRITES=2000
    RUNS=${RUNS:-3}
else
    SIZE=$((2 * GiB))
    BIG=$((8 * GiB))
    WRITES=20000
    RUNS=${RUNS:-3}
fi
FLUSH_EVERY=1000
BS=4096
# qemu-img bench has no random pattern: offsets are OFFSET + i*STEP modulo the disk size. A step of
# an odd number of 4 KiB slots visits distinct slots scattered over the whole disk (each write
# lands ~390 MiB after the previous one); vhdbench replays exactly the same sequence.
STRIDE=$((BS * 100003))
CHILD_PIECE=$MiB        # the child holds 1 MiB every 8 MiB of the first SIZE bytes: SIZE/8
CHILD_EVERY=$((8 * MiB))
PARENT_PIECE=$((256 * 1024)) # parents hold 256 KiB of data in every 2 MiB block (all blocks allocated)

hsize() { # bytes -> "2 GiB" / "256 MiB"
    if (($1 % GiB == 0)); then echo "$(($1 / GiB)) GiB"; else echo "$(($1 / MiB)) MiB"; fi
}

for tool in qemu-img qemu-io /usr/bin/time dd sync awk findmnt; do
    if ! command -v "$tool" >/dev/null; then
        echo "run.sh: $tool is missing (qemu-utils, time, coreutils, util-linux)" >&2
        exit 1
    fi
done

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VB_TARGET=${CARGO_TARGET_DIR:-$ROOT/bench/vhdbench/target}
STRATA=$TARGET/release/strata
VHDBENCH=$VB_TARGET/release/vhdbench
if ((BUILD)); then
    echo "== building (release)" >&2
    (cd "$ROOT" && cargo build --release -p strata-cli) >&2
    cargo build --release --manifest-path "$ROOT/bench/vhdbench/Cargo.toml" >&2
fi

mkdir -p "$DIR"
W=$(mktemp -d "$DIR/strata-bench.XXXXXX")
cleanup() {
    if ((KEEP)); then echo "work files kept in $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
LOG=$W/log
: >"$LOG"

need=$((4 * SIZE + BIG / 2))
avail=$(($(df -k --output=avail "$W" | tail -n1) * 1024))
if ((avail < need)); then
    echo "run.sh: $W has $(hsize $avail) free, the benchmarks need about $(hsize $need)" >&2
    exit 1
fi

declare -A T   # key -> "t1 t2 t3 " (seconds)
declare -A R   # key -> peak RSS in KiB (max over runs)
declare -a FAILS=()
NOTES=()

say() { echo "-- $*" >&2; }

median() { # numbers as arguments
    printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
med() { median ${T[$1]}; } # median of a key's runs
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.2f", a / b }'; }
fmt() { awk -v a="$1" 'BEGIN { printf "%.2f", a }'; }
mib() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

# Drops the page cache of these files (after writing back dirty pages), so that each run reads
# from the device rather than memory. Only these files: the machine's global cache is left alone.
evict() {
    sync
    local f
    for f in "$@"; do
        if [[ -e $f ]]; then dd if="$f" iflag=nocache count=0 status=none; fi
    done
}

# timed KEY SYNCFILE CMD... : runs CMD under /usr/bin/time, then fsyncs SYNCFILE (qemu-img convert
# writes with cache=unsafe and never syncs; Strata syncs before it returns: the clock stops when
# both outputs are durable). Appends the wall time to T[KEY], keeps the peak RSS in R[KEY].
timed() {
    local key=$1 syncf=$2 t0 t1 rss
    shift 2
    echo "+ $*" >>"$LOG"
    t0=$(date +%s.%N)
    if ! /usr/bin/time -f %M -o "$W/rss" "$@" >>"$LOG" 2>&1; then
        echo "run.sh: command failed: $*" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    if [[ -n $syncf ]]; then sync "$syncf"; fi
    t1=$(date +%s.%N)
    T[$key]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') "
    rss=$(tail -n 1 "$W/rss")
    if ((rss > ${R[$key]:-0})); then R[$key]=$rss; fi
}

# quiet CMD... : runs an untimed setup command, output to the log.
quiet() {
    echo "+ $*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        echo "run.sh: command failed: $*" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
}

# same WHAT ARGS... : qemu-img compare; records a failure if the images differ.
same() {
    local what=$1
    shift
    echo "+ qemu-img compare $*" >>"$LOG"
    if qemu-img compare "$@" >>"$LOG" 2>&1; then
        echo "   identical: $what" >&2
    else
        echo "   DIFFERENT: $what" >&2
        FAILS+=("$what")
    fi
}

on_disk() { du -k "$1" | awk '{ printf "%.0f MiB", $1 / 1024 }'; }

START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
say "convert: making a $(hsize $SIZE) raw image (1 MiB random data, 1 MiB zeros, repeated)"
quiet "$VHDBENCH" mkraw "$W/src.raw" --size "$SIZE" --data 1M --period 2M
# The dynamic source of the VHD -> raw runs (same file for both tools, made once, untimed).
quiet "$STRATA" disk convert "$W/src.raw" "$W/src.vhd" --type dynamic

for ((r = 1; r <= RUNS; r++)); do
    say "convert run $r/$RUNS"
    if ((r % 2)); then order="strata qemu"; else order="qemu strata"; fi
    for tool in $order; do
        evict "$W/src.raw"
        if [[ $tool == strata ]]; then
            timed conv_r2d_s "$W/out_s.vhd" "$STRATA" disk convert "$W/src.raw" "$W/out_s.vhd" --type dynamic
        else
            timed conv_r2d_q "$W/out_q.vhd" qemu-img convert -f raw -O vpc -o force_size=on "$W/src.raw" "$W/out_q.vhd"
        fi
    done
    same "raw->dynamic, Strata output vs qemu-img output (run $r)" -f vpc -F vpc "$W/out_s.vhd" "$W/out_q.vhd"
    if ((r == 1)); then
        same "raw->dynamic, Strata output vs source" -f raw -F vpc "$W/src.raw" "$W/out_s.vhd"
        NOTES+=("raw → dynamic output space on disk: Strata $(on_disk "$W/out_s.vhd"), qemu-img $(on_disk "$W/out_q.vhd")")
    fi
    rm -f "$W/out_s.vhd" "$W/out_q.vhd"

    for tool in $order; do
        evict "$W/src.vhd"
        if [[ $tool == strata ]]; then
            timed conv_d2r_s "$W/out_s.raw" "$STRATA" disk convert "$W/src.vhd" "$W/out_s.raw" --type raw
        else
            timed conv_d2r_q "$W/out_q.raw" qemu-img convert -f vpc -O raw "$W/src.vhd" "$W/out_q.raw"
        fi
    done
    same "dynamic->raw, Strata output vs qemu-img output (run $r)" -f raw -F raw "$W/out_s.raw" "$W/out_q.raw"
    if ((r == 1)); then
        same "dynamic->raw, Strata output vs source" -f raw -F raw "$W/src.raw" "$W/out_s.raw"
        NOTES+=("dynamic → raw output space on disk: Strata $(on_disk "$W/out_s.raw"), qemu-img $(on_disk "$W/out_q.raw")")
    fi
    rm -f "$W/out_s.raw" "$W/out_q.raw"
done
rm -f "$W/src.raw" "$W/src.vhd"

# ---------------------------------------------------------------------------------------------
# write_pair KEY OFFSET STEP REUSE : one Strata and one qemu-img run of $WRITES 4 KiB writes with a
# flush every $FLUSH_EVERY, on w_s.vhd / w_q.vhd (new disks unless REUSE=1). Seconds as each tool
# reports them (from after the open to after the last flush).
write_pair() {
    local key=$1 off=$2 step=$3 reuse=$4 secs tool
    if ((reuse == 0)); then
        rm -f "$W/w_s.vhd" "$W/w_q.vhd"
        quiet qemu-img create -f vpc -o force_size=on "$W/w_q.vhd" "$SIZE"
    fi
    for tool in $order; do
        sync
        if [[ $tool == strata ]]; then
            echo "+ vhdbench randwrite w_s.vhd offset=$off step=$step reuse=$reuse" >>"$LOG"
            secs=$(/usr/bin/time -f %M -o "$W/rss" "$VHDBENCH" randwrite "$W/w_s.vhd" --size "$SIZE" --count "$WRITES" \
                --bs "$BS" --flush-interval "$FLUSH_EVERY" --offset "$off" --step "$step" --reuse "$reuse" --pattern 0xab |
                tee -a "$LOG" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')
            T[${key}_s]+="$secs "
        else
            echo "+ qemu-img bench w_q.vhd offset=$off step=$step" >>"$LOG"
            secs=$(/usr/bin/time -f %M -o "$W/rss" qemu-img bench -w -t writeback -f vpc -s "$BS" -c "$WRITES" -d 1 \
                -o "$off" -S "$step" --pattern=0xab --flush-interval="$FLUSH_EVERY" "$W/w_q.vhd" |
                tee -a "$LOG" | sed -n 's/Run completed in \([0-9.]*\) seconds.*/\1/p')
            T[${key}_q]+="$secs "
        fi
        if [[ -z $secs ]]; then
            echo "run.sh: no timing from the $tool write benchmark" >&2
            tail -n 20 "$LOG" >&2
            exit 1
        fi
    done
}

for ((r = 1; r <= RUNS; r++)); do
    say "4 KiB writes run $r/$RUNS"
    if ((r % 2)); then order="strata qemu"; else order="qemu strata"; fi
    write_pair wr_new 0 "$STRIDE" 0
    same "scattered writes, Strata disk vs qemu-img disk (run $r)" -f vpc -F vpc "$W/w_s.vhd" "$W/w_q.vhd"
    write_pair wr_again "$BS" "$STRIDE" 1 # same disks: every block is allocated now
    same "scattered rewrites, Strata disk vs qemu-img disk (run $r)" -f vpc -F vpc "$W/w_s.vhd" "$W/w_q.vhd"
    write_pair wr_seq 0 "$BS" 0
    same "sequential writes, Strata disk vs qemu-img disk (run $r)" -f vpc -F vpc "$W/w_s.vhd" "$W/w_q.vhd"
    rm -f "$W/w_s.vhd" "$W/w_q.vhd"
done

# ---------------------------------------------------------------------------------------------
# Parent: a dynamic VHD with 256 KiB of data in each 2 MiB block. Child: differencing disk holding
# 1 MiB every 8 MiB of the first SIZE bytes (SIZE/8 in all), identical for both parent sizes.
# Reference: the same parent converted to qcow2, a qcow2 overlay given the same writes (a fixed
# pattern), folded back by `qemu-img commit -d` then deleted, as Strata deletes the child (qemu
# cannot write VHD differencing disks).
qemu_io_args=()
for ((o = 0; o + CHILD_PIECE <= SIZE; o += CHILD_EVERY)); do
    qemu_io_args+=(-c "write -q -P 0x5a $o $CHILD_PIECE")
done
CHILD_BYTES=$(((SIZE / CHILD_EVERY) * CHILD_PIECE))

for psize in "$SIZE" "$BIG"; do
    key=$((psize / MiB))
    for ((r = 1; r <= RUNS; r++)); do
        say "merge into a $(hsize "$psize") parent, run $r/$RUNS"
        rm -f "$W"/p.* "$W"/c.* "$W/flat.raw"
        quiet "$STRATA" disk create "$W/p.vhd" --size "$psize"
        quiet "$VHDBENCH" fill "$W/p.vhd" --len "$PARENT_PIECE" --every 2M --seed 1
        quiet qemu-img convert -f vpc -O qcow2 "$W/p.vhd" "$W/p.qcow2"
        quiet "$STRATA" disk create "$W/c.vhd" --parent "$W/p.vhd"
        quiet "$VHDBENCH" fill "$W/c.vhd" --len "$CHILD_PIECE" --every "$CHILD_EVERY" --limit "$SIZE" --seed 2
        quiet qemu-img create -f qcow2 -b "$W/p.qcow2" -F qcow2 "$W/c.qcow2"
        quiet qemu-io -f qcow2 "${qemu_io_args[@]}" "$W/c.qcow2"
        verify=$((r == 1 && psize == SIZE))
        if ((verify)); then
            quiet "$STRATA" disk convert "$W/c.vhd" "$W/flat.raw" --type raw # the chain's content
        fi
        evict "$W/p.vhd" "$W/c.vhd" "$W/p.qcow2" "$W/c.qcow2"
        timed "merge_${key}_s" "$W/p.vhd" "$STRATA" disk merge "$W/c.vhd"
        evict "$W/p.qcow2" "$W/c.qcow2"
        # Strata deletes the merged child (on this ext4, mounted with `discard`, the unlink is a
        # good part of a small merge): the reference deletes the overlay too.
        timed "merge_${key}_q" "$W/p.qcow2" sh -c 'qemu-img commit -q -d "$1" && rm "$1"' sh "$W/c.qcow2"
        if [[ -e $W/c.vhd ]]; then FAILS+=("merge left the child in place"); fi
        if ! "$STRATA" disk check "$W/p.vhd" >>"$LOG" 2>&1; then FAILS+=("check of the merged parent ($(hsize "$psize"))"); fi
        if ((verify)); then
            same "merged parent vs the chain before the merge" -f vpc -F raw "$W/p.vhd" "$W/flat.raw"
        fi
    done
done
rm -f "$W"/p.* "$W"/c.* "$W/flat.raw"

# ---------------------------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - START))
FSTYPE=$(findmnt -no FSTYPE -T "$W")
FSDEV=$(findmnt -no SOURCE -T "$W")
CPU=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- crates 2>/dev/null) ]]; then REV+=" (+ uncommitted changes in crates/)"; fi

S=$(hsize "$SIZE")
B=$(hsize "$BIG")
C=$(hsize "$CHILD_BYTES")
iops() { awk -v n="$WRITES" -v s="$1" 'BEGIN { printf "%.0f", n / s }'; }
runs_of() { echo "${T[$1]}" | sed 's/ *$//'; }

REPORT=$W/report.md
{
    echo "### Results ($([[ $QUICK == 1 ]] && echo quick || echo full) run, median of $RUNS)"
    echo
    echo "Speed-up = how many times faster Strata is (qemu-img time / Strata time, or Strata IOPS / qemu-img IOPS): above 1, Strata is faster."
    echo
    echo "| Benchmark | Strata | qemu-img | Speed-up |"
    echo "|---|---:|---:|---:|"
    for k in r2d d2r; do
        if [[ $k == r2d ]]; then name="convert raw → dynamic VHD, $S, half zeros"; else name="convert dynamic VHD → raw, $S, half zeros"; fi
        s=$(med conv_${k}_s); q=$(med conv_${k}_q)
        echo "| $name | $(fmt "$s") s | $(fmt "$q") s | **$(div "$q" "$s")×** |"
    done
    for k in wr_new wr_again wr_seq; do
        case $k in
            wr_new) name="4 KiB scattered writes, new $S dynamic disk, flush every $FLUSH_EVERY" ;;
            wr_again) name="same, again on the same disks (blocks already allocated)" ;;
            wr_seq) name="4 KiB sequential writes, new $S dynamic disk, flush every $FLUSH_EVERY" ;;
        esac
        s=$(med ${k}_s); q=$(med ${k}_q)
        echo "| $name | $(iops "$s") IOPS | $(iops "$q") IOPS | **$(div "$q" "$s")×** |"
    done
    for p in "$SIZE" "$BIG"; do
        k=$((p / MiB))
        s=$(med merge_${k}_s); q=$(med merge_${k}_q)
        echo "| in-place merge, $C child into $(hsize "$p") parent (qemu-img: qcow2 commit + delete, reference only) | $(fmt "$s") s | $(fmt "$q") s (qcow2) | $(div "$q" "$s")× |"
    done
    s1=$(med merge_$((SIZE / MiB))_s); s2=$(med merge_$((BIG / MiB))_s)
    q1=$(med merge_$((SIZE / MiB))_q); q2=$(med merge_$((BIG / MiB))_q)
    echo "| merge time, $B parent / $S parent (1.00 = independent of parent size) | $(div "$s2" "$s1") | $(div "$q2" "$q1") (qcow2) | |"
    echo
    echo "Peak resident memory (\`/usr/bin/time\` maximum RSS, highest of the runs; target: Strata under 64 MiB):"
    echo
    echo "| Operation | Strata | qemu-img | Strata < 64 MiB |"
    echo "|---|---:|---:|:---:|"
    for k in r2d d2r; do
        if [[ $k == r2d ]]; then name="convert raw → dynamic, $S"; else name="convert dynamic → raw, $S"; fi
        rs=${R[conv_${k}_s]}; rq=${R[conv_${k}_q]}
        echo "| $name | $(mib "$rs") | $(mib "$rq") | $( ((rs < 65536)) && echo yes || echo "**NO**") |"
    done
    for p in "$SIZE" "$BIG"; do
        k=$((p / MiB)); rs=${R[merge_${k}_s]}; rq=${R[merge_${k}_q]}
        echo "| merge $C child into $(hsize "$p") parent | $(mib "$rs") | $(mib "$rq") (qcow2 commit) | $( ((rs < 65536)) && echo yes || echo "**NO**") |"
    done
    echo
    echo "All runs (seconds; write benchmarks: seconds for $WRITES writes as each tool reports them):"
    echo
    echo '```'
    for k in conv_r2d_s conv_r2d_q conv_d2r_s conv_d2r_q wr_new_s wr_new_q wr_again_s wr_again_q wr_seq_s wr_seq_q \
        "merge_$((SIZE / MiB))_s" "merge_$((SIZE / MiB))_q" "merge_$((BIG / MiB))_s" "merge_$((BIG / MiB))_q"; do
        printf '%-16s %s\n' "$k" "$(runs_of "$k")"
    done
    echo '```'
    echo
    for n in "${NOTES[@]}"; do echo "- $n"; done
    if ((${#FAILS[@]})); then
        for f in "${FAILS[@]}"; do echo "- **VERIFICATION FAILED: $f**"; done
    else
        echo "- all outputs verified identical with \`qemu-img compare\`; merged parents pass \`strata disk check\`"
    fi
    echo
    echo "Machine: $(nproc) CPUs (\`nproc\`), $CPU, $MEM RAM, kernel $(uname -r); work files on $FSTYPE ($FSDEV, $W)."
    echo "Load average at start: $LOAD_START, at end: $LOAD_END. Total time: ${ELAPSED} s."
    echo "$(qemu-img --version | head -n1); $(rustc --version 2>/dev/null || echo rustc unknown); Strata at $REV."
} >"$REPORT"

echo
cat "$REPORT"
if [[ -n $OUT ]]; then cp "$REPORT" "$OUT"; fi
if ((${#FAILS[@]})); then exit 1; fi
