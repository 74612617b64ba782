package e2e

import (
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// ourRules lists the node's vpcchain iptables rules and chains, the ipsets
// and the fwmark rule: everything SNAT mode installs.
func ourRules(t *testing.T, n *node) []string {
	t.Helper()
	var out []string
	err := n.do(func() error {
		for _, table := range []string{"nat", "mangle", "filter"} {
			b, err := exec.Command("iptables", "-t", table, "-S").Output()
			if err != nil {
				return fmt.Errorf("iptables -t %s -S: %w", table, err)
			}
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(strings.ToLower(l), "vpcchain") {
					out = append(out, table+" "+l)
				}
			}
		}
		b, err := exec.Command("ipset", "list", "-n").Output()
		if err != nil {
			return fmt.Errorf("ipset list: %w", err)
		}
		for _, s := range strings.Fields(string(b)) {
			if strings.HasPrefix(s, "vpcchain") {
				out = append(out, "ipset "+s)
			}
		}
		rules, err := netlink.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if r.Priority == 1024 {
				out = append(out, fmt.Sprintf("rule 1024 fwmark %#x table %d", r.Mark, r.Table))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestSNATAndConnmark(t *testing.T) {
	c := newCluster(t, "m5.large", []string{"a", "b"}, "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS=198.51.100.0/24")
	c.allowFromInternet(30080) // the NodePort below
	a, b := c.nodes["a"], c.nodes["b"]
	la, lb := a.chain(nil, a.snatConf()), b.chain(nil, b.snatConf())

	// Ten pods on a: the tenth cannot fit on the primary ENI's 9 addresses.
	var pods []*pod
	var prim, sec *pod
	owner := func() func(netip.Addr) (int, bool) { return eniOfAddr(t, c.sim, a.vn.InstanceID) }
	for i := 0; i < 10; i++ {
		p := a.newPod("default", fmt.Sprintf("app-%d", i))
		if err := p.addRetrying(la, time.Minute); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	for _, p := range pods {
		dev, ok := owner()(p.ip)
		if !ok {
			t.Fatalf("%s not EC2's", p.ip)
		}
		if dev == 0 && prim == nil {
			prim = p
		}
		if dev > 0 && sec == nil {
			sec = p
		}
	}
	if prim == nil || sec == nil {
		t.Fatal("need a pod on the primary and one on a secondary ENI")
	}
	peer := b.newPod("default", "peer")
	if err := peer.addRetrying(lb, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := sec.check(la); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	inet, _ := c.sim.Cloud.InstanceNetwork(a.vn.InstanceID)
	nodeIP := inet.PrimaryIP

	internet := netip.MustParseAddrPort("203.0.113.10:80")
	excluded := netip.MustParseAddrPort("198.51.100.10:80")
	for _, ap := range []netip.AddrPort{internet, excluded} {
		echoServer(t, c.sim.Fabric.DoInOutside, ap, "outside")
	}
	echoServer(t, peer.doIn, netip.AddrPortFrom(peer.ip, 8080), "peer")
	echoServer(t, sec.doIn, netip.AddrPortFrom(sec.ip, 8080), "sec")
	// kube-proxy's NodePort DNAT (inserted first, as kube-proxy does) to the
	// secondary-ENI pod.
	if err := a.do(func() error {
		return exec.Command("iptables", "-t", "nat", "-I", "PREROUTING", "1", "-d", nodeIP.String(), "-p", "tcp",
			"--dport", "30080", "-m", "comment", "--comment", "e2e-kube-proxy-nodeport",
			"-j", "DNAT", "--to-destination", sec.ip.String()+":8080").Run()
	}); err != nil {
		t.Fatal(err)
	}

	// kube-proxy's ClusterIP DNAT to a pod on another node: the connmark
	// must not catch it (it is set after DNAT), or the secondary-ENI pod's
	// packets would leave by the primary ENI with its own address and be
	// dropped by the source/destination check.
	if err := a.do(func() error {
		return exec.Command("iptables", "-t", "nat", "-I", "PREROUTING", "1", "-d", "172.20.0.10", "-p", "tcp",
			"--dport", "80", "-m", "comment", "--comment", "e2e-kube-proxy-clusterip",
			"-j", "DNAT", "--to-destination", peer.ip.String()+":8080").Run()
	}); err != nil {
		t.Fatal(err)
	}
	othersSurvive := func(t *testing.T) {
		t.Helper()
		err := a.do(func() error {
			out, err := exec.Command("iptables", "-t", "nat", "-S", "PREROUTING").Output()
			for _, c := range []string{"e2e-kube-proxy-nodeport", "e2e-kube-proxy-clusterip"} {
				if !strings.Contains(string(out), c) {
					t.Errorf("kube-proxy's rule %s is gone", c)
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	type flow struct {
		name string
		from func(func() error) error
		to   netip.AddrPort
		src  netip.Addr
	}
	check := func(t *testing.T, flows []flow) {
		t.Helper()
		for _, f := range flows {
			got, err := dialEcho(f.from, f.to)
			if err != nil {
				t.Errorf("%s: %v", f.name, err)
				continue
			}
			fs := strings.Fields(got)
			if len(fs) != 2 {
				t.Errorf("%s: answer %q", f.name, got)
				continue
			}
			if src := netip.MustParseAddrPort(fs[1]).Addr(); src != f.src {
				t.Errorf("%s: the far end saw %s, want %s", f.name, src, f.src)
			}
		}
	}
	snatFlows := []flow{
		{"primary-ENI pod to the internet: SNAT to the node", prim.doIn, internet, nodeIP},
		{"secondary-ENI pod to the internet: SNAT to the node, out of the primary ENI", sec.doIn, internet, nodeIP},
		{"secondary-ENI pod to another node's pod: own address", sec.doIn, netip.AddrPortFrom(peer.ip, 8080), sec.ip},
		{"secondary-ENI pod to an excluded CIDR: own address", sec.doIn, excluded, sec.ip},
		{"NodePort from the internet to a secondary-ENI pod", c.sim.Fabric.DoInOutside, netip.AddrPortFrom(nodeIP, 30080),
			netip.MustParseAddr("203.0.113.10")},
		{"secondary-ENI pod to a ClusterIP backed by another node's pod", sec.doIn,
			netip.MustParseAddrPort("172.20.0.10:80"), sec.ip},
	}
	t.Run("snat mode", func(t *testing.T) { check(t, snatFlows) })
	snatRules := ourRules(t, a)

	// A CIDR associated with the VPC later is exempt from SNAT without a
	// restart (the daemon follows IMDS; only the ipset changes).
	t.Run("new VPC CIDR picked up", func(t *testing.T) {
		if err := c.sim.Cloud.AddVPCCIDR(c.vpc, "100.64.0.0/16"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			var out []byte
			_ = a.do(func() error {
				var err error
				out, err = exec.Command("ipset", "list", "vpcchain-nosnat").Output()
				return err
			})
			if strings.Contains(string(out), "100.64.0.0/16") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("100.64.0.0/16 never reached the no-SNAT set:\n%s", out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if after := ourRules(t, a); strings.Join(after, "\n") != strings.Join(snatRules, "\n") {
			t.Fatalf("a new CIDR changed rules:\n%s", strings.Join(after, "\n"))
		}
	})

	// 200 more pod addresses through the plugin: the packet path's rules do
	// not grow (pods are ipset entries).
	t.Run("rules do not grow with pods", func(t *testing.T) {
		for i := 0; i < 200; i++ {
			ip := fmt.Sprintf("10.0.%d.%d", 100+i/200, 1+i%200)
			prev := fmt.Sprintf(`{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"%s/32","interface":0}]}`, ip)
			conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"vpcchain","type":"vpc-snat","nodeConfig":%q,"prevResult":%s}`, a.state+"/snat.json", prev)
			env := map[string]string{"CNI_CONTAINERID": fmt.Sprintf("many-%d", i), "CNI_NETNS": sec.netns.Path(), "CNI_IFNAME": "eth0"}
			if out, err := runPlugin(t, a, "vpc-snat", "ADD", env, conf); err != nil {
				t.Fatalf("vpc-snat ADD %s: %v %s", ip, err, out)
			}
		}
		if after := ourRules(t, a); strings.Join(after, "\n") != strings.Join(snatRules, "\n") {
			t.Fatalf("rules changed with 200 pods:\n%s", strings.Join(after, "\n"))
		}
	})

	// External SNAT: nothing of ours; pod addresses leave through their own
	// ENI, unchanged.
	a.restart("AWS_VPC_K8S_CNI_EXTERNALSNAT=true")
	t.Run("external snat mode", func(t *testing.T) {
		if left := ourRules(t, a); len(left) != 0 {
			t.Fatalf("external SNAT mode left:\n%s", strings.Join(left, "\n"))
		}
		othersSurvive(t)
		check(t, []flow{
			{"primary-ENI pod to the internet: own address", prim.doIn, internet, prim.ip},
			{"secondary-ENI pod to the internet: own address, own ENI", sec.doIn, internet, sec.ip},
		})
	})

	// Back to SNAT mode after a restart: exactly the rules of SNAT mode.
	a.restart("AWS_VPC_K8S_CNI_EXTERNALSNAT=false")
	t.Run("back to snat mode", func(t *testing.T) {
		if got := ourRules(t, a); strings.Join(got, "\n") != strings.Join(snatRules, "\n") {
			t.Fatalf("after switching back:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(snatRules, "\n"))
		}
		othersSurvive(t)
		// Running pods are SNATed again at once: the daemon puts its
		// allocations back into the set, no ADD needed.
		check(t, snatFlows)
		if err := sec.check(la); err != nil {
			t.Errorf("CHECK after the mode switch: %v", err)
		}
	})

	for _, p := range append(pods, peer) {
		l := la
		if p == peer {
			l = lb
		}
		if err := p.del(l); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
}
