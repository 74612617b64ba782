package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/testutils"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// binDir is where make build put the binaries (VPCCHAIN_BIN, as for the
// end-to-end tests).
func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("VPCCHAIN_BIN")
	if dir == "" {
		dir, _ = filepath.Abs("../../bin")
	}
	for _, p := range platforms {
		for _, f := range appLayout {
			if src := filepath.Join(binFor(dir, p.Architecture), f.src); !exists(src) {
				t.Fatalf("%s missing: run make build tools cross (or make image)", src)
			}
		}
	}
	return dir
}

// platforms are the image's, as make image builds it.
var platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// readImage opens an OCI layout archive with go-containerregistry's reader:
// the image index index.json names, and each platform's image in it, in
// the index's order. Every blob the index, manifests and configs name is
// checked against its descriptor (the file is there, its size and sha256
// are the descriptor's), and each manifest's platform against its config.
func readImage(t *testing.T, archive string) (v1.Hash, []v1.Image) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			_ = os.MkdirAll(p, 0o755)
			continue
		}
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	blob := func(d v1.Descriptor) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "blobs", d.Digest.Algorithm, d.Digest.Hex))
		if err != nil {
			t.Fatalf("blob of %s %s: %v", d.MediaType, d.Digest, err)
		}
		if sum := sha256.Sum256(b); d.Digest.Algorithm != "sha256" || hex.EncodeToString(sum[:]) != d.Digest.Hex || int64(len(b)) != d.Size {
			t.Errorf("blob %s (%s): sha256 %x, %d bytes; the descriptor says %d", d.Digest, d.MediaType, sum, len(b), d.Size)
		}
	}
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := top.IndexManifest()
	if err != nil || len(m.Manifests) != 1 || m.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("index.json: %+v, %v; want one image index", m, err)
	}
	if got := m.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != "docker.io/vpcchain/vpcchain:test" {
		t.Errorf("image named %q", got)
	}
	blob(m.Manifests[0])
	idx, err := top.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var imgs []v1.Image
	for _, d := range im.Manifests {
		blob(d)
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		mf, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		blob(mf.Config)
		for _, l := range mf.Layers {
			blob(l)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if d.MediaType != types.OCIManifestSchema1 || d.Platform == nil || d.Platform.OS != cf.OS || d.Platform.Architecture != cf.Architecture {
			t.Errorf("manifest %s: %s, platform %+v; its config says %s/%s", d.Digest, d.MediaType, d.Platform, cf.OS, cf.Architecture)
		}
		imgs = append(imgs, img)
	}
	return m.Manifests[0].Digest, imgs
}

// entries lists a layer: path -> header, and regular files' contents.
func entries(t *testing.T, l v1.Layer) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		p := "/" + strings.TrimSuffix(h.Name, "/")
		hs[p] = h
		if h.Typeflag == tar.TypeReg {
			data[p], _ = io.ReadAll(tr)
		}
	}
}

func buildTo(t *testing.T, bin, cache string) (string, result) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "vpcchain.oci.tar")
	res, err := build(bin, ".", cache, out, "vpcchain/vpcchain:test", platforms)
	if err != nil {
		t.Fatal(err)
	}
	return out, res
}

// The image is reproducible (two builds from separate download caches give
// the same bytes), and holds exactly: every file of every pinned Debian
// package (as dpkg-deb lists it) but documentation, iptables' alternatives
// as Debian's postinst sets them, and our binaries where the DaemonSet runs
// them, byte for byte.
func TestImage(t *testing.T) {
	bin := binDir(t)
	cache := t.TempDir()
	a, res := buildTo(t, bin, cache)
	b, _ := buildTo(t, bin, t.TempDir())
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Fatal("two builds from the same inputs differ")
	}
	t.Logf("image %s: %d bytes compressed, %d uncompressed", res.digest, res.compressed, res.uncompressed)

	digest, imgs := readImage(t, a)
	if digest != res.digest {
		t.Errorf("digest %s read back, %s built", digest, res.digest)
	}
	if len(imgs) != len(platforms) {
		t.Fatalf("%d images in the index, want one for each of %v", len(imgs), platforms)
	}
	for i, p := range platforms {
		t.Run(p.Architecture, func(t *testing.T) { checkImage(t, imgs[i], p, binFor(bin, p.Architecture), cache) })
	}
}

