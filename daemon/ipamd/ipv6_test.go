package ipamd

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

var ipv6Env = map[string]string{"ENABLE_IPv4": "false", "ENABLE_IPv6": "true"}

// withIPv6 gives the fixture's VPC its Amazon-provided /56 and the node's
// subnet the first /64 of it; it returns the primary ENI.
func (f *fixture) withIPv6() vpcsim.ENIView {
	f.t.Helper()
	in, ok := f.sim.Cloud.InstanceNetwork(f.node.InstanceID)
	if !ok {
		f.t.Fatal("no instance")
	}
	prim := in.ENIs[0]
	vpc6, aerr := f.sim.Cloud.AssociateVPCIPv6(prim.VPCID)
	if aerr != nil {
		f.t.Fatal(aerr)
	}
	if aerr := f.sim.Cloud.AssociateSubnetIPv6(prim.SubnetID, netip.PrefixFrom(vpc6.Addr(), 64)); aerr != nil {
		f.t.Fatal(aerr)
	}
	return prim
}

func (f *fixture) primaryENI() vpcsim.ENIView {
	f.t.Helper()
	in, _ := f.sim.Cloud.InstanceNetwork(f.node.InstanceID)
	e, _ := f.sim.Cloud.ENI(in.ENIs[0].ID)
	return e
}

// IPv6 mode as an EKS IPv6 node: one AssignIpv6Addresses call for a /80 on
// the primary ENI at the first start and no EC2 call after it, pods get
// distinct /128s of that /80 (as EC2 shows it), the allocations survive a
// restart without another call, and no IPv6 address enters the IPv4 SNAT
// set.
func TestIPv6Mode(t *testing.T) {
	f := newFixture(t, ipv6Env)
	f.withIPv6()
	before := f.sim.Faults.Calls()
	d := f.start()
	prim := f.primaryENI()
	if len(prim.IPv6Prefixes) != 1 || prim.IPv6Prefixes[0].Bits() != 80 || !prim.SubnetIPv6.Contains(prim.IPv6Prefixes[0].Addr()) {
		t.Fatalf("primary ENI's IPv6 prefixes in EC2: %v (subnet %v), want one /80 of the subnet", prim.IPv6Prefixes, prim.SubnetIPv6)
	}
	pfx := prim.IPv6Prefixes[0]
	if n := f.sim.Faults.Calls()["AssignIpv6Addresses"] - before["AssignIpv6Addresses"]; n != 1 {
		t.Errorf("%d AssignIpv6Addresses calls at start, want 1", n)
	}
	if ready, reason, avail := d.Ready(); !ready || avail != 110 {
		t.Errorf("Ready() = %v %q %d, want ready with 110 (m5.large's prefix-mode max pods, capped)", ready, reason, avail)
	}
	settle(t, d)
	afterStart := f.sim.Faults.Calls()
	seen := map[netip.Addr]string{}
	for i := range 60 {
		k := fmt.Sprintf("c%d", i)
		a, err := d.Add(key(k), "default", k, "")
		if err != nil {
			t.Fatal(err)
		}
		if !pfx.Contains(a.IP) || !a.IP.Is6() {
			t.Fatalf("pod %s got %v, outside the ENI's %v", k, a.IP, pfx)
		}
		if other, dup := seen[a.IP]; dup {
			t.Fatalf("pods %s and %s both got %v", other, k, a.IP)
		}
		seen[a.IP] = k
		if a.ENIID != prim.ID || a.RouteTable != 254 || a.Subnet != prim.SubnetIPv6 || a.SubnetGateway.IsValid() {
			t.Errorf("allocation %+v: want ENI %s, main table, subnet %v, no subnet gateway", a, prim.ID, prim.SubnetIPv6)
		}
	}
	// What vpcctl status shows.
	if r := d.Introspect(); r.Mode != "ipv6-prefix" || r.Assigned != 60 || r.Available != 50 || r.MaxPods != 110 ||
		len(r.Enis) != 1 || len(r.Enis[0].Prefixes) != 1 || r.Enis[0].Prefixes[0] != pfx.String() {
		t.Errorf("introspect: mode %s assigned %d available %d max pods %d ENIs %v; want ipv6-prefix, 60, 50, 110 and the primary ENI with %v",
			r.Mode, r.Assigned, r.Available, r.MaxPods, r.Enis, pfx)
	}
	first, _ := d.Get(key("c0"))
	if _, _, err := d.Del(key("c0")); err != nil {
		t.Fatal(err)
	}
	again, err := d.Add(key("c0-new"), "default", "x", "")
	if err != nil || again.IP == first.IP {
		t.Errorf("after DEL of %v the next pod got %v (%v), want another address", first.IP, again.IP, err)
	}
	for ip := range seen {
		if f.host.inSNAT(ip) {
			t.Errorf("IPv6 pod %v in the SNAT set", ip)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = f.start()
	defer d.Close()
	settle(t, d)
	if err := d.reconcileIPv6(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, ok := d.Get(key("c1")); !ok || seen[got.IP] != "c1" {
		t.Errorf("after restart c1 holds %v (%v), want its address from before", got.IP, ok)
	}
	after := f.sim.Faults.Calls()
	for _, action := range []string{"AssignIpv6Addresses", "AssignPrivateIpAddresses", "CreateNetworkInterface", "UnassignIpv6Addresses"} {
		if n := after[action] - afterStart[action]; n != 0 {
			t.Errorf("%d %s calls after the first start, want none", n, action)
		}
	}
}

// What IPv6 mode cannot serve is refused at start, naming the setting.
func TestIPv6ModeRefusals(t *testing.T) {
	t.Run("non-Nitro type", func(t *testing.T) {
		f := newFixtureOfType(t, "m4.large", ipv6Env)
		f.withIPv6()
		_, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock,
			StorePath: filepath.Join(f.cfg.StateDir, "ipam.db")})
		if err == nil || !strings.Contains(err.Error(), "ENABLE_IPv6=true: m4.large is not Nitro-based") {
			t.Errorf("New on m4.large: %v, want a refusal naming ENABLE_IPv6 and the type", err)
		}
	})
	t.Run("subnet without IPv6", func(t *testing.T) {
		f := newFixture(t, ipv6Env)
		_, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock,
			StorePath: filepath.Join(f.cfg.StateDir, "ipam.db")})
		if err == nil || !strings.Contains(err.Error(), "needs an IPv6 CIDR block") {
			t.Errorf("New without subnet IPv6: %v, want a refusal naming the missing IPv6 block", err)
		}
	})
}

