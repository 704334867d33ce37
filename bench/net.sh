#!/usr/bin/env bash
# Virtual networks benchmark (issue 9), each measurement against a peer in the same run:
#   1. DHCP: time from udhcpc's start to the lease applied, measured inside a guest, Strata's
#      DHCP server vs dnsmasq (with its default ping check, and with --no-ping), the guest having
#      one NIC on each switch and asking them in turn;
#   2. 50 switches: `strata switch create` ×50 then `switch delete` ×50 (wall time of each phase)
#      vs the same bridges and addresses made by spawning `ip` (link add, addr add, link set up;
#      link del);
#   3. memory (VmRSS, VmHWM) of `strata serve` bare and with 20 internal switches serving DHCP;
#   4. TCP throughput host → guest and guest → host (busybox nc and dd, under TCG) through a
#      Strata switch and through a bridge and tap made by hand with bare QEMU;
#   5. 50 NICs: `strata vm nic add VM virtio:SWITCH` ×50 then `vm nic remove` ×50, spread over 7
#      running guests (hot-plug: QEMU makes the tap, the worker puts it on the bridge, the guest
#      takes the device; hot-remove waits for the guest to let it go) and over 7 VMs that are off
#      (settings and firewall only), vs the same 50 taps made and deleted on the same bridge by
#      spawning `ip` (tuntap add, link set master up; link del).
# Prints Markdown tables (median, min–max). Results and analysis: docs/PERFORMANCE.md,
# "Virtual networks (issue 9)".
#
# Usage: bench/net.sh [--runs N] [--quick] [--dir DIR] [--out FILE] [--no-build] [--keep]
#                     [--no-throughput] [--no-nics]
#
# Everything runs in network namespaces made here (strata-bench-PID-a and -m), with `strata serve`
# started inside them on a temporary STRATA_HOME: no route, address or link of the root namespace
# is touched and no packet leaves the machine. At exit, even on failure, VMs are stopped, every
# process in the namespaces is ended, the namespaces and the work folder are removed. Needs root,
# iproute2, qemu-system-x86_64, busybox-static and the host's Debian kernel (test guest, see
# crates/testguest), dnsmasq (`apt-get install dnsmasq-base`), tcpdump, coreutils, awk, sed.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
runs=3
dir=${TMPDIR:-/tmp}
out=""
build=1
keep=0
throughput=1
nsw=50   # switches created and deleted per run
nmem=20  # switches with DHCP for the memory measurement
mib=64   # MiB per throughput transfer
nics=1
nnic=50  # NICs added and removed per run
nvm=7    # VMs they are spread over (at most 8 NICs each)
usage="usage: bench/net.sh [--runs N] [--quick] [--dir DIR] [--out FILE] [--no-build] [--keep] [--no-throughput] [--no-nics]"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --quick) runs=1; mib=16; shift ;;
    --dir) dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    --no-throughput) throughput=0; shift ;;
    --no-nics) nics=0; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "net.sh: needs root (network namespaces, bridges, taps)" >&2; exit 1; }
for c in ip qemu-system-x86_64 busybox dnsmasq tcpdump; do
  command -v "$c" >/dev/null || { echo "net.sh: $c not found" >&2; exit 1; }
done
[ "$build" = 1 ] && cargo build --release -q -p strata-cli
strata=${CARGO_TARGET_DIR:-$PWD/target}/release/strata
[ -x "$strata" ] || { echo "net.sh: $strata not built" >&2; exit 1; }
work=$(mktemp -d "$dir/strata-net-bench.XXXXXX")
work=$(cd "$work" && pwd)
chmod 755 "$work"
ns=strata-bench-$$-a   # the service, switches, guests, dnsmasq, hand-made bridges
nsm=strata-bench-$$-m  # a second service, for memory only
home=$work/home home_m=$work/home-m
mkdir -p "$home" "$home_m"
export STRATA_ACCEL=tcg

