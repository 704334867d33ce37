#!/usr/bin/env bash
# VM hardware and integration services benchmark (issue 10), under TCG:
#   1. boot until the guest's first console line, BIOS (SeaBIOS) and UEFI (OVMF), `strata vm
#      start` against bare QEMU with the same firmware, kernel, initramfs and arguments (and
#      against QEMU run by hand with Strata's exact command line);
#   2. guest agent round trips: `strata vm copy-file` of a 16-byte file both ways and `strata vm
#      freeze` + `thaw`, against the same agent commands sent by a Python client straight to the
#      agent socket of a bare QEMU running the same guest (bench/agentc.py);
#   3. resident memory of a VM's `strata worker` with the agent channel open, and without it.
# Prints Markdown tables (median, min–max). Results and analysis: docs/PERFORMANCE.md, "VM hardware
# and integration services (issue 10)".
#
# Usage: bench/hw.sh [--runs N] [--calls N] [--dir DIR] [--out FILE] [--no-build] [--keep]
#
# Everything it starts (the service, the VMs' workers, bare QEMU) is stopped on exit, even on
# failure, and the work folder is deleted (unless --keep). Needs qemu-system-x86_64, OVMF
# (package ovmf), swtpm, qemu-guest-agent, busybox-static and the host's Debian kernel (the test
# guests, see crates/testguest), python3, coreutils, grep, awk, sed. It uses
# $CARGO_TARGET_DIR/release/strata if that variable is set.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
runs=3
calls=50
dir=${TMPDIR:-/tmp}
out=""
build=1
keep=0
usage="usage: bench/hw.sh [--runs N] [--calls N] [--dir DIR] [--out FILE] [--no-build] [--keep]"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --calls) calls=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
qemu="qemu-system-x86_64"
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
for t in "$qemu" python3 swtpm; do
  command -v "$t" >/dev/null || { echo "hw.sh: $t not found" >&2; exit 1; }
done
for f in "$ovmf_code" "$ovmf_vars" /usr/sbin/qemu-ga; do
  [ -e "$f" ] || { echo "hw.sh: $f not found" >&2; exit 1; }
done
[ "$build" = 1 ] && cargo build --release -q -p strata-cli
strata=${CARGO_TARGET_DIR:-$PWD/target}/release/strata
agentc=$PWD/bench/agentc.py
# The interpreter itself, not a version manager's shim (pyenv's adds ~150 ms to every start).
py=$(python3 -c 'import sys; print(sys.executable)')
work=$(mktemp -d "$dir/strata-hw-bench.XXXXXX")
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
  # and swtpm end with their worker).
  for p in "${workers[@]}"; do
    for _ in $(seq 20); do [ -e "/proc/$p" ] || break; sleep 0.1; done
    if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "worker --home $STRATA_HOME "; then
      kill -TERM "$p" 2>/dev/null
    fi
  done
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; fi
  if [ "$keep" = 1 ]; then echo "hw.sh: work files kept in $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Guests: the host's kernel and a busybox initramfs whose init prints a first line, then a
