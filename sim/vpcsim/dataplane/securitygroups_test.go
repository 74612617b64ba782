package dataplane

import (
	"net/netip"
	"testing"
)

// Security groups as EC2 documents them: an ENI receives only what one of
// its groups allows (protocol, ports, source CIDR or source group), replies
// of allowed flows pass (stateful), what an ENI sends is not filtered, and a
// source group covers every address of its members, secondary and
// prefix addresses included, for as long as they are members.
func TestSecurityGroups(t *testing.T) {
	t.Parallel()
	f := twoNodeFabric(t) // a (10.0.0.10) and b (10.0.0.20), servers on b:8080 and outside:8080
	must(t, f.AttachENI("a", eniA1))
	ah := nlHandle(t, f.NodeNetNSPath("a"))
	eth1 := configureSecondaryENI(t, ah, "eth1", a1Primary)
	sec := netip.MustParseAddr("10.0.0.50")
	inPrefix := netip.MustParseAddr("10.0.0.66")
	must(t, ah.AddrAdd(eth1, addr(netip.PrefixFrom(sec, 32))))
	must(t, ah.AddrAdd(eth1, addr(netip.PrefixFrom(inPrefix, 32))))
	addRule(t, ah, sec, 100)
	addRule(t, ah, inPrefix, 100)
	must(t, f.SetENIAddresses(eniA1.ID, []netip.Addr{sec}, []netip.Prefix{netip.MustParsePrefix("10.0.0.64/28")}))
	// twoNodeFabric serves b:8080 already.
	for _, ap := range []struct {
		node string
		at   netip.AddrPort
	}{{"b", netip.AddrPortFrom(bPrimary, 22)}, {"a", netip.AddrPortFrom(aPrimary, 22)}, {"a", netip.AddrPortFrom(aPrimary, 8080)}} {
		l, err := f.ListenTCP(ap.node, ap.at)
		must(t, err)
		serveWhoAmI(l)
	}
	a, b, out := inNode(f, "a"), inNode(f, "b"), f.DoInOutside
	bWeb, bSSH := netip.AddrPortFrom(bPrimary, 8080), netip.AddrPortFrom(bPrimary, 22)
	aWeb, aSSH := netip.AddrPortFrom(aPrimary, 8080), netip.AddrPortFrom(aPrimary, 22)

	// b: "web" allows TCP 8080 from the internet host's /24 and from the
	// members of "peers" only. a's ENIs: eth0 in "def" (all from its own
	// members), eth1 in "peers" (no ingress at all).
	groups := map[string][]Permission{
		"sg-web":   {{Protocol: "tcp", FromPort: 8080, ToPort: 8080, CIDRs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Groups: []string{"sg-peers"}}},
		"sg-def":   {{Protocol: "-1", Groups: []string{"sg-def"}}},
		"sg-peers": {},
	}
	enis := map[string][]string{eniB0.ID: {"sg-web"}, eniA0.ID: {"sg-def"}, eniA1.ID: {"sg-peers"}}
	must(t, f.SetSecurityGroups(groups, enis))

	expectReach(t, out, netip.Addr{}, bWeb, outside)                         // CIDR, port allowed
	expectBlocked(t, out, netip.Addr{}, bSSH)                                // CIDR, port not allowed
	expectReach(t, a, sec, bWeb, sec)                                        // source group: a secondary address
	expectReach(t, a, inPrefix, bWeb, inPrefix)                              // source group: an address of a delegated prefix
	expectReach(t, a, a1Primary, bWeb, a1Primary)                            // source group: the member's primary
	expectBlocked(t, a, sec, bSSH)                                           // member, port not allowed
	expectBlocked(t, a, aPrimary, bWeb)                                      // not a member (eth0 is in sg-def)
	expectBlocked(t, b, bPrimary, aWeb)                                      // b is not in sg-def
	expectReach(t, a, aPrimary, netip.AddrPortFrom(outside, 8080), aPrimary) // egress is open, replies pass
	expectReach(t, b, bPrimary, netip.AddrPortFrom(outside, 8080), bPrimary) // b's replies too, though sg-web allows no port 8080 from outside's source port

	// The address leaves the ENI: it is no longer a member's.
	must(t, f.SetENIAddresses(eniA1.ID, nil, []netip.Prefix{netip.MustParsePrefix("10.0.0.64/28")}))
	expectBlocked(t, a, sec, bWeb)
	expectReach(t, a, inPrefix, bWeb, inPrefix)
	// The ENI leaves the group: none of its addresses is admitted.
	enis[eniA1.ID] = []string{"sg-def"}
	must(t, f.SetSecurityGroups(groups, enis))
	expectBlocked(t, a, inPrefix, bWeb)
	expectBlocked(t, a, a1Primary, bWeb)
	// b joins sg-def: a's eth0 admits it, on any port.
	enis[eniB0.ID] = []string{"sg-web", "sg-def"}
	must(t, f.SetSecurityGroups(groups, enis))
	expectReach(t, b, bPrimary, aSSH, bPrimary)
}
