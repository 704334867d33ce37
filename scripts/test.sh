#!/usr/bin/env bash
# All of Strata's tests: unit, property, crash, interop (qemu-img, qemu-io, libvhdi), malformed
# files and the CLI. Installs the peers the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --workspace
