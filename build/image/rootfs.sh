#!/bin/sh
# rootfs.sh LOCK OUT [CACHE]: the image's userland in OUT, from exactly the
# Debian packages LOCK pins (downloaded with apt-get into CACHE, default a
# temporary directory, and checked against the pinned sha256). Both `make
# image` and the Dockerfile run it, so both images hold the same files.
set -eu
lock=$1 out=$2
cache=${3:-$(mktemp -d)}
mkdir -p "$out" "$cache"
grep -v '^#' "$lock" | while read -r pkg ver arch sum; do
	[ -n "$pkg" ] || continue
	deb="$cache/${pkg}_$(echo "$ver" | sed 's/:/%3a/')_${arch}.deb"
	if ! echo "$sum  $deb" | sha256sum -c --status 2>/dev/null; then
		rm -f "$deb"
		if ! (cd "$cache" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1); then
			echo "rootfs.sh: apt cannot download $pkg=$ver (Debian replaced it, or the package lists are old: apt-get update); refresh the lock with make image-lock" >&2
			exit 1
		fi
		if ! echo "$sum  $deb" | sha256sum -c --status; then
			echo "rootfs.sh: $deb is not the file the lock pins (sha256 $sum)" >&2
			exit 1
		fi
	fi
	dpkg-deb -x "$deb" "$out"
done
# What nothing in the image reads.
rm -rf "$out/usr/share/doc" "$out/usr/share/man" "$out/usr/share/info" "$out/usr/share/lintian" \
	"$out/usr/share/bash-completion" "$out/usr/share/locale"
# Where iptables keeps its lock (/run/xtables.lock, which the DaemonSet
# mounts from the node) and scratch space.
mkdir -p "$out/run" "$out/tmp"
chmod 1777 "$out/tmp"
# update-alternatives, as Debian's iptables postinst leaves it: the nf_tables
# variants (priority 20) over the legacy ones (10). The daemon picks the
# node's own backend at start, whatever this default.
# (Only where the lock has iptables: the tests' images reuse this script.)
if [ -e "$out/usr/sbin/xtables-nft-multi" ]; then
	mkdir -p "$out/etc/alternatives"
	for t in iptables ip6tables; do
		for s in "" -save -restore; do
			ln -sfn "/usr/sbin/$t-nft$s" "$out/etc/alternatives/$t$s"
			ln -sfn "/etc/alternatives/$t$s" "$out/usr/sbin/$t$s"
		done
	done
fi
