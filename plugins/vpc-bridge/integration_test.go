package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcchain/vpcchain/internal/routing"
)

func podIPOf(t *testing.T, r types.Result) net.IP {
	t.Helper()
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d IPs: %v", len(res.IPs), res.IPs)
	}
	return res.IPs[0].Address.IP.To4()
}

// wantVeth is the host veth name of each pod these tests wire, computed
// outside the code: "eni" + the first 11 hex digits of
// printf %s <namespace>.<pod> | sha1sum (the name Calico's Felix expects).
var wantVeth = map[string]string{
	"default/nginx":                        "enic440f455693",
	"kube-system/coredns-5d78c9869d-abcde": "eni4d5f75c480c",
	"default/owner":                        "eni25c131ae5c3",
	"default/retry":                        "enia79df20250a",
	"default/busy":                         "enid0418abe16f",
}

func vethOf(t *testing.T, namespace, name string) string {
	t.Helper()
	v, ok := wantVeth[namespace+"/"+name]
	if !ok {
		t.Fatalf("no precomputed host veth name for pod %s/%s: add it to wantVeth", namespace, name)
	}
	return v
}

// ownerAlias is the host veth's alias as docs/design.md writes it
// (internal/veth/owner.go): vpcchain:v1:<container ID>:<ifname>:<table>.
func ownerAlias(containerID, ifName string, table int) string {
	return fmt.Sprintf("vpcchain:v1:%s:%s:%d", containerID, ifName, table)
}

