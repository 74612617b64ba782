package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

var amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

func buildArchive(t *testing.T, dir string, files []File) string {
	t.Helper()
	l, err := Layer(files)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Image([]v1.Layer{l}, amd64, v1.Config{Entrypoint: []string{"/app/run"}, Env: []string{"PATH=/usr/sbin:/usr/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	if err := WriteArchive(out, "example.test/img:1", img); err != nil {
		t.Fatal(err)
	}
	return out
}

func untar(t *testing.T, r io.Reader) map[string]*tar.Header {
	t.Helper()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h
	}
}

func readArchive(t *testing.T, archive string) map[string][]byte {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}

// The same files give byte-identical archives, whatever the source files'
// times and the order they are given in; the archive is a valid OCI layout
// whose blobs match their digests (sha256 of the bytes, the OCI spec's rule).
func TestReproducibleArchive(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "bin")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := []File{
		{Path: "/app/run", Mode: 0o755, Src: src},
		{Path: "/etc/motd", Mode: 0o644, Data: []byte("hello\n")},
		{Path: "/usr/sbin/iptables", Mode: fs.ModeSymlink, Link: "xtables-nft-multi"},
	}
	a := buildArchive(t, t.TempDir(), files)
	if err := os.Chtimes(src, Epoch.AddDate(30, 0, 0), Epoch.AddDate(30, 0, 0)); err != nil {
		t.Fatal(err)
	}
	b := buildArchive(t, t.TempDir(), []File{files[2], files[1], files[0]})
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Fatal("two builds of the same files differ")
	}

	blobs := readArchive(t, a)
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %s, %v", blobs["index.json"], err)
	}
	if index.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "example.test/img:1" {
		t.Errorf("index annotations %v", index.Manifests[0].Annotations)
	}
	for name, b := range blobs {
		if d, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && d != "" {
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != d {
				t.Errorf("blob %s has sha256 %x", d, sum)
			}
		}
	}
	var manifest struct {
		MediaType string
		Config    struct{ Digest string }
		Layers    []struct{ MediaType, Digest string }
	}
	if err := json.Unmarshal(blobs["blobs/sha256/"+strings.TrimPrefix(index.Manifests[0].Digest, "sha256:")], &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.MediaType != "application/vnd.oci.image.manifest.v1+json" || len(manifest.Layers) != 1 ||
		manifest.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Fatalf("manifest %+v", manifest)
	}
	var config struct {
		Architecture, OS, Created string
		Config                    struct{ Entrypoint []string }
	}
	if err := json.Unmarshal(blobs["blobs/sha256/"+strings.TrimPrefix(manifest.Config.Digest, "sha256:")], &config); err != nil {
		t.Fatal(err)
	}
	if config.Architecture != "amd64" || config.OS != "linux" || config.Created != "1970-01-01T00:00:00Z" || config.Config.Entrypoint[0] != "/app/run" {
		t.Errorf("config %+v", config)
	}

	// The layer: every parent directory, root-owned, epoch times, modes kept.
	zr, err := gzip.NewReader(bytes.NewReader(blobs["blobs/sha256/"+strings.TrimPrefix(manifest.Layers[0].Digest, "sha256:")]))
	if err != nil {
		t.Fatal(err)
	}
	entries := untar(t, zr)
	for name, want := range map[string]struct {
		typ  byte
		mode int64
		link string
	}{
		"app/": {tar.TypeDir, 0o755, ""}, "app/run": {tar.TypeReg, 0o755, ""}, "etc/": {tar.TypeDir, 0o755, ""},
		"etc/motd": {tar.TypeReg, 0o644, ""}, "usr/": {tar.TypeDir, 0o755, ""}, "usr/sbin/": {tar.TypeDir, 0o755, ""},
		"usr/sbin/iptables": {tar.TypeSymlink, 0o777, "xtables-nft-multi"},
	} {
		h := entries[name]
		if h == nil {
			t.Errorf("layer lacks %s (has %v)", name, entries)
			continue
		}
		if h.Typeflag != want.typ || h.Mode != want.mode || h.Linkname != want.link || h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 0 {
			t.Errorf("%s: type %c mode %o link %q uid %d gid %d mtime %v", name, h.Typeflag, h.Mode, h.Linkname, h.Uid, h.Gid, h.ModTime)
		}
	}
	if len(entries) != 7 {
		t.Errorf("layer has %d entries, want 7", len(entries))
	}
}

