//go:build kubelet

package e2e

import (
	"encoding/xml"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vpcchain/vpcchain/internal/ociimage"
)

// The images Kubernetes' e2e suite v1.33.13 names (test/utils/image's
// manifest), built offline here under those names so nothing is pulled.
const (
	agnhostImage     = "registry.k8s.io/e2e-test-images/agnhost:2.53"
	e2ePauseImage    = "registry.k8s.io/pause:3.10"
	conformanceFocus = `\[sig-network\] (Networking Granular Checks: Pods|Services) .*\[Conformance\]`
)

// TestConformance runs Kubernetes' own network e2e tests (the e2e.test
// binary of k8s.io/kubernetes v1.33.13, `make conformance-tools`) against the
// cluster tier's cluster with our manifest and Calico's policy-only
// manifest installed by kubectl: the Conformance tests of "[sig-network]
// Networking Granular Checks: Pods" and "[sig-network] Services" but the
// ExternalName ones. It lists every test that ran, passed and was skipped.
// `make conformance` runs it (VPCCHAIN_CONFORMANCE=1); it is not part of
// `make test`.
func TestConformance(t *testing.T) {
	if os.Getenv("VPCCHAIN_CONFORMANCE") == "" {
		t.Skip("`make conformance` runs this (VPCCHAIN_CONFORMANCE unset)")
	}
	bin, cb, archive := clusterPrereqs(t)
	e2eBin := filepath.Join(bin, "tools", "k8s-e2e.test")
	agnhost := filepath.Join(bin, "tools", "agnhost")
	for _, b := range []string{e2eBin, agnhost} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s missing: run `make conformance-tools`: %v", b, err)
		}
	}
	dir := t.TempDir()
	images := []string{archive, buildCalicoNodeImage(t, bin, dir), buildAgnhostImage(t, bin, agnhost, dir), buildE2EPauseImage(t, dir),
		buildCoreDNSImage(t, bin, dir)}
	kc := startK8sCluster(t, cb, []clusterNodeSpec{{"e1", false}, {"e2", true}}, images...)
	kc.applyOverlay(t, "../../conflist/manifests/vpcchain.yaml", policyHookOverlay, "vpcchain")
	kc.ready(120 * time.Second)
	kc.kubectlOK("", "apply", "--server-side", "-f", calicoCRDs(t))
	kc.applyOverlay(t, "../../conflist/manifests/calico-policy-only.yaml", calicoOverlay, "calico-node")
	kc.deployDNS(t)

	// The report and the log stay for reading: bin/conformance.
	out := filepath.Join(bin, "conformance")
	report := filepath.Join(out, "report")
	_ = os.RemoveAll(out)
	if err := os.MkdirAll(report, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(out, "e2e.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	start := time.Now()
	cmd := exec.Command("ip", "netns", "exec", kc.k.n.vn.NetNS, e2eBin,
		"--kubeconfig="+kc.k.kubeconfig, "--provider=skeleton", "--kubectl-path="+cb.kubectl,
		"--report-dir="+report, "--ginkgo.focus="+conformanceFocus,
		"--ginkgo.timeout=45m", "--ginkgo.no-color", "--ginkgo.v")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	unregister := onInterrupt(func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	})
	runErr := cmd.Run()
	unregister()
	t.Logf("e2e.test ran %v (exit: %v); its log: %s, its JUnit report: %s", time.Since(start).Round(time.Second), runErr, logPath, report)

	cases := readJUnit(t, report)
	var ran, passed, failed, skipped []string
	for _, c := range cases {
		switch {
		case c.Skipped != nil:
			skipped = append(skipped, c.Name)
		case c.Failure != nil || c.Error != nil:
			ran, failed = append(ran, c.Name), append(failed, c.Name)
		default:
			ran, passed = append(ran, c.Name), append(passed, c.Name)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ran %d, passed %d, failed %d, skipped %d\n", len(ran), len(passed), len(failed), len(skipped))
	for _, n := range passed {
		fmt.Fprintf(&b, "  PASS %s\n", n)
	}
	for _, n := range failed {
		fmt.Fprintf(&b, "  FAIL %s\n", n)
	}
	for _, n := range skipped {
		fmt.Fprintf(&b, "  SKIP %s\n", n)
	}
	t.Log(b.String())
	if len(failed) > 0 || len(passed) == 0 || runErr != nil {
		t.Fatalf("Kubernetes' network conformance tests on our chain: %d passed, %d failed (%v); the log:\n%s", len(passed), len(failed), runErr, tailFile(logPath, 200))
	}
}

// junitCase is one <testcase> of ginkgo's JUnit report.
type junitCase struct {
	Name    string    `xml:"name,attr"`
	Skipped *struct{} `xml:"skipped"`
	Failure *struct{} `xml:"failure"`
	Error   *struct{} `xml:"error"`
}

// readJUnit reads the specs of the report dir's junit_*.xml; the suite's
// own setup and teardown nodes are left out, as are specs the focus did not
// select (ginkgo lists every spec of the binary, skipped).
func readJUnit(t *testing.T, dir string) []junitCase {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "junit_*.xml"))
	if len(files) == 0 {
		t.Fatalf("no JUnit report in %s", dir)
	}
	var out []junitCase
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Suites []struct {
				Cases []junitCase `xml:"testcase"`
			} `xml:"testsuite"`
		}
		if err := xml.Unmarshal(data, &r); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, s := range r.Suites {
			for _, c := range s.Cases {
				if strings.HasPrefix(c.Name, "[SynchronizedBeforeSuite]") || strings.HasPrefix(c.Name, "[SynchronizedAfterSuite]") ||
					strings.HasPrefix(c.Name, "[ReportAfterSuite]") || strings.HasPrefix(c.Name, "[ReportBeforeSuite]") {
					continue
				}
				if !strings.Contains(c.Name, "[sig-network]") || !strings.Contains(c.Name, "[Conformance]") {
					continue
				}
				if !(strings.Contains(c.Name, "Granular Checks: Pods") || strings.Contains(c.Name, "[sig-network] Services ")) {
					continue
				}
				out = append(out, c)
			}
		}
	}
	slices.SortFunc(out, func(a, b junitCase) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// buildAgnhostImage builds the e2e suite's agnhost image: the agnhost binary
// of the same Kubernetes release (`make conformance-tools`) as /agnhost, its
// entrypoint, on a Debian userland from testdata/agnhost/packages.lock (sh,
// coreutils, grep, curl, netcat, busybox's nslookup), unpacked by the product
// image's rootfs.sh.
func buildAgnhostImage(t *testing.T, bin, agnhost, dir string) string {
	t.Helper()
	// Debian's netcat-openbsd postinst makes nc an alternative; nslookup is
	// busybox's, as in the upstream (Alpine) image.
	files := debianUserland(t, bin, dir, "agnhost",
		ociimage.File{Path: "/bin/nc", Mode: fs.ModeSymlink | 0o777, Link: "/bin/nc.openbsd"},
		ociimage.File{Path: "/usr/bin/nslookup", Mode: fs.ModeSymlink | 0o777, Link: "/bin/busybox"})
	base, err := ociimage.Layer(files)
	if err != nil {
		t.Fatal(err)
	}
	top, err := ociimage.Layer([]ociimage.File{{Path: "/agnhost", Mode: 0o755, Src: agnhost}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ociimage.Image([]v1.Layer{base, top}, v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		v1.Config{Entrypoint: []string{"/agnhost"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "agnhost.oci.tar")
	if err := ociimage.WriteArchive(path, agnhostImage, img); err != nil {
		t.Fatal(err)
	}
	return path
}

// buildE2EPauseImage is our pause under the name the e2e suite gives pods
// that only need to exist.
func buildE2EPauseImage(t *testing.T, dir string) string {
	t.Helper()
	pause := buildPause(t, dir)
	return writeOCIImage(t, filepath.Join(dir, "e2e-pause.oci.tar"), e2ePauseImage, []string{"/pause"}, map[string]string{"/pause": pause})
}
