//go:build kubelet

// Offline images for the real-node tests: the pause and web images as OCI
// layout tars, imported with ctr.

package e2e

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/vpcchain/vpcchain/internal/ociimage"
)

// buildImages writes the pause image (our Go pause, built now) and a busybox
// image as OCI layout tars.
func (kn *kubeNode) buildImages(busybox string) {
	t := kn.t
	pause := filepath.Join(kn.dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", pause, "./testdata/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, out)
	}
	kn.images = []string{
		writeOCIImage(t, filepath.Join(kn.dir, "pause.oci.tar"), pauseImage, []string{"/pause"}, map[string]string{"/pause": pause}),
		writeOCIImage(t, filepath.Join(kn.dir, "busybox.oci.tar"), busyboxImage, []string{"/bin/busybox", "sh"}, map[string]string{"/bin/busybox": busybox}),
	}
}

func (kn *kubeNode) importImages() {
	for _, img := range kn.images {
		if out, err := kn.ctr("images", "import", img); err != nil {
			kn.t.Fatalf("%v\n%s", err, out)
		}
	}
}

// writeOCIImage writes a one-layer image as an OCI layout archive (what
// `ctr images import` takes), reproducibly (internal/ociimage), and
// returns its path.
func writeOCIImage(t *testing.T, path, name string, entrypoint []string, files map[string]string) string {
	t.Helper()
	var fl []ociimage.File
	for _, d := range []string{"/bin", "/dev", "/etc", "/proc", "/sys", "/var", "/www"} {
		fl = append(fl, ociimage.File{Path: d, Mode: fs.ModeDir | 0o755})
	}
	fl = append(fl, ociimage.File{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777})
	for dst, src := range files {
		fl = append(fl, ociimage.File{Path: dst, Mode: 0o755, Src: src})
	}
	layer, err := ociimage.Layer(fl)
	if err != nil {
		t.Fatal(err)
	}
	img, err := ociimage.Image([]v1.Layer{layer}, v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		v1.Config{Entrypoint: entrypoint, Env: []string{"PATH=/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ociimage.WriteArchive(path, name, img); err != nil {
		t.Fatal(err)
	}
	return path
}
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
