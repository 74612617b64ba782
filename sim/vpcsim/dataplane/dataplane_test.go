package dataplane

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dial timeouts: a drop is proven by a ~1s timeout; an expected success gets
// a little more so that one lost SYN (retransmitted after 1s) cannot flake.
const (
	blockedTimeout = time.Second
	reachTimeout   = 3 * time.Second
)

var (
	subnetA   = netip.MustParsePrefix("10.0.0.0/24")
	subnetB   = netip.MustParsePrefix("10.0.1.0/24")
	outside   = netip.MustParseAddr(OutsideAddr)
	outsideB  = netip.MustParseAddr(OutsideAltAddr)
	gatewayA  = netip.MustParseAddr("10.0.0.1")
	aPrimary  = netip.MustParseAddr("10.0.0.10")
	a1Primary = netip.MustParseAddr("10.0.0.11")
	bPrimary  = netip.MustParseAddr("10.0.0.20")
	cPrimary  = netip.MustParseAddr("10.0.1.30")
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

var (
	eniA0 = ENI{ID: "eni-0aaaaaaaaaaaaaa00", MAC: mac("02:00:00:00:0a:00"), DeviceIndex: 0, PrimaryIP: aPrimary, Subnet: subnetA}
	eniA1 = ENI{ID: "eni-0aaaaaaaaaaaaaa01", MAC: mac("02:00:00:00:0a:01"), DeviceIndex: 1, PrimaryIP: a1Primary, Subnet: subnetA}
	eniB0 = ENI{ID: "eni-0bbbbbbbbbbbbbb00", MAC: mac("02:00:00:00:0b:00"), DeviceIndex: 0, PrimaryIP: bPrimary, Subnet: subnetA}
	eniC0 = ENI{ID: "eni-0cccccccccccccc00", MAC: mac("02:00:00:00:0c:00"), DeviceIndex: 0, PrimaryIP: cPrimary, Subnet: subnetB}
)

// newFabric creates a fabric with a unique RunID and registers a cleanup that
// closes it (twice, to check idempotence) and asserts nothing is left.
func newFabric(t *testing.T) *Fabric {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	runID := "t" + randomRunID()[:5]
	f, err := New(Options{RunID: runID})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		assertNoLeftovers(t, runID)
	})
	return f
}

func assertNoLeftovers(t *testing.T, runID string) {
	t.Helper()
	left, err := Leftovers(runID)
	if err != nil {
		t.Errorf("Leftovers(%s): %v", runID, err)
	}
	if len(left) != 0 {
		t.Errorf("Leftovers(%s) = %v, want none", runID, left)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// serveWhoAmI answers every connection with the client's address as seen by
// the server, then closes it.
func serveWhoAmI(l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(3 * time.Second))
				ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
				fmt.Fprintf(c, "%s\n", ap.Addr().Unmap())
			}()
		}
	}()
}

type doFunc func(func() error) error

func inNode(f *Fabric, node string) doFunc {
	return func(fn func() error) error { return f.DoInNode(node, fn) }
}

// whoAmI dials dst from src (any source if !src.IsValid()) inside a namespace
// and returns the source address the server saw.
func whoAmI(do doFunc, src netip.Addr, dst netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	var conn net.Conn
	err := do(func() error {
		d := net.Dialer{Timeout: timeout}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		c, err := d.Dial("tcp", dst.String())
		conn = c
		return err
	})
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read: %w", err)
	}
	return netip.ParseAddr(strings.TrimSpace(line))
}

func expectReach(t *testing.T, do doFunc, src netip.Addr, dst netip.AddrPort, wantSeen netip.Addr) {
	t.Helper()
	seen, err := whoAmI(do, src, dst, reachTimeout)
	if err != nil {
		t.Errorf("%v -> %v: %v, want success", src, dst, err)
		return
	}
	if seen != wantSeen {
		t.Errorf("%v -> %v: server saw source %v, want %v", src, dst, seen, wantSeen)
	}
}

func expectBlocked(t *testing.T, do doFunc, src netip.Addr, dst netip.AddrPort) {
	t.Helper()
	seen, err := whoAmI(do, src, dst, blockedTimeout)
	if err == nil {
		t.Errorf("%v -> %v: connected (server saw %v), want dropped", src, dst, seen)
		return
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		// A drop shows up as a timeout; anything else (e.g. "network
		// unreachable" from the node itself) means the test setup is wrong.
		t.Errorf("%v -> %v: error %v, want a timeout (silent drop)", src, dst, err)
	}
}

func nlHandle(t *testing.T, nsPath string) *netlink.Handle {
	t.Helper()
	nsh, err := netns.GetFromPath(nsPath)
	must(t, err)
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	must(t, err)
	t.Cleanup(h.Close)
	return h
}

func pfx(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return ipnet(p)
}