# counter; the agent guest starts qemu-ga first (mkguest --agent: qemu-ga and its libraries,
# virtio_pci and virtio_console, and testguest's START_AGENT snippet).
cat >"$work/count.sh" <<'EOF'
echo "guest: first line"; i=0; while true; do echo "count $i"; i=$((i+1)); sleep 0.2; done
EOF
read -r kernel initrd < <(cargo run -q -p strata-testguest --example mkguest -- "$work/g-count" "$work/count.sh")
read -r _ initrd_agent < <(cargo run -q -p strata-testguest --example mkguest -- --agent "$work/g-agent" "$work/count.sh")
cmdline="console=ttyS0 panic=-1 quiet"
printf 'strata bench 16\n' >"$work/tiny.txt"

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
      echo "hw.sh: process $pid ended before '$pat' appeared in $file" >&2
      return 1
    fi
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      echo "hw.sh: timed out waiting for '$pat' in $file" >&2
      return 1
    fi
    sleep 0.01
  done
}
# A field of `strata vm show NAME --json` (numbers and strings at the top level).
vm_field() {
  "$strata" vm show "$1" --json | sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p"
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
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
now_us() { t=${EPOCHREALTIME/./}; }

# Bare QEMU: launched in the background with ARGS (its serial console to OUT); sets $res to the
# milliseconds until OUT holds the first line, then kills it.
bare_boot() {
  local out=$1 t0 t1; shift
  rm -f "$out"
  now_us; t0=$t
  "$qemu" "$@" >"$work/bare-qemu.log" 2>&1 &
  bare_pid=$!
  wait_more "$out" "guest: first line" 0 600 "$bare_pid"
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
  wait_more "$log" "guest: first line" "$before" 600
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
# Strata's exact QEMU arguments for VM, from its running QEMU (PID), into the array $captured
# (and, as a command line, into args-VM.txt): the run folder and the VM's folder become ours (the VM's UEFI variables store is copied),
# COM1 is a file (@OUT@) instead of the worker's socket, and -S goes (nobody would send `cont`).
capture_args() {
  local vm=$1 pid=$2 rundir vmdir a raw
  rundir=$(dirname "$(vm_field "$vm" console_socket)")
  vmdir=$STRATA_HOME/vms/$vm
  mkdir -p "$work/bare-$vm"
  [ -f "$vmdir/uefi-vars.fd" ] && cp "$vmdir/uefi-vars.fd" "$work/bare-$vm/"
  mapfile -d '' -t raw <"/proc/$pid/cmdline"
  captured=()
  for a in "${raw[@]:1}"; do
    [ "$a" = "-S" ] && continue
    case $a in socket,id=com1,*) a="file,id=com1,path=@OUT@" ;; esac
    a=${a//"$rundir"/"$work/bare-run"}
    captured+=("${a//"$vmdir"/"$work/bare-$vm"}")
  done
  for a in "$qemu" "${raw[@]:1}"; do
    case $a in *' '*) printf '"%s" ' "$a" ;; *) printf '%s ' "$a" ;; esac
  done >"$work/args-$vm.txt"
}
wait_heartbeat() {
  local vm=$1 start=$SECONDS
  until [ "$(vm_field "$vm" heartbeat)" = ok ]; do
    if [ $((SECONDS - start)) -ge 300 ]; then
      echo "hw.sh: VM $vm: no agent heartbeat after 300 s" >&2
      return 1
    fi
    sleep 0.2
  done
}
# Runs COMMAND... N times; appends each call's milliseconds (3 decimals) to the array named $1.
time_calls() {
  local -n times=$1
  local n=$2 t0
  shift 2
  for _ in $(seq "$n"); do
    now_us; t0=$t
    "$@" >/dev/null
    now_us
    times+=("$(awk -v a="$t0" -v b="$t" 'BEGIN { printf "%.3f", (b - a) / 1000 }')")
  done
}

# --- the service -------------------------------------------------------------------------------
"$strata" serve >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 200); do "$strata" vm list >/dev/null 2>&1 && break; sleep 0.05; done
"$strata" vm list >/dev/null

