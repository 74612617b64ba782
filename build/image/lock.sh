#!/bin/sh
# lock.sh LOCK [ARCH...]: rewrite LOCK with the versions apt offers now for
# the same packages (make image-lock), for each architecture (default amd64
# and arm64, the image's platforms), keeping its comment header. A package
# of architecture "all" is pinned once. apt needs every architecture's
# package lists (dpkg --add-architecture, apt-get update: make deps does it).
set -eu
lock=$1
shift
[ $# -gt 0 ] || set -- amd64 arm64
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
grep '^#' "$lock" >"$tmp/new"
grep -v '^#' "$lock" | while read -r pkg _; do
	[ -n "$pkg" ] && echo "$pkg"
done | sort -u >"$tmp/pkgs"
while read -r pkg; do
	for arch in "$@"; do
		(cd "$tmp" && apt-get download -q "$pkg:$arch" >/dev/null 2>&1) || {
			echo "lock.sh: apt cannot download $pkg:$arch (for a foreign architecture: dpkg --add-architecture $arch && apt-get update)" >&2
			exit 1
		}
		deb=$(ls "$tmp"/"${pkg}"_*.deb)
		a=$(dpkg-deb -f "$deb" Architecture)
		echo "$pkg $(dpkg-deb -f "$deb" Version) $a $(sha256sum "$deb" | cut -d' ' -f1)" >>"$tmp/rows"
		rm -f "$deb"
		[ "$a" != all ] || break
	done
done <"$tmp/pkgs"
sort -u "$tmp/rows" >>"$tmp/new"
mv "$tmp/new" "$lock"