// configureSecondaryENI does, inside node, what a CNI daemon would do for a
// secondary ENI: link up, the ENI's primary IP as /32, a policy table 100
// whose default route goes via the subnet gateway on that link, and a rule
// "from <primary> lookup 100".
func configureSecondaryENI(t *testing.T, h *netlink.Handle, link string, primary netip.Addr) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(link)
	must(t, err)
	must(t, h.LinkSetUp(l))
	must(t, h.AddrAdd(l, addr(netip.PrefixFrom(primary, 32))))
	must(t, h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: pfx("10.0.0.1/32"), Scope: netlink.SCOPE_LINK, Table: 100}))
	must(t, h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: ip(gatewayA), Table: 100}))
	addRule(t, h, primary, 100)
	must(t, WaitOperUp(h, link))
	return l
}

func addRule(t *testing.T, h *netlink.Handle, src netip.Addr, table int) *netlink.Rule {
	t.Helper()
	r := netlink.NewRule()
	r.Src = ipnet(netip.PrefixFrom(src, 32))
	r.Table = table
	r.Priority = 1000
	must(t, h.RuleAdd(r))
	return r
}

// twoNodeFabric: subnet 10.0.0.0/24, node a (eth0 10.0.0.10), node b (eth0
// 10.0.0.20) with a whoami listener on b:8080 and on both outside hosts.
func twoNodeFabric(t *testing.T) *Fabric {
	t.Helper()
	f := newFabric(t)
	must(t, f.AddSubnet(subnetA))
	must(t, f.AddNode("a"))
	must(t, f.AddNode("b"))
	must(t, f.AttachENI("a", eniA0))
	must(t, f.AttachENI("b", eniB0))
	for _, ap := range []netip.AddrPort{netip.AddrPortFrom(outside, 8080), netip.AddrPortFrom(outsideB, 8080)} {
		l, err := f.ListenTCPOutside(ap)
		must(t, err)
		serveWhoAmI(l)
	}
	l, err := f.ListenTCP("b", netip.AddrPortFrom(bPrimary, 8080))
	must(t, err)
	serveWhoAmI(l)
	return f
}

// Test 1: primary ENIs, same subnet, other subnet, internet in both directions,
// and the source/destination check on the internet link.
func TestPrimaryENIConnectivity(t *testing.T) {
	t.Parallel()
	f := twoNodeFabric(t)
	must(t, f.AddNode("c"))
	must(t, f.AttachENI("c", eniC0))
	for _, n := range []string{"a", "c"} {
		l, err := f.ListenTCP(n, netip.AddrPortFrom(netip.IPv4Unspecified(), 8080))
		must(t, err)
		serveWhoAmI(l)
	}
	out := f.DoInOutside
	// Spoofed VPC sources on the internet side.
	oh := nlHandle(t, NetNSPath(f.OutsideNetNSName()))
	olo, err := oh.LinkByName("lo")
	must(t, err)
	for _, s := range []string{"10.0.0.99/32", "10.0.0.20/32"} {
		must(t, oh.AddrAdd(olo, addr(netip.MustParsePrefix(s))))
	}

	cases := []struct {
		name     string
		do       doFunc
		src      netip.Addr
		dst      netip.AddrPort
		wantSeen netip.Addr // invalid: must be dropped
	}{
		{"a to b same subnet", inNode(f, "a"), netip.Addr{}, netip.AddrPortFrom(bPrimary, 8080), aPrimary},
		{"b to a same subnet", inNode(f, "b"), netip.Addr{}, netip.AddrPortFrom(aPrimary, 8080), bPrimary},
		{"a to outside", inNode(f, "a"), netip.Addr{}, netip.AddrPortFrom(outside, 8080), aPrimary},
		{"a to outside alt host", inNode(f, "a"), netip.Addr{}, netip.AddrPortFrom(outsideB, 8080), aPrimary},
		{"c (other subnet) to a", inNode(f, "c"), netip.Addr{}, netip.AddrPortFrom(aPrimary, 8080), cPrimary},
		{"a to c (other subnet)", inNode(f, "a"), netip.Addr{}, netip.AddrPortFrom(cPrimary, 8080), aPrimary},
		{"outside to a (internet source passes)", out, outside, netip.AddrPortFrom(aPrimary, 8080), outside},
		{"outside alt to a", out, outsideB, netip.AddrPortFrom(aPrimary, 8080), outsideB},
		{"outside spoofing unassigned VPC source", out, netip.MustParseAddr("10.0.0.99"), netip.AddrPortFrom(aPrimary, 8080), netip.Addr{}},
		{"outside spoofing b's address", out, bPrimary, netip.AddrPortFrom(aPrimary, 8080), netip.Addr{}},
		{"a to unassigned subnet address", inNode(f, "a"), netip.Addr{}, netip.MustParseAddrPort("10.0.0.77:8080"), netip.Addr{}},
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

	// The router answered ARP for the gateway on a's link: a's neighbour
	// entry for 10.0.0.1 carries the router-side link's MAC.
	rlink, ok := f.RouterLinkName(eniA0.ID)
	if !ok {
		t.Fatal("no router link for eniA0")
	}
	rh := nlHandle(t, NetNSPath(f.RouterNetNSName()))
	rl, err := rh.LinkByName(rlink)
	must(t, err)
	ah := nlHandle(t, f.NodeNetNSPath("a"))
	eth0, err := ah.LinkByName("eth0")
	must(t, err)
	neighs, err := ah.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
	must(t, err)
	found := false
	for _, n := range neighs {
		if n.IP.Equal(ip(gatewayA)) {
			found = true
			if !bytes.Equal(n.HardwareAddr, rl.Attrs().HardwareAddr) {
				t.Errorf("gateway neighbour MAC %v, want router link MAC %v", n.HardwareAddr, rl.Attrs().HardwareAddr)
			}
		}
	}
	if !found {
		t.Errorf("node a has no neighbour entry for the gateway %v: %v", gatewayA, neighs)
	}
}

// Test 2: a secondary IP on a secondary ENI works only while assigned.
func TestSecondaryENIAddress(t *testing.T) {
	t.Parallel()
	f := twoNodeFabric(t)
	must(t, f.AttachENI("a", eniA1))
	ah := nlHandle(t, f.NodeNetNSPath("a"))
	eth1 := configureSecondaryENI(t, ah, "eth1", a1Primary)
	x := netip.MustParseAddr("10.0.0.50")
	must(t, ah.AddrAdd(eth1, addr(netip.PrefixFrom(x, 32))))
	addRule(t, ah, x, 100)
	a := inNode(f, "a")
	toOutside := netip.AddrPortFrom(outside, 8080)
	toB := netip.AddrPortFrom(bPrimary, 8080)

	// The ENI's own primary IP works via eth1 without any assignment call.
	expectReach(t, a, a1Primary, toOutside, a1Primary)
	expectReach(t, a, a1Primary, toB, a1Primary)

	steps := []struct {
		name   string
		assign []netip.Addr
		works  bool
	}{
		{"not yet assigned", nil, false},
		{"assigned", []netip.Addr{x}, true},
		{"unassigned again", nil, false},
		{"reassigned", []netip.Addr{netip.MustParseAddr("10.0.0.51"), x}, true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			must(t, f.SetENIAddresses(eniA1.ID, st.assign, nil))
			if st.works {
				expectReach(t, a, x, toOutside, x)
				expectReach(t, a, x, toB, x)
			} else {
				expectBlocked(t, a, x, toOutside)
				expectBlocked(t, a, x, toB)
			}
			// The router's state is exactly primary + assignment.
			checkRouterRoutes(t, f, eniA1, st.assign, nil)
		})
	}
}

