//go:build kubelet

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// alpineCommands is what each Alpine package upstream's agnhost Dockerfile
// adds puts on the PATH that Kubernetes' tests call (Alpine's package
// contents), with a command whose output names the tool.
var alpineCommands = map[string][][2]string{
	"bind-tools":     {{"dig -v", "DiG 9"}, {"host -V", "host 9"}, {"nslookup -version", "nslookup 9"}},
	"curl":           {{"curl --version", "curl "}},
	"netcat-openbsd": {{"nc -h", "OpenBSD netcat"}},
	"iproute2":       {{"ip -V", "iproute2"}, {"ss -V", "iproute2"}},
	"iperf":          {{"iperf -v", "iperf version 2"}},
	"bash":           {{"bash --version", "GNU bash"}},
}

// TestClusterE2EImages checks the e2e images the cluster tier builds
// against what upstream's Dockerfiles (in the Kubernetes module) say they
// hold: agnhost's entrypoint, default command, ports, files, user and
// tools (each run from the image's own root), jessie-dnsutils' dig and the
// shell tools its DNS probe runs, nginx serving, busybox's shell.
func TestClusterE2EImages(t *testing.T) {
	requireRoot(t)
	bin := binDir(t)
	dir := t.TempDir()
	k8s := kubernetesModule(t)

	t.Run("agnhost", func(t *testing.T) {
		df := readDockerfile(t, filepath.Join(k8s, "test/images/agnhost/Dockerfile"))
		cfg, root := unpackImage(t, buildAgnhostImage(t, bin, dir), filepath.Join(dir, "agnhost-image"))
		if want := df.jsonArray(t, "ENTRYPOINT"); !slices.Equal(cfg.Entrypoint, want) {
			t.Errorf("entrypoint %q, upstream's %q", cfg.Entrypoint, want)
		}
		if want := df.jsonArray(t, "CMD"); !slices.Equal(cfg.Cmd, want) {
			t.Errorf("default command %q, upstream's %q", cfg.Cmd, want)
		}
		for _, p := range strings.Fields(df.first(t, "EXPOSE")) {
			if _, ok := cfg.ExposedPorts[p+"/tcp"]; !ok {
				t.Errorf("port %s/tcp not exposed (upstream's EXPOSE %s)", p, df.first(t, "EXPOSE"))
			}
		}
		// Files upstream ADDs from its sources: byte for byte.
		for _, add := range df.all("ADD") {
			src, dst, _ := strings.Cut(add, " ")
			if strings.HasPrefix(src, "https://") || src == "agnhost" {
				continue
			}
			want, err := os.ReadFile(filepath.Join(k8s, "test/images/agnhost", src))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(filepath.Join(root, dst)); err != nil || !bytes.Equal(got, want) {
				t.Errorf("/%s is not upstream's %s (%v)", dst, src, err)
			}
		}
		runs := strings.Join(df.all("RUN"), "\n")
		if strings.Contains(runs, "ln -s agnhost agnhost-2") {
			if l, err := os.Readlink(filepath.Join(root, "agnhost-2")); err != nil || l != "agnhost" {
				t.Errorf("/agnhost-2 -> %q (%v), upstream links it to agnhost", l, err)
			}
		}
		if strings.Contains(runs, "mkdir /uploads") {
			if st, err := os.Stat(filepath.Join(root, "uploads")); err != nil || !st.IsDir() {
				t.Errorf("no /uploads directory: %v", err)
			}
		}
		if strings.Contains(runs, "adduser -u 1000 -D user-defined-in-image") {
			chrootOutput(t, root, "id user-defined-in-image", "uid=1000(user-defined-in-image)", "group-defined-in-image")
		}
		// Each tool of each package upstream installs, from the image.
		pkgs := regexp.MustCompile(`apk --update add ([^&]+)&&`).FindStringSubmatch(runs)
		if pkgs == nil {
			t.Fatal("upstream's Dockerfile has no `apk --update add` line")
		}
		for _, p := range strings.Fields(pkgs[1]) {
			cmds, ok := alpineCommands[p]
			if !ok {
				t.Errorf("upstream installs %s, which this image has no stand-in for", p)
			}
			for _, c := range cmds {
				chrootOutput(t, root, c[0], c[1])
			}
		}
		chrootOutput(t, root, "/coredns -version", "CoreDNS-")
		// What Alpine's busybox gives besides, that the tests call.
		chrootOutput(t, root, "getent hosts 127.0.0.1 || echo none; seq 1 3; hostname; wget --help 2>&1", "2", "BusyBox")
	})

	t.Run("jessie-dnsutils", func(t *testing.T) {
		df := readDockerfile(t, filepath.Join(k8s, "test/images/jessie-dnsutils/Dockerfile"))
		if !strings.Contains(strings.Join(df.all("RUN"), "\n"), "install -y --force-yes dnsutils") {
			t.Fatal("upstream's jessie-dnsutils no longer installs dnsutils: see what it does now")
		}
		_, root := unpackImage(t, buildDNSUtilsImage(t, bin, dir), filepath.Join(dir, "dnsutils-image"))
		chrootOutput(t, root, "dig -v", "DiG 9")
		chrootOutput(t, root, "nslookup -version", "nslookup 9")
		// The DNS tests' probe: for i in `seq ...`; do check="$(dig ...)" && test -n "$check" && echo OK > /results/...
		chrootOutput(t, root, `for i in $(seq 1 2); do check="$(echo x)" && test -n "$check" && echo OK$i; done; getent --version | head -1; awk 'BEGIN{print "awk"}'`,
			"OK2", "getent", "awk")
		chrootOutput(t, root, "/coredns -version", "CoreDNS-")
	})

	t.Run("nginx", func(t *testing.T) {
		cfg, root := unpackImage(t, buildE2ENginxImage(t, bin, dir), filepath.Join(dir, "nginx-image"))
		// nginx checks its configuration (the default site, the www-data user).
		chrootRun(t, root, []string{cfg.Cmd[0], "-t"}, "syntax is ok", "test is successful")
	})

	t.Run("busybox", func(t *testing.T) {
		cfg, root := unpackImage(t, buildE2EBusyboxImage(t, dir), filepath.Join(dir, "busybox-image"))
		if !slices.Equal(cfg.Cmd, []string{"sh"}) {
			t.Errorf("default command %q, upstream's is sh", cfg.Cmd)
		}
		chrootOutput(t, root, "ls / && wget --help 2>&1", "BusyBox")
	})
}

