//go:build kernel

// Calico's WireGuard on the chain, in the kernel tier's guest (this
// machine's kernel has no WireGuard; Debian's has). calico-node v3.31.0 runs
// as calico-policy-only.yaml runs it: the container's own command, its
// environment resolved from vpcchain.yaml's ConfigMap with the one switch
// ENABLE_WIREGUARD=true, and the manifest's RBAC. Our daemons run with the
// same switch and vpcchain-install renders the chain with it. The API server
// runs on a VPC machine outside the cluster, as EKS's does.

package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/vpcchain/vpcchain/sim/vpcsim/dataplane"
)

func init() { guestTests = append(guestTests, "TestGuestWireGuardCalico") }

// wgMarker is the payload the test looks for in every captured frame: it
// must never cross the VPC in the clear while WireGuard is on.
const wgMarker = "vpcchain-wg-marker-5d1c83e0"

const (
	calicoNodeUser = "system:serviceaccount:kube-system:calico-node"
	calicoManifest = "../../conflist/manifests/calico-policy-only.yaml"
	ourManifest    = "../../conflist/manifests/vpcchain.yaml"
	wgPort         = 51820 // Felix's default WireguardListeningPort
)

// calicoNodeContainer is the calico-node container of the manifest's
// DaemonSet.
func calicoNodeContainer(t *testing.T) corev1.Container {
	t.Helper()
	for _, doc := range manifestDocsOfKind(t, calicoManifest, "DaemonSet") {
		var ds appsv1.DaemonSet
		if err := yaml.UnmarshalStrict([]byte(doc), &ds); err != nil {
			t.Fatal(err)
		}
		for _, c := range ds.Spec.Template.Spec.Containers {
			if c.Name == "calico-node" {
				return c
			}
		}
	}
	t.Fatalf("%s has no calico-node container", calicoManifest)
	return corev1.Container{}
}

// manifestDocsOfKind returns a manifest's documents of the given kinds.
func manifestDocsOfKind(t *testing.T, file string, kinds ...string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if slices.Contains(kinds, meta.Kind) {
			out = append(out, doc)
		}
	}
	return out
}

// ourConfigMap is vpcchain-config's data as vpcchain.yaml ships it.
func ourConfigMap(t *testing.T) map[string]string {
	t.Helper()
	for _, doc := range manifestDocsOfKind(t, ourManifest, "ConfigMap") {
		var cm corev1.ConfigMap
		if err := yaml.UnmarshalStrict([]byte(doc), &cm); err != nil {
			t.Fatal(err)
		}
		if cm.Name == "vpcchain-config" {
			return cm.Data
		}
	}
	t.Fatalf("%s has no vpcchain-config", ourManifest)
	return nil
}

// containerEnv resolves a container's environment as the kubelet does for
// the sources the manifest uses: values, the node's name, and keys of
// vpcchain-config (cm).
func containerEnv(t *testing.T, c corev1.Container, nodeName string, cm map[string]string) []string {
	t.Helper()
	var out []string
	for _, e := range c.Env {
		switch f := e.ValueFrom; {
		case f == nil:
			out = append(out, e.Name+"="+e.Value)
		case f.FieldRef != nil && f.FieldRef.FieldPath == "spec.nodeName":
			out = append(out, e.Name+"="+nodeName)
		case f.ConfigMapKeyRef != nil && f.ConfigMapKeyRef.Name == "vpcchain-config":
			v, ok := cm[f.ConfigMapKeyRef.Key]
			switch {
			case ok:
				out = append(out, e.Name+"="+v)
			case f.ConfigMapKeyRef.Optional == nil || !*f.ConfigMapKeyRef.Optional:
				t.Fatalf("env %s: vpcchain-config has no %s", e.Name, f.ConfigMapKeyRef.Key)
			}
		default:
			t.Fatalf("env %s: a source the test does not resolve: %+v", e.Name, f)
		}
	}
	return out
}

// wgCluster is the test's cluster: the simulator, the API server, and per
// node the calico-node process and the chain.
type wgCluster struct {
	t       *testing.T
	c       *cluster
	k       *kube
	cm      map[string]string // vpcchain-config, ENABLE_WIREGUARD set as the test runs it
	shim    string            // PATH directory with the test's start_runit
	tools   string            // calico-node's directory
	calico  map[string]*bgProc
	chains  map[string]*libcni.NetworkConfigList // with the policy hook
	plain   map[string]*libcni.NetworkConfigList // as the installer wrote it
	router  ns.NetNS
	nodeIPs map[netip.Addr]string
}

