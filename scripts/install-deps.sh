#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo use, only if missing.
# Needs root (tests create network namespaces anyway).
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v ipset >/dev/null || need+=(ipset)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v conntrack >/dev/null || need+=(conntrack)
command -v ping >/dev/null || need+=(iputils-ping)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
# TestCalicoPolicy runs Debian's etcd under a real kube-apiserver and Felix.
[[ -x /usr/bin/etcd ]] || need+=(etcd-server)
command -v openssl >/dev/null || need+=(openssl)
# TestKubeletNode runs a real kubelet on Debian's containerd and runc, with
# an offline pause image (test/e2e/testdata/pause) and web images built from
# a static busybox.
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /bin/busybox ]] || need+=(busybox-static)
# make image (and its test) downloads the pinned packages of the image's
# userland with apt-get download, which needs the package lists of both
# the image's architectures (amd64 and arm64): dpkg must know the one that
# is not the machine's as a foreign architecture for apt to fetch its lists.
command -v dpkg-deb >/dev/null || need+=(dpkg)
# The image test runs the arm64 binaries under qemu's user-mode emulator.
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
# The kernel tier (make kernel-test) boots Debian's kernel under qemu's
# system emulator, packs the guest's initramfs with cpio, and its WireGuard
# test sets keys with wg.
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v wg >/dev/null || need+=(wireguard-tools)
update=
for arch in amd64 arm64; do
  if [[ $(dpkg --print-architecture) != "$arch" ]] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    dpkg --add-architecture "$arch"
    update=1
  fi
done
lists=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' 2>/dev/null | head -1)
if ((${#need[@]})) || [[ -z $lists || -n $update ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
fi
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "the tests and the demo need root (they create network namespaces)" >&2
  exit 1
fi