// checkRouterRoutes asserts the router link of e has exactly the primary /32
// route plus one route via the primary per secondary address and prefix.
func checkRouterRoutes(t *testing.T, f *Fabric, e ENI, secondary []netip.Addr, prefixes []netip.Prefix) {
	t.Helper()
	rlink, ok := f.RouterLinkName(e.ID)
	if !ok {
		t.Fatalf("no router link for %s", e.ID)
	}
	rh := nlHandle(t, NetNSPath(f.RouterNetNSName()))
	l, err := rh.LinkByName(rlink)
	must(t, err)
	routes, err := rh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	must(t, err)
	want := map[string]string{e.PrimaryIP.String() + "/32": ""}
	for _, a := range secondary {
		want[a.String()+"/32"] = e.PrimaryIP.String()
	}
	for _, p := range prefixes {
		want[p.String()] = e.PrimaryIP.String()
	}
	got := map[string]string{}
	for _, r := range routes {
		gw := ""
		if r.Gw != nil {
			gw = r.Gw.String()
			if r.Flags&int(netlink.FLAG_ONLINK) == 0 {
				t.Errorf("route %v via %v lacks onlink", r.Dst, r.Gw)
			}
		}
		got[r.Dst.String()] = gw
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("router routes on %s = %v, want %v", rlink, got, want)
	}
}

// Test 3: an address assigned to eth1's ENI but sent out eth0 is dropped.
func TestWrongENIDropped(t *testing.T) {
	t.Parallel()
	f := twoNodeFabric(t)
	must(t, f.AttachENI("a", eniA1))
	ah := nlHandle(t, f.NodeNetNSPath("a"))
	eth1 := configureSecondaryENI(t, ah, "eth1", a1Primary)
	x := netip.MustParseAddr("10.0.0.60")
	must(t, ah.AddrAdd(eth1, addr(netip.PrefixFrom(x, 32))))
	must(t, f.SetENIAddresses(eniA1.ID, []netip.Addr{x}, nil))
	a := inNode(f, "a")
	toOutside := netip.AddrPortFrom(outside, 8080)
	toB := netip.AddrPortFrom(bPrimary, 8080)

	// Resolve eth0's neighbours (gateway, node b) with eth0's own address
	// first. The router's rp_filter also applies to ARP: a request whose
	// sender IP is X, arriving on eth0's ENI, is not answered, so without
	// this the wrong-ENI attempts below would leave those neighbour entries
	// INCOMPLETE/FAILED on the node and the drop would happen at ARP level.
	expectReach(t, a, aPrimary, toOutside, aPrimary)
	expectReach(t, a, aPrimary, toB, aPrimary)
	// Positive control: through its own ENI.
	rule := addRule(t, ah, x, 100)
	expectReach(t, a, x, toOutside, x)
	// Now X leaves through eth0 (main table default route).
	must(t, ah.RuleDel(rule))
	before := rpFilterDrops(t, f)
	expectBlocked(t, a, x, toOutside)
	expectBlocked(t, a, x, toB)
	// ... and it is the router's reverse-path filter that dropped it.
	if after := rpFilterDrops(t, f); after <= before {
		t.Errorf("router IPReversePathFilter counter %d -> %d, want an increase", before, after)
	}
	// eth0's own address is unaffected.
	expectReach(t, a, aPrimary, toOutside, aPrimary)
	// Moving the assignment to eth0's ENI makes the same path legal.
	must(t, f.SetENIAddresses(eniA0.ID, []netip.Addr{x}, nil))
	if s, _, _ := f.ENIAddresses(eniA1.ID); len(s) != 0 {
		t.Errorf("after the move eniA1 still has %v", s)
	}
	checkRouterRoutes(t, f, eniA1, nil, nil)
	checkRouterRoutes(t, f, eniA0, []netip.Addr{x}, nil)
	expectReach(t, a, x, toOutside, x)
	expectReach(t, a, x, toB, x)
}