// checkImage checks one platform's image: its config, its application
// layer (the binaries of bin, built for its architecture per their ELF
// header) and its userland (the lock's packages for its architecture).
func checkImage(t *testing.T, img v1.Image, p v1.Platform, bin, cache string) {
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture {
		t.Errorf("config for %s/%s, want %s", cf.OS, cf.Architecture, p)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/app/vpcchaind"}) || !slices.Contains(cf.Config.Env, "PATH=/usr/sbin:/usr/bin:/sbin:/bin") {
		t.Errorf("config %+v", cf.Config)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("%d layers, %v; want userland and application", len(layers), err)
	}
	user, _ := entries(t, layers[0])
	app, data := entries(t, layers[1])

	// Application layer: exactly the layout, the built files.
	var got []string
	for p, h := range app {
		if h.Typeflag == tar.TypeReg {
			got = append(got, p)
		}
	}
	var want []string
	for _, f := range appLayout {
		want = append(want, f.dest)
		b, _ := os.ReadFile(filepath.Join(bin, f.src))
		if sha256.Sum256(b) != sha256.Sum256(data[f.dest]) || app[f.dest].Mode != 0o755 {
			t.Errorf("%s is not %s (mode %o)", f.dest, f.src, app[f.dest].Mode)
		}
		if e, err := elf.NewFile(bytes.NewReader(data[f.dest])); err != nil || e.Machine != elfMachine[p.Architecture] {
			t.Errorf("%s is not an ELF binary for %s: %v", f.dest, p.Architecture, err)
		} else if e.Class != elf.ELFCLASS64 || e.OSABI != elf.ELFOSABI_NONE && e.OSABI != elf.ELFOSABI_LINUX {
			t.Errorf("%s: ELF class %s, OS ABI %s", f.dest, e.Class, e.OSABI)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("application files %v, want %v", got, want)
	}

	// Userland: every packaged path, from dpkg-deb's own listing.
	pruned := []string{"/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/lintian", "/usr/share/bash-completion", "/usr/share/locale"}
	lock, err := os.Open("debian-packages.lock")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	sc := bufio.NewScanner(lock)
	pkgs := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || strings.HasPrefix(f[0], "#") || f[2] != debianArch[p.Architecture] && f[2] != "all" {
			continue
		}
		pkgs++
		deb := filepath.Join(cache, f[0]+"_"+strings.ReplaceAll(f[1], ":", "%3a")+"_"+f[2]+".deb")
		out, err := exec.Command("dpkg-deb", "--fsys-tarfile", deb).Output()
		if err != nil {
			t.Fatalf("dpkg-deb %s: %v", deb, err)
		}
		tr := tar.NewReader(bytes.NewReader(out))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			p := path.Clean("/" + h.Name)
			if p == "/" || slices.ContainsFunc(pruned, func(d string) bool { return p == d || strings.HasPrefix(p, d+"/") }) {
				continue
			}
			if _, ok := user[p]; !ok {
				t.Errorf("%s of %s is not in the image", p, f[0])
			}
		}
	}
	if pkgs < 10 {
		t.Fatalf("read %d packages from the lock", pkgs)
	}
	for _, p := range pruned {
		if _, ok := user[p]; ok {
			t.Errorf("%s is in the image", p)
		}
	}
	for _, cmd := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		if h := user["/usr/sbin/"+cmd]; h == nil || h.Linkname != "/etc/alternatives/"+cmd {
			t.Errorf("/usr/sbin/%s: %+v, want a link to /etc/alternatives/%s", cmd, h, cmd)
		}
		nft := strings.Replace(cmd, "tables", "tables-nft", 1)
		if h := user["/etc/alternatives/"+cmd]; h == nil || h.Linkname != "/usr/sbin/"+nft {
			t.Errorf("/etc/alternatives/%s: %+v, want a link to /usr/sbin/%s", cmd, h, nft)
		}
	}
}

