//go:build kubelet

// The images Kubernetes' e2e suite v1.33.13 names for its network tests
// (test/utils/image's manifest), built offline under those names so nothing
// is pulled, laid out as upstream's Dockerfiles lay them out: the same
// entrypoint and default command, files and tools, on pinned Debian 12
// packages instead of Alpine's or Debian jessie's.

package e2e

import (
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vpcchain/vpcchain/internal/ociimage"
)

const (
	agnhostImage    = "registry.k8s.io/e2e-test-images/agnhost:2.53"
	e2ePauseImage   = "registry.k8s.io/pause:3.10"
	dnsutilsImage   = "registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7"
	e2eNginxImage   = "registry.k8s.io/e2e-test-images/nginx:1.14-4"
	e2eBusyboxImage = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"
)

// e2eImageNames are the names buildE2EImages builds, for people reading
// what `make cluster` carries.
var e2eImageNames = []string{agnhostImage, dnsutilsImage, e2eNginxImage, e2eBusyboxImage, e2ePauseImage}

// buildE2EImages builds every image the network e2e tests name and returns
// their archives.
func buildE2EImages(t *testing.T, bin, dir string) []string {
	t.Helper()
	return []string{buildAgnhostImage(t, bin, dir), buildDNSUtilsImage(t, bin, dir), buildE2ENginxImage(t, bin, dir),
		buildE2EBusyboxImage(t, dir), buildE2EPauseImage(t, dir)}
}