// Test 4: delegated /28 prefix.
func TestPrefixDelegation(t *testing.T) {
	t.Parallel()
	f := twoNodeFabric(t)
	must(t, f.AttachENI("a", eniA1))
	ah := nlHandle(t, f.NodeNetNSPath("a"))
	eth1 := configureSecondaryENI(t, ah, "eth1", a1Primary)
	prefix := netip.MustParsePrefix("10.0.0.64/28")
	must(t, f.SetENIAddresses(eniA1.ID, nil, []netip.Prefix{prefix}))
	checkRouterRoutes(t, f, eniA1, nil, []netip.Prefix{prefix})
	a := inNode(f, "a")
	toOutside := netip.AddrPortFrom(outside, 8080)
	toB := netip.AddrPortFrom(bPrimary, 8080)

	cases := []struct {
		addr  string
		works bool
	}{
		{"10.0.0.64", true}, // first address of the prefix
		{"10.0.0.70", true},
		{"10.0.0.79", true}, // last address of the prefix
		{"10.0.0.63", false},
		{"10.0.0.80", false},
		{"10.0.0.90", false},
	}
	for _, tc := range cases {
		src := netip.MustParseAddr(tc.addr)
		must(t, ah.AddrAdd(eth1, addr(netip.PrefixFrom(src, 32))))
		addRule(t, ah, src, 100)
		t.Run(tc.addr, func(t *testing.T) {
			if tc.works {
				expectReach(t, a, src, toOutside, src)
				expectReach(t, a, src, toB, src)
			} else {
				expectBlocked(t, a, src, toOutside)
			}
		})
	}
	// Removing the prefix takes effect immediately.
	must(t, f.SetENIAddresses(eniA1.ID, nil, nil))
	checkRouterRoutes(t, f, eniA1, nil, nil)
	expectBlocked(t, a, netip.MustParseAddr("10.0.0.70"), toOutside)
}