// The image's userland programs a kernel: both iptables flavours and ipset,
// run from the image's files (chroot) in a network namespace of the test's
// own.
func TestUserlandRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: chroot into the image's files, in a network namespace of its own")
	}
	root := t.TempDir()
	cmd := exec.Command("sh", "rootfs.sh", "debian-packages.lock", root, t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rootfs.sh: %v\n%s", err, out)
	}
	// One network namespace of the test's own for every command.
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = netns.Close(); _ = testutils.UnmountNS(netns) }()
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("nsenter", append([]string{"--net=" + netns.Path(), "chroot", root, "/usr/sbin/" + args[0]}, args[1:]...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s from the image: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if v := run("iptables", "--version"); !strings.Contains(v, "v1.8.9 (nf_tables)") {
		t.Errorf("iptables --version: %q, want v1.8.9 (nf_tables): the nf_tables variant by default", v)
	}
	for _, ipt := range []string{"iptables-nft", "iptables-legacy"} {
		run(ipt, "-t", "nat", "-N", "VPCCHAIN-IMAGE-TEST")
		run(ipt, "-t", "nat", "-A", "VPCCHAIN-IMAGE-TEST", "-s", "10.0.0.9", "-j", "RETURN")
		if out := run(ipt, "-t", "nat", "-S", "VPCCHAIN-IMAGE-TEST"); !strings.Contains(out, "-A VPCCHAIN-IMAGE-TEST -s 10.0.0.9/32 -j RETURN") {
			t.Errorf("%s did not keep its rule:\n%s", ipt, out)
		}
	}
	run("ipset", "create", "vpcchain-image-test", "hash:ip")
	run("ipset", "add", "vpcchain-image-test", "10.0.0.9")
	if out := run("ipset", "list", "vpcchain-image-test"); !strings.Contains(out, "10.0.0.9") {
		t.Errorf("ipset list:\n%s", out)
	}
}

// The Dockerfile builds the same layout: the same files from the same build
// outputs under /app, the userland from rootfs.sh with the same lock, the
// same entrypoint and PATH.
func TestDockerfileMatchesLayout(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	app := map[string]string{}
	var rootfsRun, rootfsCopy, entry, env bool
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 4 && f[0] == "COPY" && f[1] == "--from=build":
			src, ok := strings.CutPrefix(f[2], "/src/bin/")
			if !ok {
				t.Errorf("COPY from outside the build's bin: %s", line)
			}
			app[f[3]] = src
		case len(f) == 4 && f[0] == "COPY" && f[1] == "--from=rootfs":
			rootfsCopy = f[2] == "/rootfs/" && f[3] == "/"
		case len(f) > 0 && f[0] == "RUN" && strings.Contains(line, "sh /tmp/rootfs.sh /tmp/debian-packages.lock /rootfs"):
			rootfsRun = true
		case len(f) > 0 && f[0] == "ENTRYPOINT":
			entry = strings.TrimSpace(strings.TrimPrefix(line, "ENTRYPOINT")) == `["`+strings.Join(imageConfig.Entrypoint, `", "`)+`"]`
		case len(f) == 2 && f[0] == "ENV":
			env = slices.Contains(imageConfig.Env, f[1])
		}
	}
	want := map[string]string{}
	for _, f := range appLayout {
		want[f.dest] = f.src
	}
	if len(app) != len(want) {
		t.Errorf("Dockerfile copies %v into the image, make image %v", app, want)
	}
	for dest, src := range want {
		if app[dest] != src {
			t.Errorf("%s: the Dockerfile copies %q, make image %q", dest, app[dest], src)
		}
	}
	if !rootfsRun || !rootfsCopy || !entry || !env {
		t.Errorf("Dockerfile: rootfs.sh run with the lock %v, rootfs copied to / %v, entrypoint %v, PATH %v", rootfsRun, rootfsCopy, entry, env)
	}
}

// The builder refuses a binary built for another architecture than its
// platform's (a stale bin/linux_arm64, a GOARCH left set).
func TestCheckELF(t *testing.T) {
	bin := binDir(t)
	for _, p := range platforms {
		own := filepath.Join(binFor(bin, p.Architecture), "vpcctl")
		if err := checkELF(own, p.Architecture); err != nil {
			t.Errorf("%s for %s: %v", own, p.Architecture, err)
		}
		for _, other := range platforms {
			if other.Architecture != p.Architecture {
				if err := checkELF(own, other.Architecture); err == nil {
					t.Errorf("%s (%s) accepted for %s", own, p.Architecture, other.Architecture)
				}
			}
		}
	}
	if err := checkELF("rootfs.sh", "amd64"); err == nil {
		t.Error("a shell script accepted as a binary")
	}
}

// An archive is kept only while every input is what it was built from: a
// binary of either platform, the lock, rootfs.sh, the reference and the
// platforms each change the key.
func TestInputsKey(t *testing.T) {
	bin, dir := t.TempDir(), t.TempDir()
	write := func(p, data string) {
		t.Helper()
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range platforms {
		for _, f := range appLayout {
			write(filepath.Join(binFor(bin, p.Architecture), f.src), p.Architecture+f.src)
		}
	}
	write(filepath.Join(dir, "debian-packages.lock"), "lock")
	write(filepath.Join(dir, "rootfs.sh"), "script")
	key := func(ref string, plats []v1.Platform) string {
		t.Helper()
		k, err := inputsKey(bin, dir, ref, plats)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key("r:1", platforms)
	if key("r:1", platforms) != base {
		t.Fatal("the same inputs give another key")
	}
	seen := map[string]string{base: "the original"}
	differs := func(what, k string) {
		t.Helper()
		if prev, ok := seen[k]; ok {
			t.Errorf("%s gives the key of %s", what, prev)
		}
		seen[k] = what
	}
	differs("another reference", key("r:2", platforms))
	differs("one platform", key("r:1", platforms[:1]))
	write(filepath.Join(binFor(bin, "arm64"), "tools/loopback"), "changed")
	differs("a changed arm64 plugin", key("r:1", platforms))
	write(filepath.Join(binFor(bin, "amd64"), "vpcchaind"), "changed")
	differs("a changed amd64 daemon", key("r:1", platforms))
	write(filepath.Join(dir, "debian-packages.lock"), "relocked")
	differs("a re-pinned lock", key("r:1", platforms))
	write(filepath.Join(dir, "rootfs.sh"), "edited")
	differs("an edited rootfs.sh", key("r:1", platforms))
}
