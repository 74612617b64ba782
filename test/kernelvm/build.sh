#!/bin/sh
# build.sh OUT: the kernel tier's guest in OUT (make kernel-tools), from the
# Debian packages packages.lock pins (unpacked by build/image/rootfs.sh, the
# .deb files kept in OUT/debs): OUT/vmlinuz, the package's kernel, and
# OUT/initramfs.cpio (newc, uncompressed: the kernel unpacks it faster than
# it would decompress it under emulation), byte for byte the same from the
# same lock, init and module list: busybox, guest/init as /init, and the
# modules guest/modules names with every module they depend on. Debian ships
# no modules.dep (its postinst runs depmod), so busybox's depmod writes one
# for the whole package to resolve the dependencies from, and another for
# the initramfs's modules. Each file is written to a temporary name and
# renamed, initramfs.cpio last.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$1
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 022
sh "$here/../../build/image/rootfs.sh" "$here/packages.lock" "$tmp/pkg" "$out/debs"
bb=$tmp/pkg/bin/busybox
ver=$(ls "$tmp/pkg/lib/modules")
if [ ! -x "$bb" ] || [ "$(echo "$ver" | wc -w)" -ne 1 ] || [ ! -f "$tmp/pkg/boot/vmlinuz-$ver" ]; then
	echo "build.sh: $here/packages.lock must pin busybox-static and one kernel image package" >&2
	exit 1
fi
"$bb" depmod -b "$tmp/pkg" "$ver"
mods=$tmp/pkg/lib/modules/$ver
# The closure of the listed modules in modules.dep (paths relative to
# $mods); a module's name is its file's with "-" read as "_", as modprobe
# reads it.
grep -v '^#' "$here/guest/modules" | awk -v depfile="$mods/modules.dep" '
function add(p,    i, n, d) {
	if (p in seen) return
	seen[p] = 1
	n = split(deps[p], d, " ")
	for (i = 1; i <= n; i++) add(d[i])
}
BEGIN {
	while ((getline l < depfile) > 0) {
		p = l; sub(/:.*/, "", p)
		r = l; sub(/^[^:]*:[ ]*/, "", r)
		deps[p] = r
		n = p; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub(/-/, "_", n)
		path[n] = p
	}
}
NF {
	m = $1; gsub(/-/, "_", m)
	if (!(m in path)) { print "build.sh: no module " $1 " in the kernel package" > "/dev/stderr"; bad = 1; next }
	add(path[m])
}
END {
	if (bad) exit 1
	for (p in seen) print p
}' | LC_ALL=C sort >"$tmp/list"
root=$tmp/root
mkdir -p "$root/bin" "$root/lib/modules/$ver"
while read -r p; do
	mkdir -p "$root/lib/modules/$ver/$(dirname "$p")"
	cp "$mods/$p" "$root/lib/modules/$ver/$p"
done <"$tmp/list"
cp "$mods/modules.builtin" "$root/lib/modules/$ver/"
# Named, in sorted order (relative to the modules' directory, as depmod
# reads them), so busybox's depmod reads them in the same order wherever it
# runs, not in the order a file system lists a directory; its files sorted
# too.
sed "s|^|./|" "$tmp/list" | xargs "$bb" depmod -b "$root" "$ver"
for f in modules.dep modules.alias modules.symbols; do
	LC_ALL=C sort "$root/lib/modules/$ver/$f" >"$tmp/sorted" && cp "$tmp/sorted" "$root/lib/modules/$ver/$f"
done
cp "$bb" "$root/bin/busybox"
cp "$here/guest/init" "$root/init"
chmod 0755 "$root/init" "$root/bin/busybox"
# Reproducible: one mtime, root's ownership, a sorted list, cpio's own
# inode numbering.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet) >"$out/initramfs.cpio.tmp"
cp "$tmp/pkg/boot/vmlinuz-$ver" "$out/vmlinuz.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
echo "build.sh: $out/vmlinuz ($ver) and $out/initramfs.cpio ($(wc -l <"$tmp/list") modules, $(du -k "$out/initramfs.cpio" | cut -f1) KiB)"
