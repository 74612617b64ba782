package scale

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/config"
	"github.com/vpcchain/vpcchain/daemon/hostnet"
	"github.com/vpcchain/vpcchain/daemon/ipamd"
	"github.com/vpcchain/vpcchain/daemon/store"
	"github.com/vpcchain/vpcchain/internal/snat"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// fakeHost stands in for the node's kernel: the scale run measures the
// control plane (daemon, EC2, IMDS); the data plane is covered by e2e.
type fakeHost struct{}

func (fakeHost) SetupNode(net.HardwareAddr, int) error { return nil }
func (fakeHost) SetupENI(_ context.Context, e hostnet.ENI, _ time.Duration) (string, error) {
	return fmt.Sprintf("eth%d", e.DeviceNumber), nil
}
func (fakeHost) TeardownENI(hostnet.ENI) error                    { return nil }
func (fakeHost) LinkExists(string) bool                           { return true }
func (fakeHost) PrimaryLinkName(net.HardwareAddr) (string, error) { return "eth0", nil }
func (fakeHost) SetupSNAT(snat.NodeConfig, []netip.Addr) error    { return nil }
func (fakeHost) SetupNodeIPv6(net.HardwareAddr) error             { return nil }
func (fakeHost) PruneSNATPods(func(netip.Addr) bool) error        { return nil }
func (fakeHost) RemoveSNATPod(netip.Addr) error                   { return nil }

// params shape one run.
type params struct {
	Nodes        int
	PodsPerNode  int
	InstanceType string
	// LaunchWindow spreads node launches evenly, as a node group scaling
	// out does.
	LaunchWindow time.Duration
	// Account-wide EC2 buckets (the simulator's token buckets).
	MutatingRate  float64
	MutatingBurst int
	DescribeRate  float64
	DescribeBurst int
	// RestartBatch is how many daemons restart at once (the aws-node
	// DaemonSet's maxUnavailable is 10%).
	RestartBatch int
	// Quiet is how long the fleet must make no mutating EC2 call before the
	// restart begins, so the restart is measured against a settled fleet.
	Quiet time.Duration
	// Observe is how long to keep counting after the last daemon restarted
	// (long enough to include each daemon's first reconcile and leak sweep
	// in the full run).
	Observe time.Duration
	// Env is the daemon configuration (empty: the defaults).
	Env map[string]string
}

// node is one instance and its daemon "process".
type node struct {
	idx      int
	name     string
	sim      vpcsim.Node
	stateDir string

	mu     sync.Mutex
	d      *ipamd.Daemon
	cl     *cloud.Client
	cancel context.CancelFunc
	done   chan struct{}

	launched      time.Time
	ready         time.Time // first daemon start
	startFailures int       // daemon starts that failed (a crash-looping pod)
	lastStart     startCost
}

// startCost is what one daemon start (New, before Run) asked of IMDS and EC2.
type startCost struct {
	took time.Duration
	imds int64
}

func (n *node) daemon() *ipamd.Daemon {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.d
}

// pod is one pod's ADD as the kubelet drives it.
type pod struct {
	node  *node
	key   store.Key
	first time.Time // first ADD
	got   time.Time // successful ADD
	tries int
	ip    netip.Addr
	eni   string
	err   error // last non-retryable error
}

func (p *pod) wait() time.Duration { return p.got.Sub(p.first) }

// fleet is the simulator, its nodes and their pods.
type fleet struct {
	t      testing.TB
	p      params
	sim    *vpcsim.Sim
	subnet []string
	nodes  []*node
	pods   []*pod
	// failLogs bounds the start-failure log lines.
	failLogs atomic.Int64
}