// Test 5: hot-plug and unplug.
func TestAttachDetachENI(t *testing.T) {
	t.Parallel()
	f := newFabric(t)
	must(t, f.AddSubnet(subnetA))
	must(t, f.AddNode("a"))
	must(t, f.AttachENI("a", eniA0))
	must(t, f.AttachENI("a", eniA1))
	ah := nlHandle(t, f.NodeNetNSPath("a"))
	rh := nlHandle(t, NetNSPath(f.RouterNetNSName()))

	// eth0: configured like DHCP would.
	eth0, err := ah.LinkByName("eth0")
	must(t, err)
	if !bytes.Equal(eth0.Attrs().HardwareAddr, eniA0.MAC) || eth0.Attrs().Flags&net.FlagUp == 0 || eth0.Attrs().MTU != ENIMTU {
		t.Errorf("eth0 = mac %v flags %v mtu %d; want %v, up, %d", eth0.Attrs().HardwareAddr, eth0.Attrs().Flags, eth0.Attrs().MTU, eniA0.MAC, ENIMTU)
	}
	addrs, err := ah.AddrList(eth0, netlink.FAMILY_V4)
	must(t, err)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.0.0.10/24" {
		t.Errorf("eth0 addresses = %v, want 10.0.0.10/24", addrs)
	}
	routes, err := ah.RouteList(eth0, netlink.FAMILY_V4)
	must(t, err)
	hasDefault := false
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(ip(gatewayA)) {
			hasDefault = true
		}
	}
	if !hasDefault {
		t.Errorf("node a has no default route via %v: %v", gatewayA, routes)
	}

	// eth1: exact MAC, down, no address.
	eth1, err := ah.LinkByName("eth1")
	must(t, err)
	if !bytes.Equal(eth1.Attrs().HardwareAddr, eniA1.MAC) {
		t.Errorf("eth1 MAC %v, want %v", eth1.Attrs().HardwareAddr, eniA1.MAC)
	}
	if eth1.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("eth1 is up, want down")
	}
	if addrs, _ := ah.AddrList(eth1, netlink.FAMILY_V4); len(addrs) != 0 {
		t.Errorf("eth1 has addresses %v, want none", addrs)
	}

	// Router side: link up, permanent neighbour, primary /32.
	rlink, ok := f.RouterLinkName(eniA1.ID)
	if !ok || len(rlink) > 15 {
		t.Fatalf("router link name %q ok=%v", rlink, ok)
	}
	rl, err := rh.LinkByName(rlink)
	must(t, err)
	if rl.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("router link %s down", rlink)
	}
	neighs, err := rh.NeighList(rl.Attrs().Index, netlink.FAMILY_V4)
	must(t, err)
	if len(neighs) != 1 || !neighs[0].IP.Equal(ip(a1Primary)) || !bytes.Equal(neighs[0].HardwareAddr, eniA1.MAC) || neighs[0].State != netlink.NUD_PERMANENT {
		t.Errorf("router neighbours on %s = %+v, want permanent %v -> %v", rlink, neighs, a1Primary, eniA1.MAC)
	}
	must(t, f.SetENIAddresses(eniA1.ID, []netip.Addr{netip.MustParseAddr("10.0.0.55")}, []netip.Prefix{netip.MustParsePrefix("10.0.0.96/28")}))
	checkRouterRoutes(t, f, eniA1, []netip.Addr{netip.MustParseAddr("10.0.0.55")}, []netip.Prefix{netip.MustParsePrefix("10.0.0.96/28")})

	// Detach: gone from node and router, no routes left.
	must(t, f.DetachENI(eniA1.ID))
	if _, err := ah.LinkByName("eth1"); err == nil {
		t.Errorf("eth1 still present in node after DetachENI")
	}
	if _, err := rh.LinkByName(rlink); err == nil {
		t.Errorf("router link %s still present after DetachENI", rlink)
	}
	all, err := rh.RouteList(nil, netlink.FAMILY_V4)
	must(t, err)
	for _, r := range all {
		if r.Dst != nil {
			if s := r.Dst.String(); s == "10.0.0.11/32" || s == "10.0.0.55/32" || s == "10.0.0.96/28" {
				t.Errorf("route %v survived DetachENI", r)
			}
		}
	}
	if _, _, ok := f.ENIAddresses(eniA1.ID); ok {
		t.Errorf("ENI state survived DetachENI")
	}

	// Re-attach the ENI at another device index with a new MAC.
	re := eniA1
	re.DeviceIndex = 2
	re.MAC = mac("02:00:00:00:0a:99")
	must(t, f.AttachENI("a", re))
	eth2, err := ah.LinkByName("eth2")
	must(t, err)
	if !bytes.Equal(eth2.Attrs().HardwareAddr, re.MAC) {
		t.Errorf("eth2 MAC %v, want %v", eth2.Attrs().HardwareAddr, re.MAC)
	}
	if eth2.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("eth2 is up, want down")
	}
	checkRouterRoutes(t, f, re, nil, nil)

	// Invalid attachments leave nothing behind.
	bad := []struct {
		name string
		node string
		eni  ENI
	}{
		{"duplicate ENI ID", "a", ENI{ID: eniA0.ID, MAC: mac("02:00:00:00:0f:01"), DeviceIndex: 3, PrimaryIP: netip.MustParseAddr("10.0.0.40"), Subnet: subnetA}},
		{"duplicate device index", "a", ENI{ID: "eni-x1", MAC: mac("02:00:00:00:0f:02"), DeviceIndex: 0, PrimaryIP: netip.MustParseAddr("10.0.0.41"), Subnet: subnetA}},
		{"primary IP in use", "a", ENI{ID: "eni-x2", MAC: mac("02:00:00:00:0f:03"), DeviceIndex: 4, PrimaryIP: aPrimary, Subnet: subnetA}},
		{"primary IP outside subnet", "a", ENI{ID: "eni-x3", MAC: mac("02:00:00:00:0f:04"), DeviceIndex: 5, PrimaryIP: netip.MustParseAddr("10.9.0.4"), Subnet: subnetA}},
		{"multicast MAC", "a", ENI{ID: "eni-x4", MAC: mac("01:00:00:00:0f:05"), DeviceIndex: 6, PrimaryIP: netip.MustParseAddr("10.0.0.42"), Subnet: subnetA}},
		{"unknown node", "zz", ENI{ID: "eni-x5", MAC: mac("02:00:00:00:0f:06"), DeviceIndex: 0, PrimaryIP: netip.MustParseAddr("10.0.0.43"), Subnet: subnetA}},
		{"overlapping subnet", "a", ENI{ID: "eni-x6", MAC: mac("02:00:00:00:0f:07"), DeviceIndex: 7, PrimaryIP: netip.MustParseAddr("10.0.0.130"), Subnet: netip.MustParsePrefix("10.0.0.128/25")}},
	}
	before := linkNames(t, rh)
	for _, b := range bad {
		if err := f.AttachENI(b.node, b.eni); err == nil {
			t.Errorf("%s: AttachENI succeeded, want error", b.name)
		}
	}
	if after := linkNames(t, rh); after != before {
		t.Errorf("failed AttachENI changed router links: %s -> %s", before, after)
	}
	// Invalid assignments.
	if err := f.SetENIAddresses(re.ID, []netip.Addr{netip.MustParseAddr("10.0.5.5")}, nil); err == nil {
		t.Errorf("SetENIAddresses accepted an address outside the subnet")
	}
	if err := f.SetENIAddresses(re.ID, nil, []netip.Prefix{netip.MustParsePrefix("10.0.0.65/28")}); err == nil {
		t.Errorf("SetENIAddresses accepted an unmasked prefix")
	}
	if err := f.SetENIAddresses(re.ID, []netip.Addr{aPrimary}, nil); err == nil {
		t.Errorf("SetENIAddresses accepted another ENI's primary IP")
	}
}

