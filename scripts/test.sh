#!/usr/bin/env bash
# All of Strata's tests: unit, property, crash, interop (qemu-img, qemu-io, libvhdi), malformed
# files, the NBD server with hostile clients, and the CLI (plug, mount). Installs the peers the
# tests need first, and ends with one line counting every test run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
