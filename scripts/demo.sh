#!/usr/bin/env bash
# The main job on the embedded default (one host, local files, no services): installs what is
# needed, builds Strata, and walks through the life of a virtual hard disk, checking each step
# with qemu-img, a peer VHD implementation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -q -p strata-cli
strata() { ./target/release/strata "$@"; }
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
step() { printf '\n== %s\n' "$*"; }

step "A 64 MiB raw image, half data and half zeros, becomes a dynamic VHD"
head -c 32M /dev/urandom > "$work/data.raw"
truncate -s 64M "$work/data.raw"
strata disk convert "$work/data.raw" "$work/base.vhd" --type dynamic
qemu-img compare -f raw -F vpc "$work/data.raw" "$work/base.vhd"
strata disk inspect "$work/base.vhd"

step "A differencing disk on top of it, then its undo disk"
strata disk create "$work/child.vhd" --parent "$work/base.vhd"
strata disk undo create "$work/child.vhd"
strata disk inspect "$work/child.vud" --json | head -n 12
strata disk undo discard "$work/child.vhd"

step "Check the chain, then flatten it into a fixed disk that qemu reads identically"
strata disk check "$work/child.vhd"
strata disk merge "$work/child.vhd" --to "$work/flat.vhd" --type fixed
qemu-img compare -f raw -F vpc "$work/data.raw" "$work/flat.vhd"

step "Plug the child in (VHDMount): an NBD export whose writes go to an undo disk"
export STRATA_RUN_DIR="$work/run"
uri=$(strata disk plug "$work/child.vhd")
echo "$uri"
qemu-io -f raw -c "write -P 0x5a 40M 1M" -c "read -P 0x5a 40M 1M" "$uri"
strata disk query --all
strata disk unplug "$work/child.vhd" --commit

step "Merge the child into its parent, grow the disk, compact it"
strata disk merge "$work/child.vhd"
strata disk resize "$work/base.vhd" --size 1G
strata disk compact "$work/base.vhd"
strata disk check "$work/base.vhd"
printf '\nDone: every step was checked by qemu-img or strata disk check.\n'