func TestLayerRefusesDuplicates(t *testing.T) {
	if _, err := Layer([]File{{Path: "/a", Data: []byte("1")}, {Path: "a", Data: []byte("2")}}); err == nil {
		t.Fatal("the same path twice was accepted")
	}
}

// Names as the Docker/containerd reference grammar normalizes them.
func TestFullName(t *testing.T) {
	for ref, want := range map[string]string{
		"vpcchain/vpcchain:dev":       "docker.io/vpcchain/vpcchain:dev",
		"busybox:1":                   "docker.io/library/busybox:1",
		"vpcchain.e2e/pause:1":        "vpcchain.e2e/pause:1",
		"localhost/x:1":               "localhost/x:1",
		"registry:5000/team/app:v1":   "registry:5000/team/app:v1",
		"123.dkr.ecr.aws/vpcchain:v1": "123.dkr.ecr.aws/vpcchain:v1",
	} {
		if got := FullName(ref); got != want {
			t.Errorf("FullName(%q) = %q, want %q", ref, got, want)
		}
	}
}

// A multi-platform archive: index.json names one image index (with the
// ref), which lists each platform's manifest with its platform, in order;
// two builds give the same bytes.
func TestIndexArchive(t *testing.T) {
	write := func(dir string) string {
		var imgs []v1.Image
		for _, arch := range []string{"amd64", "arm64"} {
			l, err := Layer([]File{{Path: "/app/run", Mode: 0o755, Data: []byte(arch)}})
			if err != nil {
				t.Fatal(err)
			}
			img, err := Image([]v1.Layer{l}, v1.Platform{OS: "linux", Architecture: arch}, v1.Config{Entrypoint: []string{"/app/run"}})
			if err != nil {
				t.Fatal(err)
			}
			imgs = append(imgs, img)
		}
		idx, err := Index(imgs...)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "img.tar")
		if err := WriteIndexArchive(out, "example.test/img:1", idx); err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b := write(t.TempDir()), write(t.TempDir())
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Fatal("two builds of the same images differ")
	}
	blobs := readArchive(t, a)
	type desc struct {
		MediaType, Digest string
		Annotations       map[string]string
		Platform          struct{ OS, Architecture string }
	}
	var top struct{ Manifests []desc }
	if err := json.Unmarshal(blobs["index.json"], &top); err != nil || len(top.Manifests) != 1 {
		t.Fatalf("index.json: %s, %v", blobs["index.json"], err)
	}
	if d := top.Manifests[0]; d.MediaType != "application/vnd.oci.image.index.v1+json" ||
		d.Annotations["io.containerd.image.name"] != "example.test/img:1" {
		t.Fatalf("index.json names %+v", d)
	}
	var idx struct {
		MediaType string
		Manifests []desc
	}
	if err := json.Unmarshal(blobs["blobs/sha256/"+strings.TrimPrefix(top.Manifests[0].Digest, "sha256:")], &idx); err != nil {
		t.Fatal(err)
	}
	if idx.MediaType != "application/vnd.oci.image.index.v1+json" || len(idx.Manifests) != 2 {
		t.Fatalf("image index %+v", idx)
	}
	for i, arch := range []string{"amd64", "arm64"} {
		m := idx.Manifests[i]
		if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Platform.OS != "linux" || m.Platform.Architecture != arch {
			t.Errorf("manifest %d: %+v, want linux/%s", i, m, arch)
		}
		if _, ok := blobs["blobs/sha256/"+strings.TrimPrefix(m.Digest, "sha256:")]; !ok {
			t.Errorf("manifest %s is not in the archive", m.Digest)
		}
	}
}
