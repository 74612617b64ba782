package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcchain/vpcchain/internal/routing"
)

var nodeIP6 = net.ParseIP("2001:db8:ff::10")

// enableIPv6 makes the test host a node of an IPv6 cluster: an IPv6
// address of its own (the source of host->pod traffic) and IPv6
// forwarding, inside its netns only.
func (h *host) enableIPv6() {
	h.t.Helper()
	h.do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP6, Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}); err != nil {
			return err
		}
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644); err != nil {
			return err
		}
		// The kernel adds the address's local route asynchronously: the
		// baseline must not be taken before it is there.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: unix.RT_TABLE_LOCAL}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return err
			}
			for _, r := range routes {
				if r.Dst != nil && r.Dst.IP.Equal(nodeIP6) {
					return nil
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no local route for %s", nodeIP6)
			}
		}
	})
	h.baseline = h.snapshot()
}

func readSysctlIn(t *testing.T, do func(func() error), key string) string {
	t.Helper()
	var v string
	do(func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	})
	return v
}

// IPv6 pods: a /128 with default via fe80::1 through a permanent
// neighbour (no NDP anywhere: the host also knows the pod's MAC), DAD off on
// both ends, IPv6 on but no address on the host veth; traffic flows pod to
// pod and host to pod; CHECK names a broken piece; DEL leaves the host as
// it was.
func TestIPv6Pods(t *testing.T) {
	h := newHost(t)
	h.enableIPv6()
	list := conflist(t, nil, h.hostLocal("2001:db8:77::/64"))
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
	res, err := types100.NewResultFromResult(ra)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.IP.To4() != nil || res.IPs[0].Address.Mask.String() != net.CIDRMask(128, 128).String() ||
		!res.IPs[0].Gateway.Equal(routing.PodGateway6) {
		t.Fatalf("result IPs %v, want one IPv6 /128 with gateway fe80::1", res.IPs)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "::/0" || !res.Routes[0].GW.Equal(routing.PodGateway6) {
		t.Errorf("result routes %v, want ::/0 via fe80::1", res.Routes)
	}
	ipA := res.IPs[0].Address.IP
	resB, _ := types100.NewResultFromResult(rb)
	ipB := resB.IPs[0].Address.IP
	hostName := vethOf(t, a.namespace, a.name)
	hl := h.link(hostName)

	// Host side: IPv6 on, no address, DAD and RA off; /128 route; the pod
	// as a permanent neighbour.
	for key, want := range map[string]string{"disable_ipv6": "0", "accept_dad": "0", "accept_ra": "0", "addr_gen_mode": "1"} {
		if got := readSysctlIn(t, h.do, "net/ipv6/conf/"+hostName+"/"+key); got != want {
			t.Errorf("host veth %s: %s = %s, want %s", hostName, key, got, want)
		}
	}
	h.do(func() error {
		addrs, err := netlink.AddrList(hl, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		if len(addrs) != 0 {
			t.Errorf("host veth has addresses %v, want none", addrs)
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Dst: &net.IPNet{IP: ipA, Mask: net.CIDRMask(128, 128)}, Table: 254},
			netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		if len(routes) != 1 || routes[0].LinkIndex != hl.Attrs().Index {
			t.Errorf("host routes to %s/128 = %v, want one via %s", ipA, routes, hostName)
		}
		neighs, err := netlink.NeighList(hl.Attrs().Index, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		found := false
		for _, n := range neighs {
			found = found || n.IP.Equal(ipA) && n.State == netlink.NUD_PERMANENT
		}
		if !found {
			t.Errorf("host neighbours on %s: %v, want %s permanent", hostName, neighs, ipA)
		}
		return nil
	})
	// Pod side.
	if got := readSysctlIn(t, func(f func() error) { a.do(t, f) }, "net/ipv6/conf/eth0/accept_dad"); got != "0" {
		t.Errorf("pod accept_dad = %s, want 0", got)
	}
	a.do(t, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		found := false
		for _, ad := range addrs {
			if ad.IP.Equal(ipA) {
				found = true
				if ones, _ := ad.Mask.Size(); ones != 128 || ad.Flags&0x40 /* IFA_F_TENTATIVE */ != 0 {
					t.Errorf("pod address %v (flags %#x): want /128, not tentative", ad.IPNet, ad.Flags)
				}
			}
		}
		if !found {
			t.Errorf("pod addresses %v lack %s", addrs, ipA)
		}
		routes, err := netlink.RouteList(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		def := false
		for _, r := range routes {
			def = def || (r.Dst == nil || r.Dst.String() == "::/0") && r.Gw.Equal(routing.PodGateway6)
		}
		if !def {
			t.Errorf("pod routes %v: want default via fe80::1", routes)
		}
		return nil
	})

	// Traffic: pod <-> pod, host -> pod.
	serveTCP(t, a.ns, "["+ipA.String()+"]:8080", "a")
	serveTCP(t, b.ns, "["+ipB.String()+"]:8080", "b")
	if got, err := dialTCP(a.ns, "["+ipB.String()+"]:8080"); err != nil || got != "b ping" {
		t.Errorf("pod a -> pod b: %q, %v", got, err)
	}
	if got, err := dialTCP(b.ns, "["+ipA.String()+"]:8080"); err != nil || got != "a ping" {
		t.Errorf("pod b -> pod a: %q, %v", got, err)
	}
	if got, err := dialTCP(h.ns, "["+ipA.String()+"]:8080"); err != nil || got != "a ping" {
		t.Errorf("host -> pod a: %q, %v", got, err)
	}

	// CHECK: good, then the broken pieces named.
	if err := h.check(list, a); err != nil {
		t.Errorf("CHECK pod a: %v", err)
	}
	a.do(t, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V6, IP: routing.PodGateway6})
	})
	if err := h.check(list, a); err == nil || !strings.Contains(cniCode(t, err).Msg, "pod interface eth0 has no neighbour entry for fe80::1") {
		t.Errorf("CHECK after deleting the pod's gateway neighbour: %v", err)
	}
	h.do(func() error {
		lb := h.link(vethOf(t, b.namespace, b.name))
		return netlink.NeighDel(&netlink.Neigh{LinkIndex: lb.Attrs().Index, Family: netlink.FAMILY_V6, IP: ipB})
	})
	if err := h.check(list, b); err == nil || !strings.Contains(cniCode(t, err).Msg, "has no neighbour entry for "+ipB.String()) {
		t.Errorf("CHECK after deleting the host's neighbour for pod b: %v", err)
	}

	for i := 0; i < 2; i++ {
		for _, p := range []*pod{a, b} {
			if err := h.del(list, p); err != nil {
				t.Errorf("DEL #%d: %v", i+1, err)
			}
		}
	}
	h.assertClean("after DEL")
	if left := h.ipamAllocations(); len(left) != 0 {
		t.Errorf("IPAM allocations left: %v", left)
	}
}