// assertPodWired checks everything ADD promises, on both sides.
func assertPodWired(t *testing.T, h *host, p *pod, r types.Result, wantTable int) {
	t.Helper()
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	wantName := vethOf(t, p.namespace, p.name)
	if len(res.Interfaces) != 2 {
		t.Fatalf("result interfaces = %v, want host veth + pod interface", res.Interfaces)
	}
	hostItf, podItf := res.Interfaces[0], res.Interfaces[1]
	if hostItf.Name != wantName || hostItf.Sandbox != "" {
		t.Errorf("host interface in result = %+v, want name %s without sandbox", hostItf, wantName)
	}
	if podItf.Name != p.ifName || podItf.Sandbox != p.ns.Path() {
		t.Errorf("pod interface in result = %+v, want %s in %s", podItf, p.ifName, p.ns.Path())
	}
	ip := podIPOf(t, r)
	ipc := res.IPs[0]
	if ipc.Interface == nil || *ipc.Interface != 1 || ipc.Address.String() != ip.String()+"/32" || !ipc.Gateway.Equal(routing.PodGateway4) {
		t.Errorf("result IP config = %+v, want %s/32 on interface 1 gateway %s", ipc, ip, routing.PodGateway4)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || !res.Routes[0].GW.Equal(routing.PodGateway4) {
		t.Errorf("result routes = %v, want default via %s", res.Routes, routing.PodGateway4)
	}

	// Host side.
	hl := h.link(wantName)
	if _, ok := hl.(*netlink.Veth); !ok {
		t.Errorf("host %s is %s, want veth", wantName, hl.Type())
	}
	if hl.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host veth %s is down", wantName)
	}
	if hl.Attrs().HardwareAddr.String() != hostItf.Mac {
		t.Errorf("host veth MAC %s, result says %s", hl.Attrs().HardwareAddr, hostItf.Mac)
	}
	if hl.Attrs().HardwareAddr[0]&0x02 == 0 || hl.Attrs().HardwareAddr[0]&0x01 != 0 {
		t.Errorf("host veth MAC %s is not a locally administered unicast address", hl.Attrs().HardwareAddr)
	}
	if hl.Attrs().MTU != 9001 {
		t.Errorf("host veth MTU %d, want 9001", hl.Attrs().MTU)
	}
	wantAlias := ownerAlias(p.containerID, p.ifName, wantTable)
	if hl.Attrs().Alias != wantAlias {
		t.Errorf("host veth alias %q, want %q", hl.Attrs().Alias, wantAlias)
	}
	h.do(func() error {
		addrs, err := netlink.AddrList(hl, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		if len(addrs) != 0 {
			t.Errorf("host veth has addresses %v, want none", addrs)
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
			&netlink.Route{Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}, Table: 254}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		if len(routes) != 1 || routes[0].LinkIndex != hl.Attrs().Index || routes[0].Scope != netlink.SCOPE_LINK {
			t.Errorf("host routes to %s/32 = %v, want one 'dev %s scope link'", ip, routes, wantName)
		} else if routes[0].Protocol != unix.RTPROT_STATIC {
			// Not "boot": Calico Felix with route sync on leaves it alone.
			t.Errorf("host route to %s/32 has protocol %v, want static (%d)", ip, routes[0].Protocol, unix.RTPROT_STATIC)
		}
		return nil
	})
	var has512, has1536 bool
	for _, r := range h.rules(ip) {
		switch {
		case r.Priority == 512 && r.Dst != nil && r.Src == nil && r.Table == 254:
			has512 = true
		case r.Priority == 1536 && r.Src != nil && r.Dst == nil && r.Table == wantTable:
			has1536 = true
		default:
			t.Errorf("unexpected rule for %s: %v", ip, r)
		}
	}
	if !has512 {
		t.Errorf("rule 512 'to %s/32 lookup main' missing", ip)
	}
	if has1536 != (wantTable != 254) {
		t.Errorf("rule 1536 'from %s/32 lookup %d' present=%v, want %v", ip, wantTable, has1536, wantTable != 254)
	}

	// Pod side.
	p.do(t, func() error {
		l, err := netlink.LinkByName(p.ifName)
		if err != nil {
			return err
		}
		if l.Attrs().HardwareAddr.String() != podItf.Mac {
			t.Errorf("pod MAC %s, result says %s", l.Attrs().HardwareAddr, podItf.Mac)
		}
		if l.Attrs().MTU != 9001 {
			t.Errorf("pod MTU %d, want 9001", l.Attrs().MTU)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != ip.String()+"/32" {
			t.Errorf("pod addresses %v, want %s/32", addrs, ip)
		}
		routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var gw, def bool
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == "169.254.1.1/32" && r.Scope == netlink.SCOPE_LINK {
				gw = true
			}
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(routing.PodGateway4) {
				def = true
			}
		}
		if !gw || !def {
			t.Errorf("pod routes %v: want 169.254.1.1/32 scope link (%v) and default via 169.254.1.1 (%v)", routes, gw, def)
		}
		neighs, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		found := false
		for _, n := range neighs {
			if n.IP.Equal(routing.PodGateway4) && n.State == netlink.NUD_PERMANENT && n.HardwareAddr.String() == hl.Attrs().HardwareAddr.String() {
				found = true
			}
		}
		if !found {
			t.Errorf("pod neighbours %v: want 169.254.1.1 lladdr %s permanent", neighs, hl.Attrs().HardwareAddr)
		}
		return nil
	})
}

func TestTwoPodsAddCheckConnectDel(t *testing.T) {
	h := newHost(t)
	list := conflist(t, nil, h.hostLocal("10.77.0.0/24"))
	a := h.newPod("default", "nginx")
	b := h.newPod("kube-system", "coredns-5d78c9869d-abcde")

	ra, err := h.add(list, a)
	if err != nil {
		t.Fatalf("ADD pod a: %v", err)
	}
	rb, err := h.add(list, b)
	if err != nil {
		t.Fatalf("ADD pod b: %v", err)
	}
	if !h.linkExists("enic440f455693") || !h.linkExists("eni4d5f75c480c") {
		t.Fatalf("host veths enic440f455693 / eni4d5f75c480c missing")
	}
	assertPodWired(t, h, a, ra, 254)
	assertPodWired(t, h, b, rb, 254)
	ipA, ipB := podIPOf(t, ra), podIPOf(t, rb)

	// Pod <-> pod and host -> pod, over TCP.
	serveTCP(t, a.ns, ipA.String()+":8080", "a")
	serveTCP(t, b.ns, ipB.String()+":8080", "b")
	for _, c := range []struct {
		from       string
		dialer     *pod
		to         string
		wantPrefix string
	}{
		{"pod a", a, ipB.String() + ":8080", "b ping"},
		{"pod b", b, ipA.String() + ":8080", "a ping"},
	} {
		got, err := dialTCP(c.dialer.ns, c.to)
		if err != nil || got != c.wantPrefix {
			t.Errorf("%s -> %s: reply %q, err %v", c.from, c.to, got, err)
		}
	}
	for _, to := range []string{ipA.String() + ":8080", ipB.String() + ":8080"} {
		if got, err := dialTCP(h.ns, to); err != nil || !strings.HasSuffix(got, " ping") {
			t.Errorf("host -> %s: reply %q, err %v", to, got, err)
		}
	}

	// CHECK passes on good pods ...
	if err := h.check(list, a); err != nil {
		t.Errorf("CHECK pod a: %v", err)
	}
	if err := h.check(list, b); err != nil {
		t.Errorf("CHECK pod b: %v", err)
	}
	// ... and names the broken piece.
	a.do(t, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, IP: routing.PodGateway4})
	})
	err = h.check(list, a)
	if err == nil {
		t.Fatalf("CHECK after deleting the neighbour entry succeeded")
	}
	e := cniCode(t, err)
	if !strings.Contains(e.Msg, "pod interface eth0 has no neighbour entry for 169.254.1.1") {
		t.Errorf("CHECK message %q does not name the missing neighbour", e.Msg)
	}
	t.Logf("CHECK error: %s", e.Msg)
	h.do(func() error {
		r := netlink.NewRule()
		r.Priority, r.Family, r.Table = 512, netlink.FAMILY_V4, 254
		r.Dst = &net.IPNet{IP: ipB, Mask: net.CIDRMask(32, 32)}
		return netlink.RuleDel(r)
	})
	if err := h.check(list, b); err == nil || !strings.Contains(cniCode(t, err).Msg, fmt.Sprintf(`rule "512: from all to %s/32 lookup main" missing`, ipB)) {
		t.Errorf("CHECK after deleting rule 512: %v", err)
	}

	// DEL twice succeeds; everything is gone.
	for i := 0; i < 2; i++ {
		if err := h.del(list, a); err != nil {
			t.Errorf("DEL pod a #%d: %v", i+1, err)
		}
		if err := h.del(list, b); err != nil {
			t.Errorf("DEL pod b #%d: %v", i+1, err)
		}
	}
	h.assertClean("after DEL")
	if left := h.ipamAllocations(); len(left) != 0 {
		t.Errorf("IPAM allocations left: %v", left)
	}
	a.do(t, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Errorf("pod a still has eth0")
		}
		return nil
	})
}

