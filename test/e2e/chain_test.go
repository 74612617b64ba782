package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// eniOfAddr maps every address EC2 has assigned to an instance's ENIs
// (secondary IPs and addresses inside prefixes) to the ENI's device index.
func eniOfAddr(t testing.TB, sim *vpcsim.Sim, instanceID string) func(netip.Addr) (int, bool) {
	t.Helper()
	inet, ok := sim.Cloud.InstanceNetwork(instanceID)
	if !ok {
		t.Fatalf("instance %s unknown to EC2", instanceID)
	}
	return func(a netip.Addr) (int, bool) {
		for _, e := range inet.ENIs {
			for _, s := range e.Secondary {
				if s == a {
					return e.DeviceIndex, true
				}
			}
			for _, p := range e.Prefixes {
				if p.Contains(a) {
					return e.DeviceIndex, true
				}
			}
		}
		return 0, false
	}
}

func TestPodsGetVPCAddresses(t *testing.T) {
	c := newCluster(t, "m5.large", []string{"a", "b"})
	const perNode = 20
	pods := map[string][]*pod{}
	for _, name := range []string{"a", "b"} {
		for i := 0; i < perNode; i++ {
			pods[name] = append(pods[name], c.nodes[name].newPod("default", fmt.Sprintf("web-%s-%d", name, i)))
		}
	}

	// All 40 sandboxes at once, retried like kubelet does on "try again".
	var wg sync.WaitGroup
	errs := make(chan error, 2*perNode)
	for name, ps := range pods {
		l := c.nodes[name].chain(nil)
		for _, p := range ps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.addRetrying(l, 2*time.Minute); err != nil {
					errs <- fmt.Errorf("ADD %s/%s on %s: %w", p.namespace, p.name, name, err)
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

	// Every address is EC2's, on an ENI of the pod's own node, and unique.
	seen := map[netip.Addr]string{}
	var onSecondary *pod
	for name, ps := range pods {
		owner := eniOfAddr(t, c.sim, c.nodes[name].vn.InstanceID)
		for _, p := range ps {
			dev, ok := owner(p.ip)
			if !ok {
				t.Errorf("%s on node %s got %s, which EC2 has not assigned to that node", p.name, name, p.ip)
			}
			if other, dup := seen[p.ip]; dup {
				t.Errorf("%s and %s both got %s", other, p.name, p.ip)
			}
			seen[p.ip] = p.name
			if dev > 0 && name == "a" && onSecondary == nil {
				onSecondary = p
			}
		}
	}
	if onSecondary == nil {
		t.Fatal("no pod of node a got an address of a secondary ENI: 20 pods cannot fit on the primary ENI of an m5.large")
	}
	if err := pods["a"][0].check(c.nodes["a"].chain(nil)); err != nil {
		t.Errorf("CHECK of a healthy pod: %v", err)
	}

	// TCP in every direction the product promises.
	for _, ps := range pods {
		for _, p := range ps {
			echoServer(t, p.doIn, netip.AddrPortFrom(p.ip, 8080), p.name)
		}
	}
	nodeIP := func(name string) netip.Addr {
		inet, _ := c.sim.Cloud.InstanceNetwork(c.nodes[name].vn.InstanceID)
		return inet.PrimaryIP
	}
	echoServer(t, c.nodes["a"].do, netip.AddrPortFrom(nodeIP("a"), 9090), "node-a")
	a0, a1, b0 := pods["a"][0], pods["a"][1], pods["b"][0]
	cases := []flowCase{
		{"pod to pod, same node", a0.doIn, a0.ip, netip.AddrPortFrom(a1.ip, 8080), a1.name},
		{"pod to pod, across nodes", a0.doIn, a0.ip, netip.AddrPortFrom(b0.ip, 8080), b0.name},
		{"pod to pod, across nodes, back", b0.doIn, b0.ip, netip.AddrPortFrom(a0.ip, 8080), a0.name},
		{"secondary-ENI pod to another node's pod", onSecondary.doIn, onSecondary.ip, netip.AddrPortFrom(b0.ip, 8080), b0.name},
		{"another node's pod to secondary-ENI pod", b0.doIn, b0.ip, netip.AddrPortFrom(onSecondary.ip, 8080), onSecondary.name},
		{"pod to its node", a0.doIn, a0.ip, netip.AddrPortFrom(nodeIP("a"), 9090), "node-a"},
		{"node to pod", c.nodes["a"].do, nodeIP("a"), netip.AddrPortFrom(a0.ip, 8080), a0.name},
		{"node to secondary-ENI pod", c.nodes["a"].do, nodeIP("a"), netip.AddrPortFrom(onSecondary.ip, 8080), onSecondary.name},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.expect(t, "no NAT inside the VPC") })
	}

	// After the burst the pool refills to its target: with WARM_ENI_TARGET=1
	// and 20 pods an m5.large uses all 3 ENIs, 9 secondary IPs each.
	for _, name := range []string{"a", "b"} {
		n := c.nodes[name]
		deadline := time.Now().Add(60 * time.Second)
		for {
			r := n.introspect()
			if r.Total == 27 && r.Assigned == perNode && len(r.Enis) == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s pool did not refill: total %d assigned %d ENIs %d (%s)", name, r.Total, r.Assigned, len(r.Enis), r.LastDecision)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// DEL everything: no veth, no pod rule, no allocation left.
	for name, ps := range pods {
		l := c.nodes[name].chain(nil)
		for _, p := range ps {
			if err := p.del(l); err != nil {
				t.Errorf("DEL %s: %v", p.name, err)
			}
			if err := p.del(l); err != nil {
				t.Errorf("second DEL %s (must be idempotent): %v", p.name, err)
			}
		}
		if r := c.nodes[name].introspect(); len(r.Allocations) != 0 {
			t.Errorf("node %s still holds %d allocations after DEL of every pod", name, len(r.Allocations))
		}
		assertNodeClean(t, c.nodes[name])
	}
}

// flowCase is one connection a test expects to work: from a namespace to
// an echo server, which must see the given source address.
type flowCase struct {
	name string
	from func(func() error) error
	src  netip.Addr // the source address the server must see
	to   netip.AddrPort
	want string // the server's name
}

// expect connects and checks who answered and what source it saw; why says
// what a wrong source would mean.
func (tc flowCase) expect(t *testing.T, why string) {
	t.Helper()
	got, err := dialEcho(tc.from, tc.to)
	if err != nil {
		t.Fatalf("connect to %s: %v", tc.to, err)
	}
	f := strings.Fields(got)
	if len(f) != 2 || f[0] != tc.want {
		t.Fatalf("reached %q, want %s", got, tc.want)
	}
	if src := netip.MustParseAddrPort(f[1]).Addr(); src != tc.src {
		t.Fatalf("server saw source %s, want %s (%s)", src, tc.src, why)
	}
}

// assertNodeClean checks the node has no pod veth and no pod rule left.
func assertNodeClean(t testing.TB, n *node) {
	t.Helper()
	err := n.do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "eni") {
				t.Errorf("node %s: veth %s left behind", n.name, l.Attrs().Name)
			}
		}
		rules, err := netlink.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if r.Priority == 512 || r.Priority == 1536 {
				t.Errorf("node %s: pod rule left behind: prio %d from %v to %v table %d", n.name, r.Priority, r.Src, r.Dst, r.Table)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
