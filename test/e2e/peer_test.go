//go:build peer

package e2e

// The unmodified AWS VPC CNI v1.23.2 (`make peer-tools`) run on simulated
// nodes as its aws-node DaemonSet runs it on EKS: ipamd in the node's host
// network with the manifest's environment, its CNI plugins run by a runtime
// (libcni) from the conflist its entrypoint writes. It measures the
// simulator against a client written by others: where the peer fails, the
// simulator is what gets fixed.
//
//	make peer-test
//
// VPCCHAIN_PEER_LOGS=<dir> keeps each node's peer files (ipamd's log, the
// plugins' logs, ipamd's checkpoint) there.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
	"github.com/vpcchain/vpcchain/sim/vpcsim/dataplane"
	"github.com/vpcchain/vpcchain/test/awscnipeer"
)

// The peer's fixed host paths: its socket and checkpoint directory, and the
// directory its plugins log to.
const (
	peerRunDir = "/run/aws-node"
	peerLogDir = "/var/log"
)

type peerBins struct {
	agent, cni, egress, portmap, hostLocal string
	apiserver, kubectl, etcd               string
}

func peerBinaries(t testing.TB) peerBins {
	t.Helper()
	requireRoot(t)
	tools := filepath.Join(binDir(t), "tools")
	b := peerBins{
		agent: filepath.Join(tools, "aws-k8s-agent"), cni: filepath.Join(tools, "aws-cni"),
		egress: filepath.Join(tools, "egress-cni"), portmap: filepath.Join(tools, "portmap"),
		hostLocal: filepath.Join(tools, "host-local"), apiserver: filepath.Join(tools, "kube-apiserver"),
		kubectl: filepath.Join(tools, "kubectl"), etcd: "/usr/bin/etcd",
	}
	for _, p := range []string{b.agent, b.cni, b.egress, b.portmap, b.hostLocal, b.apiserver, b.kubectl, b.etcd} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s missing: run `make tools heavy-tools peer-tools` and `make deps`: %v", p, err)
		}
	}
	return b
}

// awsCNIModule is the peer's module directory in the module cache, at the
// version test/tools/awscni pins; depModule is one of its dependencies.
func awsCNIModule(t testing.TB, path string) string {
	t.Helper()
	d, err := awscnipeer.ModuleDir(path)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// peerConflist is the peer's misc/10-aws.conflist rendered as its entrypoint
// (cmd/aws-vpc-cni generateJSON) renders it for an IPv4 cluster with the
// manifest's environment: IPv6 egress off, so no node IPv6 address; the
// plugins log at pluginLogLevel.
func peerConflist(t testing.TB, pluginLogLevel string) *libcni.NetworkConfigList {
	t.Helper()
	tmpl, err := os.ReadFile(filepath.Join(awsCNIModule(t, "github.com/aws/amazon-vpc-cni-k8s"), "misc/10-aws.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer(
		"__VETHPREFIX__", "eni", "__MTU__", "9001", "__PODSGENFORCINGMODE__", "strict",
		"__PLUGINLOGFILE__", "/var/log/aws-routed-eni/plugin.log", "__PLUGINLOGLEVEL__", pluginLogLevel,
		"__EGRESSPLUGINLOGFILE__", "/var/log/aws-routed-eni/egress-v6-plugin.log", "__EGRESSPLUGINENABLED__", "false",
		"__EGRESSPLUGINIPAMSUBNET__", "fd00::ac:00/118", "__EGRESSPLUGINIPAMDST__", "::/0",
		"__EGRESSPLUGINIPAMDATADIR__", "/run/cni/v4pd/egress-v6-ipam", "__RANDOMIZESNAT__", "prng", "__NODEIP__", "")
	l, err := libcni.ConfListFromBytes([]byte(r.Replace(string(tmpl))))
	if err != nil {
		t.Fatalf("the peer's conflist: %v", err)
	}
	return l
}

// envValue is the value a process started with env sees for key (the last
// one given).
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// newPod is a sandbox on the node whose runtime runs the peer's plugins.
func (p *peerNode) newPod(name string) *pod { return p.newPodIn("default", name) }

func (p *peerNode) newPodIn(namespace, name string) *pod {
	pd := p.node.newPod(namespace, name)
	pd.cni = p.runtime()
	return pd
}

// runtime is the node's runtime (libcni) with the peer's plugins.
func (p *peerNode) runtime() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{p.plugins}, filepath.Join(p.dir, "cni-cache"), p.exec())
}

