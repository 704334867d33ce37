#!/usr/bin/env bash
# Host service and VM benchmark (issue 4), under TCG: boot time of `strata vm start` against the
# bare QEMU command line, save and restore times of a 256 MiB guest, and the resident memory of
# `strata serve` and of a VM's worker; as a diagnostic for the save time, QEMU alone saving the
# same guest at its default migration bandwidth limit and without it. Prints Markdown tables
# (median, min–max of --runs runs; about 4 minutes with the default 5).
# Results and analysis: docs/PERFORMANCE.md, "Host service and VMs (issue 4)".
#
# Usage: bench/vm.sh [--runs N] [--dir DIR] [--out FILE] [--no-build] [--keep]
#
# Everything it starts (the service, the VMs' workers, bare QEMU) is stopped on exit, even on
# failure. Needs qemu-system-x86_64, the host's Debian kernel in /boot and busybox-static (for
# the test guest, see crates/testguest), coreutils, grep, awk.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
runs=5
dir=${TMPDIR:-/tmp}
out=""
build=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    *) echo "usage: bench/vm.sh [--runs N] [--dir DIR] [--out FILE] [--no-build] [--keep]" >&2; exit 2 ;;
  esac
done
qemu=qemu-system-x86_64
command -v "$qemu" >/dev/null || { echo "vm.sh: $qemu not found" >&2; exit 1; }
[ "$build" = 1 ] && cargo build --release -q -p strata-cli
strata=$PWD/target/release/strata
work=$(mktemp -d "$dir/strata-vm-bench.XXXXXX")
work=$(cd "$work" && pwd)
export STRATA_HOME=$work/home STRATA_ACCEL=tcg
mkdir -p "$STRATA_HOME" "$work/bare-run"

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
  if [ "$keep" = 1 ]; then echo "vm.sh: work files kept in $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Guests: the host's kernel and a busybox initramfs whose init prints a first line, then a counter.
cat >"$work/count.sh" <<'EOF'
echo "guest: first line"; i=0; while true; do echo "count $i"; i=$((i+1)); sleep 0.2; done
EOF
# The save/restore guest first fills 150 MiB of its RAM (the initramfs is RAM) with random data,
# then counts every 50 ms, so that "the counter continues" is seen within 50 ms of guest time.
cat >"$work/fill.sh" <<'EOF'
echo "guest: first line"; dd if=/dev/urandom of=/fill bs=1M count=150 2>/dev/null; echo "guest: filled"
i=0; while true; do echo "count $i"; i=$((i+1)); sleep 0.05; done
EOF
read -r kernel initrd < <(cargo run -q -p strata-testguest --example mkguest -- "$work/g-count" "$work/count.sh")
read -r _ initrd_fill < <(cargo run -q -p strata-testguest --example mkguest -- "$work/g-fill" "$work/fill.sh")
"$strata" disk create "$work/disk.vhd" --size 1G >/dev/null
"$strata" disk create "$work/bare.vhd" --size 1G >/dev/null
cmdline="console=ttyS0 panic=-1 quiet"

