package ipamd

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vpcchain/vpcchain/daemon/hostnet"
)

// addAll adds n pods named prefix0..; every address handed out must be on
// one of the node's ENIs in EC2 (read from the simulator, not the daemon).
func addAll(t *testing.T, f *fixture, d *Daemon, prefix string, n int) []netip.Addr {
	t.Helper()
	var got []netip.Addr
	for i := 0; i < n; i++ {
		a, err := d.Add(key(fmt.Sprint(prefix, i)), "default", "p", "")
		if err != nil {
			continue // nothing free now: fine
		}
		if _, ok := f.onENIInEC2(a.IP); !ok {
			t.Fatalf("ADD %s%d got %s, which EC2 no longer has on the node", prefix, i, a.IP)
		}
		got = append(got, a.IP)
	}
	return got
}

// scaleDown releases surplus addresses after pods left: returns what EC2
// took back (read from the simulator).
func scaleDown(t *testing.T, f *fixture, d *Daemon, before map[netip.Addr]bool) []netip.Addr {
	t.Helper()
	for i := 0; i < 4; i++ {
		f.advance(2 * time.Second)
		settle(t, d)
	}
	now := map[netip.Addr]bool{}
	for _, addrs := range f.ec2Addrs() {
		for _, a := range addrs {
			now[a] = true
		}
	}
	var gone []netip.Addr
	for a := range before {
		if !now[a] {
			gone = append(gone, a)
		}
	}
	return gone
}

func ec2Set(f *fixture) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, addrs := range f.ec2Addrs() {
		for _, a := range addrs {
			out[a] = true
		}
	}
	return out
}

// Addresses the daemon gave back, which EC2 accepted, are never learned
// back from a describe or IMDS that still shows them (EC2's reads are
// eventually consistent), nor after a restart inside that lag: no new pod
// gets one. Once EC2 stops showing them, nothing of them is left.
func TestReleasedAddressesAreNeverLearnedBack(t *testing.T) {
	f := newFixture(t, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "1", "MINIMUM_IP_TARGET": "1",
		"IP_COOLDOWN_PERIOD": "0", "VPCCHAIN_SCALE_DOWN_INTERVAL": "1s"})
	d := f.start()
	settle(t, d)
	addAll(t, f, d, "p", 6)
	for i := 0; i < 6; i++ {
		settle(t, d)
	}
	before := ec2Set(f)
	// EC2's reads lag from here on: they show the addresses below.
	f.sim.Cloud.SetDescribeLag(time.Hour)
	f.sim.IMDS.SetLag(time.Hour)
	for i := 0; i < 5; i++ {
		if _, _, err := d.Del(key(fmt.Sprint("p", i))); err != nil {
			t.Fatal(err)
		}
	}
	gone := scaleDown(t, f, d, before)
	if len(gone) < 3 {
		t.Fatalf("the pool gave back %d addresses (%v), want the surplus of 5 freed pods: the test did not exercise the path", len(gone), gone)
	}
	ctx := context.Background()
	// A reconcile and a re-read of each ENI (after a failed call) see them.
	if err := d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	for _, e := range d.Introspect().Enis {
		d.resyncENI(ctx, e.Id)
	}
	addAll(t, f, d, "n", 12)
	if c := d.Counters(); c["reconcile_ips_adopted"] != 0 || c["adopted_ips"] != 0 {
		t.Errorf("addresses learned back from a lagging read: %v", c)
	}
	// A restart inside the lag: the records are in the store.
	d.Close()
	d = f.start()
	defer d.Close()
	if err := d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	addAll(t, f, d, "r", 12)
	for _, e := range d.Introspect().Enis {
		for _, s := range e.Ips {
			if ip := netip.MustParseAddr(s); !before[ip] || !ec2Set(f)[ip] {
				t.Errorf("after a restart inside the lag the daemon lists %s on %s; EC2 has no such address there", ip, e.Id)
			}
		}
	}
	// EC2 catches up; past the consistency grace the records go.
	f.sim.Cloud.SetDescribeLag(0)
	f.sim.IMDS.SetLag(0)
	if left, err := d.store.Released(); err != nil || len(left) < len(gone) {
		t.Errorf("release records within the grace: %v (%v), want %v", left, err, gone)
	}
	f.advance(f.cfg.ConsistencyGrace)
	d.Step(ctx)
	if err := d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if left, err := d.store.Released(); err != nil || len(left) != 0 {
		t.Errorf("release records past the grace: %v (%v), want none", left, err)
	}
}