namespaces=()
serve_pids=()
vms=()
bg_pids=()
cleanup() {
  local rc=$? v p n pids
  set +e
  trap - EXIT INT TERM
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for v in "${vms[@]}"; do STRATA_HOME=$home timeout 60 "$strata" vm stop "$v" >/dev/null 2>&1; done
  for p in "${serve_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  # Whatever is left in our namespaces (VM workers and their QEMU) was started by this script.
  for n in "${namespaces[@]}"; do
    pids=$(ip netns pids "$n" 2>/dev/null)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null
      sleep 1
      pids=$(ip netns pids "$n" 2>/dev/null)
      # shellcheck disable=SC2086
      [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    fi
    ip netns del "$n" 2>/dev/null
  done
  if [ "$keep" = 1 ]; then echo "net.sh: work files kept in $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for n in "$ns" "$nsm"; do
  ip netns add "$n"
  namespaces+=("$n")
  ip -n "$n" link set lo up
done

# --- helpers -----------------------------------------------------------------------------------
now_us() { t=${EPOCHREALTIME/./}; }
st() { STRATA_HOME=$home "$strata" "$@"; }
stm() { STRATA_HOME=$home_m "$strata" "$@"; }
# (Background processes are started with `ip netns exec` itself, not this function, so that $!
# is the process and not a subshell.)
inns() { ip netns exec "$ns" "$@"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
threads() { awk '/^Threads/ {print $2}' "/proc/$1/status"; }
# "median (min–max)" of numbers, scaled: stats DIVISOR DECIMALS VALUES...
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
mibs() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# Polls every 50 ms until FILE contains PATTERN; fails after LIMIT seconds.
wait_for() {
  local file=$1 pat=$2 limit=$3 start=$SECONDS
  until grep -qF -- "$pat" "$file" 2>/dev/null; do
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      echo "net.sh: timed out waiting for '$pat' in $file" >&2
      tail -n 20 "$file" >&2 2>/dev/null
      return 1
    fi
    sleep 0.05
  done
}
# Starts `strata serve` with STRATA_HOME=HOME in namespace NS; sets $serve_pid.
start_service() {
  local h=$1 n=$2
  STRATA_HOME=$h ip netns exec "$n" "$strata" serve >"$h/serve.log" 2>&1 </dev/null &
  serve_pid=$!
  serve_pids+=("$serve_pid")
  for _ in $(seq 200); do STRATA_HOME=$h "$strata" vm list >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "net.sh: the service in $n did not start" >&2
  cat "$h/serve.log" >&2
  return 1
}
# The bridge of switch NAME (service of $home).
bridge_of() { st switch show "$1" --json | sed -n 's/^ *"bridge": "\([^"]*\)".*/\1/p'; }

# --- guests ------------------------------------------------------------------------------------
# Test guests: the host's kernel and a busybox initramfs with virtio-net (see crates/testguest).
# Timestamps in the guest come from /proc/timer_list ("now at N nsecs", the monotonic clock; read
# with shell builtins only, so reading it costs no fork): busybox's `date` has no %N.
dhcp_rounds=$((5 * runs))
cat >"$work/dhcp.sh" <<EOF
i=0; while [ ! -e /sys/class/net/eth2 ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
cat >/lease.sh <<'LEASE'
#!/bin/sh
case "\$1" in
  bound) ip addr add "\$ip/\$mask" dev "\$interface"
    { read -r _; read -r _; read -r _ _ t _; } </proc/timer_list
    echo "\$t" >/tmp/t1 ;;
  deconfig) ip addr flush dev "\$interface" ;;
esac
LEASE
chmod +x /lease.sh
for e in eth0 eth1 eth2; do ip link set \$e up; done
sleep 1
for e in eth0 eth1 eth2; do echo "NIC \$e \$(cat /sys/class/net/\$e/address)"; done
r=1
while [ \$r -le $dhcp_rounds ]; do
  set -- eth0 eth1 eth2
  k=0; while [ \$k -lt \$((r % 3)) ]; do set -- "\$2" "\$3" "\$1"; k=\$((k+1)); done
  for e in "\$@"; do
    rm -f /tmp/t1
    { read -r _; read -r _; read -r _ _ t0 _; } </proc/timer_list
    if udhcpc -i \$e -s /lease.sh -n -q -R -t 10 -T 1 >/dev/null 2>&1 && [ -e /tmp/t1 ]; then
      read -r t1 </tmp/t1
      echo "DHCP \$r \$e \$(( (t1 - t0) / 1000 ))"
    else
      echo "DHCP-FAILED \$r \$e"
    fi
  done
  r=\$((r+1))
done
echo DHCP-DONE
while true; do sleep 1; done
EOF
# Throughput guest: address from the kernel command line (benchip=A/N); port 5001 counts what it
# receives and answers the count (wc -c), port 5002 sends MIB MiB of zeros.
cat >"$work/tput.sh" <<EOF
a=\$(sed -n 's/.*benchip=\([^ ]*\).*/\1/p' /proc/cmdline)
i=0; while [ ! -e /sys/class/net/eth0 ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
ip link set eth0 up; ip addr add \$a dev eth0
printf '#!/bin/sh\nexec dd if=/dev/zero bs=1M count=$mib 2>/dev/null\n' >/send.sh; chmod +x /send.sh
(while true; do nc -l -p 5001 -e wc -c; done) &
(while true; do nc -l -p 5002 -e /send.sh; done) &
sleep 1
echo NET-READY \$a
while true; do sleep 1; done
EOF
# Idle guest for the NIC churn: says how many ethN it has whenever that changes (polled every
# 0.5 s with builtins), so the script can check that the guest took and let go of each device.
cat >"$work/idle.sh" <<EOF
echo IDLE-READY
n=-1
while true; do
  set -- /sys/class/net/eth*
  [ -e "\$1" ] || set --
  if [ \$# != \$n ]; then n=\$#; echo "NICS \$n"; fi
  sleep 0.5
done
EOF
read -r kernel initrd_dhcp < <(cargo run -q -p strata-testguest --example mkguest -- "$work/g-dhcp" "$work/dhcp.sh" virtio_pci virtio_net)
read -r _ initrd_tput < <(cargo run -q -p strata-testguest --example mkguest -- "$work/g-tput" "$work/tput.sh" virtio_pci virtio_net)
read -r _ initrd_idle < <(cargo run -q -p strata-testguest --example mkguest -- "$work/g-idle" "$work/idle.sh" virtio_pci virtio_net)
cmdline="console=ttyS0 panic=-1 quiet"

start_service "$home" "$ns"
serve_a=$serve_pid

# --- 2. create and delete 50 switches ----------------------------------------------------------
echo "net.sh: $nsw switches, $runs runs" >&2
c_on=() d_on=() c_off=() d_off=() c_ip=() d_ip=()
strata_churn() { # DHCP on|off; sets $tc, $td (ms)
  local i t0
  now_us; t0=$t
  for i in $(seq 0 $((nsw - 1))); do
    st switch create "c$i" --type internal --subnet "10.200.$i.0/24" --dhcp "$1" >/dev/null
  done
  now_us; tc=$(((t - t0) / 1000)); t0=$t
  for i in $(seq 0 $((nsw - 1))); do st switch delete "c$i" >/dev/null; done
  now_us; td=$(((t - t0) / 1000))
}
ip_churn() {
  local i t0
  now_us; t0=$t
  for i in $(seq 0 $((nsw - 1))); do
    ip -n "$ns" link add "hb$i" type bridge
    ip -n "$ns" addr add "10.201.$i.1/24" dev "hb$i"
    ip -n "$ns" link set "hb$i" up
  done
  now_us; tc=$(((t - t0) / 1000)); t0=$t
  for i in $(seq 0 $((nsw - 1))); do ip -n "$ns" link del "hb$i"; done
  now_us; td=$(((t - t0) / 1000))
}
for r in $(seq "$runs"); do
  # Rotate which variant goes first.
  case $((r % 3)) in
    1) order="ip on off" ;; 2) order="on off ip" ;; *) order="off ip on" ;;
  esac
  for v in $order; do
    case $v in
      ip) ip_churn; c_ip+=("$tc") d_ip+=("$td") ;;
      on) strata_churn on; c_on+=("$tc") d_on+=("$td") ;;
      off) strata_churn off; c_off+=("$tc") d_off+=("$td") ;;
    esac
  done
