package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
	"github.com/vpcchain/vpcchain/sim/vpcsim/dataplane"
)

// binDir is where `make build` put the binaries (VPCCHAIN_BIN), else ../../bin.
func binDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("VPCCHAIN_BIN")
	if dir == "" {
		dir, _ = filepath.Abs("../../bin")
	}
	for _, b := range []string{"vpcchaind", "vpc-ipam", "vpc-bridge", "vpc-snat"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("binary %s missing in %s: run `make build` (or `make test`)", b, dir)
		}
	}
	return dir
}

// cluster is a VPC simulator with nodes, each running the real daemon inside
// its namespace, and a CNI runtime (libcni) that runs the real plugins there.
type cluster struct {
	t      testing.TB
	sim    *vpcsim.Sim
	bin    string
	dir    string
	vpc    string
	subnet string
	nodes  map[string]*node
	// nodeIPv6s is the IPv6 address count of nodes launched from now on
	// (their subnet needs an IPv6 block).
	nodeIPv6s int
}

type node struct {
	c       *cluster
	name    string
	vn      vpcsim.Node
	state   string
	socket  string
	env     []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	plugins *os.File
	// readOnlyProcSys starts the daemon as an unprivileged container runs:
	// /proc/sys read-only (in a mount namespace of its own).
	readOnlyProcSys bool
}

// newCluster starts a simulator (VPC 10.0.0.0/16, one /20 subnet) and nodes
// of instance type typ, each with the daemon started with env.
func newCluster(t testing.TB, typ string, names []string, env ...string) *cluster {
	t.Helper()
	return newClusterInSubnet(t, "10.0.0.0/20", typ, names, env...)
}

// newClusterInSubnet is newCluster with the nodes' subnet given.
func newClusterInSubnet(t testing.TB, subnet, typ string, names []string, env ...string) *cluster {
	t.Helper()
	c := newSimVPC(t, subnet)
	for _, name := range names {
		n := c.addNode(typ, name, env...)
		n.start()
		t.Cleanup(n.stop)
	}
	for _, n := range c.nodes {
		n.waitReady()
	}
	return c
}

// newBareCluster is a simulator with nodes whose daemons nobody starts: the
// cluster tier installs them as the DaemonSet does.
func newBareCluster(t testing.TB, typ string, names []string) *cluster {
	t.Helper()
	c := newSimVPC(t, "10.0.0.0/20")
	for _, name := range names {
		c.addNode(typ, name)
	}
	return c
}

// newSimVPC starts a simulator with a data plane and the VPC 10.0.0.0/16
// with one subnet.
func newSimVPC(t testing.TB, subnet string) *cluster {
	t.Helper()
	requireRoot(t)
	c := &cluster{t: t, sim: startSim(t, 0), bin: binDir(t), dir: t.TempDir(), nodes: map[string]*node{}}
	var err error
	if c.vpc, err = c.sim.Cloud.AddVPC("10.0.0.0/16"); err != nil {
		t.Fatal(err)
	}
	if c.subnet, err = c.sim.Cloud.AddSubnet(c.vpc, subnet, "us-west-2a", nil); err != nil {
		t.Fatal(err)
	}
	return c
}

// addNode launches an instance in c's subnet and prepares its daemon's
// environment (plus env, later values win); the caller starts it.
func (c *cluster) addNode(typ, name string, env ...string) *node {
	c.t.Helper()
	return c.addNodeIn(c.subnet, typ, name, env...)
}

// addNodeIn is addNode with the instance's subnet (and so its AZ) given.
func (c *cluster) addNodeIn(subnet, typ, name string, env ...string) *node {
	c.t.Helper()
	vn, err := c.sim.LaunchNode(vpcsim.LaunchSpec{Name: name, InstanceType: typ, SubnetID: subnet, IPv6AddressCount: c.nodeIPv6s})
	if err != nil {
		c.t.Fatal(err)
	}
	n := &node{c: c, name: name, vn: vn, state: filepath.Join(c.dir, name)}
	n.socket = filepath.Join(n.state, "ipamd.sock")
	n.logPath = filepath.Join(c.dir, name+".log")
	n.env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"AWS_ACCESS_KEY_ID=AKIDE2E", "AWS_SECRET_ACCESS_KEY=secret", "AWS_REGION=us-west-2",
		"AWS_ENDPOINT_URL_EC2=" + vn.EC2Endpoint,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + vn.IMDSEndpoint,
		"VPCCHAIN_STATE_DIR=" + n.state,
		"VPCCHAIN_SOCKET=" + n.socket,
		"VPCCHAIN_POOL_INTERVAL=200ms",
		"VPCCHAIN_RECONCILE_INTERVAL=2s",
		"DISABLE_LEAKED_ENI_CLEANUP=true",
		// Pods here come from libcni, not from a container runtime: no
		// runtime's sandbox list says whether they live (the real-node
		// test points the daemon at its containerd instead).
		"VPCCHAIN_CRI_SOCKET=none",
	}, env...)
	c.nodes[name] = n
	return n
}