// A release EC2 keeps refusing (a missing permission) is retried with a
// capped exponential backoff, not once a second; it is counted and shown
// in introspection (vpcctl status); the addresses stay out of the pool, and
// the release completes once EC2 allows it.
func TestRefusedReleaseBacksOff(t *testing.T) {
	f := newFixture(t, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "1", "MINIMUM_IP_TARGET": "1",
		"IP_COOLDOWN_PERIOD": "0", "VPCCHAIN_SCALE_DOWN_INTERVAL": "1s"})
	d := f.start()
	defer d.Close()
	settle(t, d)
	addAll(t, f, d, "p", 6)
	for i := 0; i < 6; i++ {
		settle(t, d)
	}
	for i := 0; i < 5; i++ {
		if _, _, err := d.Del(key(fmt.Sprint("p", i))); err != nil {
			t.Fatal(err)
		}
	}
	f.sim.Faults.Deny("UnassignPrivateIpAddresses", true)
	calls0 := f.sim.Faults.Calls()["UnassignPrivateIpAddresses"]
	// Ten minutes of a pool loop that runs every second.
	for i := 0; i < 600; i++ {
		f.advance(time.Second)
		d.Step(context.Background())
	}
	calls := f.sim.Faults.Calls()["UnassignPrivateIpAddresses"] - calls0
	// 1+2+4+...+256 s is 511 s: 9 retries, then one every 5 minutes.
	if calls == 0 || calls > 15 {
		t.Errorf("%d release calls in 10 minutes of refusals, want a backoff (1 s doubling to 5 min: about 11)", calls)
	}
	pr := d.Introspect().PendingReleases
	if len(pr) != 1 || pr[0].Attempts < 5 || !strings.Contains(pr[0].LastError, "UnauthorizedOperation") || len(pr[0].Items) == 0 {
		t.Fatalf("introspection of the pending release: %v", pr)
	}
	if c := d.Counters(); c["release_failed"] == 0 || c["release_retries"] == 0 {
		t.Errorf("counters %v", c)
	}
	addAll(t, f, d, "n", 8) // never one of the pending ones (EC2 may have them or not)
	f.sim.Faults.Deny("UnassignPrivateIpAddresses", false)
	f.advance(releaseRetryMax)
	d.Step(context.Background())
	if pr := d.Introspect().PendingReleases; len(pr) != 0 {
		t.Errorf("pending releases once EC2 allows them: %v", pr)
	}
	for _, e := range d.Introspect().Enis {
		for _, s := range e.Ips {
			if !ec2Set(f)[netip.MustParseAddr(s)] {
				t.Errorf("the daemon lists %s; EC2 no longer has it", s)
			}
		}
	}
}

// EC2's answer that an address is not on the ENI any more ("Some of the
// specified addresses are not assigned to interface") means it is given
// back, even while EC2's describes still show it; in a batch, the others
// are given back too.
func TestUnassignOfAGoneAddressIsDone(t *testing.T) {
	f := newFixture(t, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "4", "MINIMUM_IP_TARGET": "4"})
	d := f.start()
	defer d.Close()
	settle(t, d)
	var eni string
	var addrs []netip.Addr
	for id, a := range f.ec2Addrs() {
		if len(a) >= 2 {
			eni, addrs = id, a
		}
	}
	if eni == "" {
		t.Fatal("no ENI with two secondary addresses")
	}
	ctx := context.Background()
	f.sim.Cloud.SetDescribeLag(time.Hour)
	if err := f.cloud.UnassignIPs(ctx, eni, addrs[:1]); err != nil {
		t.Fatal(err)
	}
	if err := f.cloud.UnassignIPs(ctx, eni, addrs[:1]); err != nil {
		t.Errorf("releasing %s again: %v, want done", addrs[0], err)
	}
	if err := f.cloud.UnassignIPs(ctx, eni, addrs[:2]); err != nil {
		t.Errorf("releasing %v, the first already gone: %v, want done", addrs[:2], err)
	}
	if ec2Set(f)[addrs[1]] {
		t.Errorf("%s is still on %s in EC2", addrs[1], eni)
	}
}