// buildAgnhostImage builds agnhost as its Dockerfile does: /agnhost (the
// binary of the same Kubernetes release, `make conformance-tools`) as the
// entrypoint with `pause` as the default command, /agnhost-2 linked to it,
// porter's TLS pair at /localhost.crt and /localhost.key, /uploads for
// netexec, CoreDNS at /coredns, and the tools its tests call: bash, dig,
// host and nslookup, curl, nc (OpenBSD's), ip and ss, iperf, getent, and
// busybox for every other command (upstream's base is Alpine, all busybox);
// and the user and group upstream adds for a SupplementalGroups test.
func buildAgnhostImage(t *testing.T, bin, dir string) string {
	t.Helper()
	agnhost := requireTool(t, bin, "agnhost")
	porter := filepath.Join(kubernetesModule(t), "test", "images", "agnhost", "porter")
	// Debian's maintainer scripts make nc an alternative.
	files := debianUserland(t, bin, dir, "agnhost",
		ociimage.File{Path: "/bin/nc", Mode: fs.ModeSymlink | 0o777, Link: "/bin/nc.openbsd"}, nsswitch)
	files = append(files, busyboxApplets(t, files, filepath.Join(dir, "agnhost-rootfs", "bin", "busybox"))...)
	base, err := ociimage.Layer(files)
	if err != nil {
		t.Fatal(err)
	}
	top, err := ociimage.Layer([]ociimage.File{
		{Path: "/agnhost", Mode: 0o755, Src: agnhost},
		{Path: "/agnhost-2", Mode: fs.ModeSymlink | 0o777, Link: "agnhost"},
		{Path: "/coredns", Mode: 0o755, Src: requireTool(t, bin, "coredns")},
		{Path: "/uploads", Mode: fs.ModeDir | 0o755},
		{Path: "/localhost.crt", Mode: 0o644, Src: filepath.Join(porter, "localhost.crt")},
		{Path: "/localhost.key", Mode: 0o644, Src: filepath.Join(porter, "localhost.key")},
		// The user and group a SupplementalGroups test expects the image to
		// define (upstream's adduser and addgroup).
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n" +
			"user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\nuser-defined-in-image:x:1000:\n" +
			"group-defined-in-image:x:50000:user-defined-in-image\n")},
		{Path: "/home/user-defined-in-image", Mode: fs.ModeDir | 0o755},
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ociimage.Image([]v1.Layer{base, top}, v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, v1.Config{
		Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, WorkingDir: "/",
		Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		ExposedPorts: map[string]struct{}{"80/tcp": {}, "8080/tcp": {}, "8081/tcp": {}, "9376/tcp": {}, "5000/tcp": {}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return writeImage(t, filepath.Join(dir, "agnhost.oci.tar"), agnhostImage, img)
}

// buildDNSUtilsImage builds jessie-dnsutils as its Dockerfile does: a
// Debian userland with dnsutils (dig, nslookup, host), getent and the base
// shell tools, and CoreDNS at /coredns; no entrypoint (the tests give a
// command). Debian 12's packages stand in for jessie's, which Debian no
// longer serves; the DNS tests use it as the glibc resolver beside agnhost's.
func buildDNSUtilsImage(t *testing.T, bin, dir string) string {
	t.Helper()
	// What the maintainer scripts of dash and mawk would have linked.
	files := debianUserland(t, bin, dir, "jessie-dnsutils",
		ociimage.File{Path: "/usr/bin/awk", Mode: fs.ModeSymlink | 0o777, Link: "/usr/bin/mawk"},
		ociimage.File{Path: "/coredns", Mode: 0o755, Src: requireTool(t, bin, "coredns")},
		nsswitch)
	layer, err := ociimage.Layer(files)
	if err != nil {
		t.Fatal(err)
	}
	img, err := ociimage.Image([]v1.Layer{layer}, v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, v1.Config{
		Cmd: []string{"bash"},
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return writeImage(t, filepath.Join(dir, "jessie-dnsutils.oci.tar"), dnsutilsImage, img)
}

// nsswitch is Debian's default hosts lookup (base-files ships it): the
// files, then DNS, which getent follows.
var nsswitch = ociimage.File{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte("passwd: files\ngroup: files\nhosts: files dns\n")}

// buildE2ENginxImage builds the e2e nginx image: Debian's nginx serving its
// default site on port 80 in the foreground, logs to the container's
// stdout and stderr, as the official nginx image upstream's builds on.
func buildE2ENginxImage(t *testing.T, bin, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "nginx-rootfs")
	// What nginx-common's and base-passwd's maintainer scripts would have
	// made: the default site enabled with its index page, and the
	// www-data user the workers run as.
	files := debianUserland(t, bin, dir, "nginx",
		ociimage.File{Path: "/etc/nginx/sites-enabled/default", Mode: fs.ModeSymlink | 0o777, Link: "/etc/nginx/sites-available/default"},
		ociimage.File{Path: "/var/www/html/index.html", Mode: 0o644, Src: filepath.Join(root, "usr/share/nginx/html/index.html")},
		ociimage.File{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n")},
		ociimage.File{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nwww-data:x:33:\n")},
		ociimage.File{Path: "/var/log/nginx/access.log", Mode: fs.ModeSymlink | 0o777, Link: "/dev/stdout"},
		ociimage.File{Path: "/var/log/nginx/error.log", Mode: fs.ModeSymlink | 0o777, Link: "/dev/stderr"},
		nsswitch)
	layer, err := ociimage.Layer(files)
	if err != nil {
		t.Fatal(err)
	}
	img, err := ociimage.Image([]v1.Layer{layer}, v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, v1.Config{
		Cmd:          []string{"nginx", "-g", "daemon off;"},
		Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		ExposedPorts: map[string]struct{}{"80/tcp": {}},
		StopSignal:   "SIGQUIT",
	})
	if err != nil {
		t.Fatal(err)
	}
	return writeImage(t, filepath.Join(dir, "nginx.oci.tar"), e2eNginxImage, img)
}

// buildE2EBusyboxImage builds the e2e busybox image: Debian's static busybox
// with every applet linked, `sh` by default.
func buildE2EBusyboxImage(t *testing.T, dir string) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox not found: run `make deps` (Debian busybox-static): %v", err)
	}
	files := []ociimage.File{{Path: "/bin/busybox", Mode: 0o755, Src: bb}, {Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777}}
	for _, d := range []string{"/dev", "/etc", "/proc", "/sys", "/var", "/root"} {
		files = append(files, ociimage.File{Path: d, Mode: fs.ModeDir | 0o755})
	}
	files = append(files, busyboxApplets(t, files, bb)...)
	layer, err := ociimage.Layer(files)
	if err != nil {
		t.Fatal(err)
	}
	img, err := ociimage.Image([]v1.Layer{layer}, v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	return writeImage(t, filepath.Join(dir, "busybox-e2e.oci.tar"), e2eBusyboxImage, img)
}

// buildE2EPauseImage is our pause under the name the e2e suite gives pods
// that only need to exist.
func buildE2EPauseImage(t *testing.T, dir string) string {
	t.Helper()
	pause := buildPause(t, dir)
	return writeOCIImage(t, filepath.Join(dir, "e2e-pause.oci.tar"), e2ePauseImage, []string{"/pause"}, map[string]string{"/pause": pause})
}

// busyboxApplets links each applet of the busybox binary bb (run here to
// list them) to /bin/busybox where the image has no command of that name
// on the PATH: the real tools stay and win, busybox fills in the rest.
func busyboxApplets(t *testing.T, have []ociimage.File, bb string) []ociimage.File {
	t.Helper()
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		t.Fatalf("%s --list-full: %v", bb, err)
	}
	onPath := map[string]bool{"/bin": true, "/sbin": true, "/usr/bin": true, "/usr/sbin": true}
	taken := map[string]bool{}
	for _, f := range have {
		if onPath[path.Dir(f.Path)] {
			taken[path.Base(f.Path)] = true
		}
	}
	var links []ociimage.File
	for _, p := range strings.Fields(string(out)) {
		p = "/" + p
		if name := path.Base(p); !taken[name] {
			taken[name] = true
			links = append(links, ociimage.File{Path: p, Mode: fs.ModeSymlink | 0o777, Link: "/bin/busybox"})
		}
	}
	return links
}

// requireTool is bin/tools/name, or the test stops saying how to build it.
func requireTool(t *testing.T, bin, name string) string {
	t.Helper()
	p := filepath.Join(bin, "tools", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s missing: run `make conformance-tools`: %v", p, err)
	}
	return p
}

func writeImage(t *testing.T, path, name string, img v1.Image) string {
	t.Helper()
	if err := ociimage.WriteArchive(path, name, img); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubernetesModule is the module cache's copy of the k8s.io/kubernetes
// release test/tools/kube pins (its e2e suite's image sources).
func kubernetesModule(t *testing.T) string {
	t.Helper()
	return toolModule(t, "kube", "k8s.io/kubernetes", "test/images/agnhost/porter/localhost.crt", "make conformance-tools")
}
