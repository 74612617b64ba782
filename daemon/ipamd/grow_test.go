package ipamd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/pool"
)

// barrierCloud holds every CreateAndAttachENI until `want` of them are in
// flight together (or a generous timeout passes), and records the most it
// saw at once: concurrency shown without timing anything.
type barrierCloud struct {
	Cloud
	want int

	mu      sync.Mutex
	cond    *sync.Cond
	inside  int
	maxSeen int
}

func (b *barrierCloud) CreateAndAttachENI(ctx context.Context, in cloud.CreateENIInput) (cloud.ENI, error) {
	b.mu.Lock()
	b.inside++
	b.maxSeen = max(b.maxSeen, b.inside)
	b.cond.Broadcast()
	deadline := time.AfterFunc(10*time.Second, func() { b.mu.Lock(); b.cond.Broadcast(); b.mu.Unlock() })
	start := time.Now()
	for b.maxSeen < b.want && time.Since(start) < 10*time.Second {
		b.cond.Wait()
	}
	deadline.Stop()
	b.mu.Unlock()
	defer func() { b.mu.Lock(); b.inside--; b.mu.Unlock() }()
	return b.Cloud.CreateAndAttachENI(ctx, in)
}

func (f *fixture) deleteOnTermination(eniID string) bool {
	for _, i := range f.sim.Cloud.Instances() {
		if i.InstanceID == f.node.InstanceID {
			return i.DeleteOnTermination[eniID]
		}
	}
	f.t.Fatalf("instance %s not found", f.node.InstanceID)
	return false
}

