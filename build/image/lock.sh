#!/bin/sh
# lock.sh LOCK: rewrite LOCK with the versions apt offers now for the same
# packages (make image-lock), keeping its comment header.
set -eu
lock=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
grep '^#' "$lock" >"$tmp/new"
grep -v '^#' "$lock" | while read -r pkg _; do
	[ -n "$pkg" ] || continue
	(cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || { echo "lock.sh: apt cannot download $pkg" >&2; exit 1; }
	deb=$(ls "$tmp"/"${pkg}"_*.deb)
	echo "$pkg $(dpkg-deb -f "$deb" Version) $(dpkg-deb -f "$deb" Architecture) $(sha256sum "$deb" | cut -d' ' -f1)" >>"$tmp/new"
	rm -f "$deb"
done
mv "$tmp/new" "$lock"
