package main

// Test harness for the integration tests (integration_test.go). Everything
// happens inside network namespaces the tests create: a "host" netns that
// stands for the node, and "pod" netns per pod. The root network namespace is
// never changed. Namespaces are removed by t.Cleanup, and by a signal handler
// on SIGINT/SIGTERM.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

var (
	// binDir holds the production vpc-bridge, host-local and fakeipam;
	// faultBinDir the same with a -tags vpcbridge_faultinject vpc-bridge.
	binDir, faultBinDir string
	buildErr            error
	isRoot              = os.Geteuid() == 0
)

func TestMain(m *testing.M) {
	var tmp string
	if isRoot {
		var err error
		tmp, err = os.MkdirTemp("", "vpc-bridge-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		binDir = filepath.Join(tmp, "bin")
		faultBinDir = filepath.Join(tmp, "faultbin")
		buildErr = buildBinaries(tmp)
	}
	stopSignals := cleanupOnSignal()
	code := m.Run()
	stopSignals()
	cleanupAllNamespaces()
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	os.Exit(code)
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

func goBuild(dir string, args ...string) error {
	cmd := exec.Command(goTool(), append([]string{"build"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func buildBinaries(tmp string) error {
	for _, d := range []string{binDir, faultBinDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := goBuild(".", "-o", filepath.Join(binDir, "vpc-bridge"), "."); err != nil {
		return err
	}
	if err := goBuild(".", "-tags", "vpcbridge_faultinject", "-o", filepath.Join(faultBinDir, "vpc-bridge"), "."); err != nil {
		return err
	}
	if err := goBuild(".", "-o", filepath.Join(binDir, "fakeipam"), "./testdata/fakeipam"); err != nil {
		return err
	}
	// The upstream host-local IPAM at the version go.mod pins. If the
	// module's go.sum lacks the checksums of host-local's own dependencies,
	// build with a scratch copy of go.mod/go.sum so the tree is not touched.
	const hostLocal = "github.com/containernetworking/plugins/plugins/ipam/host-local"
	if err := goBuild(".", "-o", filepath.Join(binDir, "host-local"), hostLocal); err != nil {
		if !strings.Contains(err.Error(), "missing go.sum entry") {
			return err
		}
		modDir := filepath.Join(tmp, "mod")
		if err := os.MkdirAll(modDir, 0o755); err != nil {
			return err
		}
		root := moduleRoot()
		for _, f := range []string{"go.mod", "go.sum"} {
			data, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(modDir, f), data, 0o644); err != nil {
				return err
			}
		}
		if err := goBuild(".", "-modfile="+filepath.Join(modDir, "go.mod"), "-mod=mod", "-o", filepath.Join(binDir, "host-local"), hostLocal); err != nil {
			return err
		}
	}
	for _, b := range []string{"host-local", "fakeipam"} {
		data, err := os.ReadFile(filepath.Join(binDir, b))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(faultBinDir, b), data, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func moduleRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

func requireRoot(t *testing.T) {
	t.Helper()
	if !isRoot {
		t.Skip("integration test needs root (network namespaces)")
	}
	if buildErr != nil {
		t.Fatalf("building test binaries: %v", buildErr)
	}
}

// ---- namespaces ----

var (
	nsMu      sync.Mutex
	liveNS    = map[string]ns.NetNS{}
	nsRemoved sync.Once
)

func registerNS(n ns.NetNS) {
	nsMu.Lock()
	liveNS[n.Path()] = n
	nsMu.Unlock()
}

func removeNS(n ns.NetNS) {
	nsMu.Lock()
	_, live := liveNS[n.Path()]
	delete(liveNS, n.Path())
	nsMu.Unlock()
	if !live {
		return
	}
	_ = n.Close()
	_ = testutils.UnmountNS(n)
}

func cleanupAllNamespaces() {
	nsMu.Lock()
	all := make([]ns.NetNS, 0, len(liveNS))
	for _, n := range liveNS {
		all = append(all, n)
	}
	nsMu.Unlock()
	for _, n := range all {
		removeNS(n)
	}
}

func cleanupOnSignal() (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			fmt.Fprintf(os.Stderr, "vpc-bridge tests: %v: removing test namespaces\n", s)
			cleanupAllNamespaces()
			os.Exit(2)
		case <-done:
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}

// newNS creates a uniquely named netns (cnitest-<random>) with lo up, removed
// when the test ends.
func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	registerNS(n)
	t.Cleanup(func() { removeNS(n) })
	if err := n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		t.Fatalf("set lo up: %v", err)
	}
	return n
}

// ---- the test host ----

// nodeIP is the test host's own address (stands for the primary ENI's).
var nodeIP = net.IPv4(10, 99, 0, 1).To4()

type host struct {
	t        *testing.T
	ns       ns.NetNS
	binDir   string
	cacheDir string
	dataDir  string // host-local's data dir
	stateDir string // fakeipam's state dir
	baseline snapshot
}

func newHost(t *testing.T) *host {
	return newHostWithBin(t, binDir)
}

func newHostWithBin(t *testing.T, bin string) *host {
	t.Helper()
	requireRoot(t)
	h := &host{t: t, ns: newNS(t), binDir: bin, cacheDir: t.TempDir(), dataDir: t.TempDir(), stateDir: t.TempDir()}
	h.do(func() error {
		// The node's own address (the kernel here has no dummy driver, so it
		// sits on lo); it is the source of host->pod traffic and ARP.
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP, Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		// Inside the test host netns only.
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	h.baseline = h.snapshot()
	return h
}

// do runs f inside the host netns.
func (h *host) do(f func() error) {
	h.t.Helper()
	if err := h.ns.Do(func(ns.NetNS) error { return f() }); err != nil {
		h.t.Fatalf("in host netns: %v", err)
	}
}

type snapshot struct {
	links, addrs, routes, rules, neighs []string
}

func (s snapshot) String() string {
	return fmt.Sprintf("links: %v\naddrs: %v\nroutes: %v\nrules: %v", s.links, s.addrs, s.routes, s.rules)
}

func takeSnapshot() (snapshot, error) {
	var s snapshot
	links, err := netlink.LinkList()
	if err != nil {
		return s, err
	}
	for _, l := range links {
		s.links = append(s.links, l.Attrs().Name)
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return s, err
		}
		for _, a := range addrs {
			s.addrs = append(s.addrs, l.Attrs().Name+" "+a.IPNet.String())
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return s, err
	}
	for _, r := range routes {
		s.routes = append(s.routes, fmt.Sprintf("%v table %d dev %d scope %d gw %v", r.Dst, r.Table, r.LinkIndex, r.Scope, r.Gw))
	}
	rules, err := netlink.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return s, err
	}
	for _, r := range rules {
		s.rules = append(s.rules, r.String())
	}
	for _, x := range [][]string{s.links, s.addrs, s.routes, s.rules} {
		sort.Strings(x)
	}
	return s, nil
}

func (h *host) snapshot() snapshot {
	h.t.Helper()
	var s snapshot
	h.do(func() error {
		var err error
		s, err = takeSnapshot()
		return err
	})
	return s
}

// assertClean fails unless the host netns is back to its state before any
// plugin ran: no veth, no route, no rule left behind.
func (h *host) assertClean(what string) {
	h.t.Helper()
	var now snapshot
	// The kernel destroys a deleted netns (and its veth) asynchronously.
	deadline := time.Now().Add(5 * time.Second)
	for {
		now = h.snapshot()
		if now.String() == h.baseline.String() || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if now.String() != h.baseline.String() {
		h.t.Errorf("%s: host netns not clean.\nwant:\n%s\ngot:\n%s", what, h.baseline, now)
	}
}

// ---- running the plugin ----

type pod struct {
	ns          ns.NetNS
	namespace   string
	name        string
	containerID string
	ifName      string
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (h *host) newPod(namespace, name string) *pod {
	return &pod{ns: newNS(h.t), namespace: namespace, name: name, containerID: "ctr-" + randHex(8), ifName: "eth0"}
}

func (p *pod) runtimeConf() *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: p.containerID, NetNS: p.ns.Path(), IfName: p.ifName}
	if p.namespace != "" {
		rt.Args = [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.namespace},
			{"K8S_POD_NAME", p.name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.containerID},
		}
	}
	return rt
}

func (p *pod) do(t *testing.T, f func() error) {
	t.Helper()
	if err := p.ns.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatalf("in pod netns: %v", err)
	}
}

// conflist renders a one-plugin chain {vpc-bridge + ipam}.
func conflist(t *testing.T, extra map[string]any, ipam map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	plugin := map[string]any{"type": "vpc-bridge", "ipam": ipam}
	for k, v := range extra {
		plugin[k] = v
	}
	data, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "vpctest", "plugins": []any{plugin}})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		t.Fatalf("conflist: %v", err)
	}
	return list
}

func (h *host) hostLocal(subnet string) map[string]any {
	return map[string]any{"type": "host-local", "dataDir": h.dataDir, "ranges": []any{[]any{map[string]any{"subnet": subnet}}}}
}

func (h *host) fakeIPAM(ips []string, ext map[string]any, fail map[string]any) map[string]any {
	m := map[string]any{"type": "fakeipam", "stateDir": h.stateDir, "ips": ips}
	if ext != nil {
		m["ext"] = ext
	}
	if fail != nil {
		m["fail"] = fail
	}
	return m
}

func (h *host) cni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{h.binDir}, h.cacheDir, nil)
}