done
links_left=$(ip -n "$ns" -br link | grep -c -e '^stb-' -e '^hb' || true)
[ "$links_left" = 0 ] || { echo "net.sh: $links_left bridges left after the churn" >&2; exit 1; }

# --- 3. memory of the service with 20 DHCP switches ---------------------------------------------
echo "net.sh: memory" >&2
start_service "$home_m" "$nsm"
serve_m=$serve_pid
sleep 1
m0=() m20=()
for _ in $(seq "$runs"); do m0+=("$(rss_kib "$serve_m")"); sleep 0.2; done
h0=$(hwm_kib "$serve_m") th0=$(threads "$serve_m")
for i in $(seq 0 $((nmem - 1))); do
  stm switch create "m$i" --type internal --subnet "10.210.$i.0/24" >/dev/null
done
dhcp_on=$(stm switch list --json | grep -c '"dhcp_range": "' || true)
sleep 2
for _ in $(seq "$runs"); do m20+=("$(rss_kib "$serve_m")"); sleep 0.5; done
h20=$(hwm_kib "$serve_m") th20=$(threads "$serve_m")

# --- 1. DHCP: Strata's server vs dnsmasq --------------------------------------------------------
echo "net.sh: DHCP, $dhcp_rounds rounds" >&2
st switch create dhs --type internal --subnet 10.91.0.0/24 >/dev/null
st switch create dhd --type internal --subnet 10.92.0.0/24 --dhcp off >/dev/null
st switch create dhn --type internal --subnet 10.93.0.0/24 --dhcp off >/dev/null
# dnsmasq DHCP only (--port=0: no DNS), on the bridge of a Strata switch whose DHCP is off, the
# same range as Strata's default (.16 to .254) and the same lease time (1 h).
dnsmasq_on() { # SWITCH SUBNET-PREFIX EXTRA...
  local sw=$1 pfx=$2 br; shift 2
  br=$(bridge_of "$sw")
  ip netns exec "$ns" dnsmasq --no-daemon --conf-file=/dev/null --pid-file="$work/dnsmasq-$sw.pid" --port=0 --interface="$br" \
    --bind-interfaces --dhcp-range="$pfx.16,$pfx.254,255.255.255.0,1h" \
    --dhcp-leasefile="$work/dnsmasq-$sw.leases" "$@" >"$work/dnsmasq-$sw.log" 2>&1 &
  bg_pids+=("$!")
}
dnsmasq_on dhd 10.92.0
dnsmasq_on dhn 10.93.0 --no-ping
sleep 0.5
for p in "${bg_pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "net.sh: dnsmasq did not start:" >&2; cat "$work"/dnsmasq-*.log >&2; exit 1; }
done
# Each server's own reply delays, seen on its bridge: DISCOVER → OFFER plus REQUEST → ACK.
cap_pids=()
for sw in dhs dhd dhn; do
  ip netns exec "$ns" tcpdump -i "$(bridge_of "$sw")" -n -U --immediate-mode -w "$work/cap-$sw.pcap" udp port 67 or udp port 68 \
    >"$work/tcpdump-$sw.log" 2>&1 &
  bg_pids+=("$!") cap_pids+=("$!")