func TestSecondaryENIRouteTable(t *testing.T) {
	h := newHost(t)
	ext := map[string]any{"routeTable": 3, "eniID": "eni-0123456789abcdef0", "deviceNumber": 2}
	list := conflist(t, nil, h.fakeIPAM([]string{"10.1.2.3/24"}, ext, nil))
	p := h.newPod("default", "nginx")

	r, err := h.add(list, p)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	assertPodWired(t, h, p, r, 3)
	ip := net.IPv4(10, 1, 2, 3).To4()
	var from []string
	for _, rule := range h.rules(ip) {
		if rule.Priority == 1536 {
			from = append(from, fmt.Sprintf("from %s lookup %d", rule.Src, rule.Table))
		}
	}
	if len(from) != 1 || from[0] != "from 10.1.2.3/32 lookup 3" {
		t.Fatalf("1536 rules = %v, want [from 10.1.2.3/32 lookup 3]", from)
	}
	if err := h.check(list, p); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	// CHECK notices a missing from-pod rule.
	h.do(func() error {
		r := netlink.NewRule()
		r.Priority, r.Family, r.Table = 1536, netlink.FAMILY_V4, 3
		r.Src = &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}
		return netlink.RuleDel(r)
	})
	if err := h.check(list, p); err == nil || !strings.Contains(cniCode(t, err).Msg, `rule "1536: from 10.1.2.3/32 lookup 3" missing`) {
		t.Fatalf("CHECK after deleting rule 1536: %v", err)
	}
	if err := h.del(list, p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	h.assertClean("after DEL")
	if !strings.Contains(h.fakeCalls(), "DEL "+p.containerID+" eth0") {
		t.Errorf("IPAM DEL not called; calls:\n%s", h.fakeCalls())
	}
}

func TestStatusDelegatesToIPAM(t *testing.T) {
	h := newHost(t)
	if err := h.status(conflist(t, nil, h.hostLocal("10.77.5.0/24"))); err != nil {
		t.Errorf("STATUS with host-local: %v", err)
	}
	bad := conflist(t, nil, h.fakeIPAM(nil, nil, map[string]any{"STATUS": map[string]any{"code": 50, "msg": "daemon not ready: warm pool empty"}}))
	err := h.status(bad)
	if err == nil {
		t.Fatalf("STATUS with unavailable IPAM succeeded")
	}
	if e := cniCode(t, err); e.Code != 50 || e.Msg != "daemon not ready: warm pool empty" {
		t.Errorf("STATUS error %+v, want the IPAM plugin's code 50", e)
	}
}

// Guard against the test harness itself ever touching the root netns: the
// helpers only run plugin code inside namespaces created by testutils.NewNS.
func TestHarnessUsesOwnNamespaces(t *testing.T) {
	requireRoot(t)
	h := newHost(t)
	if !strings.HasPrefix(filepath.Base(h.ns.Path()), "cnitest-") {
		t.Fatalf("host netns %s is not a test namespace", h.ns.Path())
	}
	cur, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	registerNS(cur)
	removeNS(cur)
	if _, err := os.Stat(cur.Path()); !os.IsNotExist(err) {
		t.Fatalf("removeNS left %s", cur.Path())
	}
}