// addNode launches a node, registers it (its InternalIP is the primary
// ENI's address), starts our daemon with env, renders the chain with
// vpcchain-install and starts calico-node.
func (w *wgCluster) addNode(name string, env ...string) *node {
	t := w.t
	n := w.c.addNode("m5.large", name, env...)
	n.start()
	t.Cleanup(n.stop)
	n.waitReady()
	inet, _ := w.c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
	w.nodeIPs[inet.PrimaryIP] = name
	w.k.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Node
metadata: {name: %[1]s, labels: {kubernetes.io/hostname: %[1]s, kubernetes.io/os: linux}}
`, name))
	if _, err := w.k.kubectl("", "patch", "node", name, "--subresource=status", "--type=merge", "-p",
		fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q},{"type":"Hostname","address":%q}]}}`, inet.PrimaryIP, name)); err != nil {
		t.Fatal(err)
	}
	// The chain as the installer writes it from the node's settings (the
	// daemon's environment), then the policy hook, which publishes each pod's
	// address for Felix and waits for its policy.
	confDir := filepath.Join(w.c.dir, name+"-net.d")
	if err := os.Mkdir(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	install := inNode(n.vn, filepath.Join(w.c.bin, "vpcchain-install"), "--conflist-only", "--cni-conf-dir", confDir,
		"--cni-bin-dir", w.c.bin, "--timeout", "60s")
	install.Env = n.env
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("vpcchain-install on %s: %v\n%s", name, err, out)
	}
	files, _ := filepath.Glob(filepath.Join(confDir, "*.conflist"))
	if len(files) != 1 {
		t.Fatalf("vpcchain-install wrote %v", files)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatal(err)
	}
	if w.plain[name], err = libcni.ConfListFromBytes(raw); err != nil {
		t.Fatal(err)
	}
	statusDir := filepath.Join(w.c.dir, name+"-calico", "run", "endpoint-status")
	conf["plugins"] = append(conf["plugins"].([]any), map[string]any{"type": "policy-hook", "vethPrefix": "eni",
		"kubeconfig":    w.k.kubeconfigFor("admin", w.k.remoteServer),
		"waitForPolicy": map[string]any{"timeout": "30s", "strict": true, "endpointStatusDir": statusDir}})
	raw, _ = json.Marshal(conf)
	l, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	w.chains[name] = l
	w.startCalico(n)
	return n
}

// startCalico runs calico-node on n as its DaemonSet does: the container's
// command, with /var/lib/calico and /var/run/calico host directories of the
// node's own, and the environment the kubelet would give it.
func (w *wgCluster) startCalico(n *node) {
	t := w.t
	c := calicoNodeContainer(t)
	dir := filepath.Join(w.c.dir, n.name+"-calico")
	lib, run := filepath.Join(dir, "lib"), filepath.Join(dir, "run")
	for _, d := range []string{lib, run} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := append(containerEnv(t, c, n.name, w.cm),
		"KUBECONFIG="+w.k.kubeconfigFor(calicoNodeUser, w.k.remoteServer),
		"PATH="+w.shim+":"+w.tools+":"+os.Getenv("PATH"),
		// As the calico/node image the cluster tier builds sets it: this
		// calico-node is built without cgo (no libbpf).
		"FELIX_DebugSkipCTLBCleanup=true")
	args := append([]string{"sh", "-c", `mount --bind "$1" /var/lib/calico && mount --bind "$2" /var/run/calico && shift 2 && exec "$@"`,
		"sh", lib, run}, append(slices.Clone(c.Command), c.Args...)...)
	p := startInNode(t, n, dir, "calico-node", env, args...)
	w.calico[n.name] = p
	waitFor(t, 90*time.Second, "Felix readiness on "+n.name, p.running, func() error {
		_, err := httpGetIn(n, "127.0.0.1:9099", "/readiness")
		return err
	})
}

// wgPeers lists the public keys of wireguard.cali's peers on n (an error if
// the link is missing).
func wgPeers(n *node) ([]string, error) {
	out, err := exec.Command("ip", "netns", "exec", n.vn.NetNS, "wg", "show", "wireguard.cali", "peers").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("wg show wireguard.cali peers: %v: %s", err, out)
	}
	return strings.Fields(string(out)), nil
}

// publicKey is the WireGuard key Felix published on the Node.
func (w *wgCluster) publicKey(name string) string {
	out, _ := w.k.kubectl("", "get", "node", name, "-o", `jsonpath={.metadata.annotations.projectcalico\.org/WireguardPublicKey}`)
	return strings.TrimSpace(out)
}

