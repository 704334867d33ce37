#!/usr/bin/env bash
# The main job on the embedded default (one host, local state in /var/lib/strata, no external
# services): installs what the host service needs (QEMU 10 …), builds Strata, installs the
# binary as /usr/local/bin/strata and starts the host service `strata serve` in the background
# (log: $STRATA_HOME/serve.log). On a real host, prefer the systemd units in contrib/systemd.
set -euo pipefail
cd "$(dirname "$0")/.."
export STRATA_HOME="${STRATA_HOME:-/var/lib/strata}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
bash scripts/install-deps.sh
cargo build --release -q -p strata-cli
$SUDO install -m 0755 target/release/strata /usr/local/bin/strata
$SUDO mkdir -p "$STRATA_HOME"
if strata host info >/dev/null 2>&1; then
  echo "start: the host service is already running on $STRATA_HOME/api.sock"
else
  $SUDO env STRATA_HOME="$STRATA_HOME" setsid nohup /usr/local/bin/strata serve \
    >>"$STRATA_HOME/serve.log" 2>&1 </dev/null &
  for _ in $(seq 1 100); do
    strata host info >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
strata host info
echo
echo "The host service runs. Next: bash scripts/first-vm.sh   (a tiny guest, VM 'first')"