// rpFilterDrops reads the router's TcpExt IPReversePathFilter counter.
// (/proc/net follows the thread-group leader's netns, not the thread's, so it
// is read through `ip netns exec`.)
func rpFilterDrops(t *testing.T, f *Fabric) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", f.RouterNetNSName(), "cat", "/proc/net/netstat").Output()
	must(t, err)
	lines := strings.Split(string(out), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j, k := range keys {
			if k == "IPReversePathFilter" && j < len(vals) {
				var v int
				_, err := fmt.Sscan(vals[j], &v)
				must(t, err)
				return v
			}
		}
	}
	t.Fatalf("IPReversePathFilter not found in /proc/net/netstat")
	return 0
}

func linkNames(t *testing.T, h *netlink.Handle) string {
	t.Helper()
	ls, err := h.LinkList()
	must(t, err)
	var names []string
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	return strings.Join(names, ",")
}

// Test 6: teardown, including after failures.
func TestTeardown(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	t.Run("invalid RunID", func(t *testing.T) {
		for _, id := range []string{"UPPER", "toolong7", "a-b"} {
			if f, err := New(Options{RunID: id}); err == nil {
				f.Close()
				t.Errorf("New(%q) succeeded", id)
			}
		}
	})
	t.Run("random RunID", func(t *testing.T) {
		f, err := New(Options{})
		must(t, err)
		if !runIDRe.MatchString(f.RunID()) {
			t.Errorf("random RunID %q invalid", f.RunID())
		}
		must(t, f.Close())
		assertNoLeftovers(t, f.RunID())
	})
	t.Run("full fabric then Close", func(t *testing.T) {
		runID := "t" + randomRunID()[:5]
		f, err := New(Options{RunID: runID})
		must(t, err)
		must(t, f.AddSubnet(subnetA))
		must(t, f.AddNode("a"))
		must(t, f.AddNode("b"))
		must(t, f.AttachENI("a", eniA0))
		must(t, f.AttachENI("a", eniA1))
		must(t, f.AttachENI("b", eniB0))
		must(t, f.SetENIAddresses(eniA1.ID, []netip.Addr{netip.MustParseAddr("10.0.0.50")}, []netip.Prefix{netip.MustParsePrefix("10.0.0.64/28")}))
		if _, err := f.ListenTCP("a", netip.MustParseAddrPort("169.254.169.254:80")); err != nil {
			t.Fatal(err)
		}
		// A failure path: unknown node.
		if err := f.AttachENI("nope", ENI{ID: "eni-zz", MAC: mac("02:00:00:00:0f:01"), PrimaryIP: netip.MustParseAddr("10.0.0.44"), Subnet: subnetA}); err == nil {
			t.Errorf("AttachENI on unknown node succeeded")
		}
		if err := f.AddNode("bad/name"); err == nil {
			t.Errorf("AddNode with a slash succeeded")
		}
		if err := f.AddNode("a"); err == nil {
			t.Errorf("duplicate AddNode succeeded")
		}
		left, err := Leftovers(runID)
		must(t, err)
		want := []string{f.NodeNetNSName("a"), f.NodeNetNSName("b"), f.OutsideNetNSName(), f.RouterNetNSName(),
			f.NodeUTSNSPath("a"), f.NodeUTSNSPath("b")}
		if strings.Join(left, " ") != strings.Join(sortedCopy(want), " ") {
			t.Errorf("Leftovers before Close = %v, want %v", left, want)
		}
		// Each node is a host of its own name.
		for _, name := range []string{"a", "b"} {
			if out, err := exec.Command("nsenter", "--uts="+f.NodeUTSNSPath(name), "hostname").CombinedOutput(); err != nil ||
				strings.TrimSpace(string(out)) != name {
				t.Errorf("hostname in node %s's UTS namespace: %q, %v; want %q", name, out, err, name)
			}
		}
		// ip netns exec works with these names.
		if out, err := exec.Command("ip", "netns", "exec", f.NodeNetNSName("a"), "ip", "-o", "link", "show", "eth1").CombinedOutput(); err != nil ||
			!strings.Contains(string(out), eniA1.MAC.String()) {
			t.Errorf("ip netns exec: %v: %s", err, out)
		}
		must(t, f.RemoveNode("b"))
		left, _ = Leftovers(runID)
		for _, l := range left {
			if strings.HasSuffix(l, "-n-b") {
				t.Errorf("node b still present after RemoveNode: %v", left)
			}
		}
		must(t, f.Close())
		must(t, f.Close())
		assertNoLeftovers(t, runID)
		if err := f.AddNode("c"); !errors.Is(err, ErrClosed) {
			t.Errorf("AddNode after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("colliding RunID rolls back only its own state", func(t *testing.T) {
		runID := "t" + randomRunID()[:5]
		f1, err := New(Options{RunID: runID})
		must(t, err)
		defer f1.Close()
		// Pre-create the second fabric's outside namespace name collision by
		// reusing the RunID: New must fail at the router namespace and must
		// not delete f1's namespaces.
		if f2, err := New(Options{RunID: runID}); err == nil {
			f2.Close()
			t.Fatalf("New with a colliding RunID succeeded")
		}
		left, err := Leftovers(runID)
		must(t, err)
		if len(left) != 2 {
			t.Errorf("after failed New, Leftovers = %v, want f1's two namespaces", left)
		}
		must(t, f1.AddNode("a"))
		must(t, f1.Close())
		assertNoLeftovers(t, runID)
	})
	t.Run("RemoveLeftovers after a crash", func(t *testing.T) {
		// Simulate a crashed run: namespaces exist, nobody will call Close.
		runID := "t" + randomRunID()[:5]
		f, err := New(Options{RunID: runID})
		must(t, err)
		must(t, f.AddNode("a"))
		must(t, f.AttachENI("a", eniA0))
		if left, _ := Leftovers(runID); len(left) != 4 {
			t.Fatalf("Leftovers = %v, want 3 network namespaces and a UTS namespace", left)
		}
		// Drop our fds/handles as a dead process would, without deleting.
		f.mu.Lock()
		f.rtr.Close()
		f.out.Close()
		f.nodes["a"].h.Close()
		f.mu.Unlock()
		must(t, RemoveLeftovers(runID))
		assertNoLeftovers(t, runID)
		must(t, f.Close()) // releases the fds; namespaces already gone
	})
	t.Run("partial New failure", func(t *testing.T) {
		// Occupy only the outside namespace name: New creates the router
		// namespace, fails on the outside one, and must remove the router.
		runID := "t" + randomRunID()[:5]
		blocker := NetNSPath(nsPrefix(runID) + "out")
		must(t, os.MkdirAll(NetNSDir, 0o755))
		must(t, os.WriteFile(blocker, nil, 0o444))
		defer os.Remove(blocker)
		if f, err := New(Options{RunID: runID}); err == nil {
			f.Close()
			t.Fatalf("New succeeded despite the occupied name")
		}
		left, err := Leftovers(runID)
		must(t, err)
		if len(left) != 1 || left[0] != nsPrefix(runID)+"out" {
			t.Errorf("after partial New failure, Leftovers = %v, want only the blocker", left)
		}
		must(t, os.Remove(blocker))
		assertNoLeftovers(t, runID)
	})
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

// Sysctls are applied inside the namespaces (verified both through ns.Do and
// through `ip netns exec`), and the root namespace is left untouched.
func TestSysctlsAndRootIsolation(t *testing.T) {
	t.Parallel()
	rootKeys := []string{
		"net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter",
		"net/ipv4/conf/all/arp_ignore", "net/ipv4/conf/default/proxy_arp", "net/ipv4/neigh/default/proxy_delay",
		"net/ipv4/conf/all/send_redirects",
	}
	rootBefore := readRoot(t, rootKeys)
	f := twoNodeFabric(t)
	must(t, f.AttachENI("a", eniA1))
	rlink, _ := f.RouterLinkName(eniA1.ID)
	rtr := f.RouterNetNSName()
	want := []struct{ ns, key, val string }{
		{rtr, "net/ipv4/ip_forward", "1"},
		{rtr, "net/ipv4/conf/all/rp_filter", "0"},
		{rtr, "net/ipv4/conf/default/rp_filter", "1"},
		{rtr, "net/ipv4/conf/" + rlink + "/rp_filter", "1"},
		{rtr, "net/ipv4/conf/" + RouterOutsideLink + "/rp_filter", "1"},
		{rtr, "net/ipv4/conf/all/arp_ignore", "0"},
		{rtr, "net/ipv4/conf/" + rlink + "/arp_ignore", "0"},
		{rtr, "net/ipv4/conf/" + rlink + "/proxy_arp", "1"},
		{rtr, "net/ipv4/conf/" + rlink + "/send_redirects", "0"},
		{rtr, "net/ipv4/neigh/" + rlink + "/proxy_delay", "0"},
		{f.NodeNetNSName("a"), "net/ipv4/ip_forward", "1"},
		{f.NodeNetNSName("a"), "net/ipv4/conf/all/rp_filter", "2"},
	}
	for _, w := range want {
		got, err := readSysctl(w.ns, w.key)
		if err != nil || got != w.val {
			t.Errorf("ns.Do read %s %s = %q, %v; want %q", w.ns, w.key, got, err, w.val)
		}
		out, err := exec.Command("ip", "netns", "exec", w.ns, "cat", "/proc/sys/"+w.key).Output()
		if err != nil || strings.TrimSpace(string(out)) != w.val {
			t.Errorf("ip netns exec %s cat %s = %q, %v; want %q", w.ns, w.key, out, err, w.val)
		}
	}
	// The router link's per-device sysctl directory exists only in the
	// router namespace, proving /proc/sys/net follows the thread's netns.
	if _, err := os.Stat("/proc/sys/net/ipv4/conf/" + rlink); err == nil {
		t.Errorf("/proc/sys/net/ipv4/conf/%s visible in the root namespace", rlink)
	}
	// Nothing of ours in the root namespace.
	root, err := rootHandle()
	must(t, err)
	defer root.Close()
	for _, name := range []string{rlink, RouterOutsideLink} {
		if l, err := root.LinkByName(name); err == nil {
			t.Errorf("link %s (%v) present in the root namespace", name, l.Attrs().HardwareAddr)
		}
	}
	ls, err := root.LinkList()
	must(t, err)
	for _, l := range ls {
		for _, m := range []net.HardwareAddr{eniA0.MAC, eniA1.MAC, eniB0.MAC} {
			if bytes.Equal(l.Attrs().HardwareAddr, m) {
				t.Errorf("ENI link %s with MAC %v in the root namespace", l.Attrs().Name, m)
			}
		}
	}
	if after := readRoot(t, rootKeys); fmt.Sprint(after) != fmt.Sprint(rootBefore) {
		t.Errorf("root sysctls changed: %v -> %v", rootBefore, after)
	}
}

func readRoot(t *testing.T, keys []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, k := range keys {
		b, err := os.ReadFile("/proc/sys/" + k)
		must(t, err)
		m[k] = strings.TrimSpace(string(b))
	}
	return m
}

// ListenTCP serves inside the node, adding link-local service addresses to lo.
func TestListenTCP(t *testing.T) {
	t.Parallel()
	f := twoNodeFabric(t)
	imds := netip.MustParseAddrPort("169.254.169.254:80")
	ec2 := netip.MustParseAddrPort("169.254.169.10:80")
	for _, ap := range []netip.AddrPort{imds, ec2} {
		l, err := f.ListenTCP("a", ap)
		must(t, err)
		serveWhoAmI(l)
		expectReach(t, inNode(f, "a"), netip.Addr{}, ap, ap.Addr())
	}
	// Already-local addresses are not duplicated on lo.
	l, err := f.ListenTCP("a", netip.AddrPortFrom(aPrimary, 9000))
	must(t, err)
	serveWhoAmI(l)
	ah := nlHandle(t, f.NodeNetNSPath("a"))
	lo, err := ah.LinkByName("lo")
	must(t, err)
	addrs, err := ah.AddrList(lo, netlink.FAMILY_V4)
	must(t, err)
	var got []string
	for _, a := range addrs {
		got = append(got, a.IPNet.String())
	}
	if strings.Join(got, " ") != "127.0.0.1/8 169.254.169.254/32 169.254.169.10/32" {
		t.Errorf("lo addresses = %v", got)
	}
	// Not reachable from the other node (only local in a).
	expectBlocked(t, inNode(f, "b"), netip.Addr{}, imds)
	// A second listener on the same address fails cleanly.
	if _, err := f.ListenTCP("a", imds); err == nil {
		t.Errorf("second listener on %v succeeded", imds)
	}
	if _, err := f.ListenTCP("nope", imds); err == nil {
		t.Errorf("ListenTCP on unknown node succeeded")
	}
	// Removing the node closes its listeners.
	must(t, f.RemoveNode("a"))
	if _, err := l.Accept(); err == nil {
		t.Errorf("listener still accepting after RemoveNode")
	}
}

// Concurrent use of one fabric.
func TestConcurrentNodes(t *testing.T) {
	t.Parallel()
	f := newFabric(t)
	must(t, f.AddSubnet(subnetA))
	l, err := f.ListenTCPOutside(netip.AddrPortFrom(outside, 8080))
	must(t, err)
	serveWhoAmI(l)
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("n%d", i)
			primary := netip.AddrFrom4([4]byte{10, 0, 0, byte(100 + i)})
			e := ENI{ID: fmt.Sprintf("eni-conc%02d", i), MAC: net.HardwareAddr{2, 0, 0, 1, 0, byte(i)}, PrimaryIP: primary, Subnet: subnetA}
			if err := f.AddNode(name); err != nil {
				errs <- err
				return
			}
			if err := f.AttachENI(name, e); err != nil {
				errs <- err
				return
			}
			if err := f.SetENIAddresses(e.ID, []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(200 + i)})}, nil); err != nil {
				errs <- err
				return
			}
			seen, err := whoAmI(inNode(f, name), netip.Addr{}, netip.AddrPortFrom(outside, 8080), reachTimeout)
			if err != nil || seen != primary {
				errs <- fmt.Errorf("%s: saw %v, %v", name, seen, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
