// Command image builds vpcchain's container image without a container
// engine, reproducibly (the same binaries and lock give the same digest):
// one layer of userland from the Debian packages build/image/debian-packages.lock
// pins (iptables in nf_tables and legacy flavours, ipset, and what they
// link), unpacked by rootfs.sh, and one layer of our binaries and the upstream
// plugins the installer copies; one such image per platform (linux/amd64 and
// linux/arm64) under an OCI image index. It writes an OCI image layout
// archive that `ctr images import` (or `skopeo copy oci-archive:`) reads; a
// runtime keeps the manifest of its node's platform.
//
//	go run ./build/image -bin bin -platforms linux/amd64,linux/arm64 -out bin/image/vpcchain.oci.tar -ref vpcchain/vpcchain:dev
//
// The host's binaries are in -bin (make build), another platform's in
// -bin/linux_<arch> (make cross).
//
// build/image/Dockerfile builds the same layout with a container builder.
package main

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vpcchain/vpcchain/internal/ociimage"
)

// appFile is one file of the application layer: where it goes in the image
// and what it is in the build's bin directory.
type appFile struct{ dest, src string }

// appLayout is what the DaemonSet runs from the image: the daemon and the
// installer in /app, the plugins the installer copies into the node's CNI
// bin dir in /app/cni (ours and the upstream portmap, bandwidth,
// loopback and host-local, which vpc-egress-v4 delegates to).
var appLayout = []appFile{
	{"/app/vpcchaind", "vpcchaind"},
	{"/app/vpcchain-install", "vpcchain-install"},
	{"/app/vpcctl", "vpcctl"},
	{"/app/cni/vpc-bridge", "vpc-bridge"},
	{"/app/cni/vpc-ipam", "vpc-ipam"},
	{"/app/cni/vpc-snat", "vpc-snat"},
	{"/app/cni/policy-hook", "policy-hook"},
	{"/app/cni/vpc-egress-v4", "vpc-egress-v4"},
	{"/app/cni/host-local", "tools/host-local"},
	{"/app/cni/portmap", "tools/portmap"},
	{"/app/cni/bandwidth", "tools/bandwidth"},
	{"/app/cni/loopback", "tools/loopback"},
}

// imageConfig is the runtime configuration: the daemon by default, with the
// userland's sbin on PATH (go-iptables runs iptables from there).
var imageConfig = v1.Config{
	Entrypoint: []string{"/app/vpcchaind"},
	Env:        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
	WorkingDir: "/",
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("image: ")
	bin := flag.String("bin", "bin", "directory of the host's built binaries (make build tools); another platform's are in its linux_<arch> (make cross)")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "the image's platforms, comma- or space-separated")
	out := flag.String("out", "bin/image/vpcchain.oci.tar", "OCI image layout archive to write")
	ref := flag.String("ref", "vpcchain/vpcchain:dev", "image reference to name it")
	dir := flag.String("dir", "build/image", "directory of rootfs.sh and debian-packages.lock")
	cache := flag.String("cache", "", "where downloaded .deb files are kept (default: beside -out)")
	flag.Parse()
	if *cache == "" {
		*cache = filepath.Join(filepath.Dir(*out), "debs")
	}
	plats, err := parsePlatforms(*platforms)
	if err != nil {
		log.Fatal(err)
	}
	// The same inputs give the same bytes (the build is reproducible), so an
	// archive built from them already is kept: an unchanged make image
	// takes a second, not the minute of unpacking and compressing.
	key, err := inputsKey(*bin, *dir, *ref, plats)
	if err != nil {
		log.Fatal(err)
	}
	stamp := *out + ".inputs"
	if b, err := os.ReadFile(stamp); err == nil {
		if k, line, _ := strings.Cut(string(b), "\n"); k == key {
			if _, err := os.Stat(*out); err == nil {
				fmt.Printf("%s (up to date)\n", strings.TrimSpace(line))
				return
			}
		}
	}
	res, err := build(*bin, *dir, *cache, *out, *ref, plats)
	if err != nil {
		log.Fatal(err)
	}
	line := fmt.Sprintf("%s %s %s %v (%d bytes compressed, %d uncompressed)", *out, *ref, res.digest, *platforms, res.compressed, res.uncompressed)
	fmt.Println(line)
	if err := os.WriteFile(stamp, []byte(key+"\n"+line+"\n"), 0o644); err != nil {
		log.Fatal(err)
	}
}

