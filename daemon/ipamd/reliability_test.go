package ipamd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/daemon/hostnet"
	"github.com/vpcchain/vpcchain/daemon/liveness"
	"github.com/vpcchain/vpcchain/daemon/store"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

// ec2Addrs returns the secondary addresses EC2 (the simulator, read
// directly) has on the node's ENIs, by ENI ID.
func (f *fixture) ec2Addrs() map[string][]netip.Addr {
	inet, _ := f.sim.Cloud.InstanceNetwork(f.node.InstanceID)
	out := map[string][]netip.Addr{}
	for _, e := range inet.ENIs {
		out[e.ID] = e.Secondary
	}
	return out
}

func (f *fixture) onENIInEC2(ip netip.Addr) (string, bool) {
	for id, addrs := range f.ec2Addrs() {
		if slices.Contains(addrs, ip) {
			return id, true
		}
	}
	return "", false
}

// A node whose pool is empty (here: at max pods) is still ready: CNI
// STATUS fails only when the daemon cannot serve an ADD at all. A runtime
// that sees STATUS fail reports the node's network NotReady, and
// Kubernetes then taints the node and evicts its pods.
func TestStatusReadyWithEmptyPool(t *testing.T) {
	f := newFixture(t, map[string]string{"MAX_PODS": "2"})
	d := f.start()
	defer d.Close()
	settle(t, d)
	for i := 0; i < 2; i++ {
		if _, err := d.Add(key(fmt.Sprint(i)), "default", "p", ""); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := NewServer(d)
	if err != nil {
		t.Fatal(err)
	}
	st, err := srv.Status(context.Background(), &ipamv1.StatusRequest{ApiVersion: ipamclient.APIVersion})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Ready || st.Available != 0 || !strings.Contains(st.Reason, "max pods reached") {
		t.Fatalf("STATUS of a node at max pods: ready=%v available=%d reason=%q; want ready, 0 available, the reason", st.Ready, st.Available, st.Reason)
	}
	// Host networking that cannot be set up is what makes a node not ready.
	f.host.failSNAT = errors.New("ipset: protocol not supported")
	if err := d.SyncSNAT(); err == nil {
		t.Fatal("SyncSNAT succeeded with a failing host")
	}
	st, _ = srv.Status(context.Background(), &ipamv1.StatusRequest{ApiVersion: ipamclient.APIVersion})
	if st.Ready || !strings.Contains(st.Reason, "ipset: protocol not supported") {
		t.Fatalf("STATUS with broken host networking: ready=%v reason=%q", st.Ready, st.Reason)
	}
	f.host.failSNAT = nil
	if err := d.SyncSNAT(); err != nil {
		t.Fatal(err)
	}
	if st, _ = srv.Status(context.Background(), &ipamv1.StatusRequest{ApiVersion: ipamclient.APIVersion}); !st.Ready {
		t.Fatalf("STATUS after host networking recovered: %q", st.Reason)
	}
}

// EC2's describes are eventually consistent. Addresses the daemon was
// just given, and any address a pod holds, survive a describe (and a
// restart) that does not show them; the disagreement is counted.
func TestDescribeLagNeverDropsLiveOrNewAddresses(t *testing.T) {
	f := newFixture(t, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "1", "MINIMUM_IP_TARGET": "1"})
	d := f.start()
	settle(t, d)
	// From now on EC2's describes and IMDS show the state of an hour ago.
	f.sim.Cloud.SetDescribeLag(time.Hour)
	f.sim.IMDS.SetLag(time.Hour)
	var pods []Allocation
	for i := 0; i < 4; i++ {
		a, err := d.Add(key(fmt.Sprint("p", i)), "default", fmt.Sprint("p", i), "")
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, a)
		settle(t, d) // the pool grows: new addresses a lagging describe omits
	}
	total := d.Stats().Total
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, a := range pods {
		if got, ok := d.Get(key(fmt.Sprint("p", i))); !ok || got.IP != a.IP {
			t.Errorf("pod p%d lost %s to a lagging describe (now %+v, %v)", i, a.IP, got, ok)
		}
	}
	if st := d.Stats(); st.Total != total {
		t.Errorf("pool total %d after a lagging describe, want %d (nothing EC2 really has may be forgotten)", st.Total, total)
	}
	if c := d.Counters(); c["reconcile_ec2_disagreements"] == 0 {
		t.Errorf("disagreement not counted: %v", c)
	}
	// A restart while EC2 still lags keeps every allocation, on the right ENI.
	d.Close()
	d = f.start()
	defer d.Close()
	for i, a := range pods {
		got, ok := d.Get(key(fmt.Sprint("p", i)))
		if !ok || got.IP != a.IP || got.RouteTable != a.RouteTable {
			t.Errorf("after a restart under lag, pod p%d: %+v, %v; want %s table %d", i, got, ok, a.IP, a.RouteTable)
		}
	}
	// Once EC2 catches up, the addresses are confirmed and nothing was lost.
	f.sim.Cloud.SetDescribeLag(0)
	f.sim.IMDS.SetLag(0)
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.Total != total || st.Assigned != len(pods) {
		t.Errorf("after EC2 caught up: total %d assigned %d, want %d and %d", st.Total, st.Assigned, total, len(pods))
	}
}

