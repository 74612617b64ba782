// Command image builds vpcchain's container image without a container
// engine, reproducibly (the same binaries and lock give the same digest):
// one layer of userland from the Debian packages build/image/debian-packages.lock
// pins (iptables in nf_tables and legacy flavours, ipset, and what they
// link), unpacked by rootfs.sh, and one layer of our binaries and the upstream
// plugins the installer copies. It writes an OCI image layout archive that
// `ctr images import` (or `skopeo copy oci-archive:`) reads.
//
//	go run ./build/image -bin bin -out bin/image/vpcchain.oci.tar -ref vpcchain/vpcchain:dev
//
// build/image/Dockerfile builds the same layout with a container builder.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

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
	bin := flag.String("bin", "bin", "directory of the built binaries (make build tools)")
	out := flag.String("out", "bin/image/vpcchain.oci.tar", "OCI image layout archive to write")
	ref := flag.String("ref", "vpcchain/vpcchain:dev", "image reference to name it")
	dir := flag.String("dir", "build/image", "directory of rootfs.sh and debian-packages.lock")
	cache := flag.String("cache", "", "where downloaded .deb files are kept (default: beside -out)")
	flag.Parse()
	if *cache == "" {
		*cache = filepath.Join(filepath.Dir(*out), "debs")
	}
	res, err := build(*bin, *dir, *cache, *out, *ref)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s %s (%d bytes compressed, %d uncompressed)\n", *out, *ref, res.digest, res.compressed, res.uncompressed)
}

type result struct {
	digest                   v1.Hash
	compressed, uncompressed int64
}

// build makes the image and writes it to out.
func build(bin, dir, cache, out, ref string) (result, error) {
	var res result
	img, err := image(bin, dir, cache)
	if err != nil {
		return res, err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return res, err
	}
	if err := ociimage.WriteArchive(out, ref, img); err != nil {
		return res, err
	}
	if res.digest, err = img.Digest(); err != nil {
		return res, err
	}
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
	}
	for _, l := range layers {
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
	return res, nil
}

// image assembles the two layers.
func image(bin, dir, cache string) (v1.Image, error) {
	rootfs, err := os.MkdirTemp("", "vpcchain-rootfs")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(rootfs)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command("sh", filepath.Join(dir, "rootfs.sh"), filepath.Join(dir, "debian-packages.lock"), rootfs, cache)
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
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("%s for %s: %w (make build tools)", src, f.dest, err)
		}
		app = append(app, ociimage.File{Path: f.dest, Mode: 0o755, Src: src})
	}
	top, err := ociimage.Layer(app)
	if err != nil {
		return nil, err
	}
	return ociimage.Image([]v1.Layer{base, top}, v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, imageConfig)
}

func countBytes(r io.Reader) (int64, error) { return io.Copy(io.Discard, r) }
