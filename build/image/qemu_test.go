package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The arm64 image's files, run on this (amd64) machine under Debian's
// qemu-user-static: every CNI plugin answers VERSION, vpcctl computes EKS's
// max pods for Graviton instance types, the daemon refuses a bad setting at
// start with its message, and the arm64 userland's iptables and ipset load.
// These are the bytes of the image's arm64 manifest, not of bin/.
func TestArm64UnderQemu(t *testing.T) {
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Skip("qemu-aarch64-static is missing (make deps installs Debian's qemu-user-static): the arm64 binaries are not run")
	}
	bin := binDir(t)
	// make image's download cache (rootfs.sh checks each .deb's sha256).
	archive, _ := buildTo(t, bin, filepath.Join(bin, "image", "debs"))
	_, imgs := readImage(t, archive)
	var arm64 v1.Image
	for _, img := range imgs {
		if cf, err := img.ConfigFile(); err == nil && cf.Architecture == "arm64" {
			arm64 = img
		}
	}
	if arm64 == nil {
		t.Fatal("no arm64 image in the index")
	}
	root := t.TempDir()
	unpack(t, arm64, root)

	// run runs one of the image's programs under qemu, with only env in
	// its environment; -L makes qemu find the image's dynamic loader and
	// libraries (iptables, ipset) instead of the host's.
	run := func(env []string, stdin string, prog string, args ...string) (string, string, error) {
		t.Helper()
		cmd := exec.Command(qemu, append([]string{"-L", root, filepath.Join(root, prog)}, args...)...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}

	for _, f := range appLayout {
		if !strings.HasPrefix(f.dest, "/app/cni/") {
			continue
		}
		out, errs, err := run([]string{"CNI_COMMAND=VERSION"}, `{"cniVersion":"1.0.0"}`, f.dest)
		var v struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err != nil || json.Unmarshal([]byte(out), &v) != nil || !slices.Contains(v.SupportedVersions, "1.0.0") {
			t.Errorf("%s VERSION: %v, stdout %q, stderr %q; want the CNI versions it supports, 1.0.0 among them", f.dest, err, out, errs)
		}
	}

	// EKS's published eni-max-pods.txt: m6g.large 29, t4g.medium 17.
	for typ, want := range map[string]string{"m6g.large": "29\n", "t4g.medium": "17\n"} {
		if out, errs, err := run(nil, "", "/app/vpcctl", "max-pods", "--instance-type", typ); err != nil || out != want {
			t.Errorf("vpcctl max-pods --instance-type %s: %v, stdout %q, stderr %q; want %q", typ, err, out, errs, want)
		}
	}

	_, errs, err := run([]string{"ENABLE_PREFIX_DELEGATION=maybe"}, "", "/app/vpcchaind")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 ||
		!strings.Contains(errs, `refusing to start: invalid configuration`) ||
		!strings.Contains(errs, `ENABLE_PREFIX_DELEGATION=\"maybe\" is invalid: want true or false`) {
		t.Errorf("vpcchaind with ENABLE_PREFIX_DELEGATION=maybe: %v, stderr %q; want it to refuse to start, naming the setting", err, errs)
	}

	// The userland's own programs and the libraries they link: legacy
	// iptables and ipset print their versions without the kernel (qemu's
	// user mode does not pass nf_tables' or ipset's netlink through, so
	// ipset then fails to open its session: its exit status is not ours).
	if out, errs, err := run(nil, "", "/usr/sbin/xtables-legacy-multi", "iptables", "--version"); err != nil || !strings.Contains(out, "iptables v1.8.9 (legacy)") {
		t.Errorf("iptables-legacy --version: %v, stdout %q, stderr %q", err, out, errs)
	}
	if out, errs, _ := run(nil, "", "/usr/sbin/ipset", "--version"); !strings.Contains(out, "ipset v7.17, protocol version: 7") {
		t.Errorf("ipset --version: stdout %q, stderr %q", out, errs)
	}
}

// unpack writes an image's layers into root, in order: directories,
// regular files (with their modes) and symbolic links.
func unpack(t *testing.T, img v1.Image, root string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(root, filepath.Clean("/"+h.Name))
			switch h.Typeflag {
			case tar.TypeDir:
				err = os.MkdirAll(p, 0o755)
			case tar.TypeSymlink:
				_ = os.Remove(p)
				err = os.Symlink(h.Linkname, p)
			case tar.TypeReg:
				var b []byte
				if b, err = io.ReadAll(tr); err == nil {
					err = os.WriteFile(p, b, os.FileMode(h.Mode).Perm())
				}
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		rc.Close()
	}
}