// exec runs plugins as the runtime on the peer's node does: in the node's
// host mount namespace (the one ipamd runs in, which holds its socket and
// the plugins' log directory), in the network namespace of the caller.
func (p *peerNode) exec() invoke.Exec {
	return &mountNSExec{
		DefaultExec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: p.pluginLog()}, PluginDecoder: version.PluginDecoder{}},
		mntNS:       p.mountNS,
	}
}

// mountNSExec is libcni's exec with each plugin started from a thread that
// has entered a mount namespace: a process starts in its parent thread's
// namespaces, so the plugin pays no extra exec (nsenter) for it.
type mountNSExec struct {
	*invoke.DefaultExec
	mntNS func() string
}

func (e *mountNSExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	// The caller's thread is in the node's network namespace (ns.Do).
	netNS, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, err
	}
	defer netNS.Close()
	mntNS, err := os.Open(e.mntNS())
	if err != nil {
		return nil, fmt.Errorf("the node's mount namespace: %w", err)
	}
	defer mntNS.Close()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread leaves with the goroutine, and its
		// namespaces with it. Entering a mount namespace needs a thread
		// that shares no file system state with the others.
		runtime.LockOSThread()
		for _, step := range []func() error{
			func() error { return unix.Unshare(unix.CLONE_FS) },
			func() error { return unix.Setns(int(mntNS.Fd()), unix.CLONE_NEWNS) },
			func() error { return unix.Setns(int(netNS.Fd()), unix.CLONE_NEWNET) },
		} {
			if err := step(); err != nil {
				done <- result{err: fmt.Errorf("enter the node's namespaces: %w", err)}
				return
			}
		}
		out, err := e.DefaultExec.ExecPlugin(ctx, path, stdin, environ)
		done <- result{out, err}
	}()
	r := <-done
	return r.out, r.err
}

// addAsKubelet runs ADD as kubelet creates a sandbox: a failed ADD is
// cleaned up with DEL and tried again. The peer answers "failed to assign an
// IP address" (no retry code) while ipamd is still attaching an ENI.
func addAsKubelet(pd *pod, l *libcni.NetworkConfigList, within time.Duration) error {
	return retryADD(pd, l, time.Second, within, anyError).err
}

// waitReady waits for what the DaemonSet's readiness probe and the
// entrypoint wait for (gRPC health on ipamd.sock) and for introspection.
func (p *peerNode) waitReady(t testing.TB, within time.Duration) {
	t.Helper()
	waitFor(t, within, "ipamd on "+p.name, p.currentAgent().running, p.serving)
}

// waitServing is waitReady returning what went wrong; ipamd may exit and
// be restarted meanwhile.
func (p *peerNode) waitServing(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := p.serving()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ipamd on %s not serving after %v (%d exits): %w", p.name, within, p.exits(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// serving: ipamd answers gRPC health SERVING and introspection.
func (p *peerNode) serving() error {
	if err := p.health(); err != nil {
		return err
	}
	_, err := httpGetIn(p.node, "127.0.0.1:61679", "/v1/enis")
	return err
}

// health is ipamd's gRPC health on its socket: the readiness probe's check,
// and what the entrypoint waits for before it writes the conflist.
func (p *peerNode) health() error {
	sock := filepath.Join(p.dir, "run", "ipamd.sock")
	if _, err := os.Stat(sock); err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if r.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health: %v", r.Status)
	}
	return nil
}

// stop ends ipamd as kubelet stops its container for good (SIGTERM, then
// SIGKILL): it is not started again.
func (p *peerNode) stop() {
	p.mu.Lock()
	p.closed = true
	a := p.agent
	p.mu.Unlock()
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		a.kill9()
		<-a.exited
	}
}

// peerENIs is ipamd's own view of network card 0 (introspection /v1/enis,
// keyed by card).
type peerENIs struct {
	TotalIPs, AssignedIPs int
	ENIs                  map[string]json.RawMessage
}

func (p *peerNode) enis(t testing.TB) peerENIs {
	t.Helper()
	body, err := httpGetIn(p.node, "127.0.0.1:61679", "/v1/enis")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]peerENIs
	if err := json.Unmarshal([]byte(body[strings.Index(body, "{"):]), &v); err != nil {
		t.Fatalf("introspection /v1/enis: %v: %s", err, body)
	}
	return v["0"]
}

