package dataplane

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

var (
	subnetA6  = netip.MustParsePrefix("2001:db8:0:a::/64")
	a6        = netip.MustParseAddr("2001:db8:0:a::10")
	b6        = netip.MustParseAddr("2001:db8:0:a::20")
	aPrefix6  = netip.MustParsePrefix("2001:db8:0:a:1::/80")
	aInPrefix = netip.MustParseAddr("2001:db8:0:a:1::5")
	outside6  = netip.MustParseAddr(OutsideAddr6)
)

// ipv6Fabric: twoNodeFabric with subnet A's IPv6 /64; a's primary ENI holds
// a6 and the /80 aPrefix6, b's holds b6; whoami servers on [::]:8080 in a
// and b and on the IPv6 internet host.
func ipv6Fabric(t *testing.T) *Fabric {
	t.Helper()
	f := twoNodeFabric(t)
	must(t, f.AddSubnet(subnetA6))
	must(t, f.SetENIIPv6(eniA0.ID, []netip.Addr{a6}, []netip.Prefix{aPrefix6}))
	must(t, f.SetENIIPv6(eniB0.ID, []netip.Addr{b6}, nil))
	// An address of a's prefix, as a pod would hold it.
	ah := nlHandle(t, f.NodeNetNSPath("a"))
	eth0, err := ah.LinkByName("eth0")
	must(t, err)
	must(t, ah.AddrAdd(eth0, nodad(netip.PrefixFrom(aInPrefix, 128))))
	for _, n := range []string{"a", "b"} {
		l, err := f.ListenTCP(n, netip.AddrPortFrom(netip.IPv6Unspecified(), 8081))
		must(t, err)
		serveWhoAmI(l)
	}
	l, err := f.ListenTCPOutside(netip.AddrPortFrom(outside6, 8080))
	must(t, err)
	serveWhoAmI(l)
	return f
}

// IPv6 as in a dual-stack VPC: the primary ENI's addresses reach the node as
// DHCPv6 gives them (/128 on eth0, default route via the router's
// link-local), addresses and /80 prefixes are routed to their ENI while
// assigned, the source/destination check drops spoofed sources, an
// unassigned subnet address is a black hole, and the egress-only internet
// gateway lets replies in but not new connections.
func TestIPv6Routing(t *testing.T) {
	t.Parallel()
	f := ipv6Fabric(t)
	a, b, out := inNode(f, "a"), inNode(f, "b"), f.DoInOutside

	// What the node was given, as an EC2 OS configures it.
	ah := nlHandle(t, f.NodeNetNSPath("a"))
	eth0, err := ah.LinkByName("eth0")
	must(t, err)
	addrs, err := ah.AddrList(eth0, netlink.FAMILY_V6)
	must(t, err)
	foundA6 := false
	for _, ad := range addrs {
		if ad.IP.Equal(a6.AsSlice()) {
			foundA6 = true
			if ones, _ := ad.Mask.Size(); ones != 128 {
				t.Errorf("node a's %v is /%d on eth0, want /128", a6, ones)
			}
		}
	}
	if !foundA6 {
		t.Errorf("node a's eth0 lacks %v: %v", a6, addrs)
	}
	routes, err := ah.RouteList(eth0, netlink.FAMILY_V6)
	must(t, err)
	foundDefault := false
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "::/0") && r.Gw.Equal(netip.MustParseAddr(RouterLinkLocal).AsSlice()) {
			foundDefault = true
		}
	}
	if !foundDefault {
		t.Errorf("node a has no IPv6 default route via %s: %v", RouterLinkLocal, routes)
	}

	// A node spoofing another ENI's address.
	bh := nlHandle(t, f.NodeNetNSPath("b"))
	beth0, err := bh.LinkByName("eth0")
	must(t, err)
	spoof := netip.MustParseAddr("2001:db8:0:a::99")
	must(t, bh.AddrAdd(beth0, nodad(netip.PrefixFrom(spoof, 128))))

	aWeb, bWeb := netip.AddrPortFrom(a6, 8081), netip.AddrPortFrom(b6, 8081)
	cases := []struct {
		name     string
		do       doFunc
		src      netip.Addr
		dst      netip.AddrPort
		wantSeen netip.Addr // invalid: must be dropped
	}{
		{"a to b", a, a6, bWeb, a6},
		{"b to a", b, b6, aWeb, b6},
		{"a's prefix address to b", a, aInPrefix, bWeb, aInPrefix},
		{"b to a's prefix address", b, b6, netip.AddrPortFrom(aInPrefix, 8081), b6},
		{"a to the IPv6 internet", a, a6, netip.AddrPortFrom(outside6, 8080), a6},
		{"a's prefix address to the IPv6 internet", a, aInPrefix, netip.AddrPortFrom(outside6, 8080), aInPrefix},
		{"internet to a (egress-only gateway)", out, outside6, aWeb, netip.Addr{}},
		{"b with an address not on its ENI", b, spoof, aWeb, netip.Addr{}},
		{"a to an unassigned subnet address", a, a6, netip.MustParseAddrPort("[2001:db8:0:a::77]:8081"), netip.Addr{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wantSeen.IsValid() {
				expectReach(t, tc.do, tc.src, tc.dst, tc.wantSeen)
			} else {
				expectBlocked(t, tc.do, tc.src, tc.dst)
			}
		})
	}

	// The source check proper: a spoofed datagram must not arrive at all
	// (for TCP the missing reply would hide whether it did).
	var udp *net.UDPConn
	must(t, a(func() error {
		var err error
		udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified, Port: 9999})
		return err
	}))
	defer udp.Close()
	to := netip.AddrPortFrom(a6, 9999)
	if !udpDelivered(t, b, b6, to, udp) {
		t.Errorf("datagram %v -> %v not delivered, want delivered", b6, to)
	}
	if udpDelivered(t, b, spoof, to, udp) {
		t.Errorf("datagram from %v (not on b's ENI) delivered, want dropped by the source check", spoof)
	}

	// The prefix leaves the ENI: its addresses are no longer delivered.
	must(t, f.SetENIIPv6(eniA0.ID, []netip.Addr{a6}, nil))
	expectBlocked(t, b, b6, netip.AddrPortFrom(aInPrefix, 8081))
	expectReach(t, b, b6, aWeb, b6)
	// The address is moved to b: b's node now answers for it.
	must(t, f.SetENIIPv6(eniA0.ID, nil, nil))
	must(t, f.SetENIIPv6(eniB0.ID, []netip.Addr{b6, a6}, nil))
	if addrs, err := ah.AddrList(eth0, netlink.FAMILY_V6); err == nil {
		for _, ad := range addrs {
			if ad.IP.Equal(a6.AsSlice()) {
				t.Errorf("node a still holds %v after it left its ENI", a6)
			}
		}
	}
	expectReach(t, b, a6, netip.AddrPortFrom(outside6, 8080), a6)
	// IPv4 is unaffected.
	expectReach(t, a, aPrimary, netip.AddrPortFrom(bPrimary, 8080), aPrimary)
}

