#!/usr/bin/env bash
# Creates and boots a first VM on the running host service: a tiny guest built from Debian's
# packages (the host's stock kernel, linux-image-amd64, and a busybox-static initramfs) booted
# directly, with a 1 GiB dynamic VHD on virtio. Its console offers a shell:
#   strata vm console first     (Ctrl-] detaches)
set -euo pipefail
cd "$(dirname "$0")/.."
export STRATA_HOME="${STRATA_HOME:-/var/lib/strata}"
name="${1:-first}"
images="$STRATA_HOME/images/$name"
mkdir -p "$images"
cat >"$images/init.sh" <<'INIT'
echo "Strata first VM: Linux $(uname -r), $(nproc) CPU(s), $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
for i in $(seq 1 30); do [ -b /dev/vda ] && break; sleep 1; done
[ -b /dev/vda ] && echo "Disk /dev/vda: $(($(cat /sys/block/vda/size) / 2048)) MiB, served by Strata's VHD engine"
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\npoweroff -f\n' >/etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
acpid -d -c /etc/acpi 2>/dev/null &
echo "Type commands below; 'poweroff -f' ends the VM, or use: strata vm shutdown"
while true; do setsid cttyhack sh; done
INIT
read -r kernel initrd < <(cargo run --release -q -p strata-testguest --example mkguest -- \
  "$images" "$images/init.sh" virtio_pci virtio_blk button evdev)
[ -f "$images/disk.vhd" ] || strata disk create "$images/disk.vhd" --size 1G
strata vm create "$name" --memory 256M --cpus 1 --disk "$images/disk.vhd" --nic virtio \
  --kernel "$kernel" --initrd "$initrd" --cmdline "console=ttyS0 quiet"
strata vm start "$name"
sleep 5
strata vm console "$name" --log
echo
strata vm list
echo "Attach: strata vm console $name   (Ctrl-] detaches).  Stop: strata vm shutdown $name"
