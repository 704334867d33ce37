#!/usr/bin/env bash
# Installs what Strata and its tests need on Debian 12 (bookworm), as root or through sudo:
# - qemu-utils (qemu-img, qemu-io, qemu-nbd) from bookworm-backports: QEMU 10, whose VHD driver
#   reads a disk's size the way Hyper-V does (plain bookworm has QEMU 7.2, which uses the CHS
#   geometry for creators it does not know and so sees a smaller disk than ours);
# - libvhdi-utils (vhdiinfo, vhdimount) and fuse3: the second VHD peer, the only one that reads
#   differencing disks;
# - libnbd-bin (nbdcopy, nbdinfo): NBD clients for the storage server tests;
# - e2fsprogs, mount (losetup) and time: used by the tests and benchmarks; iproute2 (ip netns)
#   and util-linux (nsenter, unshare): the network tests run in namespaces of their own;
# - qemu-system-x86 (from bookworm-backports too: QEMU 10), linux-image-amd64, busybox-static and
#   cpio: the real guests the tests boot (a stock Debian kernel and a busybox initramfs);
# - qemu-guest-agent (from bookworm-backports too, to match QEMU 10): qemu-ga, which the tests copy
#   into a guest's initramfs to talk to a real agent over virtio-serial (on the host its service only
#   starts when the host itself has an org.qemu.guest_agent.0 port);
# - nftables (Strata's own NAT, port-forward and guard tables), ovmf (UEFI firmware, with the
#   secure-boot build) and swtpm with swtpm-tools (a VM's TPM 2.0).
# The backports suite is added (from the mirror the machine already uses) only when missing.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive

has_backports() { grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; }

add_backports() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list)
  fi
  if [ -z "$uri" ]; then
    echo "install-deps: cannot find the Debian mirror in the apt sources; add bookworm-backports by hand" >&2
    return 1
  fi
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" |
    $SUDO tee /etc/apt/sources.list.d/strata-backports.sources >/dev/null
}

if . /etc/os-release && [ "${VERSION_CODENAME:-}" = bookworm ] && ! has_backports; then
  add_backports
fi
$SUDO apt-get update -qq
if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-utils qemu-system-x86 qemu-guest-agent >/dev/null
else
  $SUDO apt-get install -y -qq --no-install-recommends qemu-utils qemu-system-x86 qemu-guest-agent >/dev/null
fi
$SUDO apt-get install -y -qq libvhdi-utils fuse3 libnbd-bin e2fsprogs mount time iproute2 nftables util-linux ovmf swtpm swtpm-tools >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends linux-image-amd64 busybox-static cpio >/dev/null
qemu-img --version | head -n 1