func (h *host) add(list *libcni.NetworkConfigList, p *pod) (types.Result, error) {
	var res types.Result
	err := h.ns.Do(func(ns.NetNS) error {
		var err error
		res, err = h.cni().AddNetworkList(context.Background(), list, p.runtimeConf())
		return err
	})
	return res, err
}

func (h *host) del(list *libcni.NetworkConfigList, p *pod) error {
	return h.ns.Do(func(ns.NetNS) error {
		return h.cni().DelNetworkList(context.Background(), list, p.runtimeConf())
	})
}

func (h *host) check(list *libcni.NetworkConfigList, p *pod) error {
	return h.ns.Do(func(ns.NetNS) error {
		return h.cni().CheckNetworkList(context.Background(), list, p.runtimeConf())
	})
}

func (h *host) status(list *libcni.NetworkConfigList) error {
	return h.ns.Do(func(ns.NetNS) error {
		return h.cni().GetStatusNetworkList(context.Background(), list)
	})
}

// exec runs the vpc-bridge binary directly the way a runtime does (for inputs
// that libcni itself would refuse), from inside the host netns. It returns
// stdout and the CNI error the plugin printed, if it failed.
func (h *host) exec(env map[string]string, stdin []byte) ([]byte, *types.Error) {
	h.t.Helper()
	var stdout, stderr bytes.Buffer
	var runErr error
	h.do(func() error {
		cmd := exec.Command(filepath.Join(h.binDir, "vpc-bridge"))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CNI_PATH=" + h.binDir}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Stdin = bytes.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		runErr = cmd.Run()
		return nil
	})
	if runErr == nil {
		return stdout.Bytes(), nil
	}
	var ee *exec.ExitError
	if !errors.As(runErr, &ee) {
		h.t.Fatalf("run vpc-bridge: %v", runErr)
	}
	e := &types.Error{}
	if err := json.Unmarshal(stdout.Bytes(), e); err != nil {
		h.t.Fatalf("vpc-bridge failed without CNI error JSON on stdout: %q (stderr %q)", stdout.String(), stderr.String())
	}
	return stdout.Bytes(), e
}