// debianArch is each supported Go architecture's Debian name (the lock's).
var debianArch = map[string]string{"amd64": "amd64", "arm64": "arm64"}

// elfMachine is what the ELF header of a binary for each architecture says.
var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := v1.ParsePlatform(f)
		if err != nil {
			return nil, err
		}
		if p.OS != "linux" || debianArch[p.Architecture] == "" || p.Variant != "" {
			return nil, fmt.Errorf("platform %s: want linux/amd64 or linux/arm64", f)
		}
		out = append(out, *p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no platform in %q", s)
	}
	return out, nil
}

// binFor is where the binaries for arch are: make build's for the host's
// architecture, make cross's for another.
func binFor(bin, arch string) string {
	if arch == runtime.GOARCH {
		return bin
	}
	return filepath.Join(bin, "linux_"+arch)
}

// inputsKey digests everything the archive is made of: the builder itself
// (its code and the ociimage package's), the reference, the platforms, the
// lock and rootfs.sh, and every binary of every platform.
func inputsKey(bin, dir, ref string, plats []v1.Platform) (string, error) {
	h := sha256.New()
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	files := []string{self, filepath.Join(dir, "debian-packages.lock"), filepath.Join(dir, "rootfs.sh")}
	fmt.Fprintf(h, "ref %s\n", ref)
	for _, p := range plats {
		fmt.Fprintf(h, "platform %s\n", p.String())
		for _, f := range appLayout {
			files = append(files, filepath.Join(binFor(bin, p.Architecture), f.src))
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %x\n", f, sha256.Sum256(b))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type result struct {
	digest                   v1.Hash // the image index's
	compressed, uncompressed int64   // every platform's layers
}

// build makes the image (an index of one image per platform) and writes it
// to out.
func build(bin, dir, cache, out, ref string, plats []v1.Platform) (result, error) {
	var res result
	var imgs []v1.Image
	for _, p := range plats {
		img, err := image(binFor(bin, p.Architecture), dir, cache, p)
		if err != nil {
			return res, fmt.Errorf("%s: %w", p.String(), err)
		}
		imgs = append(imgs, img)
	}
	idx, err := ociimage.Index(imgs...)
	if err != nil {
		return res, err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return res, err
	}
	if err := ociimage.WriteIndexArchive(out, ref, idx); err != nil {
		return res, err
	}
	if res.digest, err = idx.Digest(); err != nil {
		return res, err
	}
	for _, img := range imgs {
		layers, err := img.Layers()
		if err != nil {
			return res, err
		}
		for _, l := range layers {
			c, err := l.Size()
			if err != nil {
				return res, err
			}
			res.compressed += c
			rc, err := l.Uncompressed()
			if err != nil {
				return res, err
			}
			n, err := countBytes(rc)
			rc.Close()
			if err != nil {
				return res, err
			}
			res.uncompressed += n
		}
	}
	return res, nil
}

// image assembles one platform's two layers from the binaries in bin.
func image(bin, dir, cache string, p v1.Platform) (v1.Image, error) {
	rootfs, err := os.MkdirTemp("", "vpcchain-rootfs")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(rootfs)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command("sh", filepath.Join(dir, "rootfs.sh"), filepath.Join(dir, "debian-packages.lock"), rootfs, cache, debianArch[p.Architecture])
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("userland (rootfs.sh): %w", err)
	}
	userland, err := ociimage.Tree(rootfs, "/")
	if err != nil {
		return nil, err
	}
	base, err := ociimage.Layer(userland)
	if err != nil {
		return nil, err
	}
	var app []ociimage.File
	for _, f := range appLayout {
		src := filepath.Join(bin, f.src)
		if err := checkELF(src, p.Architecture); err != nil {
			return nil, fmt.Errorf("%s for %s: %w (make build tools cross)", src, f.dest, err)
		}
		app = append(app, ociimage.File{Path: f.dest, Mode: 0o755, Src: src})
	}
	top, err := ociimage.Layer(app)
	if err != nil {
		return nil, err
	}
	return ociimage.Image([]v1.Layer{base, top}, p, imageConfig)
}

// checkELF refuses a binary built for another architecture (a stale or
// misplaced build would give a node an image it cannot run).
func checkELF(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.Machine != elfMachine[arch] {
		return fmt.Errorf("built for %s, not %s", f.Machine, arch)
	}
	return nil
}

func countBytes(r io.Reader) (int64, error) { return io.Copy(io.Discard, r) }
