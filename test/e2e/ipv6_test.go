package e2e

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/sim/vpcsim/dataplane"
)

var ipv6Mode = []string{"ENABLE_IPv4=false", "ENABLE_IPv6=true"}

// newIPv6Cluster is an EKS IPv6 cluster on the simulator: a VPC with its
// Amazon-provided /56, the nodes' subnet with a /64 of it, and nodes (with
// an IPv6 address of their own) whose daemons run in IPv6 mode.
func newIPv6Cluster(t testing.TB, typ string, names []string, env ...string) *cluster {
	t.Helper()
	c := newSimVPC(t, "10.0.0.0/20")
	vpc6, aerr := c.sim.Cloud.AssociateVPCIPv6(c.vpc)
	if aerr != nil {
		t.Fatal(aerr)
	}
	if aerr := c.sim.Cloud.AssociateSubnetIPv6(c.subnet, netip.PrefixFrom(vpc6.Addr(), 64)); aerr != nil {
		t.Fatal(aerr)
	}
	c.nodeIPv6s = 1
	for _, name := range names {
		n := c.addNode(typ, name, append(append([]string{}, ipv6Mode...), env...)...)
		n.start()
		t.Cleanup(n.stop)
	}
	for _, n := range c.nodes {
		n.waitReady()
	}
	return c
}

// ipv6Chain is the IPv6-mode .conflist: vpc-bridge with vpc-ipam, IPv4
// egress through vpc-egress-v4 (host-local on the link-local range), then
// vpc-snat (which leaves IPv6 alone), then any extra plugins.
func (n *node) ipv6Chain(extra ...map[string]any) *libcni.NetworkConfigList {
	n.c.t.Helper()
	return n.chain(nil, append([]map[string]any{egressV4Conf(n), n.snatConf()}, extra...)...)
}

// egressV4Conf is vpc-egress-v4's entry as the installer renders it:
// host-local on the link-local range, state in the node's directory.
func egressV4Conf(n *node) map[string]any {
	return map[string]any{"type": "vpc-egress-v4", "ipam": map[string]any{"type": "host-local",
		"ranges": []any{[]any{map[string]any{"subnet": "169.254.172.0/22"}}}, "dataDir": filepath.Join(n.state, "egress-v4")}}
}

// nodeIPv6 is the node's own IPv6 address (its primary ENI's, as EC2 has it).
func nodeIPv6(t *testing.T, c *cluster, n *node) netip.Addr {
	t.Helper()
	inet, _ := c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
	if len(inet.ENIs) == 0 || len(inet.ENIs[0].IPv6s) == 0 {
		t.Fatalf("node %s has no IPv6 address in EC2", n.name)
	}
	return inet.ENIs[0].IPv6s[0]
}

