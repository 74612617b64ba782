//go:build kubelet

// Offline images for the real-node tests: the pause and web images as OCI
// layout tars, imported with ctr.

package e2e

import (
	"io/fs"
	"os"
	"os/exec"
	"path"
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
	pause := buildPause(t, kn.dir)
	kn.images = []string{
		writeOCIImage(t, filepath.Join(kn.dir, "pause.oci.tar"), pauseImage, []string{"/pause"}, map[string]string{"/pause": pause}),
		writeOCIImage(t, filepath.Join(kn.dir, "busybox.oci.tar"), busyboxImage, []string{"/bin/busybox", "sh"}, map[string]string{"/bin/busybox": busybox}),
	}
}

// buildPause builds our Go pause into dir and returns its path.
func buildPause(t *testing.T, dir string) string {
	t.Helper()
	pause := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", pause, "./testdata/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, out)
	}
	return pause
}

// debianUserland unpacks the Debian packages a lock pins (downloaded into
// bin/image/<name>-debs) with the product image's rootfs.sh into
// dir/<name>-rootfs and lists them as image files, with the links Debian's
// maintainer scripts would have made.
func debianUserland(t *testing.T, bin, dir, name string, links ...ociimage.File) []ociimage.File {
	t.Helper()
	root := filepath.Join(dir, name+"-rootfs")
	cmd := exec.Command("sh", "../../build/image/rootfs.sh", filepath.Join("testdata", name, "packages.lock"), root,
		filepath.Join(bin, "image", name+"-debs"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s userland: %v\n%s", name, err, out)
	}
	files, err := ociimage.Tree(root, "/")
	if err != nil {
		t.Fatal(err)
	}
	return append(files, links...)
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

// calicoNodeImage is the calico/node image the cluster tier builds; Calico's
// policy-only manifest is applied with only its image replaced by this.
const calicoNodeImage = "vpcchain.e2e/calico-node:v3.31.0"

// buildCalicoNodeImage builds calico/node as Calico's own image is laid out,
// from the unmodified v3.31.0 source the Felix tools module pins: the
// calico-node binary (`make cluster-tools`) at /bin/calico-node, the
// module's node/filesystem (/etc: rc.local, the runit services, felix.cfg;
// start_runit and friends in /usr/sbin), on a Debian userland from the
// pinned packages of testdata/calico-node/packages.lock, unpacked by the
// product image's rootfs.sh. It starts as Calico's does: start_runit.
func buildCalicoNodeImage(t *testing.T, bin, dir string) string {
	t.Helper()
	calicoNode := filepath.Join(bin, "tools", "calico-node")
	if _, err := os.Stat(calicoNode); err != nil {
		t.Fatalf("%s missing: run `make cluster-tools`: %v", calicoNode, err)
	}
	// Debian's debianutils postinst makes `which` an alternative; start_runit
	// runs /usr/bin/which.
	userland := debianUserland(t, bin, dir, "calico-node",
		ociimage.File{Path: "/usr/bin/which", Mode: fs.ModeSymlink | 0o777, Link: "/usr/bin/which.debianutils"})

	nodeFS := filepath.Join(calicoModule(t), "node", "filesystem")
	etc, err := ociimage.Tree(filepath.Join(nodeFS, "etc"), "/etc")
	if err != nil {
		t.Fatal(err)
	}
	calico := []ociimage.File{{Path: "/bin/calico-node", Mode: 0o755, Src: calicoNode}}
	for _, f := range etc {
		// A module zip keeps no file modes (the cache holds every file
		// 0444): the scripts are executable in Calico's repository, as
		// start_runit and runsv exec them: rc.local and every service's
		// run (and log/run).
		switch {
		case f.Mode.IsDir():
			f.Mode = fs.ModeDir | 0o755
		case f.Mode.IsRegular() && (path.Base(f.Path) == "run" || f.Path == "/etc/rc.local"):
			f.Mode = 0o755
		case f.Mode.IsRegular():
			f.Mode = 0o644
		}
		calico = append(calico, f)
	}
	sbin, err := os.ReadDir(filepath.Join(nodeFS, "sbin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range sbin {
		calico = append(calico, ociimage.File{Path: "/usr/sbin/" + e.Name(), Mode: 0o755, Src: filepath.Join(nodeFS, "sbin", e.Name())})
	}
	var layers []v1.Layer
	for _, files := range [][]ociimage.File{userland, calico} {
		l, err := ociimage.Layer(files)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := ociimage.Image(layers, v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, v1.Config{
		Cmd: []string{"start_runit"},
		// Built with CGO off, this calico-node has no libbpf: Felix's
		// start-up clean-up of BPF connect-time load balancing (state only
		// a BPF-capable calico-node leaves) would panic in libbpf's stub;
		// Felix's own switch skips it. Policy in iptables mode is unaffected.
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SVDIR=/etc/service/enabled", "FELIX_DebugSkipCTLBCleanup=true"},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "calico-node.oci.tar")
	if err := ociimage.WriteArchive(path, calicoNodeImage, img); err != nil {
		t.Fatal(err)
	}
	return path
}
