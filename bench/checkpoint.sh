#!/usr/bin/env bash
# Checkpoints of a running VM (issue 11), under TCG: for a dynamic VHD of 1 GiB and one of 64 GiB,
# a 256 MiB VM with that disk takes --runs checkpoints in a row (`strata checkpoint create`); for
# each, the disk switch time and the guest's pause (from the worker's event) and the wall time of
# the command. Peer, in the same run: bare QEMU with the same guest and a qcow2 disk of the same
# size, an external disk snapshot by hand over QMP (`blockdev-snapshot-sync`, guest running), and
# what the Strata command does as a whole, by hand (`stop`, `migrate` to a file, fsync,
# `blockdev-snapshot-sync`, `cont`; bench/qmpsnap.py). Also `strata vm save` of the same VM (a
# memory write like the checkpoint's, then the VM is off). Prints Markdown tables (median,
# min–max); about 2 minutes with the defaults.
# Results and analysis: docs/PERFORMANCE.md, "Checkpoints on a running VM (issue 11)".
#
# Usage: bench/checkpoint.sh [--runs N] [--sizes "1G 64G"] [--dir DIR] [--out FILE] [--no-build] [--keep]
#
# Everything it starts (the service, the VMs' workers, bare QEMU) is stopped on exit, even on
# failure, and the work folder is deleted (unless --keep). Needs qemu-system-x86_64, qemu-img,
# python3, busybox-static and the host's Debian kernel (the test guest, see crates/testguest),
# coreutils, grep, awk, sed. It uses $CARGO_TARGET_DIR/release/strata if that variable is set.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
runs=5
sizes="1G 64G"
dir=${TMPDIR:-/tmp}
out=""
build=1
keep=0
pause=1 # seconds the guest runs between two checkpoints
usage="usage: bench/checkpoint.sh [--runs N] [--sizes \"1G 64G\"] [--dir DIR] [--out FILE] [--no-build] [--keep]"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
qemu="qemu-system-x86_64"
for t in "$qemu" qemu-img python3; do
  command -v "$t" >/dev/null || { echo "checkpoint.sh: $t not found" >&2; exit 1; }
done
[ "$build" = 1 ] && cargo build --release -q -p strata-cli
strata=${CARGO_TARGET_DIR:-$PWD/target}/release/strata
qmpsnap=$PWD/bench/qmpsnap.py
# The interpreter itself, not a version manager's shim (pyenv's adds ~150 ms to every start).
py=$(python3 -c 'import sys; print(sys.executable)')
work=$(mktemp -d "$dir/strata-cp-bench.XXXXXX")
work=$(cd "$work" && pwd)
export STRATA_HOME=$work/home STRATA_ACCEL=tcg
mkdir -p "$STRATA_HOME"

serve_pid=""
bare_pid=""
vms=()
workers=()
cleanup() {
  local rc=$? v p
  set +e
  trap - EXIT INT TERM
  if [ -n "$bare_pid" ]; then kill "$bare_pid" 2>/dev/null; wait "$bare_pid" 2>/dev/null; fi
  for v in "${vms[@]}"; do timeout 60 "$strata" vm stop "$v" >/dev/null 2>&1; done
  # Workers whose VM could not be stopped through the service: SIGTERM turns the VM off (QEMU
  # dies with its worker).
  for p in "${workers[@]}"; do
    for _ in $(seq 20); do [ -e "/proc/$p" ] || break; sleep 0.1; done
    if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "worker --home $STRATA_HOME "; then
      kill -TERM "$p" 2>/dev/null
    fi
  done
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; fi
  if [ "$keep" = 1 ]; then echo "checkpoint.sh: work files kept in $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The guest: the host's kernel and a busybox initramfs with the virtio disk driver. It fills
# 128 MiB of its RAM (the initramfs is RAM) with random data, so that its memory is not mostly
# zero pages, writes 8 MiB of random data at the start of its disk, then keeps writing: every
# 0.2 s a 4 KiB block (fsynced) and a console line, so the disk is in use when it switches and the
# console shows that the guest goes on after each checkpoint.
cat >"$work/guest.sh" <<'EOF'
echo "guest: first line"
dd if=/dev/urandom of=/fill bs=1M count=128 2>/dev/null
dd if=/fill of=/dev/vda bs=1M count=8 conv=fsync 2>/dev/null && echo "guest: ready"
i=0; while true; do
  dd if=/fill of=/dev/vda bs=4096 count=1 skip=$((i % 4096)) seek=$((4096 + i % 4096)) conv=notrunc,fsync 2>/dev/null
  echo "count $i"; i=$((i+1)); sleep 0.2
done
EOF
read -r kernel initrd < <(cargo run -q -p strata-testguest --example mkguest -- "$work/g" "$work/guest.sh" virtio_pci virtio_blk)
cmdline="console=ttyS0 panic=-1 quiet"

# --- helpers ---------------------------------------------------------------------------------
count_in() {
  local n
  n=$(grep -cF -- "$2" "$1" 2>/dev/null || true)
  echo "${n:-0}"
}
# Polls every 10 ms until more than BEFORE lines of FILE contain PATTERN; fails after LIMIT s or,
# given PID, when that process has ended.
wait_more() {
  local file=$1 pat=$2 before=$3 limit=$4 pid=${5:-} start=$SECONDS n
  while :; do
    n=$(grep -cF -- "$pat" "$file" 2>/dev/null || true)
    [ "${n:-0}" -gt "$before" ] && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "checkpoint.sh: process $pid ended before '$pat' appeared in $file" >&2
      return 1
    fi
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      echo "checkpoint.sh: timed out waiting for '$pat' in $file" >&2
      return 1
    fi
    sleep 0.01
  done
}
# A field of `strata vm show NAME --json` (numbers and strings at the top level).
vm_field() {
  "$strata" vm show "$1" --json | sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p"
}
# "median (min–max)" of integers, scaled: stats DIVISOR DECIMALS VALUES...
stats() {
  local div=$1 dec=$2; shift 2
  printf '%s\n' "$@" | sort -n | awk -v d="$div" -v p="$dec" '
    { v[NR] = $1 / d }
    END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
          printf "%.*f (%.*f–%.*f)", p, m, p, v[1], p, v[NR] }'
}
median() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
now_us() { t=${EPOCHREALTIME/./}; }
# The worker's checkpoint events of VM, oldest first, one "SWITCH_US PAUSE_MS" a line.
cp_events() {
  "$strata" events --vm "$1" --json |
    { grep -o 'disks switched in [0-9]* µs, guest paused [0-9]* ms' || true; } |
    awk '{ print $4, $8 }'
}