func newFleet(t testing.TB, p params) *fleet {
	t.Helper()
	raiseNoFile(t)
	sim, err := vpcsim.Start(vpcsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	// Room for 1,000 nodes x 4 ENIs x 15 addresses (60,000) and more: two
	// /16 VPC CIDRs, one /17 per AZ (32,763 usable each).
	vpc, err := sim.Cloud.AddVPC("10.0.0.0/16", "10.1.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, p: p, sim: sim}
	for i, s := range []struct{ cidr, az string }{
		{"10.0.0.0/17", "us-west-2a"}, {"10.0.128.0/17", "us-west-2b"},
		{"10.1.0.0/17", "us-west-2c"}, {"10.1.128.0/17", "us-west-2d"},
	} {
		id, err := sim.Cloud.AddSubnet(vpc, s.cidr, s.az, nil)
		if err != nil {
			t.Fatalf("subnet %d: %v", i, err)
		}
		f.subnet = append(f.subnet, id)
	}
	sim.Faults.SetRateLimit("mutating", p.MutatingRate, p.MutatingBurst)
	sim.Faults.SetRateLimit("describe", p.DescribeRate, p.DescribeBurst)
	root := stateRoot(t)
	for i := 0; i < p.Nodes; i++ {
		name := fmt.Sprintf("node-%04d", i)
		f.nodes = append(f.nodes, &node{idx: i, name: name, stateDir: filepath.Join(root, name)})
	}
	t.Cleanup(f.stopAll)
	return f
}

// stateRoot is where the nodes' state directories go: on tmpfs when there
// is one, as /var/run (the daemon's default VPCCHAIN_STATE_DIR) is on a real
// node; on disk, a thousand stores' fsyncs would measure the test machine.
func stateRoot(t testing.TB) string {
	dir, err := os.MkdirTemp("/dev/shm", "vpcchain-scale-")
	if err != nil {
		return t.TempDir()
	}
	// tmpfs outlives the test: remove it on Ctrl-C or SIGTERM as well.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			_ = os.RemoveAll(dir)
			fmt.Fprintf(os.Stderr, "%v: removed %s\n", s, dir)
			os.Exit(1)
		case <-done:
		}
	}()
	t.Cleanup(func() { signal.Stop(sig); close(done); _ = os.RemoveAll(dir) })
	return dir
}

// raiseNoFile lifts the open-file limit: a thousand daemons hold a thousand
// bbolt files and, with the simulator in the same process, both ends of
// every EC2 and IMDS connection.
func raiseNoFile(t testing.TB) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		t.Logf("getrlimit: %v", err)
		return
	}
	want := uint64(1 << 20)
	if r.Cur >= want {
		return
	}
	nr := syscall.Rlimit{Cur: want, Max: max(r.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nr); err != nil {
		// Not root: the soft limit can still go up to the hard one.
		nr = syscall.Rlimit{Cur: r.Max, Max: r.Max}
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nr)
	}
}

func (f *fleet) config(n *node) (config.Config, error) {
	env := map[string]string{"VPCCHAIN_STATE_DIR": n.stateDir, "VPCCHAIN_METRICS_ADDR": ""}
	for k, v := range f.p.Env {
		env[k] = v
	}
	return config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
}

// launch starts the instance in the simulator.
func (f *fleet) launch(n *node) error {
	n.launched = time.Now()
	sn, err := f.sim.LaunchNode(vpcsim.LaunchSpec{Name: n.name, InstanceType: f.p.InstanceType,
		SubnetID: f.subnet[n.idx%len(f.subnet)]})
	if err != nil {
		return fmt.Errorf("launch %s: %w", n.name, err)
	}
	n.sim = sn
	return nil
}

// start runs the daemon as its pod would: a new EC2/IMDS client (a new
// process), New, then Run in the background. A failed start is counted and
// retried after a second, not with the kubelet's crash-loop back-off (10 s
// doubling): on a shared 2-core test host, a thousand nodes in one process
// can starve the SDK's IMDS client past its 500 ms timeouts, which a real
// node (its own CPU, its own IMDS) does not see, and a back-off would turn
// that artefact into minutes of convergence time.
func (f *fleet) start(ctx context.Context, n *node) error {
	const backoff = time.Second
	for {
		err := f.startOnce(ctx, n)
		if err == nil {
			return nil
		}
		n.mu.Lock()
		n.startFailures++
		n.mu.Unlock()
		if f.failLogs.Add(1) <= 20 {
			f.t.Logf("%s: daemon start failed (retrying in %s): %v", n.name, backoff, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last start: %w)", n.name, ctx.Err(), err)
		case <-time.After(backoff):
		}
	}
}