// An address someone removed from the ENI behind the daemon's back stays
// with the pod that holds it (it cannot be told from EC2 lagging); once the
// pod is gone and the consistency grace has passed, it leaves the pool
// instead of going to another pod.
func TestAddressRemovedOutsideTheDaemon(t *testing.T) {
	f := newFixture(t, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "2", "MINIMUM_IP_TARGET": "2", "IP_COOLDOWN_PERIOD": "0"})
	d := f.start()
	defer d.Close()
	settle(t, d)
	a, err := d.Add(key("c1"), "default", "web", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	added, err := f.cloud.AssignIPs(ctx, a.ENIID, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cloud.UnassignIPs(ctx, a.ENIID, []netip.Addr{a.IP}); err != nil {
		t.Fatal(err)
	}
	if err := d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got, ok := d.Get(key("c1")); !ok || got.IP != a.IP {
		t.Fatalf("the pod holding %s lost it on one describe", a.IP)
	}
	c := d.Counters()
	if c["reconcile_ips_adopted"] != int64(len(added)) || c["reconcile_ec2_disagreements"] != 1 {
		t.Errorf("counters %v", c)
	}
	if _, _, err := d.Del(key("c1")); err != nil {
		t.Fatal(err)
	}
	f.advance(f.cfg.ConsistencyGrace + time.Second)
	if err := d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	// The pool now counts exactly what EC2 holds for the node.
	var ec2 []netip.Addr
	for _, addrs := range f.ec2Addrs() {
		ec2 = append(ec2, addrs...)
	}
	if st := d.Stats(); st.Total != len(ec2) {
		t.Errorf("total %d, want the %d secondary addresses EC2 holds (%v)", st.Total, len(ec2), ec2)
	}
	for i := 0; i < len(ec2); i++ {
		got, err := d.Add(key(fmt.Sprint("n", i)), "default", "n", "")
		if err != nil {
			break
		}
		if got.IP == a.IP {
			t.Fatalf("%s, removed from the ENI in EC2, was handed to a new pod", a.IP)
		}
	}
}

// A release EC2 made but the daemon did not hear of (a lost response, and a
// describe that cannot confirm it) must not put the addresses back into
// the pool: an ADD would hand out an address the ENI no longer has. They
// stay out until a retried release succeeds.
func TestFailedReleaseNeverHandsOutAGoneAddress(t *testing.T) {
	f := newFixture(t, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "1", "MINIMUM_IP_TARGET": "1",
		"IP_COOLDOWN_PERIOD": "0", "VPCCHAIN_SCALE_DOWN_INTERVAL": "1s"})
	lc := &lostAnswerCloud{Cloud: f.cloud}
	d, err := New(context.Background(), Options{Config: f.cfg, Cloud: lc, Host: f.host, Now: f.clock, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	settle(t, d)
	for i := 0; i < 6; i++ {
		if _, err := d.Add(key(fmt.Sprint("p", i)), "default", "p", ""); err != nil {
			t.Fatal(err)
		}
		settle(t, d)
	}
	for i := 0; i < 5; i++ {
		if _, _, err := d.Del(key(fmt.Sprint("p", i))); err != nil {
			t.Fatal(err)
		}
	}
	// The release is made in EC2, its answer lost (the simulator's lost
	// responses are retried by the SDK, whose retry EC2 answers "not
	// assigned": that settles it); describes are refused, so nothing can
	// confirm it.
	lc.lose.Store(1)
	f.sim.Faults.Deny("DescribeNetworkInterfaces", true)
	for i := 0; i < 3; i++ {
		f.advance(2 * time.Second)
		settle(t, d)
	}
	if d.Counters()["pool_errors"] == 0 {
		t.Fatal("the release did not fail: the test did not exercise the path")
	}
	for i := 0; i < 8; i++ {
		a, err := d.Add(key(fmt.Sprint("n", i)), "default", "n", "")
		if err != nil {
			continue // nothing free: fine
		}
		if _, ok := f.onENIInEC2(a.IP); !ok {
			t.Fatalf("ADD handed out %s, which EC2 no longer has on the node", a.IP)
		}
	}
	// Describes work again: the retried release settles it.
	f.sim.Faults.Deny("DescribeNetworkInterfaces", false)
	for i := 0; i < 3; i++ {
		f.advance(2 * time.Second)
		settle(t, d)
	}
	for _, e := range d.Introspect().Enis {
		for _, s := range e.Ips {
			ip := netip.MustParseAddr(s)
			if _, ok := f.onENIInEC2(ip); !ok {
				t.Errorf("the daemon still lists %s on %s; EC2 has no such address there", ip, e.Id)
			}
		}
	}
}

// lostAnswerCloud makes lose UnassignIPs calls fail after EC2 made them.
type lostAnswerCloud struct {
	Cloud
	lose atomic.Int32
}

func (c *lostAnswerCloud) UnassignIPs(ctx context.Context, eniID string, ips []netip.Addr) error {
	err := c.Cloud.UnassignIPs(ctx, eniID, ips)
	if err == nil && c.lose.Add(-1) >= 0 {
		return errors.New("read tcp: connection reset by peer")
	}
	return err
}

// A recorded allocation whose ENI is not the one EC2 has the address on is
// corrected at restore: the pod's route table must be the table of the ENI
// the address is really on (the wrong one, or none, sends the pod's packets
// out of an ENI that does not own the address, and the VPC drops them).
func TestRestoreCorrectsTheRecordedENI(t *testing.T) {
	f := newFixture(t, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "12", "MINIMUM_IP_TARGET": "12"})
	d := f.start()
	settle(t, d)
	var onSecondary Allocation
	var k store.Key
	for i := 0; i < 12; i++ {
		k = key(fmt.Sprint("p", i))
		a, err := d.Add(k, "default", "p", "")
		if err != nil {
			t.Fatal(err)
		}
		if a.RouteTable != hostnet.MainTable {
			onSecondary = a
			break
		}
	}
	if !onSecondary.IP.IsValid() {
		t.Fatal("no pod landed on a secondary ENI")
	}
	primary := ""
	for _, e := range d.Introspect().Enis {
		if e.Primary {
			primary = e.Id
		}
	}
	d.Close()
	want := 1000 + onSecondary.DeviceNumber // the table of the ENI's device (docs/design.md)
	for _, recorded := range []string{primary, "eni-0000000000000000f"} {
		st, err := store.Open(f.cfg.StateDir + "/ipam.db")
		if err != nil {
			t.Fatal(err)
		}
		rec, _, _ := st.Get(k)
		rec.ENIID = recorded
		if _, _, err := st.Drop(k); err != nil {
			t.Fatal(err)
		}
		if err := st.Assign(k, rec); err != nil {
			t.Fatal(err)
		}
		st.Close()
		d = f.start()
		got, err := d.Add(k, "default", "p", "")
		if err != nil || got.IP != onSecondary.IP || got.RouteTable != want || got.ENIID != onSecondary.ENIID {
			t.Errorf("recorded on %s: ADD again gives %+v, %v; want %s on %s, table %d", recorded, got, err, onSecondary.IP, onSecondary.ENIID, want)
		}
		d.Close()
		st, _ = store.Open(f.cfg.StateDir + "/ipam.db")
		if rec, _, _ := st.Get(k); rec.ENIID != onSecondary.ENIID {
			t.Errorf("recorded on %s: the record still says %s", recorded, rec.ENIID)
		}
		st.Close()
	}
}

// An allocation whose address is on no ENI the daemon sees gets no answer
// with a made-up route table: ADD of its key says try again.
func TestAddOfAnUnplacedAllocationIsRefused(t *testing.T) {
	f := newFixture(t, nil)
	d := f.start()
	settle(t, d)
	d.Close()
	st, err := store.Open(f.cfg.StateDir + "/ipam.db")
	if err != nil {
		t.Fatal(err)
	}
	// Recorded on an ENI this node does not have, at an address none of its ENIs holds.
	if err := st.Assign(key("ghost"), store.Allocation{IP: netip.MustParseAddr("10.0.0.250"), ENIID: "eni-0000000000000000f",
		PodNamespace: "default", PodName: "ghost", AssignedAt: f.clock()}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	d = f.start()
	defer d.Close()
	a, err := d.Add(key("ghost"), "default", "ghost", "")
	var none *ErrNoAddress
	if !errors.As(err, &none) {
		t.Fatalf("ADD of an allocation on no known ENI: %+v, %v; want ErrNoAddress (try again)", a, err)
	}
	// Its DEL still works.
	if _, found, err := d.Del(key("ghost")); err != nil || !found {
		t.Fatalf("DEL: %v, %v", found, err)
	}
}

// A second daemon on the node stops at the store's lock before it changes
// any host networking.
func TestSecondDaemonTouchesNothing(t *testing.T) {
	f := newFixture(t, nil)
	d := f.start()
	defer d.Close()
	before := f.host.setupNodes
	_, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock,
		StorePath: f.cfg.StateDir + "/ipam.db", Logf: t.Logf})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second daemon: %v, want the store's lock error", err)
	}
	if f.host.setupNodes != before {
		t.Fatalf("the second daemon set up node networking %d time(s) before failing", f.host.setupNodes-before)
	}
}