// Two IPv6 nodes with 20 pods each: every pod gets a /128 of its node's /80
// (one EC2 call per node, at its daemon's first start), and TCP flows pod to
// pod across nodes with the real source, pod to node, node to pod and pod
// to an IPv6 internet host through the egress-only gateway, which lets no
// connection in; DEL leaves nothing.
func TestIPv6Pods(t *testing.T) {
	c := newIPv6Cluster(t, "m5.large", []string{"a", "b"})
	const perNode = 20
	pods := map[string][]*pod{}
	var wg sync.WaitGroup
	errs := make(chan error, 2*perNode)
	tools := upstreamToolsDir(t)
	for _, name := range []string{"a", "b"} {
		n := c.nodes[name]
		l := n.ipv6Chain()
		for i := range perNode {
			p := n.newPod("default", fmt.Sprintf("web6-%s-%d", name, i))
			p.cni = upstreamCNI(n, tools)
			pods[name] = append(pods[name], p)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.addRetrying(l, time.Minute); err != nil {
					errs <- fmt.Errorf("ADD %s on %s: %w", p.name, name, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Addresses: EC2's /80 of the pod's own node, unique, /128.
	seen := map[netip.Addr]string{}
	for name, ps := range pods {
		inet, _ := c.sim.Cloud.InstanceNetwork(c.nodes[name].vn.InstanceID)
		prim, _ := c.sim.Cloud.ENI(inet.ENIs[0].ID)
		if len(prim.IPv6Prefixes) != 1 || prim.IPv6Prefixes[0].Bits() != 80 {
			t.Fatalf("node %s's primary ENI has IPv6 prefixes %v in EC2, want one /80", name, prim.IPv6Prefixes)
		}
		for _, p := range ps {
			if !p.ip.Is6() || !prim.IPv6Prefixes[0].Contains(p.ip) {
				t.Errorf("%s got %v, not in its node's %v", p.name, p.ip, prim.IPv6Prefixes[0])
			}
			if ones, _ := p.result.IPs[0].Address.Mask.Size(); ones != 128 {
				t.Errorf("%s: result address %v, want a /128", p.name, p.result.IPs[0].Address)
			}
			if other, dup := seen[p.ip]; dup {
				t.Errorf("%s and %s both got %v", other, p.name, p.ip)
			}
			seen[p.ip] = p.name
		}
	}
	calls := c.sim.Faults.Calls()
	if calls["AssignIpv6Addresses"] != 2 || calls["CreateNetworkInterface"] != 0 || calls["AssignPrivateIpAddresses"] != 0 {
		t.Errorf("EC2 calls: %d AssignIpv6Addresses (want 2: one per node), %d CreateNetworkInterface, %d AssignPrivateIpAddresses (want 0)",
			calls["AssignIpv6Addresses"], calls["CreateNetworkInterface"], calls["AssignPrivateIpAddresses"])
	}
	a := c.nodes["a"]
	if err := pods["a"][0].check(a.ipv6Chain()); err != nil {
		t.Errorf("CHECK of a healthy IPv6 pod: %v", err)
	}

	for _, ps := range pods {
		for _, p := range ps {
			echoServer(t, p.doIn, netip.AddrPortFrom(p.ip, 8080), p.name)
		}
	}
	nodeA6 := nodeIPv6(t, c, a)
	echoServer(t, a.do, netip.AddrPortFrom(nodeA6, 9090), "node-a")
	internet6 := netip.MustParseAddr(dataplane.OutsideAddr6)
	echoServer(t, c.sim.Fabric.DoInOutside, netip.AddrPortFrom(internet6, 8080), "internet6")
	// An IPv4-only internet host: reached through vpc-egress-v4, it sees
	// the node's IPv4 address.
	internet4 := netip.MustParseAddr(dataplane.OutsideAddr)
	echoServer(t, c.sim.Fabric.DoInOutside, netip.AddrPortFrom(internet4, 8081), "internet4")
	a0, a1, b0, b19 := pods["a"][0], pods["a"][1], pods["b"][0], pods["b"][perNode-1]
	cases := []flowCase{
		{"pod to pod, same node", a0.doIn, a0.ip, netip.AddrPortFrom(a1.ip, 8080), a1.name},
		{"pod to pod, across nodes", a0.doIn, a0.ip, netip.AddrPortFrom(b0.ip, 8080), b0.name},
		{"pod to pod, across nodes, back", b19.doIn, b19.ip, netip.AddrPortFrom(a1.ip, 8080), a1.name},
		{"pod to its node", a0.doIn, a0.ip, netip.AddrPortFrom(nodeA6, 9090), "node-a"},
		{"node to pod", a.do, nodeA6, netip.AddrPortFrom(a0.ip, 8080), a0.name},
		{"pod to an IPv6 internet host", b0.doIn, b0.ip, netip.AddrPortFrom(internet6, 8080), "internet6"},
		{"pod to an IPv4-only internet host", a0.doIn, primaryIP(t, c, a), netip.AddrPortFrom(internet4, 8081), "internet4"},
		{"another pod to an IPv4-only internet host", b19.doIn, primaryIP(t, c, c.nodes["b"]), netip.AddrPortFrom(internet4, 8081), "internet4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.expect(t, "IPv6 is not NATed; IPv4 egress leaves as the node") })
	}
	t.Run("internet to pod (egress-only gateway)", func(t *testing.T) {
		if got, err := dialEcho(c.sim.Fabric.DoInOutside, netip.AddrPortFrom(a0.ip, 8080)); err == nil {
			t.Fatalf("the internet reached pod %s: %q", a0.name, got)
		}
	})

	for name, ps := range pods {
		n := c.nodes[name]
		l := n.ipv6Chain()
		for _, p := range ps {
			for range 2 { // DEL is idempotent
				if err := p.del(l); err != nil {
					t.Errorf("DEL %s: %v", p.name, err)
				}
			}
		}
		if r := n.introspect(); len(r.Allocations) != 0 {
			t.Errorf("node %s still holds %d allocations after DEL of every pod", name, len(r.Allocations))
		}
		assertNodeClean(t, n)
		assertNoIPv6PodRoutes(t, n, seen)
		assertNoEgressLeft(t, n)
	}
	if got := c.sim.Faults.Calls()["UnassignIpv6Addresses"]; got != 0 {
		t.Errorf("%d UnassignIpv6Addresses calls: the /80 stays with the node", got)
	}
}

// assertNoIPv6PodRoutes checks the node routes none of the pods' addresses
// any more and has no IPv6 pod rule.
func assertNoIPv6PodRoutes(t *testing.T, n *node, pods map[netip.Addr]string) {
	t.Helper()
	err := n.do(func() error {
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if a, ok := netip.AddrFromSlice(r.Dst.IP); ok && pods[a] != "" {
				t.Errorf("node %s: route to %s (%s) left behind", n.name, r.Dst, pods[a])
			}
		}
		rules, err := netlink.RuleList(netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if r.Priority == 512 || r.Priority == 1536 {
				t.Errorf("node %s: IPv6 pod rule left behind: prio %d to %v", n.name, r.Priority, r.Dst)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// assertNoEgressLeft checks vpc-egress-v4 left no host veth, no nat or
// filter chain or rule and no lease.
func assertNoEgressLeft(t *testing.T, n *node) {
	t.Helper()
	if err := n.do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "egv4") {
				t.Errorf("node %s: egress veth %s left behind", n.name, l.Attrs().Name)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"nat", "filter"} {
		out, err := iptablesIn(n, "-t", table, "-S")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "VPCE4-") || strings.Contains(out, "vpc-egress-v4") {
			t.Errorf("node %s: egress %s rules left behind:\n%s", n.name, table, out)
		}
	}
	leases, _ := filepath.Glob(filepath.Join(n.state, "egress-v4", "*", "169.254.*"))
	if len(leases) != 0 {
		t.Errorf("node %s: egress leases left behind: %v", n.name, leases)
	}
}

// egressAddr is the pod's IPv4 egress address: the one address of its
// v4if0 (no CNI result carries it).
func egressAddr(t *testing.T, p *pod) netip.Addr {
	t.Helper()
	var a netip.Addr
	err := p.doIn(func() error {
		l, err := netlink.LinkByName("v4if0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 {
			return fmt.Errorf("v4if0 has IPv4 addresses %v, want one", addrs)
		}
		a, _ = netip.AddrFromSlice(addrs[0].IP.To4())
		return nil
	})
	if err != nil {
		t.Fatalf("%s: egress address: %v", p.name, err)
	}
	return a
}

// expectDropped fails unless a connection from a namespace to dst times out
// (is dropped on the way, not refused).
func expectDropped(t *testing.T, from func(func() error) error, dst netip.AddrPort, what string) {
	t.Helper()
	got, err := dialOnce(from, dst, 2*time.Second)
	if err == nil {
		t.Errorf("%s: connected to %s (%q), want it dropped", what, dst, got)
	} else if !isTimeout(err) {
		t.Errorf("%s: %v, want the connection dropped (a timeout)", what, err)
	}
}

// The IPv4 egress path carries only what a pod opens to outside the egress
// range: pods on one node do not reach each other over their egress
// addresses (NetworkPolicy, enforced on the pods' main interfaces, would
// never see that traffic), while the IPv4-only internet host and the
// neighbour's IPv6 address stay reachable.
func TestIPv6EgressIsNotPodToPod(t *testing.T) {
	c := newIPv6Cluster(t, "m5.large", []string{"a"})
	n := c.nodes["a"]
	l := n.ipv6Chain()
	tools := upstreamToolsDir(t)
	var pods []*pod
	for _, name := range []string{"eg6-a", "eg6-b"} {
		p := n.newPod("default", name)
		p.cni = upstreamCNI(n, tools)
		if err := p.addRetrying(l, time.Minute); err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		pods = append(pods, p)
	}
	pa, pb := pods[0], pods[1]
	egA, egB := egressAddr(t, pa), egressAddr(t, pb)
	for _, p := range []struct {
		p    *pod
		addr netip.Addr
	}{{pa, pa.ip}, {pa, egA}, {pb, pb.ip}, {pb, egB}} {
		echoServer(t, p.p.doIn, netip.AddrPortFrom(p.addr, 8080), p.p.name)
	}
	internet4 := netip.MustParseAddr(dataplane.OutsideAddr)
	echoServer(t, c.sim.Fabric.DoInOutside, netip.AddrPortFrom(internet4, 8083), "internet4")

	flowCase{"pod to pod over IPv6", pa.doIn, pa.ip, netip.AddrPortFrom(pb.ip, 8080), pb.name}.expect(t, "same node, no NAT")
	flowCase{"pod to an IPv4-only internet host", pa.doIn, primaryIP(t, c, n), netip.AddrPortFrom(internet4, 8083), "internet4"}.
		expect(t, "IPv4 egress leaves as the node")
	expectDropped(t, pa.doIn, netip.AddrPortFrom(egB, 8080), "eg6-a to eg6-b's egress address")
	expectDropped(t, pb.doIn, netip.AddrPortFrom(egA, 8080), "eg6-b to eg6-a's egress address")
	// The egress path still works after the drops (nothing was torn down).
	flowCase{"pod to an IPv4-only internet host", pb.doIn, primaryIP(t, c, n), netip.AddrPortFrom(internet4, 8083), "internet4"}.
		expect(t, "IPv4 egress leaves as the node")
	// The node itself is not forwarded to: a pod reaches its IPv4 address.
	node4 := netip.AddrPortFrom(primaryIP(t, c, n), 9091)
	echoServer(t, n.do, node4, "node-a")
	flowCase{"pod to its node over IPv4", pa.doIn, egA, node4, "node-a"}.expect(t, "delivered locally, not masqueraded")
	if err := pa.check(l); err != nil {
		t.Errorf("CHECK %s: %v", pa.name, err)
	}

	for _, p := range pods {
		if err := p.del(l); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
	assertNoEgressLeft(t, n)
}

// vpc-egress-v4 without IPv6 mode: chained after upstream ptp + host-local
// giving pods an IPv6 range of their own, on an ordinary node, it gives
// them the same IPv4 way out (the IPv4 internet host sees the node's
// address), and DEL leaves nothing.
func TestEgressV4WithUpstreamChain(t *testing.T) {
	c := newCluster(t, "m5.large", []string{"s"})
	n := c.nodes["s"]
	tools := upstreamToolsDir(t)
	l := ptpRefList(t, n, "fd00:77::/64", egressV4Conf(n))
	internet4 := netip.MustParseAddr(dataplane.OutsideAddr)
	echoServer(t, c.sim.Fabric.DoInOutside, netip.AddrPortFrom(internet4, 8082), "internet4")
	var pods []*pod
	for i := range 3 {
		p := n.newPod("default", fmt.Sprintf("ptp6-%d", i))
		p.cni = upstreamCNI(n, tools)
		if _, err := p.add(l); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
		pods = append(pods, p)
		if !p.ip.Is6() || len(p.result.IPs) != 1 {
			t.Fatalf("%s: result IPs %v, want ptp's one IPv6 address passed through unchanged", p.name, p.result.IPs)
		}
		got, err := dialEcho(p.doIn, netip.AddrPortFrom(internet4, 8082))
		if f := strings.Fields(got); err != nil || len(f) != 2 || netip.MustParseAddrPort(f[1]).Addr() != primaryIP(t, c, n) {
			t.Errorf("%s to the IPv4 internet host: %q, %v; want it seen as the node %s", p.name, got, err, primaryIP(t, c, n))
		}
		if err := p.check(l); err != nil {
			t.Errorf("CHECK %s: %v", p.name, err)
		}
	}
	for _, p := range pods {
		if err := p.del(l); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
	assertNoEgressLeft(t, n)
}