// inNode is a command run on a node as software of the host runs there:
// `ip netns exec` into its network namespace (which also gives it a /sys of
// that namespace), then nsenter into its UTS namespace (its hostname).
func inNode(vn vpcsim.Node, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", vn.NetNS, "nsenter", "--uts=" + vn.UTSNSPath, "--"}, args...)...)
}

// start runs the daemon inside the node's namespace, as the DaemonSet would
// (host network of the node).
func (n *node) start() {
	n.c.t.Helper()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.c.t.Fatal(err)
	}
	args := []string{filepath.Join(n.c.bin, "vpcchaind")}
	if n.readOnlyProcSys {
		// Each exec keeps the PID: signals still reach the daemon.
		args = append([]string{"unshare", "--mount", "--propagation", "slave", "sh", "-c",
			`mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"`, "sh"}, args...)
	}
	cmd := inNode(n.vn, args...)
	cmd.Env = n.env
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		n.c.t.Fatal(err)
	}
	unregister := onInterrupt(func() { _ = cmd.Process.Kill() })
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); unregister(); logf.Close(); close(exited) }()
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
}

// setupNode runs the DaemonSet's privileged init step in the node's
// namespace: vpcchaind --setup-node, with a writable /proc/sys.
func (n *node) setupNode() {
	n.c.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.vn.NetNS, filepath.Join(n.c.bin, "vpcchaind"), "--setup-node")
	cmd.Env = n.env
	if out, err := cmd.CombinedOutput(); err != nil {
		n.c.t.Fatalf("vpcchaind --setup-node on %s: %v\n%s", n.name, err, out)
	}
}

func (n *node) stop() {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	if n.c.t.Failed() || os.Getenv("VPCCHAIN_E2E_LOGS") != "" {
		log, _ := os.ReadFile(n.logPath)
		n.c.t.Logf("daemon log of %s:\n%s", n.name, tail(string(log), 60))
	}
}

// restart stops the daemon and starts it again with extra environment
// (later values win).
func (n *node) restart(env ...string) {
	n.c.t.Helper()
	n.stop()
	n.env = append(n.env, env...)
	n.start()
	n.waitReady()
}

// kill9 kills the daemon the hard way.
func (n *node) kill9() {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.cmd = nil
	n.mu.Unlock()
	_ = cmd.Process.Kill()
	<-exited
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func (n *node) client() *ipamclient.Client {
	n.c.t.Helper()
	cl, err := ipamclient.Dial(context.Background(), n.socket)
	if err != nil {
		n.c.t.Fatal(err)
	}
	return cl
}

// waitReady waits until the daemon serves and has addresses to give.
func (n *node) waitReady() {
	n.c.t.Helper()
	if err := n.pollReady(); err != nil {
		n.c.t.Fatal(err)
	}
}

// pollReady is waitReady returning what went wrong.
func (n *node) pollReady() error {
	return n.pollStatus(90*time.Second, 100*time.Millisecond, "not ready", func(st *ipamv1.StatusReply) error {
		if !st.Ready {
			return errors.New(st.Reason)
		}
		return nil
	})
}

// waitStatus polls the daemon's Status every poll until done accepts it,
// failing the test (with the daemon's log) if the daemon exits or within
// passes.
func (n *node) waitStatus(within, poll time.Duration, what string, done func(*ipamv1.StatusReply) error) {
	n.c.t.Helper()
	if err := n.pollStatus(within, poll, what, done); err != nil {
		n.c.t.Fatal(err)
	}
}

// pollStatus is waitStatus returning what went wrong, for callers off the
// test's goroutine.
func (n *node) pollStatus(within, poll time.Duration, what string, done func(*ipamv1.StatusReply) error) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		n.mu.Lock()
		exited := n.exited
		n.mu.Unlock()
		select {
		case <-exited:
			log, _ := os.ReadFile(n.logPath)
			return fmt.Errorf("daemon of %s exited:\n%s", n.name, tail(string(log), 40))
		default:
		}
		last = func() error {
			st, err := n.status()
			if err != nil {
				return err
			}
			return done(st)
		}()
		if last == nil {
			return nil
		}
		time.Sleep(poll)
	}
	log, _ := os.ReadFile(n.logPath)
	return fmt.Errorf("daemon of %s %s: %v\n%s", n.name, what, last, tail(string(log), 40))
}

