package ipamd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/config"
	"github.com/vpcchain/vpcchain/daemon/hostnet"
	"github.com/vpcchain/vpcchain/daemon/store"
	"github.com/vpcchain/vpcchain/internal/snat"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// fakeHost records host-networking calls; the daemon's logic is under test
// here, the kernel side is tested in package hostnet and end to end.
type fakeHost struct {
	mu         sync.Mutex
	setup      map[int]bool
	setupNodes int                 // SetupNode calls
	failSNAT   error               // SetupSNAT fails with it
	snat       map[netip.Addr]bool // the SNAT set
	// beforeSNATAdd, if set, runs in SetupSNAT before the pods go in.
	beforeSNATAdd func()
	// nodeErr and eniErr[device] are what SetupNode and SetupENI return
	// after doing their work (a sysctl they could not set).
	nodeErr error
	eniErr  map[int]error
}

func (h *fakeHost) SetupNode(net.HardwareAddr, int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setupNodes++
	return h.nodeErr
}
func (h *fakeHost) SetupENI(_ context.Context, e hostnet.ENI, _ time.Duration) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setup[e.DeviceNumber] = true
	return fmt.Sprintf("eth%d", e.DeviceNumber), h.eniErr[e.DeviceNumber]
}
func (h *fakeHost) TeardownENI(e hostnet.ENI) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.setup, e.DeviceNumber)
	return nil
}
func (h *fakeHost) LinkExists(string) bool { return true }

// SetupNodeIPv6 is a no-op: the kernel side of IPv6 mode is tested in
// package hostnet and end to end.
func (h *fakeHost) SetupNodeIPv6(net.HardwareAddr) error { return nil }

type fixture struct {
	t     testing.TB
	sim   *vpcsim.Sim
	node  vpcsim.Node
	cloud *cloud.Client
	host  *fakeHost
	cfg   config.Config
	now   time.Time
	mu    sync.Mutex
}

// simNode starts a control-plane simulator (closed when the test ends) with
// one m5.large in a subnet of VPC 10.0.0.0/16.
func simNode(t testing.TB, subnet string) (*vpcsim.Sim, vpcsim.Node) {
	t.Helper()
	return simNodeOfType(t, subnet, "m5.large")
}

