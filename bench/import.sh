#!/usr/bin/env bash
# Import from other formats (issue 11): `strata disk import SRC out.vhd` (qemu-nbd --read-only
# serving SRC, read by Strata's NBD client, written by Strata's VHD convert) vs
# `qemu-img convert -O vpc -o subformat=dynamic,force_size=on SRC out.vhd`, for a qcow2 and a
# VMDK (monolithicSparse) of the same content: a SIZE disk holding SIZE/2 of random data, laid out
# either as 1 MiB extents every 2 MiB ("scattered") or in the first half ("front"). Source evicted
# from the page cache before every timed run, output fsynced inside the clock, median of N runs,
# outputs checked with `qemu-img compare`; prints a Markdown table.
# Results and analysis: docs/PERFORMANCE.md, "Import from other formats (issue 11)".
#
# Usage: bench/import.sh [--runs N] [--size-gib G] [--layouts "scattered front"] [--formats "qcow2 vmdk"] [--dir DIR] [--out FILE] [--keep] [--no-build]
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

RUNS=3
SIZE_GIB=2
LAYOUTS="scattered front"
FORMATS="qcow2 vmdk"
DIR=${TMPDIR:-/tmp}
OUT=""
KEEP=0
BUILD=1
while (($#)); do
    case $1 in
        --runs) RUNS=$2; shift ;;
        --size-gib) SIZE_GIB=$2; shift ;;
        --layouts) LAYOUTS=$2; shift ;;
        --formats) FORMATS=$2; shift ;;
        --dir) DIR=$2; shift ;;
        --out) OUT=$2; shift ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "import.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

MiB=$((1 << 20))
GiB=$((1 << 30))
SIZE=$((SIZE_GIB * GiB))
DATA=$((SIZE / 2))

for tool in qemu-img qemu-nbd /usr/bin/time dd sync awk findmnt head truncate; do
    if ! command -v "$tool" >/dev/null; then
        echo "import.sh: $tool is missing (qemu-utils, time, coreutils, util-linux)" >&2
        exit 1
    fi
done

STRATA=${CARGO_TARGET_DIR:-$ROOT/target}/release/strata
if ((BUILD)); then
    echo "== building (release)" >&2
    (cd "$ROOT" && cargo build --release -p strata-cli) >&2
fi