common=(--memory 256M --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline")
create_vm bios "${common[@]}"
create_vm uefi "${common[@]}" --firmware uefi
create_vm full "${common[@]}" --machine q35 --firmware uefi --secure-boot on --tpm on
create_vm agent --memory 256M --kernel "$kernel" --initrd "$initrd_agent" --cmdline "$cmdline" --agent on
create_vm plain "${common[@]}"

# --- 1. boot time, BIOS and UEFI ---------------------------------------------------------------
bare=(-accel tcg -machine pc -cpu max -m 256 -nodefaults -display none
  -kernel "$kernel" -initrd "$initrd" -append "$cmdline" -serial "file:$work/bare.out")
cp "$ovmf_vars" "$work/bare-vars.fd"
bare_uefi=("${bare[@]}" -drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf_code"
  -drive "if=pflash,format=raw,unit=1,file=$work/bare-vars.fd")
captured=() exact_bios=() exact_uefi=()
b_bare=() b_strata=() b_ret=() b_exact=()
u_bare=() u_strata=() u_ret=() u_exact=()
f_strata=() f_ret=()
for r in $(seq "$runs"); do
  echo "hw.sh: boot round $r/$runs" >&2
  bare_boot "$work/bare.out" "${bare[@]}"; b_bare+=("$res")
  strata_boot bios; b_strata+=("$res") b_ret+=("$res_ret")
  [ ${#exact_bios[@]} -eq 0 ] && { capture_args bios "$qemu_pid"; exact_bios=("${captured[@]}"); }
  "$strata" vm stop bios >/dev/null
  bare_boot "$work/bare.out" "${exact_bios[@]//@OUT@/$work/bare.out}"; b_exact+=("$res")

  bare_boot "$work/bare.out" "${bare_uefi[@]}"; u_bare+=("$res")
  strata_boot uefi; u_strata+=("$res") u_ret+=("$res_ret")
  [ ${#exact_uefi[@]} -eq 0 ] && { capture_args uefi "$qemu_pid"; exact_uefi=("${captured[@]}"); }
  "$strata" vm stop uefi >/dev/null
  bare_boot "$work/bare.out" "${exact_uefi[@]//@OUT@/$work/bare.out}"; u_exact+=("$res")

  strata_boot full; f_strata+=("$res") f_ret+=("$res_ret")
  [ "$r" = 1 ] && capture_args full "$qemu_pid"
  "$strata" vm stop full >/dev/null
done

# --- 3. (first half) worker memory without the agent -------------------------------------------
echo "hw.sh: worker memory without the agent" >&2
strata_boot plain
sleep 3
m_plain=()
for _ in $(seq 5); do m_plain+=("$(rss_kib "$worker_pid")"); sleep 1; done
h_plain=$(hwm_kib "$worker_pid") q_plain=$(rss_kib "$qemu_pid")
"$strata" vm stop plain >/dev/null

# --- 2. agent round trips through Strata, and 3. worker memory with the agent -----------------
echo "hw.sh: agent round trips through Strata" >&2
strata_boot agent
t_agent_boot=$res
aw=$worker_pid aq=$qemu_pid
capture_args agent "$aq"
wait_heartbeat agent
sleep 3
m_agent=()
for _ in $(seq 5); do m_agent+=("$(rss_kib "$aw")"); sleep 1; done
s_show=() s_to=() s_from=() s_freeze=()
time_calls s_show "$calls" "$strata" vm show agent --json
time_calls s_to "$calls" "$strata" vm copy-file agent "$work/tiny.txt" /tmp/bench-in --to-guest
time_calls s_from "$calls" "$strata" vm copy-file agent /tmp/bench-in "$work/back.txt" --from-guest
cmp "$work/tiny.txt" "$work/back.txt"
freeze_thaw() { "$strata" vm freeze agent && "$strata" vm thaw agent; }
time_calls s_freeze "$calls" freeze_thaw
m_agent_after=$(rss_kib "$aw") h_agent=$(hwm_kib "$aw") q_agent=$(rss_kib "$aq")
threads_agent=$(awk '/^Threads/ {print $2}' "/proc/$aw/status")
"$strata" vm stop agent >/dev/null

# --- 2. the same agent commands sent straight to a bare QEMU + qemu-ga -------------------------
echo "hw.sh: agent round trips, bare QEMU" >&2
rm -f "$work/bare.out" "$work/qga.sock"
"$qemu" -accel tcg -machine pc -cpu max -m 256 -nodefaults -display none \
  -kernel "$kernel" -initrd "$initrd_agent" -append "$cmdline" -serial "file:$work/bare.out" \
  -device virtio-serial-pci -chardev "socket,id=qga0,path=$work/qga.sock,server=on,wait=off" \
  -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0 >"$work/bare-qemu.log" 2>&1 &
bare_pid=$!
wait_more "$work/bare.out" "qga: started" 0 600 "$bare_pid"
"$py" -I "$agentc" "$work/qga.sock" wait 300
sleep 3
to_ms() { awk '{ printf "%.3f\n", $1 / 1000 }'; }
mapfile -t p_ping < <("$py" -I "$agentc" "$work/qga.sock" ping "$calls" | to_ms)
mapfile -t p_to < <("$py" -I "$agentc" "$work/qga.sock" to "$calls" | to_ms)
mapfile -t p_from < <("$py" -I "$agentc" "$work/qga.sock" from "$calls" | to_ms)
mapfile -t p_freeze < <("$py" -I "$agentc" "$work/qga.sock" freeze "$calls" | to_ms)
# A new client process per operation (connect, guest-sync-delimited, the operation), as a CLI is.
p_to_proc=()
time_calls p_to_proc "$calls" "$py" -I "$agentc" "$work/qga.sock" to 1
kill "$bare_pid"; wait "$bare_pid" 2>/dev/null || true
bare_pid=""

# --- report ------------------------------------------------------------------------------------
row() { # LABEL BARE_MEDIAN VALUES...
  local label=$1 ref=$2; shift 2
  echo "| $label | $(stats 1 1 "$@") | $(ratio "$(median "$@")" "$ref") |"
}
{
  echo "Machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $("$qemu" --version | head -n 1); TCG; kernel $(basename "$kernel"); strata $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "### Boot until the guest's first console line (seconds, median (min–max) of $runs)"
  echo
  echo "| Variant | First line | Ratio to bare QEMU, same firmware | \`vm start\` returned after |"
  echo "|---|---:|---:|---:|"
  mb=$(median "${b_bare[@]}") mu=$(median "${u_bare[@]}")
  echo "| BIOS, bare QEMU | $(stats 1000 2 "${b_bare[@]}") | 1.00 | |"
  echo "| BIOS, \`strata vm start\` | $(stats 1000 2 "${b_strata[@]}") | **$(ratio "$(median "${b_strata[@]}")" "$mb")** | $(stats 1000 3 "${b_ret[@]}") |"
  echo "| BIOS, bare QEMU with Strata's exact arguments | $(stats 1000 2 "${b_exact[@]}") | $(ratio "$(median "${b_exact[@]}")" "$mb") | |"
  echo "| UEFI, bare QEMU (OVMF_CODE_4M.fd + a copy of OVMF_VARS_4M.fd) | $(stats 1000 2 "${u_bare[@]}") | 1.00 | |"
  echo "| UEFI, \`strata vm start\` | $(stats 1000 2 "${u_strata[@]}") | **$(ratio "$(median "${u_strata[@]}")" "$mu")** | $(stats 1000 3 "${u_ret[@]}") |"
  echo "| UEFI, bare QEMU with Strata's exact arguments | $(stats 1000 2 "${u_exact[@]}") | $(ratio "$(median "${u_exact[@]}")" "$mu") | |"
  echo "| Q35 + UEFI + secure boot + TPM, \`strata vm start\` (no bare peer) | $(stats 1000 2 "${f_strata[@]}") | $(ratio "$(median "${f_strata[@]}")" "$mu") (to bare UEFI) | $(stats 1000 3 "${f_ret[@]}") |"
  echo
  echo "Strata / its exact arguments run bare: BIOS $(ratio "$(median "${b_strata[@]}")" "$(median "${b_exact[@]}")"), UEFI $(ratio "$(median "${u_strata[@]}")" "$(median "${u_exact[@]}")"). All runs (ms): BIOS bare ${b_bare[*]}, strata ${b_strata[*]}, exact ${b_exact[*]}; UEFI bare ${u_bare[*]}, strata ${u_strata[*]}, exact ${u_exact[*]}; full ${f_strata[*]}"
  echo
  echo "### Guest agent round trips (milliseconds per call, median (min–max) of $calls)"
  echo
  mp_to=$(median "${p_to[@]}") mp_from=$(median "${p_from[@]}") mp_freeze=$(median "${p_freeze[@]}")
  echo "| Operation (agent commands) | Time | Ratio to the bare client |"
  echo "|---|---:|---:|"
  echo "| bare: \`guest-ping\` (Python, one connection) | $(stats 1 2 "${p_ping[@]}") | |"
  echo "| bare: copy to guest (open, write 16 B, close; one connection) | $(stats 1 2 "${p_to[@]}") | 1.00 |"
  echo "| bare: the same, a new \`python3 -I agentc.py\` process per copy (connect + sync + copy) | $(stats 1 2 "${p_to_proc[@]}") | $(ratio "$(median "${p_to_proc[@]}")" "$mp_to") |"
  echo "| \`strata vm copy-file … --to-guest\`, 16 B | $(stats 1 2 "${s_to[@]}") | **$(ratio "$(median "${s_to[@]}")" "$mp_to")** |"
  echo "| bare: copy from guest (open, read, close; one connection) | $(stats 1 2 "${p_from[@]}") | 1.00 |"
  echo "| \`strata vm copy-file … --from-guest\`, 16 B | $(stats 1 2 "${s_from[@]}") | **$(ratio "$(median "${s_from[@]}")" "$mp_from")** |"
  echo "| bare: \`guest-fsfreeze-freeze\` + \`guest-fsfreeze-thaw\` (one connection) | $(stats 1 2 "${p_freeze[@]}") | 1.00 |"
  echo "| \`strata vm freeze\` + \`strata vm thaw\` | $(stats 1 2 "${s_freeze[@]}") | **$(ratio "$(median "${s_freeze[@]}")" "$mp_freeze")** |"
  echo "| \`strata vm show NAME --json\` (CLI + HTTP, no agent; context) | $(stats 1 2 "${s_show[@]}") | |"
  echo
  echo "Agent VM: first console line after $(awk -v m="$t_agent_boot" 'BEGIN { printf "%.2f", m / 1000 }') s."
  echo
  echo "### Worker resident memory (VmRSS, MiB, median (min–max) of 5 samples 1 s apart)"
  echo
  echo "| Worker | RSS | Peak (VmHWM) | Its QEMU (context) |"
  echo "|---|---:|---:|---:|"
  echo "| VM without the agent | $(stats 1024 1 "${m_plain[@]}") | $(mib "$h_plain") | $(mib "$q_plain") |"
  echo "| VM with \`--agent on\`, heartbeat ok, before the calls | $(stats 1024 1 "${m_agent[@]}") | | |"
  echo "| the same after the $((4 * calls)) CLI calls above ($threads_agent threads) | $(mib "$m_agent_after") | $(mib "$h_agent") | $(mib "$q_agent") |"
  echo
  echo "With the agent − without: $(awk -v a="$(median "${m_agent[@]}")" -v b="$(median "${m_plain[@]}")" 'BEGIN { printf "%+.1f MiB", (a - b) / 1024 }')"
  echo
  for v in bios uefi full agent; do
    echo "Strata's QEMU command line ($v):"
    echo
    echo '```'
    cat "$work/args-$v.txt"
    echo
    echo '```'
    echo
  done
} | tee "${out:-/dev/null}"