done
sleep 1
st vm create dhcp --memory 256M --kernel "$kernel" --initrd "$initrd_dhcp" --cmdline "$cmdline" \
  --nic virtio:dhs --nic virtio:dhd --nic virtio:dhn >/dev/null
vms+=(dhcp)
st vm start dhcp >/dev/null
dlog=$home/vms/dhcp/console.log
wait_for "$dlog" DHCP-DONE $((120 + 30 * dhcp_rounds))
if grep -q DHCP-FAILED "$dlog"; then grep DHCP-FAILED "$dlog" >&2; exit 1; fi
# eth → server, through the MACs: NIC i of the VM is on the switch `vm show` names.
declare -A server_of=()
vm_json=$(st vm show dhcp --json)
for e in eth0 eth1 eth2; do
  mac=$(sed -n "s/^NIC $e \([0-9a-f:]*\).*/\1/p" "$dlog" | tr -d '\r' | head -n 1)
  sw=$(printf '%s\n' "$vm_json" | grep -B3 -A3 "\"mac\": \"$mac\"" | sed -n 's/^ *"switch": "\([^"]*\)".*/\1/p' | head -n 1)
  server_of[$e]=$sw
done
dh_s=() dh_d=() dh_n=()
while read -r _ _ e us; do
  case ${server_of[$e]:-} in
    dhs) dh_s+=("$us") ;; dhd) dh_d+=("$us") ;; dhn) dh_n+=("$us") ;;
    *) echo "net.sh: no switch for guest interface $e" >&2; exit 1 ;;
  esac