mkdir -p "$DIR"
W=$(mktemp -d "$DIR/strata-import-bench.XXXXXX")
cleanup() {
    if ((KEEP)); then echo "work files kept in $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
LOG=$W/log
: >"$LOG"

need=$((4 * SIZE))
avail=$(($(df -k --output=avail "$W" | tail -n1) * 1024))
if ((avail < need)); then
    echo "import.sh: $W has $((avail / GiB)) GiB free, the benchmark needs about $((need / GiB)) GiB" >&2
    exit 1
fi

declare -A T # key -> "t1 t2 t3 " (seconds)
declare -A R # key -> peak RSS in KiB (max over runs; the largest process of the tree)
declare -a FAILS=()
NOTES=()

say() { echo "-- $*" >&2; }

median() { # numbers as arguments
    printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
med() { # median of a key's runs
    local -a v
    read -ra v <<<"${T[$1]}"
    median "${v[@]}"
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.2f", a / b }'; }
fmt() { awk -v a="$1" 'BEGIN { printf "%.2f", a }'; }
mib() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
on_disk() { du -k "$1" | awk '{ printf "%.0f MiB", $1 / 1024 }'; }
runs_of() { echo "${T[$1]% }"; }

# As in run.sh: drops the page cache of these files only (after writing back dirty pages), so that
# each run reads the source from the device; the machine's global cache is left alone.
evict() {
    sync
    local f
    for f in "$@"; do
        if [[ -e $f ]]; then dd if="$f" iflag=nocache count=0 status=none; fi
    done
}

# timed KEY SYNCFILE CMD... : as in run.sh: wall time of CMD then `sync SYNCFILE` (qemu-img
# convert never syncs its output; Strata does before it returns), appended to T[KEY]; peak RSS.
timed() {
    local key=$1 syncf=$2 t0 t1 rss
    shift 2
    echo "+ $*" >>"$LOG"
    t0=$(date +%s.%N)
    if ! /usr/bin/time -f %M -o "$W/rss" "$@" >>"$LOG" 2>&1; then
        echo "import.sh: command failed: $*" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    if [[ -n $syncf ]]; then sync "$syncf"; fi
    t1=$(date +%s.%N)
    T[$key]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') "
    rss=$(tail -n 1 "$W/rss")
    if ((rss > ${R[$key]:-0})); then R[$key]=$rss; fi
}

quiet() { # untimed setup command, output to the log
    echo "+ $*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        echo "import.sh: command failed: $*" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
}

same() { # same WHAT ARGS... : qemu-img compare; records a failure if the images differ
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

# strata_import SRC DST : `strata disk import SRC DST`, run again (at most twice more) when it
# fails only with "Connection refused": qemu-nbd binds its socket before it listens on it, and the
# CLI connects as soon as the socket file exists, so it can arrive in between (a race in
# disk_import.rs; hit once in the first run of this script, under load). Each such failure is
# appended to $W/refused and reported; the time of the failed attempt stays in the run's time.
strata_import() {
    local try
    for try in 1 2 3; do
        rm -f "$2"
        if "$STRATA" disk import "$1" "$2" 2>"$W/import.err"; then return 0; fi
        cat "$W/import.err" >&2
        if ! grep -q 'Connection refused' "$W/import.err" || ((try == 3)); then return 1; fi
        echo "$1" >>"$W/refused"
    done
}
export -f strata_import
export STRATA W

START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# The random data, made once (incompressible, so no format or tool can shortcut it).
say "making $((DATA / MiB)) MiB of random data"
quiet dd if=/dev/urandom of="$W/random" bs=1M count=$((DATA / MiB)) status=none

# mkraw LAYOUT : $W/src.raw, SIZE bytes, holes where there is no data.
mkraw() {
    rm -f "$W/src.raw"
    truncate -s "$SIZE" "$W/src.raw"
    case $1 in
        front) quiet dd if="$W/random" of="$W/src.raw" bs=1M conv=notrunc status=none ;;
        scattered)
            local i
            for ((i = 0; i < DATA / MiB; i++)); do
                dd if="$W/random" of="$W/src.raw" bs=1M count=1 skip="$i" seek=$((2 * i)) conv=notrunc status=none
            done
            ;;
        *) echo "import.sh: unknown layout $1 (scattered, front)" >&2; exit 2 ;;
    esac
}

CASES=()
for layout in $LAYOUTS; do
    say "layout $layout: making the sources"
    mkraw "$layout"
    for fmt in $FORMATS; do
        src=$W/src-$layout.$fmt
        case $fmt in
            qcow2) quiet qemu-img convert -f raw -O qcow2 "$W/src.raw" "$src" ;;
            vmdk) quiet qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$W/src.raw" "$src" ;;
            *) echo "import.sh: unknown format $fmt (qcow2, vmdk)" >&2; exit 2 ;;
        esac
        NOTES+=("source $layout.$fmt: $(on_disk "$src") on disk")
        CASES+=("$layout:$fmt")
    done
    rm -f "$W/src.raw"
done
rm -f "$W/random"

