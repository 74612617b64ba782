//go:build kubelet

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// helmValues is what the cluster tier changes in the chart's values, as
// clusterOverlay does in the manifest: only the EC2 endpoint.
const helmValues = `env:
  AWS_ENDPOINT_URL_EC2: http://169.254.169.10
`

// TestClusterHelm installs the product with Helm (the helm binary `make
// cluster-tools` builds from test/tools/helm) on the cluster tier's three
// nodes: they turn Ready and pods work (checkServices); `helm upgrade` with
// changed values (image tag, log level) rolls the DaemonSet while a prober
// sends a request every 100 ms to a Service and every web pod is probed by
// its own address, with no failure; `helm uninstall` leaves what `kubectl
// delete -k` of our manifest leaves: the same objects in the cluster, the
// same files in every node's CNI directories.
func TestClusterHelm(t *testing.T) {
	bin, cb, archive := clusterPrereqs(t)
	helmBin := filepath.Join(bin, "tools", "helm")
	if _, err := os.Stat(helmBin); err != nil {
		t.Fatalf("%s missing: run `make cluster-tools`: %v", helmBin, err)
	}
	chart, err := filepath.Abs("../../charts/vpcchain")
	if err != nil {
		t.Fatal(err)
	}
	specs := []clusterNodeSpec{{"k1", false}, {"k2", false}, {"k3", true}}
	kc := startK8sCluster(t, cb, specs, archive)
	h := newHelm(t, kc, helmBin)

	// k2 had another network, whose configuration sorts before ours: both
	// uninstalls must give it back.
	k2 := kc.nodes[1]
	awsConf := `{"cniVersion":"1.0.0","name":"aws-cni","plugins":[{"name":"aws-cni","type":"aws-cni"}]}`
	if err := os.WriteFile(filepath.Join(k2.cniConf, "10-aws.conflist"), []byte(awsConf), 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	h.ok("install", "vpcchain", chart, "--namespace", "kube-system", "-f", h.values)
	kc.rollout(t, "vpcchain")
	kc.ready(120 * time.Second)
	if got := listDir(t, k2.cniConf); !slices.Equal(got, []string{"10-aws.conflist.vpcchain-disabled", "10-vpcchain.conflist"}) {
		t.Errorf("node k2's CNI conf dir after helm install: %v", got)
	}
	t.Logf("helm install: DaemonSet rolled out and all %d nodes Ready %v after", len(kc.nodes), time.Since(start).Round(time.Second))

	// Pods work: a Deployment behind a Service, the Service from a node.
	ns := "helm-" + vpcsim.RandomRunID()
	kc.kubectlOK("", "create", "namespace", ns)
	t.Cleanup(func() { _, _ = kc.k.kubectl("", "delete", "namespace", ns, "--wait=true", "--timeout=120s") })
	svc := kc.deployMigrationWeb(t, ns, 6)
	from := kc.c.nodes["k1"]
	waitFor(t, 60*time.Second, "the Service programmed on k1", kc.alive, func() error {
		return from.do(func() error { _, err := httpGet(svc); return err })
	})
	prober := startMigrationProber(t, kc, from, ns, svc, "installed with helm")
	time.Sleep(3 * time.Second) // a baseline

	// helm upgrade with changed values: a new image tag (the same image,
	// tagged on every node as a release would be pulled) rolls the
	// DaemonSet node by node; the new log level reaches the ConfigMap the
	// new pods read.
	oldPods := kc.kubectlOK("", "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=vpcchain", "-o", "jsonpath={.items[*].metadata.uid}")
	for _, kn := range kc.nodes {
		if out, err := kn.ctr("images", "tag", "--force", "docker.io/vpcchain/vpcchain:dev", "docker.io/vpcchain/vpcchain:rolled"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	prober.phase("helm upgrade rolling the DaemonSet")
	start = time.Now()
	h.ok("upgrade", "vpcchain", chart, "--namespace", "kube-system", "-f", h.values,
		"--set", "image.tag=rolled", "--set", "env.VPCCHAIN_LOG_LEVEL=debug")
	kc.rollout(t, "vpcchain")
	took := time.Since(start)
	prober.phase("after the upgrade")
	time.Sleep(3 * time.Second) // probes after the last new pod is up
	sent, failed := prober.report()
	images := kc.kubectlOK("", "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=vpcchain", "-o",
		`jsonpath={range .items[*]}{.metadata.uid} {.spec.containers[0].image}{"\n"}{end}`)
	for _, l := range strings.Split(images, "\n") {
		uid, image, _ := strings.Cut(l, " ")
		if strings.Contains(oldPods, uid) || image != "vpcchain/vpcchain:rolled" {
			t.Errorf("after helm upgrade a DaemonSet pod is %q, want a new pod on the new tag", l)
		}
	}
	if n := len(strings.Split(images, "\n")); n != len(kc.nodes) {
		t.Errorf("%d DaemonSet pods after the upgrade, want %d", n, len(kc.nodes))
	}
	if got := kc.kubectlOK("", "-n", "kube-system", "get", "configmap", "vpcchain-config", "-o", "jsonpath={.data.VPCCHAIN_LOG_LEVEL}"); got != "debug" {
		t.Errorf("VPCCHAIN_LOG_LEVEL after the upgrade: %q", got)
	}
	if out := h.ok("status", "vpcchain", "--namespace", "kube-system"); !strings.Contains(out, "REVISION: 2") || !strings.Contains(out, "STATUS: deployed") {
		t.Errorf("helm status after the upgrade:\n%s", out)
	}
	for _, kn := range kc.nodes {
		if _, err := os.Stat(kn.conflist()); err != nil {
			t.Errorf("node %s lost our conflist in the upgrade: %v", kn.n.name, err)
		}
	}
	t.Logf("helm upgrade rolled the DaemonSet on %d nodes in %v: %d requests to the Service during and after it, %d failed",
		len(kc.nodes), took.Round(time.Second), sent, failed)

	// Both uninstalls start from the same state: no workload, a file of
	// someone else's in every conf dir.
	kc.kubectlOK("", "delete", "namespace", ns, "--wait=true", "--timeout=120s")
	for _, kn := range kc.nodes {
		if err := os.WriteFile(filepath.Join(kn.cniConf, "README"), []byte("not ours\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	h.ok("uninstall", "vpcchain", "--namespace", "kube-system")
	byHelm := kc.afterUninstall(t, "helm uninstall")

	overlay := kc.applyOverlay(t, "../../conflist/manifests/vpcchain.yaml", clusterOverlay, "vpcchain")
	kc.ready(120 * time.Second)
	kc.kubectlOK("", "delete", "-k", overlay, "--wait=true", "--timeout=120s")
	byKubectl := kc.afterUninstall(t, "kubectl delete -k")

	for _, d := range diffLines(byKubectl.objects, byHelm.objects) {
		t.Errorf("after helm uninstall, unlike after kubectl delete -k: %s", d)
	}
	for _, kn := range kc.nodes {
		n := kn.n.name
		if !slices.Equal(byHelm.conf[n], byKubectl.conf[n]) || !slices.Equal(byHelm.bin[n], byKubectl.bin[n]) {
			t.Errorf("node %s after helm uninstall: conf dir %v, bin dir %v; after kubectl delete -k: %v, %v",
				n, byHelm.conf[n], byHelm.bin[n], byKubectl.conf[n], byKubectl.bin[n])
		}
	}
	if want := []string{"10-aws.conflist", "README"}; !slices.Equal(byHelm.conf["k2"], want) {
		t.Errorf("node k2's conf dir after helm uninstall: %v, want %v", byHelm.conf["k2"], want)
	}
	t.Logf("helm uninstall and kubectl delete -k left the same %d objects and the same CNI directories on %d nodes (k2: %v)",
		len(byHelm.objects), len(kc.nodes), byHelm.conf["k2"])
}

// helm runs the helm binary as kubectl runs: in the first node's network
// namespace with the admin kubeconfig, its caches and config in a temporary
// directory (nothing is fetched: the chart is a local directory).
type helm struct {
	t      *testing.T
	kc     *k8sCluster
	bin    string
	env    []string
	values string
}

func newHelm(t *testing.T, kc *k8sCluster, bin string) *helm {
	dir := t.TempDir()
	h := &helm{t: t, kc: kc, bin: bin, values: filepath.Join(dir, "values.yaml"),
		env: append(slices.Clone(kc.k.env), "HELM_CACHE_HOME="+filepath.Join(dir, "cache"),
			"HELM_CONFIG_HOME="+filepath.Join(dir, "config"), "HELM_DATA_HOME="+filepath.Join(dir, "data"))}
	if err := os.WriteFile(h.values, []byte(helmValues), 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *helm) ok(args ...string) string {
	h.t.Helper()
	k := h.kc.k
	cmd := exec.Command("ip", append([]string{"netns", "exec", k.n.vn.NetNS, h.bin, "--kubeconfig", k.kubeconfig}, args...)...)
	cmd.Env = h.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		h.t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// uninstalled is what an uninstall left: every object in the cluster but
// events (apiVersion kind namespace/name) and each node's CNI directories.
type uninstalled struct {
	objects   []string
	conf, bin map[string][]string
}

// afterUninstall waits until the DaemonSet's pods and revisions are gone
// (the pods' preStop has run by then) and every node is NotReady, then
// records what is left.
func (kc *k8sCluster) afterUninstall(t *testing.T, how string) uninstalled {
	t.Helper()
	waitFor(t, 120*time.Second, "the DaemonSet's pods gone after "+how, kc.alive, func() error {
		out, err := kc.k.kubectl("", "-n", "kube-system", "get", "pods,controllerrevisions,daemonsets", "-o", "name")
		if err == nil && strings.TrimSpace(out) != "" {
			err = fmt.Errorf("left: %s", strings.Fields(out))
		}
		return err
	})
	for _, kn := range kc.nodes {
		if kn == kc.nodes[1] {
			continue // back on its earlier network's configuration
		}
		waitFor(t, 60*time.Second, "node "+kn.n.name+" NotReady after "+how, kc.alive, func() error {
			if s, m, err := nodeReady(kc.k, kn.n.name); err != nil || s != "False" || !strings.Contains(m, "network") {
				return fmt.Errorf("Ready=%s %q %v; conf dir %v", s, m, err, listDir(t, kn.cniConf))
			}
			return nil
		})
	}
	u := uninstalled{objects: kc.allObjects(t), conf: map[string][]string{}, bin: map[string][]string{}}
	for _, kn := range kc.nodes {
		u.conf[kn.n.name] = listDir(t, kn.cniConf)
		u.bin[kn.n.name] = listDir(t, kn.cniBin)
	}
	t.Logf("after %s: %d objects; conf dirs %v", how, len(u.objects), u.conf)
	return u
}

// allObjects lists every object of every listable resource type but events.
func (kc *k8sCluster) allObjects(t *testing.T) []string {
	t.Helper()
	var types []string
	for _, r := range strings.Fields(kc.kubectlOK("", "api-resources", "--verbs=list", "-o", "name")) {
		// Events come and go; componentstatuses is deprecated and lists
		// the control plane's health, not objects.
		if r != "events" && r != "events.events.k8s.io" && r != "componentstatuses" {
			types = append(types, r)
		}
	}
	out := kc.kubectlOK("", "get", strings.Join(types, ","), "--all-namespaces", "-o",
		`jsonpath={range .items[*]}{.apiVersion} {.kind} {.metadata.namespace}/{.metadata.name}{"\n"}{end}`)
	objs := strings.Split(out, "\n")
	slices.Sort(objs)
	return slices.Compact(objs)
}

// diffLines says which lines only one of two sorted lists has.
func diffLines(want, got []string) []string {
	var d []string
	for _, w := range want {
		if _, ok := slices.BinarySearch(got, w); !ok {
			d = append(d, "missing "+w)
		}
	}
	for _, g := range got {
		if _, ok := slices.BinarySearch(want, g); !ok {
			d = append(d, "extra "+g)
		}
	}
	return d
}