// waitMesh waits until each node's wireguard.cali has exactly the others'
// published keys as peers.
func (w *wgCluster) waitMesh(nodes ...*node) {
	w.t.Helper()
	waitFor(w.t, 2*time.Minute, "a WireGuard mesh of the nodes", func() error { return nil }, func() error {
		for _, n := range nodes {
			peers, err := wgPeers(n)
			if err != nil {
				return err
			}
			var want []string
			for _, o := range nodes {
				if o != n {
					k := w.publicKey(o.name)
					if k == "" {
						return fmt.Errorf("%s has published no key", o.name)
					}
					want = append(want, k)
				}
			}
			sort.Strings(peers)
			sort.Strings(want)
			if !slices.Equal(peers, want) {
				return fmt.Errorf("%s's peers %v, want %v", n.name, peers, want)
			}
		}
		return nil
	})
}

// addPod creates the Pod object on n and ADDs its sandbox through the chain.
func (w *wgCluster) addPod(n *node, name string) *pod {
	t := w.t
	w.k.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: default, labels: {app: %[1]s}}
spec:
  nodeName: %[2]s
  automountServiceAccountToken: false
  containers: [{name: pause, image: registry.k8s.io/pause:3.10}]
`, name, n.name))
	p := n.newPod("default", name)
	if err := p.addRetrying(w.chains[n.name], time.Minute); err != nil {
		t.Fatalf("ADD %s on %s: %v\nplugins:\n%s", name, n.name, err, tailFile(filepath.Join(w.c.dir, n.name+"-plugins.log"), 30))
	}
	t.Cleanup(func() { _ = p.del(w.chains[n.name]) })
	return p
}

// markerEcho serves on a in doIn: each connection sends one line, and gets
// back name, a space and the line.
func markerEcho(t *testing.T, doIn func(func() error) error, a netip.AddrPort, name string) {
	t.Helper()
	var ln net.Listener
	if err := doIn(func() error {
		var err error
		ln, err = net.Listen("tcp", a.String())
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", a, name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					fmt.Fprintf(c, "%s %s", name, line)
				}
			}()
		}
	}()
}

// sendMarker sends the marker from doIn to dst and checks the echo.
func sendMarker(doIn func(func() error) error, dst netip.AddrPort, timeout time.Duration) error {
	return doIn(func() error {
		c, err := net.DialTimeout("tcp", dst.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := fmt.Fprintf(c, "%s\n", wgMarker); err != nil {
			return err
		}
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if !strings.HasSuffix(strings.TrimSpace(string(b)), wgMarker) {
			return fmt.Errorf("echo %q", b)
		}
		return nil
	})
}

// captureRouter captures on the router's end of each ENI of the nodes, and
// of the link to the internet.
func (w *wgCluster) captureRouter(nodes ...*node) []*capture {
	t := w.t
	var out []*capture
	for _, n := range nodes {
		inet, _ := w.c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
		for _, e := range inet.ENIs {
			if link, ok := w.c.sim.Fabric.RouterLinkName(e.ID); ok {
				out = append(out, openCapture(t, w.router, link))
			}
		}
	}
	return append(out, openCapture(t, w.router, dataplane.RouterOutsideLink))
}

// stopCaptures stops the captures and returns what they saw.
func stopCaptures(cs []*capture) []frame {
	var out []frame
	for _, c := range cs {
		c.stop()
		out = append(out, c.all()...)
	}
	return out
}

// checkSealed checks frames: none carries a pod's address or the marker,
// and some are WireGuard between node addresses (both ways).
func (w *wgCluster) checkSealed(what string, fs []frame, pods ...*pod) {
	t := w.t
	t.Helper()
	podIPs := map[netip.Addr]string{}
	for _, p := range pods {
		podIPs[p.ip] = p.name
	}
	dirs := map[[2]netip.Addr]int{}
	for _, f := range fs {
		if p, ok := podIPs[f.src]; ok {
			t.Errorf("%s: a frame from pod %s crossed the VPC in the clear: %v", what, p, f)
		}
		if p, ok := podIPs[f.dst]; ok {
			t.Errorf("%s: a frame to pod %s crossed the VPC in the clear: %v", what, p, f)
		}
		if bytes.Contains(f.l4, []byte(wgMarker)) {
			t.Errorf("%s: the marker crossed the VPC in the clear: %v", what, f)
		}
		_, fromNode := w.nodeIPs[f.src]
		_, toNode := w.nodeIPs[f.dst]
		if f.proto == 17 && fromNode && toNode && len(f.l4) >= 8 &&
			binary.BigEndian.Uint16(f.l4[0:2]) == wgPort && binary.BigEndian.Uint16(f.l4[2:4]) == wgPort {
			dirs[[2]netip.Addr{f.src, f.dst}]++
		}
	}
	if len(dirs) < 2 {
		t.Errorf("%s: WireGuard datagrams between node addresses by direction: %v, want both ways", what, dirs)
	}
}

// waitMarker polls dst with the marker until an exchange succeeds.
func waitMarker(doIn func(func() error) error, dst netip.AddrPort, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := sendMarker(doIn, dst, 2*time.Second)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// prober opens a connection from src to dst every 100 ms (marker and echo,
// 1 s timeout) until stopped, and counts the failures. Its counters are
// the goroutine's until it ends.
type prober struct {
	ok, failed int64
	firstErr   error
	stopCh     chan struct{}
	done       chan struct{}
	once       sync.Once
}

func startProber(t *testing.T, src *pod, dst netip.AddrPort) *prober {
	p := &prober{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stopCh:
				return
			case <-tick.C:
			}
			if err := sendMarker(src.doIn, dst, time.Second); err != nil {
				p.failed++
				if p.firstErr == nil {
					p.firstErr = err
				}
			} else {
				p.ok++
			}
		}
	}()
	t.Cleanup(func() { p.stop() }) // a failed test's prober ends before its pods go
	return p
}

// stop ends the prober and returns its counts and first error.
func (p *prober) stop() (ok, failed int64, first error) {
	p.once.Do(func() { close(p.stopCh) })
	<-p.done
	return p.ok, p.failed, p.firstErr
}

func TestGuestWireGuardCalico(t *testing.T) {
	requireGuest(t)
	_, apiserverBin, kubectlBin, etcdBin := calicoTierBinaries(t)
	calicoNodeBin := filepath.Join(binDir(t), "tools", "calico-node")
	if _, err := os.Stat(calicoNodeBin); err != nil {
		t.Fatalf("%s missing: run `make cluster-tools`: %v", calicoNodeBin, err)
	}
	start := time.Now()
	step := func(what string) { t.Logf("%v: %s", time.Since(start).Round(time.Second), what) }

	// calico-node's host directories: each node binds its own over them.
	for _, d := range []string{"/var/lib/calico", "/var/run/calico"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// start_runit, as the calico/node image runs it: start-up, then Felix.
	shim := t.TempDir()
	if err := os.WriteFile(filepath.Join(shim, "start_runit"), []byte("#!/bin/sh\nset -e\ncalico-node -startup\nexec calico-node -felix\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	c := newSimVPC(t, "10.0.0.0/20")
	// The node's CNI bin dir: ours and the upstream plugins the installer's
	// chain names (portmap), as the DaemonSet's init container fills it.
	cniBin := t.TempDir()
	links, _ := filepath.Glob(filepath.Join(c.bin, "*"))
	links = append(links, filepath.Join(c.bin, "tools", "portmap"), filepath.Join(c.bin, "tools", "loopback"))
	for _, f := range links {
		if st, err := os.Stat(f); err == nil && st.Mode().IsRegular() {
			if err := os.Symlink(f, filepath.Join(cniBin, filepath.Base(f))); err != nil {
				t.Fatal(err)
			}
		}
	}
	tools := filepath.Join(c.bin, "tools")
	c.bin = cniBin
	cp := c.addNode("m5.large", "wg-cp") // the control plane: a VPC machine, no daemon, no Calico
	cpNet, _ := c.sim.Cloud.InstanceNetwork(cp.vn.InstanceID)
	k := startControlPlaneWith(t, cp, etcdBin, apiserverBin, kubectlBin, controlPlaneOpts{rbac: true, advertise: cpNet.PrimaryIP,
		users: map[string]string{calicoNodeUser: "system:serviceaccounts"}})
	if _, err := k.kubectl("", "apply", "--server-side", "-f", calicoCRDs(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := k.kubectl("", "wait", "--for", "condition=established", "--timeout=60s", "crd", "--all"); err != nil {
		t.Fatal(err)
	}
	// calico-node's credentials are the manifest's: its ServiceAccount and
	// ClusterRole, nothing more.
	k.apply(t, strings.Join(manifestDocsOfKind(t, calicoManifest, "ServiceAccount", "ClusterRole", "ClusterRoleBinding"), "\n---\n"))
	k.retry(t, 30*time.Second, "", "-n", "default", "create", "serviceaccount", "default")

	cm := ourConfigMap(t)
	if cm["ENABLE_WIREGUARD"] != "false" {
		t.Fatalf("vpcchain.yaml ships ENABLE_WIREGUARD=%q, want false", cm["ENABLE_WIREGUARD"])
	}
	cm["ENABLE_WIREGUARD"] = "true" // the one switch a user flips
	w := &wgCluster{t: t, c: c, k: k, cm: cm, shim: shim, tools: tools, calico: map[string]*bgProc{}, chains: map[string]*libcni.NetworkConfigList{}, plain: map[string]*libcni.NetworkConfigList{},
		nodeIPs: map[netip.Addr]string{},
		router:  getNS(t, dataplane.NetNSPath(c.sim.Fabric.RouterNetNSName()))}
	daemonEnv := []string{"ENABLE_WIREGUARD=" + cm["ENABLE_WIREGUARD"], "WARM_IP_TARGET=3"}
	wa, wb := w.addNode("wg-a", daemonEnv...), w.addNode("wg-b", daemonEnv...)
	w.waitMesh(wa, wb)
	step("calico-node on wg-a and wg-b, WireGuard peers of each other")

	// The chain gave pods room for WireGuard: 9001 - 60.
	for _, name := range []string{"wg-a", "wg-b"} {
		if typ := w.chains[name].Plugins[0].Network.Type; typ != "vpc-bridge" {
			t.Fatalf("first plugin %s", typ)
		}
		var bridge struct {
			MTU int `json:"mtu"`
		}
		if err := json.Unmarshal(w.chains[name].Plugins[0].Bytes, &bridge); err != nil || bridge.MTU != 8941 {
			t.Errorf("%s: vpc-bridge mtu %d (%v), want 8941 (ENI 9001 less WireGuard's 60)", name, bridge.MTU, err)
		}
	}
	a1, a2 := w.addPod(wa, "a1"), w.addPod(wa, "a2")
	b1 := w.addPod(wb, "b1")
	for _, p := range []*pod{a1, a2, b1} {
		out := inNetNS(t, p.netns, "cat", "/sys/class/net/eth0/mtu")
		if strings.TrimSpace(out) != "8941" {
			t.Errorf("pod %s: eth0 mtu %s, want 8941", p.name, strings.TrimSpace(out))
		}
	}
	wgMTU := strings.TrimSpace(inNetNS(t, getNS(t, wa.vn.NetNSPath), "cat", "/sys/class/net/wireguard.cali/mtu"))
	if wgMTU != "8941" {
		t.Errorf("wireguard.cali mtu %s on wg-a, want 8941 (Felix: host 9001 less 60)", wgMTU)
	}
	// And a pod whose address is on a secondary ENI of wg-b: rule 1536 would
	// route what it sends by that ENI's table; Felix's rule 99 comes first.
	// Sandboxes through the chain without the hook (no Pod, no wait for
	// Felix) take the primary ENI's addresses until one gets a secondary's.
	for i := 0; ; i++ {
		if i == 12 {
			t.Fatal("no sandbox of wg-b got an address of a secondary ENI")
		}
		f := wb.newPod("default", fmt.Sprintf("fill%d", i))
		if err := f.addRetrying(w.plain["wg-b"], time.Minute); err != nil {
			t.Fatalf("ADD fill%d: %v", i, err)
		}
		t.Cleanup(func() { _ = f.del(w.plain["wg-b"]) })
		if eniDevice(t, c, wb, f.ip) > 0 {
			break
		}
	}
	bs := w.addPod(wb, "b2")
	if eniDevice(t, c, wb, bs.ip) <= 0 {
		t.Fatalf("b2 %s is not on a secondary ENI of wg-b", bs.ip)
	}
	step(fmt.Sprintf("pods a1 %s, a2 %s on wg-a; b1 %s and %s %s (secondary ENI) on wg-b (MTU 8941)", a1.ip, a2.ip, b1.ip, bs.name, bs.ip))

	const port = 7000
	for _, p := range []*pod{a1, a2, b1, bs} {
		markerEcho(t, p.doIn, netip.AddrPortFrom(p.ip, port), p.name)
	}
	bNet, _ := c.sim.Cloud.InstanceNetwork(wb.vn.InstanceID)
	markerEcho(t, wb.do, netip.AddrPortFrom(bNet.PrimaryIP, port), "wg-b")
	outNS := getNS(t, dataplane.NetNSPath(c.sim.Fabric.OutsideNetNSName()))
	inOutside := func(f func() error) error { return outNS.Do(func(ns.NetNS) error { return f() }) }
	markerEcho(t, inOutside, netip.AddrPortFrom(netip.MustParseAddr(dataplane.OutsideAddr), port), "internet")

	// Pod to pod across nodes, both ways, and pod to the other node: only
	// WireGuard between node addresses on the VPC.
	caps := w.captureRouter(wa, wb)
	waitFor(t, 30*time.Second, "a1 -> b1 through WireGuard", func() error { return nil }, func() error {
		return sendMarker(a1.doIn, netip.AddrPortFrom(b1.ip, port), 2*time.Second)
	})
	for i := 0; i < 5; i++ {
		for _, f := range []struct {
			from *pod
			to   netip.AddrPort
		}{{a1, netip.AddrPortFrom(b1.ip, port)}, {b1, netip.AddrPortFrom(a2.ip, port)}, {a2, netip.AddrPortFrom(bNet.PrimaryIP, port)},
			{a1, netip.AddrPortFrom(bs.ip, port)}, {bs, netip.AddrPortFrom(a1.ip, port)}} {
			if err := sendMarker(f.from.doIn, f.to, 3*time.Second); err != nil {
				t.Errorf("%s -> %s: %v", f.from.name, f.to, err)
			}
		}
	}
	w.checkSealed("pod to pod and pod to node across nodes", stopCaptures(caps), a1, a2, b1, bs)

	// Same node: the pods talk, nothing of it reaches the VPC.
	caps = w.captureRouter(wa)
	if err := sendMarker(a1.doIn, netip.AddrPortFrom(a2.ip, port), 3*time.Second); err != nil {
		t.Errorf("a1 -> a2 (same node): %v", err)
	}
	for _, f := range stopCaptures(caps) {
		// (WireGuard's own handshakes between the nodes may come at any time.)
		if f.src == a1.ip || f.dst == a1.ip || f.src == a2.ip || f.dst == a2.ip || bytes.Contains(f.l4, []byte(wgMarker)) {
			t.Errorf("same-node traffic reached the VPC: %v", f)
		}
	}
	// The internet: not encrypted (it leaves the VPC), SNATed to the node.
	aNet, _ := c.sim.Cloud.InstanceNetwork(wa.vn.InstanceID)
	caps = w.captureRouter(wa)
	if err := sendMarker(a1.doIn, netip.AddrPortFrom(netip.MustParseAddr(dataplane.OutsideAddr), port), 3*time.Second); err != nil {
		t.Errorf("a1 -> the internet: %v", err)
	}
	var clear bool
	for _, f := range stopCaptures(caps) {
		if bytes.Contains(f.l4, []byte(wgMarker)) {
			clear = true
			if f.src != aNet.PrimaryIP && f.dst != aNet.PrimaryIP {
				t.Errorf("internet traffic not SNATed to wg-a's %s: %v", aNet.PrimaryIP, f)
			}
		}
	}
	if !clear {
		t.Error("a1's internet traffic: no frame with the marker on the VPC, want it in the clear (WireGuard is between nodes only)")
	}
	step("pod-pod and pod-node across nodes sealed; same node stays on the node; internet in the clear, SNATed")

	// NetworkPolicy still applies to encrypted flows: deny b1's ingress.
	k.apply(t, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-b1, namespace: default}
spec:
  podSelector: {matchLabels: {app: b1}}
  policyTypes: [Ingress]
`)
	waitFor(t, 30*time.Second, "deny-b1 enforced", func() error { return nil }, func() error {
		if err := sendMarker(a1.doIn, netip.AddrPortFrom(b1.ip, port), time.Second); err == nil {
			return fmt.Errorf("a1 -> b1 still flows")
		} else if !isTimeout(err) {
			return fmt.Errorf("a1 -> b1 failed but was not dropped: %w", err)
		}
		return nil
	})
	if err := sendMarker(b1.doIn, netip.AddrPortFrom(a1.ip, port), 3*time.Second); err != nil {
		t.Errorf("b1 -> a1 must still flow (the policy denies b1's ingress only): %v", err)
	}
	if _, err := k.kubectl("", "delete", "networkpolicy", "deny-b1"); err != nil {
		t.Fatal(err)
	}
	if err := waitMarker(a1.doIn, netip.AddrPortFrom(b1.ip, port), 30*time.Second); err != nil {
		t.Fatalf("a1 -> b1 after deleting deny-b1: %v", err)
	}
	step("NetworkPolicy enforced on the encrypted flow, and lifted")

	// A node joins and leaves; the prober between a1 and b1 loses nothing.
	pr := startProber(t, a1, netip.AddrPortFrom(b1.ip, port))
	wc := w.addNode("wg-c", daemonEnv...)
	w.waitMesh(wa, wb, wc)
	c1 := w.addPod(wc, "c1")
	markerEcho(t, c1.doIn, netip.AddrPortFrom(c1.ip, port), "c1")
	caps = w.captureRouter(wa, wc)
	if err := waitMarker(a1.doIn, netip.AddrPortFrom(c1.ip, port), 30*time.Second); err != nil {
		t.Fatalf("a1 -> c1 on the joined node: %v", err)
	}
	for i := 0; i < 3; i++ {
		if err := sendMarker(c1.doIn, netip.AddrPortFrom(a1.ip, port), 3*time.Second); err != nil {
			t.Errorf("c1 -> a1: %v", err)
		}
	}
	w.checkSealed("to and from the joined node", stopCaptures(caps), a1, c1)
	step("wg-c joined, c1 " + c1.ip.String() + " sealed to and from wg-a")
	if err := c1.del(w.chains["wg-c"]); err != nil {
		t.Errorf("DEL c1: %v", err)
	}
	w.calico["wg-c"].kill9()
	wc.stop()
	if _, err := k.kubectl("", "delete", "node", "wg-c"); err != nil {
		t.Fatal(err)
	}
	w.waitMesh(wa, wb)
	time.Sleep(3 * time.Second)
	if ok, failed, first := pr.stop(); failed > 0 || ok == 0 {
		t.Errorf("prober a1 -> b1 while wg-c joined and left: %d ok, %d failed (first: %v), want none failed", ok, failed, first)
	} else {
		t.Logf("prober a1 -> b1 while wg-c joined and left: %d ok, none failed", ok)
	}
	step("wg-c left; the mesh is wg-a and wg-b again")

	// calico-node restarted on wg-b, as a rolling update does: Felix keeps
	// the key in wireguard.cali.
	oldKey := w.publicKey("wg-b")
	pr = startProber(t, a1, netip.AddrPortFrom(b1.ip, port))
	w.calico["wg-b"].kill9()
	w.startCalico(wb)
	w.waitMesh(wa, wb)
	time.Sleep(2 * time.Second)
	ok, failed, first := pr.stop()
	if k := w.publicKey("wg-b"); k != oldKey {
		t.Errorf("wg-b's key changed on a restart that kept wireguard.cali: %s -> %s", oldKey, k)
	}
	if failed > 0 || ok == 0 {
		t.Errorf("calico-node restarted on wg-b (key kept): prober %d ok, %d failed (first: %v), want none failed", ok, failed, first)
	} else {
		t.Logf("calico-node restarted on wg-b (key kept): prober %d ok, none failed", ok)
	}
	// Key rotation: wireguard.cali gone (as after a reboot), calico-node
	// starts and makes a new key; the other node takes it from the Node.
	pr = startProber(t, a1, netip.AddrPortFrom(b1.ip, port))
	w.calico["wg-b"].kill9()
	inNetNS(t, getNS(t, wb.vn.NetNSPath), "ip", "link", "del", "wireguard.cali")
	rotated := time.Now()
	w.startCalico(wb)
	w.waitMesh(wa, wb)
	if k := w.publicKey("wg-b"); k == oldKey || k == "" {
		t.Errorf("wg-b's key after wireguard.cali was recreated: %q, want a new one (was %s)", k, oldKey)
	}
	if err := waitMarker(a1.doIn, netip.AddrPortFrom(b1.ip, port), time.Minute); err != nil {
		t.Fatalf("a1 -> b1 after wg-b's key rotation: %v", err)
	}
	meshed := time.Since(rotated)
	time.Sleep(2 * time.Second)
	ok, failed, first = pr.stop()
	t.Logf("key rotation on wg-b: the mesh had the new key after %v; prober %d ok, %d failed (first: %v)", meshed.Round(100*time.Millisecond), ok, failed, first)
	// What is lost is lost while a node has no key its peers know; once the
	// mesh has the new one, nothing.
	pr = startProber(t, a1, netip.AddrPortFrom(b1.ip, port))
	time.Sleep(3 * time.Second)
	if ok, failed, first := pr.stop(); failed > 0 || ok == 0 {
		t.Errorf("after the rotation: prober %d ok, %d failed (first: %v), want none failed", ok, failed, first)
	}
	caps = w.captureRouter(wa, wb)
	for i := 0; i < 3; i++ {
		if err := sendMarker(a1.doIn, netip.AddrPortFrom(b1.ip, port), 3*time.Second); err != nil {
			t.Errorf("a1 -> b1 after the rotation: %v", err)
		}
	}
	w.checkSealed("after the key rotation", stopCaptures(caps), a1, b1)
	step("calico-node restarts on wg-b: key kept, then rotated")

	// The cost: the same pods on the same nodes, encrypted, then with the
	// switch off (calico-node restarted with ENABLE_WIREGUARD=false, which
	// removes WireGuard).
	enc := measurePair(t, a1, b1)
	w.cm["ENABLE_WIREGUARD"] = "false"
	for _, n := range []*node{wa, wb} {
		w.calico[n.name].kill9()
		w.startCalico(n)
	}
	waitFor(t, time.Minute, "WireGuard gone from wg-a and wg-b", func() error { return nil }, func() error {
		for _, n := range []*node{wa, wb} {
			if _, err := wgPeers(n); err == nil {
				return fmt.Errorf("%s still has wireguard.cali", n.name)
			}
		}
		return nil
	})
	caps = w.captureRouter(wa, wb)
	if err := waitMarker(a1.doIn, netip.AddrPortFrom(b1.ip, port), 30*time.Second); err != nil {
		t.Fatalf("a1 -> b1 with WireGuard off: %v", err)
	}
	if err := sendMarker(a1.doIn, netip.AddrPortFrom(b1.ip, port), 3*time.Second); err != nil {
		t.Fatalf("a1 -> b1 with WireGuard off: %v", err)
	}
	var plain bool
	for _, f := range stopCaptures(caps) {
		plain = plain || bytes.Contains(f.l4, []byte(wgMarker))
	}
	if !plain {
		t.Error("with WireGuard off the marker is not in the clear on the VPC: the baseline would not be unencrypted")
	}
	clr := measurePair(t, a1, b1)
	t.Logf("WireGuard cost, pod a1 -> b1 across nodes in the VM (software; ratios only): throughput %.0f MB/s encrypted, %.0f MB/s plain: %.2fx; request latency (1-byte round trip, median) %v encrypted, %v plain: %.2fx",
		enc.mbps, clr.mbps, enc.mbps/clr.mbps, enc.rtt, clr.rtt, float64(enc.rtt)/float64(clr.rtt))
	step("measured")
}

