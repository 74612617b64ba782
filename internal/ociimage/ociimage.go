// Package ociimage builds container images reproducibly: the same files give
// the same image digest, whoever builds them and whenever. Layers are tar
// archives with sorted entries, every parent directory present, owner root
// and a fixed modification time; the image is assembled with
// go-containerregistry and written as an OCI image layout archive, the
// format `ctr images import` and `skopeo copy oci-archive:` read.
package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the time every entry and the image carry (the Unix epoch, as
// SOURCE_DATE_EPOCH=0 builds do): nothing of the build moment leaks in.
var Epoch = time.Unix(0, 0).UTC()

// File is one entry of a layer: a regular file (Data or the contents of
// Src), a directory, or a symbolic link.
type File struct {
	Path string      // absolute path in the image, e.g. /app/vpcchaind
	Mode fs.FileMode // permission bits (and fs.ModeDir / fs.ModeSymlink for those kinds)
	Data []byte      // contents of a regular file (or Src)
	Src  string      // read the contents from this file instead
	Link string      // target of a symbolic link
}

// Layer makes one layer of files, deterministically: entries sorted by
// path, parent directories added (0755), uid/gid 0, Epoch mtimes.
func Layer(files []File) (v1.Layer, error) {
	b, err := layerTar(files)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

func layerTar(files []File) ([]byte, error) {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			continue
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("%s twice in one layer", p)
		}
		f.Path = p
		byPath[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = File{Path: d, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := byPath[p]
		mode := int64(f.Mode.Perm())
		if f.Mode&fs.ModeSticky != 0 {
			mode |= 0o1000 // /tmp
		}
		h := &tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: mode, ModTime: Epoch,
			Uname: "root", Gname: "root", Format: tar.FormatPAX}
		switch {
		case f.Mode&fs.ModeDir != 0:
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case f.Mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		default:
			h.Typeflag = tar.TypeReg
			if f.Src != "" {
				b, err := os.ReadFile(f.Src)
				if err != nil {
					return nil, fmt.Errorf("layer file %s: %w", p, err)
				}
				f.Data = b
			}
			h.Size = int64(len(f.Data))
		}
		if h.Mode&0o6000 != 0 {
			// Keep setuid/setgid bits off: nothing in our images needs them.
			h.Mode &^= 0o6000
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Tree lists a directory tree as Files under prefix (regular files,
// directories and symbolic links; other kinds are refused).
func Tree(root, prefix string) ([]File, error) {
	var out []File
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		f := File{Path: path.Join(prefix, filepath.ToSlash(rel)), Mode: info.Mode()}
		switch {
		case info.IsDir():
			f.Mode = fs.ModeDir | info.Mode().Perm() | info.Mode()&fs.ModeSticky
		case info.Mode()&fs.ModeSymlink != 0:
			if f.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			f.Src = p
		default:
			return fmt.Errorf("%s: %s is neither a file, a directory nor a symbolic link", p, info.Mode().Type())
		}
		out = append(out, f)
		return nil
	})
	return out, err
}

// Image assembles an OCI image (linux/amd64 or the given platform) from
// layers with the given runtime config, created at Epoch.
func Image(layers []v1.Layer, platform v1.Platform, cfg v1.Config) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Variant = platform.Architecture, platform.OS, platform.Variant
	cf.Config = cfg
	cf.Created = v1.Time{Time: Epoch}
	cf.History = nil
	return mutate.ConfigFile(img, cf)
}

// FullName is ref as container runtimes store it: a name without a
// registry is Docker Hub's (docker.io/), a one-part name is in its library/.
// The kubelet asks the runtime for the full name, so an image imported
// under the short one would not be found.
func FullName(ref string) string {
	first, rest, found := strings.Cut(ref, "/")
	switch {
	case !found:
		return "docker.io/library/" + ref
	case strings.ContainsAny(first, ".:") || first == "localhost":
		return ref
	default:
		return "docker.io/" + first + "/" + rest
	}
}

// Index assembles a multi-platform image: an OCI image index with one
// manifest per image, each descriptor carrying its config's platform (what
// a runtime matches its node against), in the order given.
func Index(imgs ...v1.Image) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}}})
	}
	return idx, nil
}

// WriteArchive writes img as an OCI image layout archive (a tar of
// oci-layout, index.json and blobs/) naming it ref (its FullName),
// deterministically.
func WriteArchive(archive, ref string, img v1.Image) error {
	return writeArchive(archive, func(p layout.Path, opt layout.Option) error { return p.AppendImage(img, opt) }, ref)
}

// WriteIndexArchive is WriteArchive for a multi-platform image (Index):
// the layout's index.json names the image index, so `ctr images import`
// keeps the manifest of its own platform.
func WriteIndexArchive(archive, ref string, idx v1.ImageIndex) error {
	return writeArchive(archive, func(p layout.Path, opt layout.Option) error { return p.AppendIndex(idx, opt) }, ref)
}

func writeArchive(archive string, add func(layout.Path, layout.Option) error, ref string) error {
	ref = FullName(ref)
	dir, err := os.MkdirTemp("", "ociimage")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("OCI layout: %w", err)
	}
	// Both names: the OCI one, and containerd's (ctr import reads either).
	if err := add(p, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref, "io.containerd.image.name": ref})); err != nil {
		return fmt.Errorf("OCI layout: %w", err)
	}
	files, err := Tree(dir, "/")
	if err != nil {
		return err
	}
	b, err := layerTar(files)
	if err != nil {
		return err
	}
	tmp := archive + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, archive)
}
