//go:build kubelet

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterUp is `make cluster`: the cluster tier's cluster for a person
// to use. Three nodes on the simulator (c1 and c2 with Debian's containerd,
// c3 with containerd 2.2), our manifest with the policy hook and Calico's
// policy-only manifest installed with kubectl; it prints a KUBECONFIG (the
// API server is forwarded to the machine's loopback) and keeps running until
// SIGINT (Ctrl-C) or SIGTERM (`make cluster-down`), then tears everything
// down as the tests do. It runs only when VPCCHAIN_CLUSTER_DIR names where
// to write the kubeconfig, the EC2 view and its pid.
func TestClusterUp(t *testing.T) {
	dir := os.Getenv("VPCCHAIN_CLUSTER_DIR")
	if dir == "" {
		t.Skip("`make cluster` runs this (VPCCHAIN_CLUSTER_DIR unset)")
	}
	requireRoot(t)
	signalsHandled.Store(true)
	defer signalsHandled.Store(false)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	stopped := func() bool {
		select {
		case s := <-sigs:
			t.Logf("%v: tearing down", s)
			return true
		default:
			return false
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "pid")
	if err := os.WriteFile(pidFile, []byte(fmt.Sprintln(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(pidFile) })

	bin, cb, archive := clusterPrereqs(t)
	crds := calicoCRDs(t)
	calicoArchive := buildCalicoNodeImage(t, bin, t.TempDir())
	dnsArchive := buildCoreDNSImage(t, bin, t.TempDir())
	// The images Kubernetes' e2e suite names, so any of its tests runs here
	// (`make cluster-e2e`).
	e2eArchives := buildE2EImages(t, bin, t.TempDir())
	kc := startK8sCluster(t, cb, []clusterNodeSpec{{"c1", false}, {"c2", false}, {"c3", true}},
		append([]string{archive, calicoArchive, dnsArchive}, e2eArchives...)...)
	if stopped() {
		return
	}
	kc.applyOverlay(t, "../../conflist/manifests/vpcchain.yaml", policyHookOverlay, "vpcchain")
	kc.ready(120 * time.Second)
	if stopped() {
		return
	}
	kc.kubectlOK("", "apply", "--server-side", "-f", crds)
	kc.applyOverlay(t, "../../conflist/manifests/calico-policy-only.yaml", calicoOverlay, "calico-node")
	kc.deployDNS(t)
	if stopped() {
		return
	}

	kubeconfig := filepath.Join(dir, "kubeconfig")
	port := kc.k.forwardToLoopback(t)
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: vpcchain-sim
  cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: vpcchain-sim
  context: {cluster: vpcchain-sim, user: admin}
current-context: vpcchain-sim
`, port, kc.k.tokens["admin"])
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(kubeconfig) })
	// What `make cluster-e2e` needs to run Kubernetes' e2e suite where the
	// API server and the nodes are reachable: the control plane's network
	// namespace and a kubeconfig valid inside it.
	e2eNetns, e2eKubeconfig := filepath.Join(dir, "netns"), filepath.Join(dir, "kubeconfig-netns")
	if err := os.WriteFile(e2eNetns, []byte(kc.k.n.vn.NetNS+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if kcfg, err := os.ReadFile(kc.k.kubeconfig); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(e2eKubeconfig, kcfg, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(e2eNetns); os.Remove(e2eKubeconfig) })
	ec2View := filepath.Join(dir, "ec2.txt")
	t.Cleanup(func() { os.Remove(ec2View) })
	kc.writeEC2View(ec2View)

	var b strings.Builder
	fmt.Fprintf(&b, "\nThe cluster is up: nodes c1, c2 (containerd 1.6) and c3 (containerd 2.2) on the simulated VPC,\n")
	fmt.Fprintf(&b, "with vpcchain (policy hook on) and Calico policy-only installed by kubectl, and CoreDNS for cluster.local.\n\n")
	fmt.Fprintf(&b, "  export KUBECONFIG=%s\n  kubectl get nodes,pods -A -o wide\n\n", kubeconfig)
	fmt.Fprintf(&b, "Images on every node (use imagePullPolicy: Never): %s (a static busybox: sh, httpd, nc),\n", busyboxImage)
	fmt.Fprintf(&b, "and those Kubernetes' e2e suite names: %s.\n", strings.Join(e2eImageNames, ", "))
	fmt.Fprintf(&b, "Run any of its tests here: make cluster-e2e FOCUS='\\[sig-network\\] DNS'\n")
	fmt.Fprintf(&b, "Each node's containerd (namespace k8s.io):\n")
	for _, kn := range kc.nodes {
		ctr := "ctr"
		if kn.ctrd2 != "" {
			ctr = filepath.Join(kn.ctrd2, "ctr")
		}
		fmt.Fprintf(&b, "  %s: %s --address %s -n k8s.io containers ls\n", kn.n.name, ctr, kn.sock)
	}
	fmt.Fprintf(&b, "EC2's view of the nodes' ENIs and addresses, refreshed every 5 s: %s\n", ec2View)
	fmt.Fprintf(&b, "Each node's daemon:\n")
	for _, kn := range kc.nodes {
		fmt.Fprintf(&b, "  %s status --socket %s\n", filepath.Join(bin, "vpcctl"), filepath.Join(kn.state, "ipamd.sock"))
	}
	fmt.Fprintf(&b, "\nCtrl-C here, or `make cluster-down`, stops it and removes everything.\n")
	fmt.Print(b.String())

	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case s := <-sigs:
			t.Logf("%v: tearing down", s)
			return
		case <-tick.C:
			if err := kc.alive(); err != nil {
				t.Fatalf("the cluster broke: %v", err)
			}
			kc.writeEC2View(ec2View)
		}
	}
}

// forwardToLoopback forwards a port on the test process's loopback (the
// machine's, for `make cluster`) to the API server and returns the port.
func (k *kube) forwardToLoopback(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go forward(ln, k.n, strings.TrimPrefix(k.remoteServer, "https://"))
	return ln.Addr().(*net.TCPAddr).Port
}

// writeEC2View writes what EC2 (the simulator) says of every node: its
// instance, its ENIs and their addresses and prefixes.
func (kc *k8sCluster) writeEC2View(path string) {
	var b strings.Builder
	fmt.Fprintf(&b, "EC2's view at %s\n", time.Now().UTC().Format(time.RFC3339))
	for _, kn := range kc.nodes {
		inet, ok := kc.c.sim.Cloud.InstanceNetwork(kc.c.nodes[kn.n.name].vn.InstanceID)
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "\nnode %s: %s %s in %s, primary %s\n", kn.n.name, inet.InstanceID, inet.InstanceType, inet.AZ, inet.PrimaryIP)
		for _, e := range inet.ENIs {
			addrs := slices.SortedFunc(slices.Values(e.Secondary), netip.Addr.Compare)
			sec := make([]string, 0, len(addrs))
			for _, a := range addrs {
				sec = append(sec, a.String())
			}
			fmt.Fprintf(&b, "  device %d %s subnet %s (%s) primary %s, %d secondary: %s\n",
				e.DeviceIndex, e.ID, e.SubnetID, e.SubnetCIDR, e.PrimaryIP, len(sec), strings.Join(sec, " "))
			for _, p := range e.Prefixes {
				fmt.Fprintf(&b, "    prefix %s\n", p)
			}
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err == nil {
		_ = os.Rename(tmp, path)
	}
}