// A /80 taken away in EC2 behind the daemon's back: kept while pods hold
// addresses of it or it is recent (EC2 may lag), replaced by a new one once
// neither holds.
func TestIPv6PrefixLost(t *testing.T) {
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
	if err := d.reconcileIPv6(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, err := d.Add(key("c2"), "default", "db", ""); err != nil || !old.Contains(a.IP) {
		t.Errorf("with a pod on the vanished %v, the next pod got %v (%v), want an address of it", old, a.IP, err)
	}
	for _, k := range []string{"c1", "c2"} {
		if _, _, err := d.Del(key(k)); err != nil {
			t.Fatal(err)
		}
	}
	// No pod holds an address of it any more, but the daemon learned it
	// less than the consistency grace ago: EC2 may be lagging, so no new
	// prefix yet.
	if err := d.reconcileIPv6(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.primaryENI().IPv6Prefixes; len(got) != 0 {
		t.Fatalf("EC2 shows %v within the consistency grace, want no new prefix yet", got)
	}
	f.advance(f.cfg.ConsistencyGrace + time.Second)
	if err := d.reconcileIPv6(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := f.primaryENI().IPv6Prefixes
	if len(now) != 1 || now[0] == old {
		t.Fatalf("EC2 shows %v after the reconcile, want one new /80", now)
	}
	if a, err := d.Add(key("c3"), "default", "x", ""); err != nil || !now[0].Contains(a.IP) {
		t.Errorf("next pod got %v (%v), want an address of the new %v", a.IP, err, now[0])
	}
}

// The node's address for "primary:<port>" listeners: the primary ENI's
// primary IPv4 address as EC2 has it; in IPv6 mode its IPv6 address when it
// has one (an EKS IPv6 node's), else still the IPv4 one.
func TestNodeAddress(t *testing.T) {
	f := newFixture(t, nil)
	if got, want := f.start().NodeAddress(), f.primaryENI().PrimaryIP; got != want || !got.Is4() {
		t.Errorf("IPv4 mode: NodeAddress %v, want the primary ENI's %v", got, want)
	}

	f = newFixture(t, ipv6Env)
	prim := f.withIPv6()
	if got, want := f.start().NodeAddress(), f.primaryENI().PrimaryIP; got != want {
		t.Errorf("IPv6 mode, no IPv6 address on the primary ENI: NodeAddress %v, want its IPv4 %v", got, want)
	}
	f = newFixture(t, ipv6Env)
	prim = f.withIPv6()
	addrs, _, aerr := f.sim.Cloud.AssignIPv6(prim.ID, 1, nil, 0)
	if aerr != nil || len(addrs) != 1 {
		t.Fatalf("assign an IPv6 address to %s: %v %v", prim.ID, addrs, aerr)
	}
	if got := f.start().NodeAddress(); got != addrs[0] {
		t.Errorf("IPv6 mode: NodeAddress %v, want the primary ENI's IPv6 address %v", got, addrs[0])
	}
}