// eniDevice is the device index of the ENI of n that EC2 has ip on (-1 if
// none).
func eniDevice(t *testing.T, c *cluster, n *node, ip netip.Addr) int {
	t.Helper()
	inet, _ := c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
	for _, e := range inet.ENIs {
		if e.PrimaryIP == ip || slices.Contains(e.Secondary, ip) {
			return e.DeviceIndex
		}
	}
	return -1
}

type pairCost struct {
	mbps float64
	rtt  time.Duration
}

// measurePair measures TCP from src to dst's pod: bytes sent in 3 s, and
// the median of 2000 one-byte round trips on one connection.
func measurePair(t *testing.T, src, dst *pod) pairCost {
	t.Helper()
	sink, echo := netip.AddrPortFrom(dst.ip, 7101), netip.AddrPortFrom(dst.ip, 7102)
	var lns []net.Listener
	if err := dst.doIn(func() error {
		for _, a := range []netip.AddrPort{sink, echo} {
			ln, err := net.Listen("tcp", a.String())
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	serve := func(ln net.Listener, f func(net.Conn)) {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); f(c) }()
			}
		}()
	}
	serve(lns[0], func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	serve(lns[1], func(c net.Conn) { _, _ = io.Copy(c, c) })
	var cost pairCost
	if err := src.doIn(func() error {
		c, err := net.DialTimeout("tcp", sink.String(), 5*time.Second)
		if err != nil {
			return err
		}
		buf := make([]byte, 256<<10)
		var n int64
		start := time.Now()
		for time.Since(start) < 3*time.Second {
			m, err := c.Write(buf)
			n += int64(m)
			if err != nil {
				c.Close()
				return err
			}
		}
		cost.mbps = float64(n) / time.Since(start).Seconds() / 1e6
		c.Close()
		e, err := net.DialTimeout("tcp", echo.String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer e.Close()
		_ = e.SetDeadline(time.Now().Add(time.Minute))
		one := []byte{1}
		rtts := make([]time.Duration, 0, 2000)
		for i := 0; i < 2000; i++ {
			s := time.Now()
			if _, err := e.Write(one); err != nil {
				return err
			}
			if _, err := io.ReadFull(e, one); err != nil {
				return err
			}
			rtts = append(rtts, time.Since(s))
		}
		slices.Sort(rtts)
		cost.rtt = rtts[len(rtts)/2]
		return nil
	}); err != nil {
		t.Fatalf("measure %s -> %s: %v", src.name, dst.name, err)
	}
	return cost
}