func simNodeOfType(t testing.TB, subnet, instanceType string) (*vpcsim.Sim, vpcsim.Node) {
	t.Helper()
	sim, err := vpcsim.Start(vpcsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	vpc, _ := sim.Cloud.AddVPC("10.0.0.0/16")
	sub, err := sim.Cloud.AddSubnet(vpc, subnet, "us-west-2a", nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := sim.LaunchNode(vpcsim.LaunchSpec{Name: "n", InstanceType: instanceType, SubnetID: sub})
	if err != nil {
		t.Fatal(err)
	}
	return sim, n
}

func newFixture(t testing.TB, env map[string]string) *fixture {
	t.Helper()
	return newFixtureOfType(t, "m5.large", env)
}

func newFixtureOfType(t testing.TB, instanceType string, env map[string]string) *fixture {
	t.Helper()
	sim, n := simNodeOfType(t, "10.0.0.0/24", instanceType)
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = t.TempDir()
	c, err := cloud.New(context.Background(), cloud.Options{EC2Endpoint: n.EC2Endpoint, IMDSEndpoint: n.IMDSEndpoint,
		Region: "us-west-2", Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
		MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, sim: sim, node: n, cloud: c, host: &fakeHost{setup: map[int]bool{}}, cfg: cfg,
		now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// start builds a daemon over the fixture's store (a restart when called again).
func (f *fixture) start() *Daemon {
	f.t.Helper()
	d, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock,
		StorePath: filepath.Join(f.cfg.StateDir, "ipam.db"), Logf: f.t.Logf})
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// settle runs pool steps until the pool is at target.
func settle(t *testing.T, d *Daemon) {
	t.Helper()
	for i := 0; i < 20 && d.Step(context.Background()); i++ {
	}
}

func key(id string) store.Key { return store.Key{Network: "vpcchain", ContainerID: id, IfName: "eth0"} }

func TestAddIsIdempotentAndSurvivesRestart(t *testing.T) {
	f := newFixture(t, nil)
	d := f.start()
	settle(t, d)
	a1, err := d.Add(key("c1"), "default", "web", "")
	if err != nil {
		t.Fatal(err)
	}
	again, err := d.Add(key("c1"), "default", "web", "")
	if err != nil || again.IP != a1.IP {
		t.Fatalf("second ADD of the same key: %v %v, want %v", again.IP, err, a1.IP)
	}
	a2, err := d.Add(key("c2"), "default", "db", "")
	if err != nil || a2.IP == a1.IP {
		t.Fatalf("second pod got %v (%v), first has %v", a2.IP, err, a1.IP)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d = f.start()
	defer d.Close()
	for k, want := range map[string]netip.Addr{"c1": a1.IP, "c2": a2.IP} {
		got, ok := d.Get(key(k))
		if !ok || got.IP != want {
			t.Errorf("after restart %s holds %v (%v), want %v", k, got.IP, ok, want)
		}
	}
	settle(t, d)
	for i := 0; i < 5; i++ {
		a, err := d.Add(key(fmt.Sprintf("n%d", i)), "default", "x", "")
		if err != nil {
			t.Fatal(err)
		}
		if a.IP == a1.IP || a.IP == a2.IP {
			t.Fatalf("restart handed %v, held by a live pod, to a new pod", a.IP)
		}
	}
}

func TestCooldownIsNotAvailableAndSurvivesRestart(t *testing.T) {
	f := newFixture(t, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "1", "MINIMUM_IP_TARGET": "1"})
	d := f.start()
	settle(t, d)
	a, err := d.Add(key("c1"), "default", "web", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Del(key("c1")); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.Cooling != 1 {
		t.Fatalf("cooling %d after DEL, want 1", st.Cooling)
	}
	d.Close()

	d = f.start()
	defer d.Close()
	if st := d.Stats(); st.Cooling != 1 {
		t.Fatalf("cooling %d after restart, want 1: cooldown lost", st.Cooling)
	}
	settle(t, d)
	b, err := d.Add(key("c2"), "default", "web2", "")
	if err != nil {
		t.Fatal(err)
	}
	if b.IP == a.IP {
		t.Fatalf("address %v reused while cooling down", a.IP)
	}
	f.advance(f.cfg.IPCooldownPeriod + time.Second)
	if st := d.Stats(); st.Cooling != 0 {
		t.Fatalf("still cooling after the period: %d", st.Cooling)
	}
}

func TestMaxPodsReason(t *testing.T) {
	f := newFixture(t, map[string]string{"MAX_PODS": "2"})
	d := f.start()
	defer d.Close()
	settle(t, d)
	for i := 0; i < 2; i++ {
		if _, err := d.Add(key(fmt.Sprint(i)), "default", "p", ""); err != nil {
			t.Fatal(err)
		}
	}
	_, err := d.Add(key("third"), "default", "p", "")
	var none *ErrNoAddress
	if !errors.As(err, &none) {
		t.Fatalf("third pod on a max-pods-2 node: %v", err)
	}
	if want := "max pods reached"; !strings.Contains(none.Reason, want) {
		t.Errorf("reason %q does not say %q", none.Reason, want)
	}
}

func (h *fakeHost) PrimaryLinkName(net.HardwareAddr) (string, error) { return "eth0", nil }

func (h *fakeHost) SetupSNAT(_ snat.NodeConfig, pods []netip.Addr) error {
	if h.failSNAT != nil {
		return h.failSNAT
	}
	if h.beforeSNATAdd != nil {
		h.beforeSNATAdd()
	}
	for _, ip := range pods {
		h.addSNAT(ip)
	}
	return nil
}

func (h *fakeHost) PruneSNATPods(keep func(netip.Addr) bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ip := range h.snat {
		if !keep(ip) {
			delete(h.snat, ip)
		}
	}
	return nil
}

func (h *fakeHost) RemoveSNATPod(ip netip.Addr) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.snat, ip)
	return nil
}

func (h *fakeHost) addSNAT(ip netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.snat == nil {
		h.snat = map[netip.Addr]bool{}
	}
	h.snat[ip] = true
}

func (h *fakeHost) inSNAT(ip netip.Addr) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.snat[ip]
}

// An address the daemon releases leaves the SNAT set however it is
// released, also when the daemon's own sync (which re-adds every
// allocation) put it back after vpc-snat's DEL had removed it: a deleted
// pod's address must not stay SNATed for good.
func TestSNATSetFollowsReleases(t *testing.T) {
	cases := []struct {
		name    string
		release func(d *Daemon, f *fixture, gone netip.Addr) error
	}{
		// The pod's DEL reached the daemon after the reconcile loop had
		// re-added its address.
		{"DEL", func(d *Daemon, _ *fixture, _ netip.Addr) error {
			_, _, err := d.Del(key("gone"))
			return err
		}},
		// vpc-snat's DEL ran while the daemon was down; the runtime's GC
		// releases the address later.
		{"GC", func(d *Daemon, _ *fixture, _ netip.Addr) error {
			_, err := d.GC("vpcchain", map[store.Key]bool{key("kept"): true})
			return err
		}},
		// The release lands while the sync is between reading the
		// allocations and adding them to the set.
		{"DEL during the sync", func(d *Daemon, f *fixture, _ netip.Addr) error {
			f.host.beforeSNATAdd = func() {
				f.host.beforeSNATAdd = nil
				if _, _, err := d.Del(key("gone")); err != nil {
					t.Error(err)
				}
			}
			return d.SyncSNAT()
		}},
		// An entry no allocation explains (left by a crash) goes at the
		// next sync.
		{"stale entry", func(d *Daemon, f *fixture, gone netip.Addr) error {
			if _, _, err := d.Del(key("gone")); err != nil {
				return err
			}
			f.host.addSNAT(gone)
			return d.SyncSNAT()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			d := f.start()
			defer d.Close()
			settle(t, d)
			kept, err := d.Add(key("kept"), "default", "kept", "")
			if err != nil {
				t.Fatal(err)
			}
			gone, err := d.Add(key("gone"), "default", "gone", "")
			if err != nil {
				t.Fatal(err)
			}
			if err := d.SyncSNAT(); err != nil {
				t.Fatal(err)
			}
			if !f.host.inSNAT(gone.IP) || !f.host.inSNAT(kept.IP) {
				t.Fatal("the sync did not put the allocations into the SNAT set")
			}
			if err := tc.release(d, f, gone.IP); err != nil {
				t.Fatal(err)
			}
			if f.host.inSNAT(gone.IP) {
				t.Errorf("released %s is still in the SNAT set", gone.IP)
			}
			if !f.host.inSNAT(kept.IP) {
				t.Errorf("live %s was removed from the SNAT set", kept.IP)
			}
		})
	}
}

func TestObserveAdd(t *testing.T) {
	f := newFixture(t, nil)
	var mu sync.Mutex
	var took []time.Duration
	d, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock, Logf: t.Logf,
		ObserveAdd: func(d time.Duration) { mu.Lock(); took = append(took, d); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// Before the pool grows there is no address: a failed ADD is not an allocation.
	if _, err := d.Add(key("early"), "default", "x", ""); err == nil {
		t.Fatal("ADD before the pool grew succeeded")
	}
	settle(t, d)
	for _, id := range []string{"c1", "c1", "c2"} {
		if _, err := d.Add(key(id), "default", "x", ""); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(took) != 3 {
		t.Fatalf("observed %d allocations, want 3: %v", len(took), took)
	}
	for _, d := range took {
		if d <= 0 {
			t.Errorf("allocation took %v", d)
		}
	}
}

// TestSurplusReleasedAfterChurnStops: a surplus that dipped to zero while
// pods came and went is still released once it has stayed for a whole
// scale-down interval (the window slides; it is not "since the last
// release"), and never while an ADD keeps taking the spare address.
func TestSurplusReleasedAfterChurnStops(t *testing.T) {
	f := newFixture(t, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "2", "IP_COOLDOWN_PERIOD": "5"})
	d := f.start()
	defer d.Close()
	step := func(d time.Duration) { f.advance(d) }
	run := func(seconds int) {
		for i := 0; i < seconds; i++ {
			step(time.Second)
			settle(t, d)
		}
	}
	settle(t, d)
	for i := 0; i < 10; i++ {
		if _, err := d.Add(key(fmt.Sprint("p", i)), "default", fmt.Sprint("p", i), ""); err != nil {
			t.Fatal(err)
		}
		settle(t, d)
	}
	if st := d.Stats(); st.Total != 12 {
		t.Fatalf("total %d for 10 pods with WARM_IP_TARGET=2, want 12", st.Total)
	}
	// Eight pods go; one comes 20 s later (the surplus dips by one).
	for i := 0; i < 8; i++ {
		if _, _, err := d.Del(key(fmt.Sprint("p", i))); err != nil {
			t.Fatal(err)
		}
	}
	run(20)
	if _, err := d.Add(key("late"), "default", "late", ""); err != nil {
		t.Fatal(err)
	}
	// Three pods now: the pool settles at 3 + 2 within a few intervals.
	run(int(3 * d.pcfg.ScaleDownInterval / time.Second))
	if st := d.Stats(); st.Total != 5 || st.Assigned != 3 {
		t.Fatalf("after churn stopped: total %d, assigned %d; want 5 and 3 (released %d times)",
			st.Total, st.Assigned, d.Counters()["pool_ReleaseIPs"])
	}
}