done < <(grep '^DHCP [0-9]' "$dlog" | tr -d '\r')
if [ ${#dh_s[@]} != "$dhcp_rounds" ] || [ ${#dh_d[@]} != "$dhcp_rounds" ] || [ ${#dh_n[@]} != "$dhcp_rounds" ]; then
  echo "net.sh: expected $dhcp_rounds leases per server" >&2; exit 1
fi
st vm stop dhcp >/dev/null
# Per exchange, µs: "OFFER − first DISCOVER since the last OFFER" and "ACK − first REQUEST since
# the last ACK", from tcpdump's timestamps.
server_us() {
  tcpdump -r "$work/cap-$1.pcap" -n -tt -v 2>/dev/null | awk '
    /^[0-9]+\.[0-9]+ / { ts = $1 }
    /DHCP-Message \(53\)/ {
      m = $NF
      if (m == "Discover" && d == "") d = ts
      if (m == "Offer" && d != "") { off = ts - d; d = "" }
      if (m == "Request" && q == "") q = ts
      if (m == "ACK" && q != "") { printf "%d %d\n", off * 1e6, (ts - q) * 1e6; q = "" }
    }'
}
sleep 1
for p in "${cap_pids[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
mapfile -t of_s < <(server_us dhs | cut -d' ' -f1); mapfile -t ac_s < <(server_us dhs | cut -d' ' -f2)
mapfile -t of_d < <(server_us dhd | cut -d' ' -f1); mapfile -t ac_d < <(server_us dhd | cut -d' ' -f2)
mapfile -t of_n < <(server_us dhn | cut -d' ' -f1); mapfile -t ac_n < <(server_us dhn | cut -d' ' -f2)
serve_a_rss=$(rss_kib "$serve_a") serve_a_hwm=$(hwm_kib "$serve_a")

# --- 4. throughput: Strata switch vs bridge and tap by hand ------------------------------------
tp_sh=() tp_bh=() tp_sg=() tp_bg=()
if [ "$throughput" = 1 ]; then
  echo "net.sh: throughput, $mib MiB x $runs runs" >&2
  st switch create tps --type internal --subnet 10.94.0.0/24 --dhcp off >/dev/null
  st vm create tput --memory 256M --kernel "$kernel" --initrd "$initrd_tput" \
    --cmdline "$cmdline benchip=10.94.0.50/24" --nic virtio:tps >/dev/null
  vms+=(tput)
  inns ip link add tpb type bridge
  inns ip addr add 10.95.0.1/24 dev tpb
  inns ip link set tpb up
  inns ip tuntap add dev tpt mode tap
  inns ip link set tpt master tpb up
  ip netns exec "$ns" qemu-system-x86_64 -accel tcg -machine pc -cpu max -m 256 -nodefaults -display none \
    -kernel "$kernel" -initrd "$initrd_tput" -append "$cmdline benchip=10.95.0.50/24" \
    -serial "file:$work/bare.out" \
    -netdev tap,id=net0,ifname=tpt,script=no,downscript=no \
    -device virtio-net-pci,netdev=net0,mac=02:00:00:00:95:50 >"$work/bare-qemu.log" 2>&1 &
  bg_pids+=("$!")
  st vm start tput >/dev/null
  wait_for "$home/vms/tput/console.log" NET-READY 180
  wait_for "$work/bare.out" NET-READY 180
  bytes=$((mib * 1048576))
  # Host → guest: dd | nc to the guest's port 5001, until the guest's byte count comes back.
  to_guest() {
    local ip=$1 t0 got
    now_us; t0=$t
    got=$(dd if=/dev/zero bs=1M count="$mib" 2>/dev/null | inns busybox nc "$ip" 5001 | tr -d ' \r\n')
    now_us
    [ "$got" = "$bytes" ] || { echo "net.sh: $ip received '$got' bytes, not $bytes" >&2; return 1; }
    res=$(((t - t0) / 1000))
  }
  # Guest → host: read the guest's port 5002 until it closes.
  from_guest() {
    local ip=$1 t0 got
    now_us; t0=$t
    got=$(inns bash -c "cat </dev/tcp/$ip/5002 | wc -c")
    now_us
    [ "$got" = "$bytes" ] || { echo "net.sh: got '$got' bytes from $ip, not $bytes" >&2; return 1; }
    res=$(((t - t0) / 1000))
  }
  # A warm-up transfer each way (ARP, the guests' first nc), untimed.
  # (Retried: the guest's listeners may not be up yet.)
  for ip in 10.94.0.50 10.95.0.50; do
    for try in $(seq 10); do
      if to_guest "$ip" 2>/dev/null && from_guest "$ip" 2>/dev/null; then break; fi
      [ "$try" = 10 ] && { echo "net.sh: no transfer with $ip" >&2; exit 1; }
      sleep 1
    done
  done
  for r in $(seq "$runs"); do
    if [ $((r % 2)) = 1 ]; then order="10.94.0.50 10.95.0.50"; else order="10.95.0.50 10.94.0.50"; fi
    for ip in $order; do
      to_guest "$ip"; a=$res
      from_guest "$ip"; b=$res
      if [ "$ip" = 10.94.0.50 ]; then tp_sh+=("$a") tp_sg+=("$b"); else tp_bh+=("$a") tp_bg+=("$b"); fi
    done
  done
  st vm stop tput >/dev/null
fi

# --- 5. 50 NICs: hot-plug into running guests, cold into VMs that are off, vs `ip` -------------
# Per-operation times (µs) of each variant, all runs: a = add, r = remove; h = hot, c = cold,
# i = ip. Phase totals (ms) per run: *_t.
ha=() hr=() ca=() cr=() ia=() ir=() ha_t=() hr_t=() ca_t=() cr_t=() ia_t=() ir_t=()
hot_fail=0 hot_err=""
if [ "$nics" = 1 ]; then
  echo "net.sh: $nnic NICs over $nvm VMs, $runs runs" >&2
  st switch create nsw --type internal --subnet 10.96.0.0/24 --dhcp off >/dev/null
  nbr=$(bridge_of nsw)
  for k in $(seq 0 $((nvm - 1))); do
    st vm create "nh$k" --memory 128M --cpus 1 --kernel "$kernel" --initrd "$initrd_idle" --cmdline "$cmdline" >/dev/null
    vms+=("nh$k")
    st vm create "nc$k" --memory 128M --cpus 1 --kernel "$kernel" --initrd "$initrd_idle" --cmdline "$cmdline" >/dev/null
  done
  for k in $(seq 0 $((nvm - 1))); do st vm start "nh$k" >/dev/null; done
  for k in $(seq 0 $((nvm - 1))); do wait_for "$home/vms/nh$k/console.log" "NICS 0" 300; done
  # Waits until guest VM's last report is "NICS N"; fails after LIMIT seconds.
  wait_nics() {
    local vm=$1 want=$2 limit=$3 start=$SECONDS last
    while :; do
      last=$(grep '^NICS ' "$home/vms/$vm/console.log" | tail -n 1 | tr -d '\r')
      [ "$last" = "NICS $want" ] && return 0
      if [ $((SECONDS - start)) -ge "$limit" ]; then
        echo "net.sh: guest $vm says '$last', not 'NICS $want'" >&2
        return 1
      fi
      sleep 0.2
    done
  }
  taps_on() { ip -n "$ns" -br link show master "$nbr" | grep -c "^$1" || true; }
  # NIC i goes to VM (i mod nvm), as its adapter (i div nvm); removal goes in reverse, always the
  # VM's last adapter, so no index moves.
  strata_nics() { # hot|cold PREFIX; appends to the arrays; sets $ta, $tr (ms), $fails
    local i k t0 t1 pfx=$2
    fails=0
    now_us; t0=$t
    for i in $(seq 0 $((nnic - 1))); do
      k=$((i % nvm))
      now_us; t1=$t
      st vm nic add "$pfx$k" virtio:nsw >/dev/null
      now_us
      if [ "$1" = hot ]; then ha+=($((t - t1))); else ca+=($((t - t1))); fi
    done
    now_us; ta=$(((t - t0) / 1000))
    if [ "$1" = hot ]; then
      [ "$(taps_on stt-)" = "$nnic" ] || { echo "net.sh: $(taps_on stt-) taps on $nbr, not $nnic" >&2; exit 1; }
      for k in $(seq 0 $((nvm - 1))); do
        wait_nics "$pfx$k" $(((nnic - k + nvm - 1) / nvm)) 120
      done
    fi
    now_us; t0=$t
    for i in $(seq $((nnic - 1)) -1 0); do
      k=$((i % nvm))
      now_us; t1=$t
      if ! st vm nic remove "$pfx$k" $((i / nvm)) >/dev/null 2>"$work/nic-remove.err"; then
        fails=$((fails + 1))
        hot_err=$(head -n 1 "$work/nic-remove.err")
      fi
      now_us
      if [ "$1" = hot ]; then hr+=($((t - t1))); else cr+=($((t - t1))); fi
    done
    now_us; tr=$(((t - t0) / 1000))
    if [ "$1" = hot ] && [ "$fails" = 0 ]; then
      [ "$(taps_on stt-)" = 0 ] || { echo "net.sh: $(taps_on stt-) taps left on $nbr" >&2; exit 1; }
      for k in $(seq 0 $((nvm - 1))); do wait_nics "$pfx$k" 0 120; done
    fi
    return 0
  }
  ip_nics() { # sets $ta, $tr (ms)
    local i t0 t1
    now_us; t0=$t
    for i in $(seq 0 $((nnic - 1))); do
      now_us; t1=$t
      ip -n "$ns" tuntap add dev "ht$i" mode tap
      ip -n "$ns" link set "ht$i" master "$nbr" up
      now_us; ia+=($((t - t1)))
    done
    now_us; ta=$(((t - t0) / 1000))
    [ "$(taps_on ht)" = "$nnic" ] || { echo "net.sh: $(taps_on ht) hand-made taps on $nbr" >&2; exit 1; }
    now_us; t0=$t
    for i in $(seq 0 $((nnic - 1))); do
      now_us; t1=$t
      ip -n "$ns" link del "ht$i"
      now_us; ir+=($((t - t1)))
    done
    now_us; tr=$(((t - t0) / 1000))
  }
  for r in $(seq "$runs"); do
    case $((r % 3)) in
      1) order="ip hot cold" ;; 2) order="hot cold ip" ;; *) order="cold ip hot" ;;
    esac
    for v in $order; do
      case $v in
        ip) ip_nics; ia_t+=("$ta") ir_t+=("$tr") ;;
        cold) strata_nics cold nc; ca_t+=("$ta") cr_t+=("$tr") ;;
        hot)
          [ "$hot_fail" = 0 ] || continue
          strata_nics hot nh; ha_t+=("$ta") hr_t+=("$tr")
          # A guest that did not let a device go keeps it: no further hot runs.
          hot_fail=$fails
          ;;
      esac
    done
  done
  for k in $(seq 0 $((nvm - 1))); do st vm stop "nh$k" >/dev/null; done