// fakeRuntime is a liveness source: the sandboxes a runtime lists.
type fakeRuntime struct {
	mu    sync.Mutex
	boxes map[string]liveness.Sandbox
	err   error
}

func (r *fakeRuntime) Sandboxes(context.Context) (map[string]liveness.Sandbox, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.boxes), r.err
}
func (r *fakeRuntime) String() string { return "fake runtime" }

// The orphan check releases an allocation only when the container runtime
// no longer lists its sandbox, never because its network namespace path is
// not visible from the daemon (cri-dockerd passes /proc/<pid>/ns/net; a
// runtime may keep namespaces where the DaemonSet does not mount), and
// never when the runtime cannot be asked.
func TestOrphanCheckTrustsOnlyTheRuntime(t *testing.T) {
	f := newFixture(t, nil)
	rt := &fakeRuntime{boxes: map[string]liveness.Sandbox{}}
	d, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock,
		StorePath: f.cfg.StateDir + "/ipam.db", Logf: t.Logf, Liveness: rt})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	settle(t, d)
	invisible := "/proc/4194304/ns/net" // no such process: the path does not exist here
	for _, id := range []string{"live", "gone", "young"} {
		if id == "young" {
			f.advance(f.cfg.OrphanGrace)
		}
		if _, err := d.Add(key(id), "default", id, invisible); err != nil {
			t.Fatal(err)
		}
	}
	rt.boxes["live"] = liveness.Sandbox{Namespace: "default", Name: "live", Ready: true}
	f.advance(time.Second) // "live" and "gone" are past the grace, "young" is not

	rt.err = errors.New("connection refused")
	d.ReleaseOrphans(context.Background())
	if st := d.Stats(); st.Assigned != 3 || d.Counters()["orphan_check_skipped"] != 1 {
		t.Fatalf("runtime unreachable: %d assigned (want 3, nothing released), counters %v", st.Assigned, d.Counters())
	}
	rt.err = nil
	d.ReleaseOrphans(context.Background())
	if _, ok := d.Get(key("live")); !ok {
		t.Error("a pod the runtime lists lost its address (its netns path is not visible here)")
	}
	if _, ok := d.Get(key("young")); !ok {
		t.Error("an allocation younger than the grace was released (the runtime lists a sandbox only after its network is set up)")
	}
	if _, ok := d.Get(key("gone")); ok {
		t.Error("an allocation whose sandbox the runtime no longer has was kept")
	}
	if c := d.Counters(); c["orphans_released"] != 1 {
		t.Errorf("counters %v", c)
	}

	// Without a liveness source nothing is ever released.
	d2f := newFixture(t, nil)
	d2 := d2f.start()
	defer d2.Close()
	settle(t, d2)
	if _, err := d2.Add(key("x"), "default", "x", invisible); err != nil {
		t.Fatal(err)
	}
	d2f.advance(time.Hour)
	d2.ReleaseOrphans(context.Background())
	if _, ok := d2.Get(key("x")); !ok {
		t.Error("no liveness source, yet an allocation was released")
	}
}