# --- the service -------------------------------------------------------------------------------
"$strata" serve >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 200); do "$strata" vm list >/dev/null 2>&1 && break; sleep 0.05; done
"$strata" vm list >/dev/null

declare -A s_switch s_pause s_wall s_save q_snap q_full q_full_snap ready_s layer_kib state_mib
for size in $sizes; do
  # --- Strata ----------------------------------------------------------------------------------
  vm=cp-$size
  log=$STRATA_HOME/vms/$vm/console.log
  "$strata" disk create "$work/disk-$size.vhd" --size "$size" >/dev/null
  "$strata" vm create "$vm" --memory 256M --kernel "$kernel" --initrd "$initrd" \
    --cmdline "$cmdline" --disk "$work/disk-$size.vhd" >/dev/null
  vms+=("$vm")
  echo "checkpoint.sh: $size: starting the VM" >&2
  now_us; t0=$t
  "$strata" vm start "$vm" >/dev/null
  workers+=("$(vm_field "$vm" pid)")
  wait_more "$log" "guest: ready" 0 600
  now_us; ready_s[$size]=$(awk -v a="$t0" -v b="$t" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
  wait_more "$log" "count " 0 60
  sw=() pa=() wa=()
  for r in $(seq "$runs"); do
    echo "checkpoint.sh: $size: checkpoint $r/$runs" >&2
    sleep "$pause"
    nev=$(cp_events "$vm" | wc -l)
    before=$(count_in "$log" "count ")
    now_us; t0=$t
    "$strata" checkpoint create "$vm" --name "c$r" >/dev/null
    now_us; wa+=($((t - t0)))
    mapfile -t ev < <(cp_events "$vm")
    [ "${#ev[@]}" -eq $((nev + 1)) ] || { echo "checkpoint.sh: expected one more checkpoint event" >&2; exit 1; }
    read -r a b <<<"${ev[-1]}"
    sw+=("$a") pa+=("$b")
    # The guest goes on (its disk writes and console) after the checkpoint.
    wait_more "$log" "count " "$((before + 1))" 60
  done
  [ "$(vm_field "$vm" state)" = running ] || { echo "checkpoint.sh: $vm is not running" >&2; exit 1; }
  s_switch[$size]="${sw[*]}" s_pause[$size]="${pa[*]}" s_wall[$size]="${wa[*]}"
  # The newest layer (made by the last checkpoint, written to since) and memory state.
  cpdir=$STRATA_HOME/vms/$vm/checkpoints
  # shellcheck disable=SC2012 # our own file names
  layer_kib[$size]=$(du -k --apparent-size "$(ls -t "$cpdir"/*.avhd | head -n 1)" | cut -f1)
  # shellcheck disable=SC2012
  state_mib[$size]=$(du -m --apparent-size "$(ls -t "$cpdir"/*.state | head -n 1)" | cut -f1)
  # `strata vm save` of the same VM: the same memory write, then the VM is off; `vm start`
  # restores it (untimed) and the guest goes on.
  sv=()
  for r in $(seq "$runs"); do
    echo "checkpoint.sh: $size: save $r/$runs" >&2
    sleep "$pause"
    now_us; t0=$t
    "$strata" vm save "$vm" >/dev/null
    now_us; sv+=($((t - t0)))
    before=$(count_in "$log" "count ")
    "$strata" vm start "$vm" >/dev/null
    workers+=("$(vm_field "$vm" pid)")
    wait_more "$log" "count " "$before" 120
  done
  s_save[$size]="${sv[*]}"
  "$strata" vm stop "$vm" >/dev/null

  # --- bare QEMU, qcow2, QMP -------------------------------------------------------------------
  echo "checkpoint.sh: $size: bare QEMU" >&2
  bare=$work/bare-$size
  mkdir -p "$bare"
  qemu-img create -q -f qcow2 "$bare/disk.qcow2" "$size"
  "$qemu" -accel tcg -machine pc -cpu max -m 256 -nodefaults -display none \
    -kernel "$kernel" -initrd "$initrd" -append "$cmdline" -serial "file:$bare/console.log" \
    -drive "file=$bare/disk.qcow2,format=qcow2,if=virtio,id=disk0" \
    -qmp "unix:$bare/qmp.sock,server=on,wait=off" >"$bare/qemu.log" 2>&1 &
  bare_pid=$!
  wait_more "$bare/console.log" "guest: ready" 0 600 "$bare_pid"
  wait_more "$bare/console.log" "count " 0 60 "$bare_pid"
  mapfile -t q < <("$py" -I "$qmpsnap" "$bare/qmp.sock" snap disk0 "$bare" "$runs" "$pause")
  q_snap[$size]="${q[*]}"
  before=$(count_in "$bare/console.log" "count ")
  mapfile -t q < <("$py" -I "$qmpsnap" "$bare/qmp.sock" full disk0 "$bare" "$runs" "$pause")
  fp=() fs=()
  for l in "${q[@]}"; do read -r a b <<<"$l"; fp+=("$a") fs+=("$b"); done
  q_full[$size]="${fp[*]}" q_full_snap[$size]="${fs[*]}"
  wait_more "$bare/console.log" "count " "$((before + 1))" 60 "$bare_pid"
  [ "${#fp[@]}" -eq "$runs" ] || { echo "checkpoint.sh: bare QEMU: $runs snapshots expected" >&2; exit 1; }
  kill "$bare_pid"; wait "$bare_pid" 2>/dev/null || true
  bare_pid=""
  rm -rf "$bare"
done

# --- report ------------------------------------------------------------------------------------
{
  echo "Machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $("$qemu" --version | head -n 1); TCG; kernel $(basename "$kernel"); strata $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $runs checkpoints in a row per size, ${pause} s apart"
  echo
  echo "### Disk switch (milliseconds, median (min–max) of $runs)"
  echo
  echo "| Disk | Strata: disks switched (guest paused, memory already written) | QEMU: \`blockdev-snapshot-sync\`, guest running | Ratio Strata / QEMU | QEMU: \`blockdev-snapshot-sync\`, guest paused (in the by-hand sequence below) |"
  echo "|---|---:|---:|---:|---:|"
  for size in $sizes; do
    # shellcheck disable=SC2086 # the arrays were flattened to words
    echo "| ${size}iB, dynamic VHD / qcow2 | $(stats 1000 2 ${s_switch[$size]}) | $(stats 1000 2 ${q_snap[$size]}) | **$(ratio "$(median ${s_switch[$size]})" "$(median ${q_snap[$size]})")** | $(stats 1000 2 ${q_full_snap[$size]}) |"
  done
  echo
  echo "### The whole checkpoint: memory and disks (milliseconds, median (min–max) of $runs)"
  echo
  echo "| Disk | Strata: guest paused | \`strata checkpoint create\` (wall) | QEMU by hand: \`stop\`, \`migrate\` to a file, fsync, \`blockdev-snapshot-sync\`, \`cont\` (= guest paused) | \`strata vm save\` (wall; the VM is off after it) |"
  echo "|---|---:|---:|---:|---:|"
  for size in $sizes; do
    # shellcheck disable=SC2086
    echo "| ${size}iB | $(stats 1 0 ${s_pause[$size]}) | $(stats 1000 0 ${s_wall[$size]}) | $(stats 1000 0 ${q_full[$size]}) | $(stats 1000 0 ${s_save[$size]}) |"
  done
  echo
  echo "Strata's switch is timed in the worker around \`switch_to_child\` of every disk, after the memory write, while the guest is paused; its pause runs from \`stop\` to \`cont\` and includes the memory write. \`blockdev-snapshot-sync\` alone saves no memory and does not pause the guest (it drains the disk's requests)."
  echo
  for size in $sizes; do
    echo "- ${size}iB: guest ready (128 MiB of RAM filled, 8 MiB written to the disk) ${ready_s[$size]} s after \`vm start\`; newest layer after the checkpoints: ${layer_kib[$size]} KiB, its memory state ${state_mib[$size]} MiB. All runs: switch (µs) ${s_switch[$size]}; pause (ms) ${s_pause[$size]}; wall (µs) ${s_wall[$size]}; QEMU snapshot (µs) ${q_snap[$size]}; QEMU by hand (µs) ${q_full[$size]}, of which the snapshot ${q_full_snap[$size]}; vm save (µs) ${s_save[$size]}"
  done
} | tee "${out:-/dev/null}"