// status is the daemon's answer to Status on its socket.
func (n *node) status() (*ipamv1.StatusReply, error) {
	cl, err := ipamclient.Dial(context.Background(), n.socket)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return cl.Status(ctx)
}

func (n *node) introspect() *ipamv1.IntrospectReply {
	n.c.t.Helper()
	cl := n.client()
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := cl.Introspect(ctx)
	if err != nil {
		n.c.t.Fatalf("introspect %s: %v", n.name, err)
	}
	return r
}

// do runs f inside the node's namespace: a runtime on the node.
func (n *node) do(f func() error) error { return n.c.sim.Fabric.DoInNode(n.name, f) }

// chain is the .conflist under test: vpc-bridge with vpc-ipam, then any
// chained plugins.
func (n *node) chain(extraIPAM map[string]any, chained ...map[string]any) *libcni.NetworkConfigList {
	n.c.t.Helper()
	ipam := map[string]any{"type": "vpc-ipam", "socket": n.socket}
	for k, v := range extraIPAM {
		ipam[k] = v
	}
	plugins := []any{map[string]any{"type": "vpc-bridge", "mtu": 9001, "ipam": ipam}}
	for _, p := range chained {
		plugins = append(plugins, p)
	}
	raw, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "vpcchain", "plugins": plugins})
	l, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		n.c.t.Fatal(err)
	}
	return l
}

// snatConf is vpc-snat's entry in the chain, for this node's daemon.
func (n *node) snatConf() map[string]any {
	return map[string]any{"type": "vpc-snat", "nodeConfig": n.state + "/snat.json"}
}

// cni is the runtime's libcni; plugin stderr goes to the node's log, not the
// test output.
func (n *node) cni() *libcni.CNIConfig {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: n.pluginLog()}, PluginDecoder: version.PluginDecoder{}}
	return libcni.NewCNIConfigWithCacheDir([]string{n.c.bin}, filepath.Join(n.state, "cni-cache"), exec)
}

func (n *node) pluginLog() io.Writer {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.plugins == nil {
		f, err := os.OpenFile(filepath.Join(n.c.dir, n.name+"-plugins.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return os.Stderr
		}
		n.c.t.Cleanup(func() { f.Close() })
		n.plugins = f
	}
	return n.plugins
}

// pod is a sandbox: its own network namespace.
type pod struct {
	n         *node
	namespace string
	name      string
	id        string
	netns     ns.NetNS
	ip        netip.Addr
	result    *types100.Result // of the last successful ADD

	// Optional runtime overrides: another plugin path (e.g. with the
	// upstream plugins) and the capability args kubelet would pass.
	cni  *libcni.CNIConfig
	caps map[string]any

	// gone: the sandbox's network namespace no longer exists (the node
	// rebooted); the runtime's DEL then passes no netns, as containerd does.
	gone bool
	// closeEcho stops the pod's echo server, if it runs one (its sockets
	// would keep a gone sandbox's namespace alive).
	closeEcho func()
}

func (n *node) newPod(namespace, name string) *pod {
	n.c.t.Helper()
	return &pod{n: n, namespace: namespace, name: name, id: "ctr-" + name + "-" + vpcsim.RandomRunID(), netns: newNetNS(n.c.t)}
}

// newNetNS makes a network namespace removed when the test ends or is
// interrupted.
func newNetNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	unregister := onInterrupt(func() { _ = testutils.UnmountNS(n) })
	t.Cleanup(func() { unregister(); _ = n.Close(); _ = testutils.UnmountNS(n) })
	return n
}

func (p *pod) rt() *libcni.RuntimeConf {
	netns := p.netns.Path()
	if p.gone {
		netns = ""
	}
	return &libcni.RuntimeConf{ContainerID: p.id, NetNS: netns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.namespace}, {"K8S_POD_NAME", p.name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.id}}, CapabilityArgs: p.caps}
}

// runtime is the libcni the pod's node runs, unless the pod overrides it.
func (p *pod) runtime() *libcni.CNIConfig {
	if p.cni != nil {
		return p.cni
	}
	return p.n.cni()
}

// add runs ADD once.
func (p *pod) add(l *libcni.NetworkConfigList) (*types100.Result, error) {
	var res types.Result
	err := p.n.do(func() error {
		var err error
		res, err = p.runtime().AddNetworkList(context.Background(), l, p.rt())
		return err
	})
	if err != nil {
		return nil, err
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, err
	}
	if len(r.IPs) != 1 {
		return nil, fmt.Errorf("result has %d IPs", len(r.IPs))
	}
	ip := r.IPs[0].Address.IP
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	p.ip, _ = netip.AddrFromSlice(ip)
	p.result = r
	return r, nil
}