// A CRI endpoint that answers but is not the kubelet's runtime (a wrong
// VPCCHAIN_CRI_SOCKET) lists none of the node's pods: its word would
// release every allocation. The daemon, run as a pod, trusts a list only
// when it holds its own pod's sandbox.
func TestOrphanCheckNeedsTheDaemonsOwnSandbox(t *testing.T) {
	own := liveness.Sandbox{Namespace: "kube-system", Name: "vpcchain-x7k2p", Ready: true}
	for _, tc := range []struct {
		name  string
		boxes map[string]liveness.Sandbox // besides the pods' own
		// pods: whether the runtime lists the pods' sandboxes
		pods         bool
		wantReleased int
	}{
		{name: "lists nothing", boxes: nil, wantReleased: 0},
		{name: "lists another runtime's sandboxes", boxes: map[string]liveness.Sandbox{
			"s1": {Namespace: "default", Name: "build-1", Ready: true},
			"s2": {Namespace: "kube-system", Name: "vpcchain-x7k2p-old"}, // a name is matched whole
			"s3": {Namespace: "default", Name: "vpcchain-x7k2p"},         // and in its namespace
		}, wantReleased: 0},
		{name: "lists the daemon's own sandbox", boxes: map[string]liveness.Sandbox{"own": own}, wantReleased: 2},
		{name: "lists the daemon's own sandbox, not ready", boxes: map[string]liveness.Sandbox{
			"own": {Namespace: own.Namespace, Name: own.Name}}, wantReleased: 2},
		{name: "lists the daemon's own sandbox and the pods'", boxes: map[string]liveness.Sandbox{"own": own}, pods: true, wantReleased: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, map[string]string{"MY_POD_NAME": own.Name, "MY_POD_NAMESPACE": own.Namespace})
			rt := &fakeRuntime{boxes: map[string]liveness.Sandbox{}}
			var logMu sync.Mutex
			var logs []string
			logf := func(format string, args ...any) {
				logMu.Lock()
				logs = append(logs, fmt.Sprintf(format, args...))
				logMu.Unlock()
				t.Logf(format, args...)
			}
			d, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock,
				StorePath: f.cfg.StateDir + "/ipam.db", Logf: logf, Liveness: rt})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			settle(t, d)
			for _, id := range []string{"p1", "p2"} {
				if _, err := d.Add(key(id), "default", id, ""); err != nil {
					t.Fatal(err)
				}
				if tc.pods {
					rt.boxes[id] = liveness.Sandbox{Namespace: "default", Name: id, Ready: true}
				}
			}
			maps.Copy(rt.boxes, tc.boxes)
			f.advance(f.cfg.OrphanGrace + time.Second)

			const checks = 3
			for range checks {
				d.ReleaseOrphans(context.Background())
			}
			c := d.Counters()
			if got := 2 - d.Stats().Assigned; got != tc.wantReleased || c["orphans_released"] != int64(tc.wantReleased) {
				t.Errorf("%d released (counted %d), want %d", got, c["orphans_released"], tc.wantReleased)
			}
			_, ownListed := rt.boxes["own"]
			skipped := 0
			for _, l := range logs {
				if strings.Contains(l, "orphan check skipped") {
					skipped++
				}
			}
			switch {
			case !ownListed && (c["orphan_check_skipped"] != checks || c["orphan_checks"] != 0 || skipped != 1):
				t.Errorf("without the daemon's own sandbox: counters %v, %d log lines of the skip; want %d skips counted, no check, one line",
					c, skipped, checks)
			case ownListed && (c["orphan_check_skipped"] != 0 || c["orphan_checks"] != checks):
				t.Errorf("with the daemon's own sandbox: counters %v; want %d checks, none skipped", c, checks)
			}
		})
	}
}