func (f *fleet) startOnce(ctx context.Context, n *node) error {
	cfg, err := f.config(n)
	if err != nil {
		return err
	}
	imdsBefore := f.sim.IMDS.Requests(n.sim.InstanceID)
	began := time.Now()
	// As cmd/vpcchaind builds it: the daemon's own client-side buckets in
	// front of the SDK's standard retryer.
	cl, err := cloud.New(ctx, cloud.Options{EC2Endpoint: n.sim.EC2Endpoint, IMDSEndpoint: n.sim.IMDSEndpoint,
		Region: "us-west-2", Credentials: credentials.NewStaticCredentialsProvider("AKIDSCALE", "secret", ""),
		MutatingQPS: cfg.EC2QPS, MutatingBurst: cfg.EC2Burst, ClusterName: cfg.ClusterName})
	if err != nil {
		return fmt.Errorf("EC2/IMDS client: %w", err)
	}
	d, err := ipamd.New(ctx, ipamd.Options{Config: cfg, Cloud: cl, Host: fakeHost{}})
	if err != nil {
		return err
	}
	cost := startCost{took: time.Since(began), imds: f.sim.IMDS.Requests(n.sim.InstanceID) - imdsBefore}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(runCtx) }()
	n.mu.Lock()
	n.d, n.cl, n.cancel, n.done, n.lastStart = d, cl, cancel, done, cost
	if n.ready.IsZero() {
		n.ready = time.Now()
	}
	n.mu.Unlock()
	return nil
}

// stop ends the daemon's loops and closes its store (a graceful pod stop).
func (f *fleet) stop(n *node) error {
	n.mu.Lock()
	d, cancel, done := n.d, n.cancel, n.done
	n.d, n.cancel, n.done = nil, nil, nil
	n.mu.Unlock()
	if d == nil {
		return nil
	}
	cancel()
	<-done
	return d.Close()
}

func (f *fleet) stopAll() {
	var wg sync.WaitGroup
	for _, n := range f.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); _ = f.stop(n) }()
	}
	wg.Wait()
}

// addPod drives one pod's ADD as the kubelet does: on "no address" (CNI
// error 11, try again later) it retries every second.
func addPod(ctx context.Context, p *pod) {
	p.first = time.Now()
	for {
		p.tries++
		a, err := p.node.daemon().Add(p.key, "scale", p.key.ContainerID, "")
		if err == nil {
			p.got, p.ip, p.eni = time.Now(), a.IP, a.ENIID
			return
		}
		var none *ipamd.ErrNoAddress
		if !errors.As(err, &none) {
			p.err = err
		}
		select {
		case <-ctx.Done():
			p.err = errors.Join(p.err, ctx.Err())
			return
		case <-time.After(time.Second):
		}
	}
}

// mutatingCalls sums the mutating actions of a call-count map.
func mutatingCalls(calls map[string]int64) int64 {
	var n int64
	for a, c := range calls {
		if a != "" && isAction(a) && vpcsim.IsMutating(a) {
			n += c
		}
	}
	return n
}

func describeCalls(calls map[string]int64) int64 {
	var n int64
	for a, c := range calls {
		if a != "" && isAction(a) && !vpcsim.IsMutating(a) {
			n += c
		}
	}
	return n
}

// isAction tells EC2 action counters from the client's other counters
// (throttles, errors, ratelimited, ...), which are lower-case.
func isAction(k string) bool { return k != "" && k[0] >= 'A' && k[0] <= 'Z' }

func diff(after, before map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// quantiles of ds (sorted in place): p50, p99, max.
func quantiles(ds []time.Duration) (p50, p99, mx time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return at(0.50), at(0.99), ds[len(ds)-1]
}

func quantilesInt(xs []int64) (p50, p99, mx int64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] })
	at := func(q float64) int64 { return xs[min(len(xs)-1, int(q*float64(len(xs))))] }
	return at(0.50), at(0.99), xs[len(xs)-1]
}

// actionTable renders call counts by action, busiest first.
func actionTable(calls map[string]int64) string {
	type kv struct {
		k string
		v int64
	}
	var rows []kv
	for k, v := range calls {
		if isAction(k) {
			rows = append(rows, kv{k, v})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].v > rows[j].v || rows[i].v == rows[j].v && rows[i].k < rows[j].k })
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%s %d, ", r.k, r.v)
	}
	return strings.TrimSuffix(b.String(), ", ")
}

// openFiles counts this process's file descriptors.
func openFiles() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}
