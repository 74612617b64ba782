#!/bin/sh
# rootfs.sh LOCK OUT [CACHE [ARCH]]: the image's userland for Debian
# architecture ARCH (default dpkg's own) in OUT, from exactly the Debian
# packages LOCK pins for ARCH and "all" (downloaded with apt-get into CACHE,
# default a temporary directory, and checked against the pinned sha256).
# Both `make image` and the Dockerfile run it, so both images hold the same
# files.
set -eu
lock=$1 out=$2
cache=${3:-$(mktemp -d)}
want=${4:-$(dpkg --print-architecture)}
mkdir -p "$out" "$cache"
if ! grep -v '^#' "$lock" | awk -v a="$want" '$3 == a { found = 1 } END { exit !found }'; then
	echo "rootfs.sh: $lock pins no package for $want" >&2
	exit 1
fi
grep -v '^#' "$lock" | while read -r pkg ver arch sum; do
	[ -n "$pkg" ] || continue
	[ "$arch" = "$want" ] || [ "$arch" = all ] || continue
	deb="$cache/${pkg}_$(echo "$ver" | sed 's/:/%3a/')_${arch}.deb"
	if ! echo "$sum  $deb" | sha256sum -c --status 2>/dev/null; then
		rm -f "$deb"
		# pkg:arch, so a foreign architecture's is fetched (an "all"
		# package has no other).
		spec="$pkg:$arch"
		[ "$arch" != all ] || spec=$pkg
		if ! (cd "$cache" && apt-get download -q "$spec=$ver" >/dev/null 2>&1); then
			echo "rootfs.sh: apt cannot download $spec=$ver (Debian replaced it, or the package lists are old: apt-get update; for a foreign architecture, dpkg --add-architecture $arch first); refresh the lock with make image-lock" >&2
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
