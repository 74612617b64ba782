package e2e

// The checks of the chaos tests: the pools settling after a round, and the
// invariants users rely on, from EC2, the daemon and the node's kernel.

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/internal/routing"
	"github.com/vpcchain/vpcchain/internal/snat"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// sweeper runs the product's leaked-ENI sweep (cloud.SweepLeakedENIs, what
// the daemon's sweep loop runs) against the simulator: the daemon's own
// loop waits up to a minute before its first sweep, too long for a test.
type sweeper struct {
	c  *cluster
	cl *cloud.Client
}

func newSweeper(t *testing.T, c *cluster) *sweeper {
	t.Helper()
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIDE2E", SecretAccessKey: "secret", Source: "e2e"}, nil
	})
	cl, err := cloud.New(context.Background(), cloud.Options{EC2Endpoint: c.sim.EC2URL, Region: "us-west-2", Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	return &sweeper{c: c, cl: cl}
}

// sweep returns the ENIs it deleted as EC2 had them before.
func (s *sweeper) sweep() ([]vpcsim.ENIView, error) {
	enis := map[string]vpcsim.ENIView{}
	for _, e := range s.c.sim.Cloud.ENIs() {
		enis[e.ID] = e
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Age 0: the sweep runs only once every daemon is idle, so no ENI is
	// between its create and its attach.
	deleted, err := s.cl.SweepLeakedENIs(ctx, s.c.vpc, 0)
	var views []vpcsim.ENIView
	for _, id := range deleted {
		views = append(views, enis[id])
	}
	return views, err
}

// settleChaos runs the runtime's CNI GC on every node, then waits until
// each pool is idle within its targets and agrees with EC2, sweeping
// leaked ENIs once the daemons are idle. Whatever has not settled by the
// deadline is reported by the invariant checks.
func settleChaos(t *testing.T, c *cluster, nodes []*chaosNode, sw *sweeper) []vpcsim.ENIView {
	t.Helper()
	for _, cn := range nodes {
		var valid []types.GCAttachment
		for _, p := range cn.live() {
			valid = append(valid, types.GCAttachment{ContainerID: p.id, IfName: "eth0"})
		}
		if err := cn.n.do(func() error {
			return cn.n.cni().GCNetworkList(context.Background(), cn.l, &libcni.GCArgs{ValidAttachments: valid})
		}); err != nil {
			t.Errorf("CNI GC on %s: %v", cn.n.name, err)
		}
	}
	var swept []vpcsim.ENIView
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		idle := true
		for _, cn := range nodes {
			if !poolSettled(c, cn, cn.n.introspect()) {
				idle = false
			}
		}
		if idle {
			deleted, err := sw.sweep()
			if err != nil {
				t.Errorf("leaked-ENI sweep: %v", err)
			}
			swept = append(swept, deleted...)
			if len(deleted) == 0 {
				return swept
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return swept
}

// poolSettled: nothing cooling, the pool within targets and idle, the
// daemon's ENIs and addresses exactly EC2's, and only live pods holding
// addresses.
func poolSettled(c *cluster, cn *chaosNode, r *ipamv1.IntrospectReply) bool {
	if r.Cooling != 0 || !strings.HasPrefix(r.LastDecision, "pool within targets") {
		return false
	}
	if len(r.Allocations) != len(cn.live()) {
		return false
	}
	if extra := len(secondaryOf(c, cn)) - len(cn.live()); extra > max(chaosWarmIPs, chaosMinimumIPs-len(cn.live())) {
		return false
	}
	return len(eniDiff(c, cn, r)) == 0
}

// secondaryOf lists the addresses EC2 has assigned to the node's ENIs
// beyond their primary IPs (secondary IPs and addresses of prefixes).
func secondaryOf(c *cluster, cn *chaosNode) []netip.Addr {
	inet, _ := c.sim.Cloud.InstanceNetwork(cn.n.vn.InstanceID)
	var out []netip.Addr
	for _, e := range inet.ENIs {
		out = append(out, e.Secondary...)
		for _, p := range e.Prefixes {
			for a := p.Addr(); p.Contains(a); a = a.Next() {
				out = append(out, a)
			}
		}
	}
	return out
}

// eniDiff lists where the daemon's view of the node's ENIs differs from
// EC2's.
func eniDiff(c *cluster, cn *chaosNode, r *ipamv1.IntrospectReply) []string {
	inet, _ := c.sim.Cloud.InstanceNetwork(cn.n.vn.InstanceID)
	var out []string
	ec2 := map[string]vpcsim.ENIView{}
	for _, e := range inet.ENIs {
		ec2[e.ID] = e
	}
	for _, e := range r.Enis {
		v, ok := ec2[e.Id]
		if !ok {
			out = append(out, fmt.Sprintf("daemon manages %s (device %d), which EC2 has not attached to the node", e.Id, e.DeviceNumber))
			continue
		}
		delete(ec2, e.Id)
		var want []string
		for _, a := range v.Secondary {
			want = append(want, a.String())
		}
		sort.Strings(want)
		if got := append([]string(nil), e.Ips...); strings.Join(got, ",") != strings.Join(want, ",") {
			out = append(out, fmt.Sprintf("%s: the daemon knows addresses %v, EC2 has %v", e.Id, got, want))
		}
		var wantP []string
		for _, p := range v.Prefixes {
			wantP = append(wantP, p.String())
		}
		sort.Strings(wantP)
		if strings.Join(e.Prefixes, ",") != strings.Join(wantP, ",") {
			out = append(out, fmt.Sprintf("%s: the daemon knows prefixes %v, EC2 has %v", e.Id, e.Prefixes, wantP))
		}
	}
	for id, v := range ec2 {
		out = append(out, fmt.Sprintf("EC2 attached %s at device %d, unknown to the daemon", id, v.DeviceIndex))
	}
	sort.Strings(out)
	return out
}

// checkChaosInvariants checks the three sides and the packet path. Every
// failure names the side, the node, the pod and the address.
func checkChaosInvariants(t *testing.T, c *cluster, nodes []*chaosNode, all map[string]*pod, baseline map[*chaosNode][]string, round string) {
	t.Helper()
	errorf := func(format string, args ...any) {
		t.Errorf("after round %q: "+format, append([]any{round}, args...)...)
	}
	podName := func(id string) string {
		if p, ok := all[id]; ok {
			return p.namespace + "/" + p.name
		}
		return "unknown container " + id
	}
	byAddr := map[netip.Addr]string{} // every address to the pod of any node configured with it
	onSecondary := 0

	for _, cn := range nodes {
		n := cn.n
		live := cn.live()
		r := n.introspect()
		inet, _ := c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
		eniOf := map[netip.Addr]vpcsim.ENIView{}
		for _, e := range inet.ENIs {
			for _, a := range e.Secondary {
				eniOf[a] = e
			}
			for _, p := range e.Prefixes {
				for a := p.Addr(); p.Contains(a); a = a.Next() {
					eniOf[a] = e
				}
			}
		}

		// The daemon: exactly the live pods hold allocations, one address each.
		held := map[string]*ipamv1.IntrospectAllocation{}
		holder := map[string]string{}
		for _, a := range r.Allocations {
			if o, dup := holder[a.Ip]; dup {
				errorf("daemon of %s: %s is held by %s and by %s", n.name, a.Ip, podName(o), podName(a.Key.ContainerId))
			}
			holder[a.Ip] = a.Key.ContainerId
			held[a.Key.ContainerId] = a
		}
		liveIDs := map[string]bool{}
		for _, p := range live {
			liveIDs[p.id] = true
		}
		for _, a := range r.Allocations {
			if !liveIDs[a.Key.ContainerId] {
				errorf("daemon of %s: %s still holds %s after its DEL and GC (leaked allocation)", n.name, podName(a.Key.ContainerId), a.Ip)
			}
		}
		for _, d := range eniDiff(c, cn, r) {
			errorf("daemon of %s vs EC2: %s", n.name, d)
		}

		// Kernel state of the node, gathered once.
		k := nodeKernel(t, n)

		wantVeths := map[string]bool{}
		wantRoutes := map[netip.Addr]string{}
		want512 := map[netip.Addr]bool{}
		want1536 := map[netip.Addr]int{}
		for _, p := range live {
			who := fmt.Sprintf("%s on %s", p.namespace+"/"+p.name, n.name)
			got, err := p.podAddr()
			if err != nil {
				errorf("pod side: live pod %s: %v", who, err)
				continue
			}
			if o, dup := byAddr[got]; dup {
				errorf("pod side: %s is configured in live pods %s and %s", got, o, who)
			}
			byAddr[got] = who
			if first, ok := cn.first[p]; ok && got != first {
				errorf("pod side: steady pod %s had %s at the start, now %s", who, first, got)
			}
			a := held[p.id]
			switch {
			case a == nil:
				errorf("daemon of %s: live pod %s (%s) holds no allocation", n.name, who, got)
			case a.Ip != got.String():
				errorf("daemon of %s: live pod %s uses %s but the daemon holds %s for it", n.name, who, got, a.Ip)
			}
			e, ok := eniOf[got]
			switch {
			case !ok:
				errorf("EC2: live pod %s uses %s, which EC2 has not assigned to any ENI of %s", who, got, n.name)
			case a != nil && a.EniId != e.ID:
				errorf("EC2: live pod %s's %s is on %s, the daemon says %s", who, got, e.ID, a.EniId)
			}
			// The name Felix expects (calicoVethName: sha1 of
			// "<namespace>.<pod>"), and the table of the ENI EC2 has the
			// address on: main for device 0, 1000+device for the others
			// (the layout daemon/hostnet's TestRouteTable pins), rather
			// than what the daemon reports.
			veth := calicoVethName(p.namespace, p.name)
			wantVeths[veth] = true
			wantRoutes[got] = veth
			want512[got] = true
			if e, ok := eniOf[got]; ok && e.DeviceIndex != 0 {
				want1536[got] = 1000 + e.DeviceIndex
				onSecondary++
			}
		}
		if extra := len(secondaryOf(c, cn)) - len(live); extra > max(chaosWarmIPs, chaosMinimumIPs-len(live)) {
			errorf("EC2: %s holds %d addresses for %d live pods: %d idle, above the pool's targets (WARM_IP_TARGET=%d, MINIMUM_IP_TARGET=%d)",
				n.name, len(secondaryOf(c, cn)), len(live), extra, chaosWarmIPs, chaosMinimumIPs)
		}

		// Kernel: exactly the live pods' veths, routes, rules and SNAT entries.
		owner := func(a netip.Addr) string {
			for id, p := range all {
				if p.ip == a {
					return podName(id)
				}
			}
			return "no pod of this test"
		}
		for v := range k.veths {
			if !wantVeths[v] {
				errorf("node %s: veth %s left behind (no live pod has it)", n.name, v)
			}
		}
		for v := range wantVeths {
			if !k.veths[v] {
				errorf("node %s: live pod's veth %s is missing", n.name, v)
			}
		}
		for a, dev := range k.routes {
			if want, ok := wantRoutes[a]; !ok {
				errorf("node %s: route %s/32 dev %s left behind (last held by %s)", n.name, a, dev, owner(a))
			} else if want != dev {
				errorf("node %s: route %s/32 goes to %s, the pod's veth is %s", n.name, a, dev, want)
			}
		}
		for a, veth := range wantRoutes {
			if _, ok := k.routes[a]; !ok {
				errorf("node %s: live pod address %s has no /32 route to %s", n.name, a, veth)
			}
		}
		for a := range k.rules512 {
			if !want512[a] {
				errorf("node %s: rule 512 to %s left behind (last held by %s)", n.name, a, owner(a))
			}
		}
		for a := range want512 {
			if !k.rules512[a] {
				errorf("node %s: live pod address %s has no rule 512", n.name, a)
			}
		}
		for a, table := range k.rules1536 {
			if want, ok := want1536[a]; !ok {
				errorf("node %s: rule 1536 from %s lookup %d left behind (last held by %s)", n.name, a, table, owner(a))
			} else if want != table {
				errorf("node %s: rule 1536 from %s looks up table %d, its ENI's table is %d", n.name, a, table, want)
			}
		}
		for a, table := range want1536 {
			if _, ok := k.rules1536[a]; !ok {
				errorf("node %s: live secondary-ENI pod address %s has no rule 1536 (table %d)", n.name, a, table)
			}
		}
		for a := range k.snatPods {
			if _, ok := wantRoutes[a]; !ok {
				errorf("node %s: ipset %s still has %s (last held by %s)", n.name, snat.PodSet, a, owner(a))
			}
		}
		for a := range wantRoutes {
			if !k.snatPods[a] {
				errorf("node %s: live pod address %s is missing from ipset %s", n.name, a, snat.PodSet)
			}
		}
		if got := ourRules(t, n); strings.Join(got, "\n") != strings.Join(baseline[cn], "\n") {
			errorf("node %s: SNAT rules changed:\n%s\nwant:\n%s", n.name, strings.Join(got, "\n"), strings.Join(baseline[cn], "\n"))
		}
	}

	// EC2: no ENI left unattached (leaked) once the sweep ran; ENIs made
	// for other nodes (another system's, in the side-by-side test) are not
	// these daemons'.
	mine := map[string]bool{}
	for _, cn := range nodes {
		mine[cn.n.vn.InstanceID] = true
	}
	for _, e := range c.sim.Cloud.ENIs() {
		if id, ok := e.Tags[cloud.TagInstanceID]; ok && !mine[id] {
			continue
		}
		if e.Status != "in-use" || e.InstanceID == "" {
			errorf("EC2: %s is %s, attached to no instance (leaked ENI, tags %v)", e.ID, e.Status, e.Tags)
		}
	}

	for _, u := range unreachable(nodes, 3*time.Second) {
		errorf("packets: %s", u)
	}
	t.Logf("after round %q: %d live pods (%d on secondary ENIs) checked from EC2, the daemons and the nodes", round, len(byAddr), onSecondary)
}

// kernelState is what a node's kernel holds for pods.
type kernelState struct {
	veths     map[string]bool
	routes    map[netip.Addr]string // main-table /32 routes to pod veths: address -> veth
	rules512  map[netip.Addr]bool
	rules1536 map[netip.Addr]int
	snatPods  map[netip.Addr]bool
}

func nodeKernel(t *testing.T, n *node) kernelState {
	t.Helper()
	k := kernelState{veths: map[string]bool{}, routes: map[netip.Addr]string{}, rules512: map[netip.Addr]bool{},
		rules1536: map[netip.Addr]int{}, snatPods: map[netip.Addr]bool{}}
	err := n.do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		names := map[int]string{}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "eni") {
				k.veths[l.Attrs().Name] = true
				names[l.Attrs().Index] = l.Attrs().Name
			}
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: routing.MainTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if name, ok := names[r.LinkIndex]; ok && r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones == 32 {
					a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
					k.routes[a] = name
				}
			}
		}
		rules, err := netlink.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rules {
			switch {
			case r.Priority == routing.PrioToPod && r.Dst != nil:
				a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
				k.rules512[a] = true
			case r.Priority == routing.PrioFromPod && r.Src != nil:
				a, _ := netip.AddrFromSlice(r.Src.IP.To4())
				k.rules1536[a] = r.Table
			}
		}
		out, err := exec.Command("ipset", "save", snat.PodSet).Output()
		if err != nil {
			return fmt.Errorf("ipset save %s: %w", snat.PodSet, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == "add" && f[1] == snat.PodSet {
				a, err := netip.ParseAddr(f[2])
				if err != nil {
					return fmt.Errorf("ipset entry %q: %w", l, err)
				}
				k.snatPods[a] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("node %s kernel state: %v", n.name, err)
	}
	return k
}

// unreachable lists the live pods of nodes that do not reach a steady pod on
// the next node with their own address (inside the VPC: no SNAT).
func unreachable(nodes []*chaosNode, timeout time.Duration) []string {
	var out []string
	for i, cn := range nodes {
		next := nodes[(i+1)%len(nodes)]
		next.mu.Lock()
		var peer *pod
		if len(next.steady) > 0 {
			peer = next.steady[0]
		}
		next.mu.Unlock()
		for _, p := range cn.live() {
			if peer == nil {
				out = append(out, fmt.Sprintf("%s on %s (%s): %s has no steady pod left to reach", p.name, cn.n.name, p.ip, next.n.name))
				continue
			}
			dst := netip.AddrPortFrom(peer.ip, chaosEchoPort)
			got, err := dialOnce(p.doIn, dst, timeout)
			if err != nil {
				out = append(out, fmt.Sprintf("%s on %s (%s) cannot reach %s at %s: %v", p.name, cn.n.name, p.ip, peer.name, dst, err))
				continue
			}
			if f := strings.Fields(got); len(f) != 2 || netip.MustParseAddrPort(f[1]).Addr() != p.ip {
				out = append(out, fmt.Sprintf("%s (%s) reached %s, which saw %q", p.name, p.ip, peer.name, got))
			}
		}
	}
	return out
}