# --- helpers ---------------------------------------------------------------------------------
# How many lines of FILE contain PATTERN (0 if none or no file).
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
      echo "vm.sh: process $pid ended before '$pat' appeared in $file" >&2
      return 1
    fi
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      echo "vm.sh: timed out waiting for '$pat' in $file" >&2
      return 1
    fi
    sleep 0.01
  done
}
# A field of `strata vm show NAME --json` (numbers and strings).
vm_field() {
  "$strata" vm show "$1" --json | sed -n "s/^ *\"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p"
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
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
now_us() { t=${EPOCHREALTIME/./}; }

# Bare QEMU: launched in the background with ARGS (its serial console to OUT); sets $res to the
# milliseconds until OUT holds the first line, then kills it.
bare_boot() {
  local out=$1 t0 t1; shift
  rm -f "$out" "$work"/bare-run/*
  now_us; t0=$t
  "$qemu" "$@" >"$work/bare-qemu.log" 2>&1 &
  bare_pid=$!
  wait_more "$out" "guest: first line" 0 300 "$bare_pid"
  now_us; t1=$t
  kill "$bare_pid"; wait "$bare_pid" 2>/dev/null || true
  bare_pid=""
  res=$(((t1 - t0) / 1000))
}
# `strata vm start VM`: sets $res_ret (ms until the command returns) and $res (ms until the
# guest's first line is in console.log), $worker_pid and $qemu_pid. The VM is left running.
strata_boot() {
  local vm=$1 log=$STRATA_HOME/vms/$1/console.log before t0 t1 t2
  before=$(count_in "$log" "guest: first line")
  now_us; t0=$t
  "$strata" vm start "$vm" >/dev/null
  now_us; t1=$t
  wait_more "$log" "guest: first line" "$before" 300
  now_us; t2=$t
  res_ret=$(((t1 - t0) / 1000))
  res=$(((t2 - t0) / 1000))
  worker_pid=$(vm_field "$vm" pid)
  qemu_pid=$(vm_field "$vm" qemu_pid)
  workers+=("$worker_pid")
}
create_vm() {
  "$strata" vm create "$@" >/dev/null
  vms+=("$1")
}

# --- the service -------------------------------------------------------------------------------
"$strata" serve >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 200); do "$strata" vm list >/dev/null 2>&1 && break; sleep 0.05; done
"$strata" vm list >/dev/null
sleep 1
serve_idle=()
for _ in $(seq "$runs"); do serve_idle+=("$(rss_kib "$serve_pid")"); sleep 0.2; done

create_vm boot --memory 256M --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline"
create_vm boot-disk --memory 256M --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline" \
  --disk "$work/disk.vhd"
create_vm fill --memory 256M --kernel "$kernel" --initrd "$initrd_fill" --cmdline "$cmdline"

# --- 1. boot time ------------------------------------------------------------------------------
bare_args=(-accel tcg -machine pc -cpu max -m 256 -nodefaults -display none
  -kernel "$kernel" -initrd "$initrd" -append "$cmdline")
exact=()
t_bare=() t_strata=() t_strata_ret=() t_exact=() t_bare_disk=() t_strata_disk=() t_strata_disk_ret=()
for r in $(seq "$runs"); do
  echo "vm.sh: boot round $r/$runs" >&2
  bare_boot "$work/bare.out" "${bare_args[@]}" -serial "file:$work/bare.out"
  t_bare+=("$res")
  sleep 0.5

  strata_boot boot
  t_strata+=("$res") t_strata_ret+=("$res_ret")
  if [ ${#exact[@]} -eq 0 ]; then
    # Strata's exact QEMU arguments, from the running QEMU; its run folder becomes ours, COM1 is
    # a file instead of the worker's socket, and -S goes (nobody would send `cont`).
    rundir=$(dirname "$(vm_field boot console_socket)")
    mapfile -d '' -t raw <"/proc/$qemu_pid/cmdline"
    for a in "${raw[@]:1}"; do
      [ "$a" = "-S" ] && continue
      case $a in socket,id=com1,*) a="file,id=com1,path=@OUT@" ;; esac
      exact+=("${a//"$rundir"/"$work/bare-run"}")
    done
    for a in "$qemu" "${raw[@]:1}"; do
      case $a in *' '*) printf '"%s" ' "$a" ;; *) printf '%s ' "$a" ;; esac
    done >"$work/strata-qemu-args.txt"
  fi
  "$strata" vm stop boot >/dev/null
  sleep 0.5

  bare_boot "$work/bare.out" "${exact[@]//@OUT@/$work/bare.out}"
  t_exact+=("$res")
  sleep 0.5

  bare_boot "$work/bare.out" "${bare_args[@]}" -serial "file:$work/bare.out" \
    -drive "file=$work/bare.vhd,format=vpc,if=virtio"
  t_bare_disk+=("$res")
  sleep 0.5

  strata_boot boot-disk
  t_strata_disk+=("$res") t_strata_disk_ret+=("$res_ret")
  "$strata" vm stop boot-disk >/dev/null
  sleep 0.5
done

# --- 3. resident memory with two running VMs ---------------------------------------------------
echo "vm.sh: memory with two running VMs" >&2
strata_boot boot
w1=$worker_pid q1=$qemu_pid
strata_boot boot-disk
w2=$worker_pid q2=$qemu_pid
sleep 2
m_serve=() m_w1=() m_w2=() m_q1=() m_q2=()
for _ in $(seq "$runs"); do
  m_serve+=("$(rss_kib "$serve_pid")")
  m_w1+=("$(rss_kib "$w1")") m_w2+=("$(rss_kib "$w2")")
  m_q1+=("$(rss_kib "$q1")") m_q2+=("$(rss_kib "$q2")")
  sleep 1
done
h_serve=$(hwm_kib "$serve_pid") h_w1=$(hwm_kib "$w1") h_w2=$(hwm_kib "$w2")
threads_w2=$(awk '/^Threads/ {print $2}' "/proc/$w2/status")
"$strata" vm stop boot >/dev/null
"$strata" vm stop boot-disk >/dev/null
sleep 1
serve_after=$(rss_kib "$serve_pid")

# --- 2. save and restore -----------------------------------------------------------------------
echo "vm.sh: save/restore" >&2
flog=$STRATA_HOME/vms/fill/console.log
fstate=$STRATA_HOME/vms/fill/saved.state
before=$(count_in "$flog" "guest: filled")
now_us; t0=$t
"$strata" vm start fill >/dev/null
workers+=("$(vm_field fill pid)")
wait_more "$flog" "guest: filled" "$before" 600
now_us; t_fill=$(((t - t0) / 1000))
wait_more "$flog" "count " 0 60
fill_qemu_rss=$(rss_kib "$(vm_field fill qemu_pid)")
s_save=() s_size=() s_warm_ret=() s_warm=() s_cold_ret=() s_cold=()
for r in $(seq $((2 * runs))); do
  echo "vm.sh: save/restore cycle $r/$((2 * runs))" >&2
  sleep 1
  now_us; t0=$t
  "$strata" vm save fill >/dev/null
  now_us; s_save+=($(((t - t0) / 1000)))
  s_size+=("$(stat -c %s "$fstate")")
  # Odd cycles restore from the page cache (just written); even ones after evicting the file.
  [ $((r % 2)) = 0 ] && dd if="$fstate" iflag=nocache count=0 status=none
  before=$(count_in "$flog" "count ")
  now_us; t0=$t
  "$strata" vm start fill >/dev/null
  now_us; t1=$t
  workers+=("$(vm_field fill pid)")
  wait_more "$flog" "count " "$before" 120
  now_us; t2=$t
  if [ $((r % 2)) = 1 ]; then
    s_warm_ret+=($(((t1 - t0) / 1000))) s_warm+=($(((t2 - t0) / 1000)))
  else
    s_cold_ret+=($(((t1 - t0) / 1000))) s_cold+=($(((t2 - t0) / 1000)))
  fi
done
"$strata" vm stop fill >/dev/null

# --- 4. diagnostic: QEMU alone saving the same guest to a file ---------------------------------
# QMP over a local TCP port (bash's /dev/tcp): `stop`, `migrate` to `file:` (what the worker does
# for `strata vm save`), timed until `query-migrate` says completed, then `sync` of the file;
# alternately at QEMU's default `max-bandwidth` and with the limit removed (0). Between runs the
# guest runs for 0.5 s (`cont`, then `stop`: a completed migration leaves it paused).
echo "vm.sh: QEMU alone, migrate to a file" >&2
port=$((40000 + RANDOM % 20000))
rm -f "$work/bare.out"
"$qemu" -accel tcg -machine pc -cpu max -m 256 -nodefaults -display none \
  -kernel "$kernel" -initrd "$initrd_fill" -append "$cmdline" -serial "file:$work/bare.out" \
  -qmp "tcp:127.0.0.1:$port,server=on,wait=off" >"$work/bare-qemu.log" 2>&1 &
bare_pid=$!
wait_more "$work/bare.out" "count " 0 600 "$bare_pid"
exec {qfd}<>"/dev/tcp/127.0.0.1/$port"
# Sends one QMP command; $reply is its answer (events skipped).
qmp() {
  local line
  printf '%s\n' "$1" >&"$qfd"
  while :; do
    read -r -t 60 -u "$qfd" line || { echo "vm.sh: QMP: no answer to $1" >&2; return 1; }
    case $line in *'"event"'*) ;; *) reply=$line; return 0 ;; esac
  done
}
read -r -t 60 -u "$qfd" _ # greeting
qmp '{"execute":"qmp_capabilities"}'
qmp '{"execute":"query-migrate-parameters"}'
default_bw=$(printf '%s\n' "$reply" | sed -n 's/.*"max-bandwidth": \([0-9]*\).*/\1/p')
d_default=() d_default_sync=() d_unlimited=() d_unlimited_sync=()
for r in $(seq "$runs"); do
  for bw in "$default_bw" 0; do
    qmp '{"execute":"cont"}'
    sleep 0.5
    qmp '{"execute":"stop"}'
    qmp "{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"max-bandwidth\":$bw}}"
    rm -f "$work/bare.state"
    now_us; t0=$t
    qmp "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"file:$work/bare.state\"}}"
    case $reply in *'"error"'*) echo "vm.sh: QMP migrate: $reply" >&2; exit 1 ;; esac
    while :; do
      qmp '{"execute":"query-migrate"}'
      case $reply in
        *'"completed"'*) break ;;
        *'"failed"'* | *'"cancelled"'*) echo "vm.sh: QMP migrate: $reply" >&2; exit 1 ;;
      esac
      sleep 0.02
    done
    now_us; t1=$t
    sync "$work/bare.state"
    now_us; t2=$t
    if [ "$bw" = 0 ]; then
      d_unlimited+=($(((t1 - t0) / 1000))) d_unlimited_sync+=($(((t2 - t1) / 1000)))
    else
      d_default+=($(((t1 - t0) / 1000))) d_default_sync+=($(((t2 - t1) / 1000)))
    fi
  done
