//go:build kubelet

package e2e

import (
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// conformanceFocus selects every [sig-network] test tagged [Conformance]
// (43 in v1.33.13's test/conformance/testdata/conformance.yaml).
const conformanceFocus = `\[sig-network\].*\[Conformance\]`

// TestConformance runs Kubernetes' own network e2e tests (the e2e.test
// binary of k8s.io/kubernetes v1.33.13, `make conformance-tools`) against the
// cluster tier's cluster with our manifest and Calico's policy-only
// manifest installed by kubectl, and the e2e images (e2eimages_test.go):
// every [sig-network] test tagged [Conformance]. It lists every test that
// ran, passed and was skipped, and fails unless each test the release lists
// as sig-network Conformance passed. `make conformance` runs it
// (VPCCHAIN_CONFORMANCE=1), and `make test` last.
func TestConformance(t *testing.T) {
	if os.Getenv("VPCCHAIN_CONFORMANCE") == "" {
		t.Skip("`make conformance` runs this (VPCCHAIN_CONFORMANCE unset)")
	}
	bin, cb, archive := clusterPrereqs(t)
	e2eBin := filepath.Join(bin, "tools", "k8s-e2e.test")
	if _, err := os.Stat(e2eBin); err != nil {
		t.Fatalf("%s missing: run `make conformance-tools`: %v", e2eBin, err)
	}
	dir := t.TempDir()
	images := append([]string{archive, buildCalicoNodeImage(t, bin, dir), buildCoreDNSImage(t, bin, dir)}, buildE2EImages(t, bin, dir)...)
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
	// Every test the release itself lists as sig-network Conformance must
	// have run and passed: a focus that matched fewer, or a test skipped
	// for want of something, fails here.
	var missing []string
	for _, want := range upstreamNetworkConformance(t) {
		if !slices.ContainsFunc(passed, func(n string) bool { return strings.Contains(n, want) }) {
			missing = append(missing, want)
		}
	}
	for _, n := range missing {
		fmt.Fprintf(&b, "  NOT PASSED (listed by the release) %s\n", n)
	}
	t.Log(b.String())
	if len(failed) > 0 || len(missing) > 0 || runErr != nil {
		t.Fatalf("Kubernetes' network conformance tests on our chain: %d passed, %d failed, %d of the release's list not passed (%v); the log:\n%s",
			len(passed), len(failed), len(missing), runErr, tailFile(logPath, 200))
	}
}

// upstreamNetworkConformance is the codename of every [sig-network] test
// the Kubernetes release lists as Conformance
// (test/conformance/testdata/conformance.yaml of its module).
func upstreamNetworkConformance(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(kubernetesModule(t), "test", "conformance", "testdata", "conformance.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tests []struct {
		Codename string `json:"codename"`
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatalf("conformance.yaml: %v", err)
	}
	var out []string
	for _, c := range tests {
		if strings.HasPrefix(c.Codename, "[sig-network]") {
			out = append(out, c.Codename)
		}
	}
	if len(out) == 0 {
		t.Fatal("conformance.yaml lists no [sig-network] test")
	}
	return out
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
				out = append(out, c)
			}
		}
	}
	slices.SortFunc(out, func(a, b junitCase) int { return strings.Compare(a.Name, b.Name) })
	return out
}