// A /28 EC2 no longer shows (unassigned outside the daemon) while pods hold
// addresses of it: once the consistency grace has passed, no new pod gets
// an address of it (the VPC drops their packets), and the pool replaces
// it at once.
func TestLostPrefixGetsNoNewPods(t *testing.T) {
	f := newFixture(t, map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1", "WARM_ENI_TARGET": "0"})
	d := f.start()
	defer d.Close()
	settle(t, d)
	a, err := d.Add(key("c1"), "default", "web", "")
	if err != nil {
		t.Fatal(err)
	}
	lost, _ := a.IP.Prefix(28)
	ctx := context.Background()
	if err := f.cloud.UnassignPrefixes(ctx, a.ENIID, []netip.Prefix{lost}); err != nil {
		t.Fatal(err)
	}
	f.advance(f.cfg.ConsistencyGrace + time.Second)
	if err := d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	settle(t, d)
	if got, ok := d.Get(key("c1")); !ok || got.IP != a.IP {
		t.Fatalf("the pod on the lost %s lost its address: %+v %v", lost, got, ok)
	}
	for i := 0; i < 20; i++ {
		b, err := d.Add(key(fmt.Sprint("n", i)), "default", "n", "")
		if err != nil {
			t.Fatalf("ADD n%d: %v (the pool should have replaced the lost prefix)", i, err)
		}
		if lost.Contains(b.IP) {
			t.Fatalf("ADD n%d got %s of %s, which EC2 no longer has", i, b.IP, lost)
		}
		settle(t, d)
	}
	if r := d.Introspect().LostPrefixes; len(r) != 1 || r[0] != lost.String() {
		t.Errorf("introspection's lost prefixes %v, want [%s]", r, lost)
	}
}

// The same for an IPv6 /80: past the grace, a vanished /80 with pods on it
// gets no new pod, and a new /80 is requested at once.
func TestLostIPv6PrefixGetsNoNewPods(t *testing.T) {
	f := newFixture(t, ipv6Env)
	f.withIPv6()
	d := f.start()
	defer d.Close()
	prim := f.primaryENI()
	old := prim.IPv6Prefixes[0]
	if _, err := d.Add(key("c1"), "default", "web", ""); err != nil {
		t.Fatal(err)
	}
	if aerr := f.sim.Cloud.UnassignIPv6(prim.ID, nil, []netip.Prefix{old}); aerr != nil {
		t.Fatal(aerr)
	}
	f.advance(f.cfg.ConsistencyGrace + time.Second)
	if err := d.reconcileIPv6(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := f.primaryENI().IPv6Prefixes
	if len(now) != 1 || now[0] == old {
		t.Fatalf("EC2 shows %v after the reconcile, want one new /80 (the pod on %s keeps its address)", now, old)
	}
	b, err := d.Add(key("c2"), "default", "db", "")
	if err != nil || !now[0].Contains(b.IP) {
		t.Errorf("next pod got %v (%v), want an address of the new %v", b.IP, err, now[0])
	}
}

// A restart whose describe lists a secondary ENI the node has no link for
// (EC2's describe lagging a detach made just before the restart) comes up
// without it instead of crash-looping; its pods keep their records, and a
// reconcile adopts the ENI once its link is there.
func TestStartWithoutAnENILink(t *testing.T) {
	f := newFixture(t, map[string]string{"WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "1", "MINIMUM_IP_TARGET": "12"})
	d := f.start()
	settle(t, d)
	var second Allocation
	var secondKey string
	for i := 0; i < 12; i++ {
		a, err := d.Add(key(fmt.Sprint("p", i)), "default", "p", "")
		if err != nil {
			t.Fatal(err)
		}
		if a.DeviceNumber == 1 {
			second, secondKey = a, fmt.Sprint("p", i)
		}
		settle(t, d)
	}
	if second.ENIID == "" {
		t.Fatal("no pod on the second ENI: the test did not exercise the path")
	}
	d.Close()
	f.host.mu.Lock()
	f.host.eniErr = map[int]error{1: fmt.Errorf("no link with MAC: %w", hostnet.ErrLinkNotFound)}
	f.host.mu.Unlock()
	d = f.start()
	defer d.Close()
	if c := d.Counters(); c["start_eni_without_link"] != 1 {
		t.Errorf("counters %v, want one ENI without a link at start", c)
	}
	for _, e := range d.Introspect().Enis {
		if e.Id == second.ENIID {
			t.Fatalf("%s adopted without its link", e.Id)
		}
	}
	f.host.mu.Lock()
	f.host.eniErr = nil
	f.host.mu.Unlock()
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, ok := d.Get(key(secondKey)); !ok || got.IP != second.IP || got.RouteTable != second.RouteTable {
		t.Errorf("pod %s after the link came: %+v %v, want %s in table %d", secondKey, got, ok, second.IP, second.RouteTable)
	}
	found := false
	for _, e := range d.Introspect().Enis {
		found = found || e.Id == second.ENIID
	}
	if !found {
		t.Errorf("%s not adopted once its link is there", second.ENIID)
	}
}