for c in "${CASES[@]}"; do
    layout=${c%%:*}
    fmt=${c#*:}
    src=$W/src-$layout.$fmt
    k=${layout}_$fmt
    for ((r = 1; r <= RUNS; r++)); do
        say "import $layout $fmt, run $r/$RUNS"
        if ((r % 2)); then order="strata qemu"; else order="qemu strata"; fi
        rm -f "$W/out_s.vhd" "$W/out_q.vhd"
        for tool in $order; do
            evict "$src"
            if [[ $tool == strata ]]; then
                # shellcheck disable=SC2016 # $1 and $2 are the inner shell's
                timed "${k}_s" "$W/out_s.vhd" bash -c 'strata_import "$1" "$2"' bash "$src" "$W/out_s.vhd"
            else
                timed "${k}_q" "$W/out_q.vhd" qemu-img convert -f "$fmt" -O vpc -o subformat=dynamic,force_size=on "$src" "$W/out_q.vhd"
            fi
        done
        same "$layout $fmt, Strata output vs qemu-img output (run $r)" -f vpc -F vpc "$W/out_s.vhd" "$W/out_q.vhd"
        if ((r == 1)); then
            same "$layout $fmt, Strata output vs source" -f vpc -F "$fmt" "$W/out_s.vhd" "$src"
            NOTES+=("$layout $fmt → dynamic VHD, output on disk: Strata $(on_disk "$W/out_s.vhd"), qemu-img $(on_disk "$W/out_q.vhd")")
        fi
    done
    rm -f "$W/out_s.vhd" "$W/out_q.vhd" "$src"
done

# ---------------------------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - START))
FSTYPE=$(findmnt -no FSTYPE -T "$W")
FSDEV=$(findmnt -no SOURCE -T "$W")
CPU=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- crates 2>/dev/null) ]]; then REV+=" (+ uncommitted changes in crates/)"; fi

lay_name() {
    case $1 in
        scattered) echo "1 MiB extents every 2 MiB" ;;
        front) echo "data in the first half" ;;
    esac
}

REPORT=$W/report.md
{
    echo "### Results (median of $RUNS)"
    echo
    echo "Speed-up = qemu-img time / Strata time: above 1, Strata is faster."
    echo
    echo "| Import → dynamic VHD, ${SIZE_GIB} GiB disk, $((DATA / MiB)) MiB random data | Strata \`disk import\` | \`qemu-img convert -O vpc\` | Speed-up |"
    echo "|---|---:|---:|---:|"
    for c in "${CASES[@]}"; do
        layout=${c%%:*}
        fmt=${c#*:}
        k=${layout}_$fmt
        s=$(med "${k}_s"); q=$(med "${k}_q")
        echo "| $fmt, $(lay_name "$layout") | $(fmt "$s") s | $(fmt "$q") s | **$(div "$q" "$s")×** |"
    done
    echo
    echo "Peak resident memory (\`/usr/bin/time\`, highest of the runs; for Strata the largest of its processes: the CLI, \`qemu-img info\`, qemu-nbd):"
    echo
    echo "| Case | Strata | qemu-img |"
    echo "|---|---:|---:|"
    for c in "${CASES[@]}"; do
        layout=${c%%:*}
        fmt=${c#*:}
        k=${layout}_$fmt
        echo "| $fmt, $(lay_name "$layout") | $(mib "${R[${k}_s]}") | $(mib "${R[${k}_q]}") |"
    done
    echo
    echo "All runs (seconds):"
    echo
    echo '```'
    for c in "${CASES[@]}"; do
        layout=${c%%:*}
        fmt=${c#*:}
        for t in s q; do
            printf '%-20s %s\n' "${layout}_${fmt}_$t" "$(runs_of "${layout}_${fmt}_$t")"
        done
    done
    echo '```'
    echo
    for n in "${NOTES[@]}"; do echo "- $n"; done
    if [[ -s $W/refused ]]; then
        echo "- **\`strata disk import\` failed with \"Connection refused\" $(wc -l <"$W/refused") time(s)** (the qemu-nbd socket race; run again, time included)"
    else
        echo "- no \`strata disk import\` failed (\"Connection refused\" race not hit)"
    fi
    if ((${#FAILS[@]})); then
        for f in "${FAILS[@]}"; do echo "- **VERIFICATION FAILED: $f**"; done
    else
        echo "- all outputs verified identical with \`qemu-img compare\` (Strata vs qemu-img every run, Strata vs the source in the first)"
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