fi

# --- report ------------------------------------------------------------------------------------
# MiB/s from milliseconds.
rates() { local v; for v in "$@"; do awk -v m="$mib" -v ms="$v" 'BEGIN { printf "%.1f\n", m * 1000 / ms }'; done; }
{
  echo "Machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(qemu-system-x86_64 --version | head -n 1); TCG; $(dnsmasq --version | head -n 1 | cut -d' ' -f1-3); $runs runs"
  echo
  echo "### DHCP: udhcpc start until the lease is applied, in the guest (ms, median (min–max) of $dhcp_rounds)"
  echo
  echo "| Server | Time to address | Ratio Strata / this |"
  echo "|---|---:|---:|"
  ms=$(median "${dh_s[@]}") md=$(median "${dh_d[@]}") mn=$(median "${dh_n[@]}")
  echo "| Strata (built-in, switch with DHCP on) | $(stats 1000 1 "${dh_s[@]}") | 1.00 |"
  echo "| dnsmasq, defaults (ping check before offering) | $(stats 1000 1 "${dh_d[@]}") | **$(ratio "$ms" "$md")** |"
  echo "| dnsmasq \`--no-ping\` | $(stats 1000 1 "${dh_n[@]}") | **$(ratio "$ms" "$mn")** |"
  echo
  echo "The servers' own reply delays, captured on their bridges (tcpdump; µs, median (min–max) of ${#of_s[@]}, ${#of_d[@]}, ${#of_n[@]} exchanges):"
  echo
  echo "| Server | DISCOVER → OFFER | REQUEST → ACK |"
  echo "|---|---:|---:|"
  echo "| Strata | $(stats 1 0 "${of_s[@]}") | $(stats 1 0 "${ac_s[@]}") |"
  echo "| dnsmasq, defaults | $(stats 1 0 "${of_d[@]}") | $(stats 1 0 "${ac_d[@]}") |"
  echo "| dnsmasq \`--no-ping\` | $(stats 1 0 "${of_n[@]}") | $(stats 1 0 "${ac_n[@]}") |"
  echo
  echo "### $nsw switches: create all, then delete all (seconds for the $nsw, median (min–max) of $runs)"
  echo
  echo "| Variant | Create ×$nsw | Delete ×$nsw | Create, ratio to ip | Delete, ratio to ip |"
  echo "|---|---:|---:|---:|---:|"
  ci=$(median "${c_ip[@]}") di=$(median "${d_ip[@]}")
  echo "| \`ip\` by hand (3 \`ip\` per bridge to create, 1 to delete) | $(stats 1000 3 "${c_ip[@]}") | $(stats 1000 3 "${d_ip[@]}") | 1.00 | 1.00 |"
  echo "| \`strata switch create --dhcp off\` / \`delete\` | $(stats 1000 3 "${c_off[@]}") | $(stats 1000 3 "${d_off[@]}") | **$(ratio "$(median "${c_off[@]}")" "$ci")** | **$(ratio "$(median "${d_off[@]}")" "$di")** |"
  echo "| \`strata switch create\` (DHCP on) / \`delete\` | $(stats 1000 3 "${c_on[@]}") | $(stats 1000 3 "${d_on[@]}") | **$(ratio "$(median "${c_on[@]}")" "$ci")** | **$(ratio "$(median "${d_on[@]}")" "$di")** |"
  echo
  echo "### Memory of \`strata serve\` (MiB; VmRSS median (min–max) of $runs samples)"
  echo
  echo "| Service | VmRSS | VmHWM | Threads |"
  echo "|---|---:|---:|---:|"
  echo "| bare (0 switches) | $(stats 1024 1 "${m0[@]}") | $(mibs "$h0") | $th0 |"
  echo "| $nmem internal switches, DHCP on ($dhcp_on serving) | $(stats 1024 1 "${m20[@]}") | $(mibs "$h20") | $th20 |"
  echo "| the service of the runs above, after churn and DHCP rounds | $(mibs "$serve_a_rss") | $(mibs "$serve_a_hwm") | |"
  echo
  if [ "$throughput" = 1 ]; then
    echo "### TCP throughput, $mib MiB with busybox nc, TCG guest (MiB/s, median (min–max) of $runs)"
    echo
    echo "| Path | Host → guest | Guest → host |"
    echo "|---|---:|---:|"
    mapfile -t r_sh < <(rates "${tp_sh[@]}"); mapfile -t r_sg < <(rates "${tp_sg[@]}")
    mapfile -t r_bh < <(rates "${tp_bh[@]}"); mapfile -t r_bg < <(rates "${tp_bg[@]}")
    echo "| bridge + tap by hand, bare QEMU | $(stats 1 1 "${r_bh[@]}") | $(stats 1 1 "${r_bg[@]}") |"
    echo "| Strata switch, \`strata vm start\` | $(stats 1 1 "${r_sh[@]}") | $(stats 1 1 "${r_sg[@]}") |"
    echo "| ratio Strata / by hand | **$(ratio "$(median "${r_sh[@]}")" "$(median "${r_bh[@]}")")** | **$(ratio "$(median "${r_sg[@]}")" "$(median "${r_bg[@]}")")** |"
    echo
  fi
  if [ "$nics" = 1 ]; then
    echo "### $nnic NICs on one internal switch: add all, then remove all (seconds for the $nnic, median (min–max) of $runs; per operation, ms, median (min–max) of $((nnic * runs)))"
    echo
    echo "| Variant | Add ×$nnic | Remove ×$nnic | Add, ratio to ip | Remove, ratio to ip | One add (ms) | One remove (ms) |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    ai=$(median "${ia_t[@]}") ri=$(median "${ir_t[@]}")
    echo "| \`ip\` by hand (\`tuntap add\` + \`link set master up\`; \`link del\`) | $(stats 1000 3 "${ia_t[@]}") | $(stats 1000 3 "${ir_t[@]}") | 1.00 | 1.00 | $(stats 1000 1 "${ia[@]}") | $(stats 1000 1 "${ir[@]}") |"
    if [ ${#ha_t[@]} -gt 0 ]; then
      echo "| \`strata vm nic add\` / \`remove\`, $nvm running guests (hot-plug) | $(stats 1000 3 "${ha_t[@]}") | $(stats 1000 3 "${hr_t[@]}") | **$(ratio "$(median "${ha_t[@]}")" "$ai")** | **$(ratio "$(median "${hr_t[@]}")" "$ri")** | $(stats 1000 1 "${ha[@]}") | $(stats 1000 1 "${hr[@]}") |"
    fi
    echo "| \`strata vm nic add\` / \`remove\`, $nvm VMs off (settings only) | $(stats 1000 3 "${ca_t[@]}") | $(stats 1000 3 "${cr_t[@]}") | **$(ratio "$(median "${ca_t[@]}")" "$ai")** | **$(ratio "$(median "${cr_t[@]}")" "$ri")** | $(stats 1000 1 "${ca[@]}") | $(stats 1000 1 "${cr[@]}") |"
    echo
    if [ "$hot_fail" = 0 ]; then
      echo "Hot-plug: after each add phase all $nnic taps were on the bridge and every guest had its ethN; after each remove phase no tap was left and every guest had none."
    else
      echo "Hot-plug: **$hot_fail of $nnic removes failed** (first error: $hot_err); hot runs stopped there."
    fi
    echo
    echo "All hot-remove times (ms): $(for v in "${hr[@]}"; do printf '%d ' $((v / 1000)); done)"
    echo
  fi
  echo "All DHCP samples, in the guest (µs): Strata ${dh_s[*]}; dnsmasq ${dh_d[*]}; dnsmasq --no-ping ${dh_n[*]}"
} | tee "${out:-/dev/null}"