// ---- assertions on state ----

func cniCode(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a CNI error", err, err)
	}
	return e
}

func (h *host) link(name string) netlink.Link {
	h.t.Helper()
	var l netlink.Link
	h.do(func() error {
		var err error
		l, err = netlink.LinkByName(name)
		return err
	})
	return l
}

func (h *host) linkExists(name string) bool {
	exists := false
	h.do(func() error {
		_, err := netlink.LinkByName(name)
		exists = err == nil
		return nil
	})
	return exists
}

func (h *host) rules(ip net.IP) []netlink.Rule {
	h.t.Helper()
	var out []netlink.Rule
	h.do(func() error {
		rules, err := netlink.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if (r.Src != nil && r.Src.IP.Equal(ip)) || (r.Dst != nil && r.Dst.IP.Equal(ip)) {
				out = append(out, r)
			}
		}
		return nil
	})
	return out
}

// ipamAllocations lists host-local's and fakeipam's live allocations.
func (h *host) ipamAllocations() []string {
	h.t.Helper()
	var out []string
	_ = filepath.Walk(h.dataDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && net.ParseIP(fi.Name()) != nil {
			out = append(out, "host-local "+fi.Name())
		}
		return nil
	})
	entries, _ := os.ReadDir(h.stateDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "alloc-") {
			out = append(out, "fakeipam "+e.Name())
		}
	}
	return out
}

func (h *host) fakeCalls() string {
	data, _ := os.ReadFile(filepath.Join(h.stateDir, "calls"))
	return string(data)
}

// ---- traffic ----

// serveTCP listens on addr inside n and answers every connection with reply.
func serveTCP(t *testing.T, n ns.NetNS, addr, reply string) {
	t.Helper()
	var l net.Listener
	if err := n.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 64)
				nr, _ := c.Read(buf)
				_, _ = c.Write([]byte(reply + " " + string(buf[:nr])))
			}()
		}
	}()
}

// dialTCP connects from inside n to addr and returns the reply.
func dialTCP(n ns.NetNS, addr string) (string, error) {
	var reply string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		data, err := io.ReadAll(c)
		reply = string(data)
		return err
	})
	return reply, err
}