done
d_size=$(stat -c %s "$work/bare.state")
qmp '{"execute":"quit"}' || true
exec {qfd}>&-
wait "$bare_pid" 2>/dev/null || true
bare_pid=""

# --- report ------------------------------------------------------------------------------------
mb=$(median "${t_bare[@]}") ms=$(median "${t_strata[@]}") me=$(median "${t_exact[@]}")
mbd=$(median "${t_bare_disk[@]}") msd=$(median "${t_strata_disk[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
{
  echo "Machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $("$qemu" --version | head -n 1); TCG; $runs runs; kernel $(basename "$kernel")"
  echo
  echo "### Boot: invocation until the guest's first console line (seconds, median (min–max))"
  echo
  echo "| Variant | First line | Ratio to bare QEMU | \`vm start\` returned after |"
  echo "|---|---:|---:|---:|"
  echo "| bare QEMU | $(stats 1000 2 "${t_bare[@]}") | 1.00 | |"
  echo "| \`strata vm start\` | $(stats 1000 2 "${t_strata[@]}") | **$(ratio "$ms" "$mb")** | $(stats 1000 3 "${t_strata_ret[@]}") |"
  echo "| bare QEMU with Strata's exact arguments (no \`-S\`, COM1 to a file) | $(stats 1000 2 "${t_exact[@]}") | $(ratio "$me" "$mb") | |"
  echo "| bare QEMU, 1 GiB dynamic VHD on virtio (QEMU's \`vpc\` driver) | $(stats 1000 2 "${t_bare_disk[@]}") | 1.00 (disk) | |"
  echo "| \`strata vm start\`, 1 GiB dynamic VHD on virtio (NBD from the worker) | $(stats 1000 2 "${t_strata_disk[@]}") | **$(ratio "$msd" "$mbd")** (to bare with disk) | $(stats 1000 3 "${t_strata_disk_ret[@]}") |"
  echo
  echo "Strata / bare QEMU with Strata's arguments (orchestration alone): $(ratio "$ms" "$me")"
  echo
  echo "### Save and restore, 256 MiB guest with 150 MiB of random data in RAM (seconds)"
  echo
  echo "| Operation | Time |"
  echo "|---|---:|"
  echo "| \`strata vm save\` (${#s_save[@]} runs) | $(stats 1000 2 "${s_save[@]}") |"
  echo "| \`strata vm start\` (restore) returns, state file in the page cache | $(stats 1000 2 "${s_warm_ret[@]}") |"
  echo "| … until the counter continues on the console | $(stats 1000 2 "${s_warm[@]}") |"
  echo "| \`strata vm start\` (restore) returns, state file evicted from the page cache | $(stats 1000 2 "${s_cold_ret[@]}") |"
  echo "| … until the counter continues on the console | $(stats 1000 2 "${s_cold[@]}") |"
  echo
  echo "saved.state: $(stats 1048576 1 "${s_size[@]}") MiB; first boot until the guest had filled its memory: $(awk -v m="$t_fill" 'BEGIN { printf "%.1f", m / 1000 }') s; QEMU RSS then: $(mib "$fill_qemu_rss") MiB"
  echo
  echo "QEMU alone saving the same guest (QMP \`stop\` + \`migrate\` to \`file:\`; state file $(mib $((d_size / 1024))) MiB):"
  echo
  echo "| \`max-bandwidth\` | Migration | Then \`sync\` of the file |"
  echo "|---|---:|---:|"
  echo "| QEMU's default, $(mib $((default_bw / 1024))) MiB/s | $(stats 1000 2 "${d_default[@]}") | $(stats 1000 2 "${d_default_sync[@]}") |"
  echo "| 0 (no limit) | $(stats 1000 2 "${d_unlimited[@]}") | $(stats 1000 2 "${d_unlimited_sync[@]}") |"
  echo
  echo "### Resident memory (VmRSS, MiB, median (min–max) of $runs samples)"
  echo
  echo "| Process | RSS | Peak (VmHWM) |"
  echo "|---|---:|---:|"
  echo "| \`strata serve\`, 0 VMs (just started) | $(stats 1024 1 "${serve_idle[@]}") | |"
  echo "| \`strata serve\`, 2 running VMs | $(stats 1024 1 "${m_serve[@]}") | $(mib "$h_serve") |"
  echo "| \`strata serve\`, 0 VMs again (after all the runs above) | $(mib "$serve_after") | |"
  echo "| worker, VM without disks | $(stats 1024 1 "${m_w1[@]}") | $(mib "$h_w1") |"
  echo "| worker, VM with a 1 GiB dynamic VHD ($threads_w2 threads) | $(stats 1024 1 "${m_w2[@]}") | $(mib "$h_w2") |"
  echo "| QEMU, VM without disks (context) | $(stats 1024 1 "${m_q1[@]}") | |"
  echo "| QEMU, VM with the disk (context) | $(stats 1024 1 "${m_q2[@]}") | |"
  echo
  echo "Strata's QEMU command line (VM without disks):"
  echo
  echo '```'
  cat "$work/strata-qemu-args.txt"
  echo
  echo '```'
} | tee "${out:-/dev/null}"