// installPeerObjects makes the API objects the peer reads: its CRDs
// (ENIConfig from its chart, CNINode from the resource controller's module
// it builds against), each Node as kubelet registers it (with the pod
// capacity ipamd takes maxPods from), and each node's aws-node Pod, which
// ipamd looks up to attach its events to.
func installPeerObjects(t testing.TB, k *kube, nodes ...*node) {
	t.Helper()
	installPeerCRDs(t, k)
	for _, n := range nodes {
		registerPeerNode(t, k, n)
	}
}

// installPeerCRDs makes the cluster-wide objects: the CRDs and the
// DaemonSet's service account.
func installPeerCRDs(t testing.TB, k *kube) {
	t.Helper()
	crds := []string{
		filepath.Join(awsCNIModule(t, "github.com/aws/amazon-vpc-cni-k8s"), "charts/aws-vpc-cni/crds/customresourcedefinition.yaml"),
		filepath.Join(awsCNIModule(t, "github.com/aws/amazon-vpc-resource-controller-k8s"), "config/crd/bases/vpcresources.k8s.aws_cninodes.yaml"),
	}
	for _, f := range crds {
		if _, err := k.kubectl("", "apply", "--server-side", "-f", f); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.kubectl("", "wait", "--for", "condition=established", "--timeout=60s", "crd", "--all"); err != nil {
		t.Fatal(err)
	}
	k.retry(t, 30*time.Second, "", "-n", "kube-system", "create", "serviceaccount", "aws-node")
}

// registerPeerNode makes n's Node (as kubelet registers it) and its
// aws-node Pod.
func registerPeerNode(t testing.TB, k *kube, n *node) {
	t.Helper()
	inet, ok := n.c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
	if !ok {
		t.Fatalf("node %s unknown to EC2", n.name)
	}
	k.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Node
metadata:
  name: %[1]s
  labels: {kubernetes.io/hostname: %[1]s, kubernetes.io/os: linux, node.kubernetes.io/instance-type: %[2]s, topology.kubernetes.io/zone: %[3]s}
spec: {providerID: "aws:///%[3]s/%[4]s"}
---
apiVersion: v1
kind: Pod
metadata: {name: aws-node-%[1]s, namespace: kube-system, labels: {k8s-app: aws-node}}
spec:
  nodeName: %[1]s
  hostNetwork: true
  serviceAccountName: aws-node
  automountServiceAccountToken: false
  containers: [{name: aws-node, image: "amazon-k8s-cni:v1.23.2"}]
`, n.name, inet.InstanceType, inet.AZ, n.vn.InstanceID))
	// The type's max pods as EKS's bootstrap sets kubelet's (its
	// eni-max-pods.txt: ENIs x (addresses per ENI - 1) + 2).
	lim, ok := instancelimits.Lookup(inet.InstanceType)
	if !ok {
		t.Fatalf("no limits for %s", inet.InstanceType)
	}
	maxPods := lim.MaxENIs*(lim.IPv4PerENI-1) + 2
	if _, err := k.kubectl("", "patch", "node", n.name, "--subresource=status", "--type=merge", "-p",
		fmt.Sprintf(`{"status":{"capacity":{"pods":"%[1]d","cpu":"2","memory":"8Gi"},"allocatable":{"pods":"%[1]d","cpu":"2","memory":"8Gi"}}}`, maxPods)); err != nil {
		t.Fatal(err)
	}
}

func TestAWSVPCCNIPeer(t *testing.T) {
	b := peerBinaries(t)
	c := newSimVPC(t, "10.0.0.0/20")
	n1, n2 := c.addNode("m5.large", "peer-1"), c.addNode("m5.large", "peer-2")
	// The API server on node 1's primary address: node 2 reaches it
	// through the VPC, as nodes reach EKS's endpoint.
	api := primaryIP(t, c, n1)
	k := startControlPlaneWith(t, n1, b.etcd, b.apiserver, b.kubectl, controlPlaneOpts{advertise: api})
	installPeerObjects(t, k, n1, n2)

	start := time.Now()
	p1 := startPeer(t, b, k, k.remoteServer, n1)
	p2 := startPeer(t, b, k, k.remoteServer, n2)
	p1.waitReady(t, 90*time.Second)
	p2.waitReady(t, 90*time.Second)
	t.Logf("ipamd ready on both nodes after %v", time.Since(start).Round(time.Millisecond))

	// 12 pods on node 1: more than the 9 secondary addresses an m5.large
	// ENI holds, so ipamd must attach a second ENI for them.
	var pods []*pod
	for i := range 12 {
		pd := p1.newPod(fmt.Sprintf("web-%d", i))
		if err := addAsKubelet(pd, p1.conf, 60*time.Second); err != nil {
			t.Fatalf("ADD %s: %v", pd.name, err)
		}
		pods = append(pods, pd)
	}
	remote := p2.newPod("remote")
	if err := addAsKubelet(remote, p2.conf, 60*time.Second); err != nil {
		t.Fatalf("ADD %s: %v", remote.name, err)
	}

	// Every address is one EC2 lists on the node's ENIs (a secondary
	// address, never an ENI's primary), each pod its own.
	onENI := map[netip.Addr]vpcsim.ENIView{}
	inet, _ := c.sim.Cloud.InstanceNetwork(n1.vn.InstanceID)
	for _, e := range inet.ENIs {
		for _, a := range e.Secondary {
			onENI[a] = e
		}
	}
	seen := map[netip.Addr]string{}
	eniOf := map[string][]*pod{}
	for _, pd := range pods {
		e, ok := onENI[pd.ip]
		if !ok {
			t.Fatalf("pod %s got %s, which EC2 does not list on %s's ENIs", pd.name, pd.ip, n1.name)
		}
		if other, dup := seen[pd.ip]; dup {
			t.Fatalf("pods %s and %s both got %s", other, pd.name, pd.ip)
		}
		seen[pd.ip] = pd.name
		eniOf[e.ID] = append(eniOf[e.ID], pd)
	}
	if len(inet.ENIs) < 2 || len(eniOf) < 2 {
		t.Fatalf("node %s has %d ENIs, pods on %d: want a second ENI in use", n1.name, len(inet.ENIs), len(eniOf))
	}
	// ipamd's view agrees with EC2's: the same ENIs, the pods' addresses
	// assigned.
	view := p1.enis(t)
	for _, e := range inet.ENIs {
		if _, ok := view.ENIs[e.ID]; !ok {
			t.Errorf("ipamd does not list %s's ENI %s: %v", n1.name, e.ID, slices.Collect(maps.Keys(view.ENIs)))
		}
	}
	if len(view.ENIs) != len(inet.ENIs) || view.AssignedIPs != len(pods) {
		t.Fatalf("ipamd: %d ENIs, %d of %d addresses assigned; EC2: %d ENIs; %d pods", len(view.ENIs), view.AssignedIPs,
			view.TotalIPs, len(inet.ENIs), len(pods))
	}
	t.Logf("node %s: %d ENIs, pods on %d; ipamd holds %d addresses, %d assigned", n1.name, len(inet.ENIs), len(eniOf),
		view.TotalIPs, view.AssignedIPs)

	// One pod on the primary ENI and one on another.
	var prim, sec *pod
	for id, ps := range eniOf {
		if slices.ContainsFunc(inet.ENIs, func(e vpcsim.ENIView) bool { return e.ID == id && e.DeviceIndex == 0 }) {
			prim = ps[0]
		} else {
			sec = ps[0]
		}
	}
	if prim == nil || sec == nil {
		t.Fatalf("want pods on the primary ENI and on another: %v", eniOf)
	}

	// Across nodes, pod to pod, both ways, with the pods' own addresses.
	echoServer(t, remote.doIn, netip.AddrPortFrom(remote.ip, 8080), "remote")
	for _, pd := range []*pod{prim, sec} {
		echoServer(t, pd.doIn, netip.AddrPortFrom(pd.ip, 8080), pd.name)
		out, err := dialEcho(pd.doIn, netip.AddrPortFrom(remote.ip, 8080))
		if err != nil || !strings.HasPrefix(out, "remote "+pd.ip.String()+":") {
			t.Fatalf("%s (%s) to the pod on %s: %q, %v", pd.name, pd.ip, n2.name, out, err)
		}
		out, err = dialEcho(remote.doIn, netip.AddrPortFrom(pd.ip, 8080))
		if err != nil || !strings.HasPrefix(out, pd.name+" "+remote.ip.String()+":") {
			t.Fatalf("the pod on %s to %s (%s): %q, %v", n2.name, pd.name, pd.ip, out, err)
		}
	}

	// To the internet through the peer's SNAT: the internet host sees the
	// node's primary address, from either ENI's pods.
	internet := netip.MustParseAddrPort(dataplane.OutsideAddr + ":80")
	echoServer(t, c.sim.Fabric.DoInOutside, internet, "outside")
	nodeIP := inet.PrimaryIP
	for _, pd := range []*pod{prim, sec} {
		out, err := dialEcho(pd.doIn, internet)
		if err != nil || !strings.HasPrefix(out, "outside "+nodeIP.String()+":") {
			t.Fatalf("%s (%s) to the internet: %q, %v (want SNAT to %s)", pd.name, pd.ip, out, err, nodeIP)
		}
	}

	// The ENIs ipamd created carry its description and ownership tags.
	for _, e := range inet.ENIs {
		if e.DeviceIndex == 0 {
			continue
		}
		if e.Tags["node.k8s.amazonaws.com/instance_id"] != n1.vn.InstanceID || e.Tags["cluster.k8s.amazonaws.com/name"] != "peer" {
			t.Errorf("ENI %s of %s: tags %v", e.ID, n1.name, e.Tags)
		}
	}

	// DEL gives every address back to ipamd.
	for _, pd := range append(pods, remote) {
		if err := pd.del(p1.conf); err != nil {
			t.Fatalf("DEL %s: %v", pd.name, err)
		}
	}

	// With no pods, the primary ENI alone meets WARM_ENI_TARGET=1: once the
	// addresses' cool-down (30 s) and the ENIs' minimum life (1 min) are
	// over, ipamd detaches and deletes the others.
	var extra []string
	for _, e := range inet.ENIs {
		if e.DeviceIndex != 0 {
			extra = append(extra, e.ID)
		}
	}
	waitFor(t, 4*time.Minute, "ipamd to free "+strings.Join(extra, ", "), p1.agent.running, func() error {
		for _, id := range extra {
			if e, ok := c.sim.Cloud.ENI(id); ok {
				return fmt.Errorf("ENI %s still exists (%s, instance %q)", id, e.Status, e.InstanceID)
			}
		}
		return nil
	})
	if view := p1.enis(t); len(view.ENIs) != 1 || view.AssignedIPs != 0 {
		t.Fatalf("ipamd after the pods left: %d ENIs, %d addresses assigned", len(view.ENIs), view.AssignedIPs)
	}
	t.Logf("ipamd freed %d ENIs after the pods left", len(extra))
}

// TestAWSVPCCNIPeerPrefixes runs the peer in prefix delegation mode (an
// m5.large is Nitro): ipamd asks EC2 for /28 prefixes and hands out their
// addresses, which must lie in the prefixes EC2 lists on the node's ENIs.
func TestAWSVPCCNIPeerPrefixes(t *testing.T) {
	b := peerBinaries(t)
	c := newSimVPC(t, "10.0.0.0/20")
	n := c.addNode("m5.large", "peer-pd")
	k := startControlPlane(t, n, b.etcd, b.apiserver, b.kubectl)
	installPeerObjects(t, k, n)
	p := startPeer(t, b, k, k.server, n, "ENABLE_PREFIX_DELEGATION=true")
	p.waitReady(t, 90*time.Second)

	var pods []*pod
	for i := range 20 {
		pd := p.newPod(fmt.Sprintf("pd-%d", i))
		if err := addAsKubelet(pd, p.conf, 60*time.Second); err != nil {
			t.Fatalf("ADD %s: %v", pd.name, err)
		}
		pods = append(pods, pd)
	}
	inet, _ := c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
	var prefixes []netip.Prefix
	for _, e := range inet.ENIs {
		prefixes = append(prefixes, e.Prefixes...)
	}
	if len(prefixes) < 2 {
		t.Fatalf("EC2 lists %d prefixes on %s's ENIs, want at least 2 for 20 pods: %v", len(prefixes), n.name, inet.ENIs)
	}
	for _, pd := range pods {
		if !slices.ContainsFunc(prefixes, func(pf netip.Prefix) bool { return pf.Bits() == 28 && pf.Contains(pd.ip) }) {
			t.Fatalf("pod %s got %s, in none of the /28 prefixes EC2 lists: %v", pd.name, pd.ip, prefixes)
		}
	}
	internet := netip.MustParseAddrPort(dataplane.OutsideAddr + ":80")
	echoServer(t, c.sim.Fabric.DoInOutside, internet, "outside")
	if out, err := dialEcho(pods[len(pods)-1].doIn, internet); err != nil || !strings.HasPrefix(out, "outside "+inet.PrimaryIP.String()+":") {
		t.Fatalf("a pod to the internet: %q, %v", out, err)
	}
	t.Logf("20 pods on %d /28 prefixes: %v", len(prefixes), prefixes)
	for _, pd := range pods {
		if err := pd.del(p.conf); err != nil {
			t.Fatalf("DEL %s: %v", pd.name, err)
		}
	}
}
