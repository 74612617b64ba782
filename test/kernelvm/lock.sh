#!/bin/sh
# lock.sh LOCK: re-pin LOCK (make kernel-lock) to the kernel image package
# Debian's linux-image-amd64 names now (its ABI is in the package's name,
# so build/image/lock.sh alone would keep the old one) and to the versions
# apt offers now of it and of busybox-static, keeping LOCK's comment header.
set -eu
lock=$1
img=$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
if [ -z "$img" ]; then
	echo "lock.sh: apt knows no linux-image-amd64 (apt-get update first)" >&2
	exit 1
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
grep '^#' "$lock" >"$tmp"
printf '%s\n' "$img" busybox-static >>"$tmp"
# The guest runs the host's binaries, so it is only ever the host's
# architecture; the tier runs qemu-system-x86_64, so amd64.
sh "$(dirname "$0")/../../build/image/lock.sh" "$tmp" amd64
cp "$tmp" "$lock"