// addRetrying behaves like kubelet: an ADD that fails with "try again later"
// is cleaned up with DEL and retried.
func (p *pod) addRetrying(l *libcni.NetworkConfigList, within time.Duration) error {
	return retryADD(p, l, 200*time.Millisecond, within, isTryAgain).err
}

// retryADD runs ADD until it succeeds, as a runtime retries a sandbox: an
// ADD whose error retry accepts is cleaned up with DEL and tried again
// after pause, for at most within. The error is the last ADD's, or the DEL's.
func retryADD(p *pod, l *libcni.NetworkConfigList, pause, within time.Duration, retry func(error) bool) burstPod {
	start := time.Now()
	for attempts := 1; ; attempts++ {
		_, err := p.add(l)
		if err == nil {
			return burstPod{wait: time.Since(start), attempts: attempts}
		}
		if !retry(err) || time.Since(start) > within {
			return burstPod{wait: time.Since(start), attempts: attempts, err: err}
		}
		if derr := p.del(l); derr != nil {
			return burstPod{wait: time.Since(start), attempts: attempts, err: fmt.Errorf("DEL after failed ADD: %w", derr)}
		}
		time.Sleep(pause)
	}
}

// isTryAgain: the plugin answered CNI code 11, try again later.
func isTryAgain(err error) bool {
	var ce *types.Error
	return errors.As(err, &ce) && ce.Code == types.ErrTryAgainLater
}

func (p *pod) del(l *libcni.NetworkConfigList) error {
	return p.n.do(func() error { return p.runtime().DelNetworkList(context.Background(), l, p.rt()) })
}

func (p *pod) check(l *libcni.NetworkConfigList) error {
	return p.n.do(func() error { return p.runtime().CheckNetworkList(context.Background(), l, p.rt()) })
}

// echoServer answers every connection with the server's name; connections
// are accepted in the namespace the listener was created in.
func echoServer(t testing.TB, doIn func(func() error) error, a netip.AddrPort, name string) {
	t.Helper()
	stop, err := startEcho(doIn, a, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
}

// startEcho is echoServer returning its error and what stops it.
func startEcho(doIn func(func() error) error, a netip.AddrPort, name string) (stop func(), err error) {
	var ln net.Listener
	if err := doIn(func() error {
		var err error
		ln, err = net.Listen("tcp", a.String())
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen %s in %s: %w", a, name, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
			}()
		}
	}()
	return func() { ln.Close() }, nil
}

// dialEcho opens a TCP connection from inside a namespace and returns what
// the server said (its name and the source address it saw).
func dialEcho(doIn func(func() error) error, dst netip.AddrPort) (string, error) {
	var out string
	err := doIn(func() error {
		c, err := net.DialTimeout("tcp", dst.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		out = strings.TrimSpace(string(b))
		return err
	})
	return out, err
}

func (p *pod) doIn(f func() error) error { return p.netns.Do(func(ns.NetNS) error { return f() }) }

// primaryIP is the node's primary address, as EC2 has it.
func primaryIP(t testing.TB, c *cluster, n *node) netip.Addr {
	t.Helper()
	inet, ok := c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
	if !ok {
		t.Fatalf("node %s unknown to EC2", n.name)
	}
	return inet.PrimaryIP
}

// defaultGroup is the VPC's default security group (the nodes' unless a
// test says otherwise).
func (c *cluster) defaultGroup() string {
	c.t.Helper()
	for _, g := range c.sim.Cloud.SecurityGroups() {
		if g.VPCID == c.vpc && g.Name == "default" {
			return g.ID
		}
	}
	c.t.Fatalf("VPC %s has no default security group", c.vpc)
	return ""
}

// allowFromInternet opens a TCP port of the nodes' security group to the
// simulated internet, as a user opens a NodePort or hostPort in EC2 (the
// default group admits only its own members).
func (c *cluster) allowFromInternet(port int) {
	c.t.Helper()
	if aerr := c.sim.Cloud.AuthorizeIngress(c.defaultGroup(), []vpcsim.Permission{{Protocol: "tcp", FromPort: port, ToPort: port,
		CIDRs: []netip.Prefix{netip.MustParsePrefix(dataplane.OutsideAddr + "/32")}}}); aerr != nil {
		c.t.Fatal(aerr)
	}
}