// dockerfile is the instructions of a Dockerfile, continuation lines joined.
type dockerfile map[string][]string

func readDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	df := dockerfile{}
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if more, ok := strings.CutSuffix(line, "\\"); ok {
			cur += more + " "
			continue
		}
		cur += line
		ins, arg, _ := strings.Cut(cur, " ")
		df[ins] = append(df[ins], strings.TrimSpace(arg))
		cur = ""
	}
	return df
}

func (df dockerfile) all(ins string) []string { return df[ins] }

func (df dockerfile) first(t *testing.T, ins string) string {
	t.Helper()
	if len(df[ins]) == 0 {
		t.Fatalf("upstream's Dockerfile has no %s", ins)
	}
	return df[ins][0]
}

func (df dockerfile) jsonArray(t *testing.T, ins string) []string {
	t.Helper()
	var a []string
	if err := json.Unmarshal([]byte(df.first(t, ins)), &a); err != nil {
		t.Fatalf("%s %s: %v", ins, df.first(t, ins), err)
	}
	return a
}

// unpackImage reads the one image of an OCI archive and unpacks its
// flattened file system into root.
func unpackImage(t *testing.T, archive, root string) (v1.Config, string) {
	t.Helper()
	lay := filepath.Join(filepath.Dir(root), filepath.Base(root)+"-layout")
	if err := os.MkdirAll(lay, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xf", archive, "-C", lay).CombinedOutput(); err != nil {
		t.Fatalf("untar %s: %v\n%s", archive, err, out)
	}
	idx, err := layout.ImageIndexFromPath(lay)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("%s: want one image, got %v (%v)", archive, im, err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	cmd := exec.Command("tar", "-x", "-C", root)
	cmd.Stdin = rc
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v\n%s", archive, err, out)
	}
	return cf.Config, root
}

// chrootOutput runs a shell command in root (as a container would, with
// the image's own /bin/sh) and checks its output holds each of want.
func chrootOutput(t *testing.T, root, command string, want ...string) {
	t.Helper()
	chrootRun(t, root, []string{"/bin/sh", "-c", command}, want...)
}

// chrootRun runs argv in root with the images' PATH, /dev and /proc (as a
// runtime gives a container; mounted in a mount and PID namespace of its
// own) and checks its output (stdout and stderr) holds each of want.
func chrootRun(t *testing.T, root string, argv []string, want ...string) {
	t.Helper()
	for _, d := range []string{"dev", "proc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("unshare", append([]string{"--mount", "--pid", "--fork", "--propagation", "private", "--", "sh", "-c",
		`mount --rbind /dev "$1/dev" && mount -t proc proc "$1/proc" && exec chroot "$@"`, "sh", root}, argv...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	out, _ := cmd.CombinedOutput()
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Errorf("in the image, %q printed no %q:\n%s", argv, w, out)
		}
	}
}