// A burst on a fresh m5.large (3 ENIs of 10 addresses, 9 for pods each):
// 27 pods ask before the pool holds anything. The pool loop counts them as
// waiting and creates both missing ENIs together, full, instead of one
// after the other; every pod then gets its own address, and each new ENI
// ends up with DeleteOnTermination.
func TestBurstCreatesENIsTogether(t *testing.T) {
	f := newFixture(t, nil)
	bc := &barrierCloud{Cloud: f.cloud, want: 2}
	bc.cond = sync.NewCond(&bc.mu)
	d, err := New(context.Background(), Options{Config: f.cfg, Cloud: bc, Host: f.host, Now: f.clock,
		StorePath: filepath.Join(f.cfg.StateDir, "ipam.db"), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const pods = 27
	for i := range pods {
		var none *ErrNoAddress
		if _, err := d.Add(key(fmt.Sprint(i)), "default", "p", ""); !errors.As(err, &none) {
			t.Fatalf("ADD on an empty pool: %v, want no address", err)
		}
	}
	if st := d.Stats(); st.Waiting != pods {
		t.Fatalf("waiting pods %d, want %d", st.Waiting, pods)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); d.Run(ctx) }()
	defer func() { cancel(); <-ran }()

	got := map[netip.Addr]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < pods; {
		a, err := d.Add(key(fmt.Sprint(i)), "default", "p", "")
		var none *ErrNoAddress
		switch {
		case errors.As(err, &none) && time.Now().Before(deadline):
			time.Sleep(20 * time.Millisecond)
			continue
		case err != nil:
			t.Fatalf("pod %d: %v", i, err)
		case got[a.IP]:
			t.Fatalf("pod %d got %s, which another pod has", i, a.IP)
		}
		got[a.IP] = true
		i++
	}
	if st := d.Stats(); st.Waiting != 0 || st.Assigned != pods {
		t.Errorf("after the burst: waiting %d, assigned %d; want 0 and %d", st.Waiting, st.Assigned, pods)
	}
	bc.mu.Lock()
	maxSeen := bc.maxSeen
	bc.mu.Unlock()
	if maxSeen != 2 {
		t.Errorf("at most %d ENI creations in flight together, want 2 (one per missing ENI)", maxSeen)
	}
	cancel()
	<-ran
	enis, err := f.cloud.InstanceENIs(context.Background(), f.node.InstanceID)
	if err != nil {
		t.Fatal(err)
	}
	if len(enis) != 3 {
		t.Fatalf("%d ENIs on the instance, want 3", len(enis))
	}
	for _, e := range enis {
		if !e.Primary && (len(e.IPs) != 9 || f.deleteOnTermination(e.ID)) {
			t.Errorf("%s: %d addresses, DeleteOnTermination %v; want 9, and false while the fresh node's warm-up is on hold", e.ID, len(e.IPs), f.deleteOnTermination(e.ID))
		}
	}
	// Pods waited as the node came up: what no pod needs waits 30-90 s.
	f.advance(3 * warmThrottleCoolOff)
	d.settleDeleteOnTermination(context.Background())
	for _, e := range enis {
		if !e.Primary && !f.deleteOnTermination(e.ID) {
			t.Errorf("%s: DeleteOnTermination not set after the hold", e.ID)
		}
	}
}

// DeleteOnTermination is set after the new ENI serves; when EC2 refuses it,
// the ENI keeps serving and the setting is retried (reconcile does) until
// it holds.
func TestDeleteOnTerminationRetried(t *testing.T) {
	f := newFixture(t, nil)
	d := f.start()
	defer d.Close()
	settle(t, d) // the primary ENI's 9 addresses
	for i := range 9 {
		if _, err := d.Add(key(fmt.Sprint(i)), "default", "p", ""); err != nil {
			t.Fatal(err)
		}
	}
	f.sim.Faults.Inject("ModifyNetworkInterfaceAttribute", "UnauthorizedOperation", 1)
	settle(t, d) // a second ENI for the warm target
	var created string
	for _, e := range d.Introspect().GetEnis() {
		if !e.GetPrimary() {
			created = e.GetId()
		}
	}
	if created == "" {
		t.Fatal("no ENI created")
	}
	if f.deleteOnTermination(created) {
		t.Fatal("DeleteOnTermination set although EC2 refused it")
	}
	if _, err := d.Add(key("after"), "default", "p", ""); err != nil {
		t.Fatalf("the new ENI does not serve: %v", err)
	}
	if n := d.Counters()["delete_on_termination_failed"]; n != 1 {
		t.Errorf("delete_on_termination_failed = %d, want 1", n)
	}
	d.settleDeleteOnTermination(context.Background())
	if !f.deleteOnTermination(created) {
		t.Error("DeleteOnTermination not set by the retry")
	}
}

// A growth call that EC2 throttles past the SDK's retries cools growth off
// for a spread-out time that doubles with every throttled call in a row, and
// a successful one ends the streak: a throttled fleet neither comes back in
// lockstep nor keeps knocking at the same pace.
func TestThrottledGrowthBacksOff(t *testing.T) {
	f := newFixture(t, nil)
	d := f.start()
	defer d.Close()
	coolOff := func() time.Duration {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, c := range d.coolOffs {
			if c.Scope == pool.CoolOffGrowth && c.Until.After(d.now()) {
				return c.Until.Sub(d.now())
			}
		}
		return 0
	}
	// A pod waits, so the growth is for it (growth for the warm targets
	// alone is held back while EC2 throttles, see below).
	var none *ErrNoAddress
	if _, err := d.Add(key("waiting"), "default", "p", ""); !errors.As(err, &none) {
		t.Fatalf("ADD on an empty pool: %v", err)
	}
	base := throttleCoolOff
	const attempts = 2 // the fixture client's, all throttled
	for i, lo := range []time.Duration{base / 2, base, 2 * base} {
		f.sim.Faults.Inject("AssignPrivateIpAddresses", "RequestLimitExceeded", attempts)
		if d.Step(context.Background()) {
			t.Fatalf("throttle %d: the step succeeded", i)
		}
		got := coolOff()
		if got < lo || got >= 3*lo {
			t.Errorf("throttled growth #%d in a row: cool-off %v, want in [%v, %v)", i+1, got, lo, 3*lo)
		}
		f.advance(got)
	}
	if _, err := d.Add(key("waiting"), "default", "p", ""); !errors.As(err, &none) {
		t.Fatalf("ADD on an empty pool: %v", err) // still waiting, and asking again
	}
	settle(t, d)
	for i := 0; i < 9; i++ { // use the pool up so that it grows again
		if _, err := d.Add(key(fmt.Sprint(i)), "default", "p", ""); err != nil {
			t.Fatal(err)
		}
	}
	f.sim.Faults.Inject("CreateNetworkInterface", "RequestLimitExceeded", 2*attempts) // and the same token once more
	d.Step(context.Background())
	if got := coolOff(); got < base/2 || got >= 3*base/2 {
		t.Errorf("after a successful growth the streak restarts: cool-off %v, want in [%v, %v)", got, base/2, 3*base/2)
	}
}

// A throttled attempt, even one the SDK's retry got through, tells the
// daemon the account is over its budget: growth for the warm targets alone
// (and DeleteOnTermination) waits, growth for a waiting pod goes on.
func TestThrottlingPutsWarmGrowthOnHold(t *testing.T) {
	f := newFixture(t, nil)
	d := f.start()
	defer d.Close()
	f.sim.Faults.Inject("AssignPrivateIpAddresses", "RequestLimitExceeded", 1) // retried: the call succeeds
	settle(t, d)
	if st := d.Stats(); st.Available != 9 {
		t.Fatalf("the primary ENI's 9 addresses: available %d", st.Available)
	}
	for i := range 9 {
		if _, err := d.Add(key(fmt.Sprint(i)), "default", "p", ""); err != nil {
			t.Fatal(err)
		}
	}
	creates := func() int64 { return f.sim.Faults.Calls()["CreateNetworkInterface"] }
	if d.Step(context.Background()) || creates() != 0 {
		t.Fatalf("the warm ENI was created while EC2 throttles (creates %d)", creates())
	}
	var none *ErrNoAddress
	if _, err := d.Add(key("waiting"), "default", "p", ""); !errors.As(err, &none) {
		t.Fatalf("ADD on an empty pool: %v", err)
	}
	if !d.Step(context.Background()) || creates() != 1 {
		t.Fatalf("growth for a waiting pod held back (creates %d)", creates())
	}
	for _, e := range d.Introspect().GetEnis() {
		if !e.GetPrimary() && f.deleteOnTermination(e.GetId()) {
			t.Error("DeleteOnTermination set while EC2 throttles")
		}
	}
	f.advance(3 * warmThrottleCoolOff)
	d.settleDeleteOnTermination(context.Background())
	for _, e := range d.Introspect().GetEnis() {
		if !e.GetPrimary() && !f.deleteOnTermination(e.GetId()) {
			t.Error("DeleteOnTermination not set once the throttling is over")
		}
	}
}

// Pods that wait as a fresh node comes up (a scale-out, likely) get their
// calls first: once they are served, the warm ENI and DeleteOnTermination
// wait 30-90 s; a node that had no pod waiting warms up at once (the other
// tests' settle).
func TestFreshNodeWarmsUpAfterItsWaitingPods(t *testing.T) {
	f := newFixture(t, nil) // m5.large: 9 addresses per ENI, WARM_ENI_TARGET=1
	d := f.start()
	defer d.Close()
	const pods = 12
	for i := range pods {
		var none *ErrNoAddress
		if _, err := d.Add(key(fmt.Sprint(i)), "default", "p", ""); !errors.As(err, &none) {
			t.Fatalf("ADD on an empty pool: %v, want no address", err)
		}
	}
	settle(t, d)
	for i := range pods {
		if _, err := d.Add(key(fmt.Sprint(i)), "default", "p", ""); err != nil {
			t.Fatalf("pod %d after growth: %v", i, err)
		}
	}
	settle(t, d)
	enis := d.Introspect().GetEnis()
	if len(enis) != 2 {
		t.Fatalf("%d ENIs right after the pods were served, want 2 (the pods' 12 addresses, no warm ENI yet)", len(enis))
	}
	for _, e := range enis {
		if !e.GetPrimary() && f.deleteOnTermination(e.GetId()) {
			t.Errorf("%s: DeleteOnTermination set during the hold", e.GetId())
		}
	}
	f.advance(3 * warmThrottleCoolOff)
	settle(t, d)
	enis = d.Introspect().GetEnis()
	if len(enis) != 3 {
		t.Fatalf("%d ENIs after the hold, want 3 (WARM_ENI_TARGET=1: a whole free ENI)", len(enis))
	}
	for _, e := range enis {
		if !e.GetPrimary() && !f.deleteOnTermination(e.GetId()) {
			t.Errorf("%s: DeleteOnTermination not set after the hold", e.GetId())
		}
	}
}