// Security groups cover IPv6: CIDR permissions of either family apply to
// their own family only, and a source group admits its members' IPv6
// addresses and prefixes.
func TestIPv6SecurityGroups(t *testing.T) {
	t.Parallel()
	f := ipv6Fabric(t)
	a, b := inNode(f, "a"), inNode(f, "b")
	bWeb, aWeb := netip.AddrPortFrom(b6, 8081), netip.AddrPortFrom(a6, 8081)
	groups := map[string][]Permission{
		// b admits 8081 from its group's members and from a6 by CIDR on
		// port 9 only (so a6 reaches b only through membership).
		"sg-b": {{Protocol: "tcp", FromPort: 8081, ToPort: 8081, Groups: []string{"sg-a"}},
			{Protocol: "tcp", FromPort: 9, ToPort: 9, CIDRs: []netip.Prefix{netip.PrefixFrom(a6, 128)}}},
		// a admits 8081 from the IPv4 world only.
		"sg-a": {{Protocol: "tcp", FromPort: 8081, ToPort: 8081, CIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}},
	}
	enis := map[string][]string{eniA0.ID: {"sg-a"}, eniB0.ID: {"sg-b"}}
	must(t, f.SetSecurityGroups(groups, enis))

	expectReach(t, a, a6, bWeb, a6)
	expectReach(t, a, aInPrefix, bWeb, aInPrefix)
	expectBlocked(t, b, b6, aWeb) // an IPv4 CIDR does not admit IPv6
	expectReach(t, b, bPrimary, netip.AddrPortFrom(aPrimary, 8081), bPrimary)
	expectReach(t, a, a6, netip.AddrPortFrom(outside6, 8080), a6) // egress open, replies pass

	// a leaves sg-a: not a member any more.
	enis[eniA0.ID] = nil
	must(t, f.SetSecurityGroups(groups, enis))
	expectBlocked(t, a, a6, bWeb)
}

// udpDelivered sends one datagram from src and reports whether l received a
// datagram from src within a second.
func udpDelivered(t *testing.T, do doFunc, src netip.Addr, dst netip.AddrPort, l *net.UDPConn) bool {
	t.Helper()
	must(t, do(func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	}))
	buf := make([]byte, 16)
	deadline := time.Now().Add(time.Second)
	for {
		_ = l.SetReadDeadline(deadline)
		_, from, err := l.ReadFromUDPAddrPort(buf)
		if err != nil {
			return false
		}
		if from.Addr().Unmap() == src {
			return true
		}
	}
}
