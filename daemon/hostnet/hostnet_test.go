package hostnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
)

// Every test works inside a network namespace of its own (ns.Do locks the
// goroutine's thread into it); the root namespace is only ever read.

func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}

// in runs fn with the calling goroutine locked into n.
func in(t *testing.T, n ns.NetNS, fn func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return fn() }); err != nil {
		t.Fatal(err)
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// addENILink stands for a hot-plugged ENI: a link with the ENI's MAC. It
// is a veth (its peer, up, stands for the VPC side) as in the VPC simulator,
// and because this kernel has no dummy driver; the peer's MAC is random, so
// only name carries mac.
func addENILink(name string, mac net.HardwareAddr) error {
	la := netlink.NewLinkAttrs()
	la.Name, la.HardwareAddr = name, mac
	peer := "p-" + name
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: peer}); err != nil {
		return fmt.Errorf("add veth %s: %w", name, err)
	}
	p, err := netlinkutil.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(p); err != nil {
		return fmt.Errorf("set %s up: %w", peer, err)
	}
	return nil
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + key)
	return strings.TrimSpace(string(b)), err
}

func writeTestSysctl(key, v string) error {
	return os.WriteFile("/proc/sys/"+key, []byte(v), 0o644)
}

func TestSetupNode(t *testing.T) {
	primary := mustMAC("02:00:00:00:00:01")
	tests := []struct {
		name    string
		mac     net.HardwareAddr
		mtu     int
		wantMTU int
		wantErr error
	}{
		{name: "sets MTU", mac: primary, mtu: 9001, wantMTU: 9001},
		{name: "mtu 0 keeps MTU", mac: primary, mtu: 0, wantMTU: 1500},
		{name: "unknown MAC", mac: mustMAC("02:00:00:00:00:99"), mtu: 9001, wantErr: ErrLinkNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rootBefore, err := readSysctl("net/ipv4/ip_forward")
			if err != nil {
				t.Fatal(err)
			}
			n := newNS(t)
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 0, 1, 10), Mask: net.CIDRMask(24, 32)}}
			in(t, n, func() error {
				if err := addENILink("ens5", primary); err != nil {
					return err
				}
				l, err := netlinkutil.LinkByName("ens5")
				if err != nil {
					return err
				}
				if err := netlink.LinkSetUp(l); err != nil {
					return err
				}
				if err := netlink.AddrAdd(l, addr); err != nil {
					return err
				}
				// Start from the opposite of what SetupNode wants, so the
				// test does not pass on a namespace's defaults.
				if err := writeTestSysctl("net/ipv4/ip_forward", "0"); err != nil {
					return err
				}
				return writeTestSysctl("net/ipv4/conf/ens5/rp_filter", "1")
			})

			in(t, n, func() error {
				err := SetupNode(tc.mac, tc.mtu)
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						return fmt.Errorf("SetupNode = %v, want %v", err, tc.wantErr)
					}
					return nil
				}
				if err != nil {
					return fmt.Errorf("SetupNode: %w", err)
				}
				if err := SetupNode(tc.mac, tc.mtu); err != nil {
					return fmt.Errorf("SetupNode again: %w", err)
				}
				l, err := netlinkutil.LinkByName("ens5")
				if err != nil {
					return err
				}
				if l.Attrs().MTU != tc.wantMTU {
					return fmt.Errorf("MTU = %d, want %d", l.Attrs().MTU, tc.wantMTU)
				}
				for key, want := range map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/ens5/rp_filter": "2"} {
					if got, err := readSysctl(key); err != nil || got != want {
						return fmt.Errorf("%s = %q (%v), want %q", key, got, err, want)
					}
				}
				// The primary ENI's address and connected route are the OS's.
				addrs, err := netlinkutil.AddrList(l, netlink.FAMILY_V4)
				if err != nil {
					return err
				}
				if len(addrs) != 1 || addrs[0].IPNet.String() != addr.IPNet.String() {
					return fmt.Errorf("addresses = %v, want only %s", addrs, addr.IPNet)
				}
				routes, err := netlinkutil.RouteListFiltered(netlink.FAMILY_V4,
					&netlink.Route{Table: routing.MainTable, LinkIndex: l.Attrs().Index}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
				if err != nil {
					return err
				}
				if len(routes) != 1 || routes[0].Dst.String() != "10.0.1.0/24" {
					return fmt.Errorf("main routes via ens5 = %v, want the connected 10.0.1.0/24", routes)
				}
				return nil
			})

			rootAfter, err := readSysctl("net/ipv4/ip_forward")
			if err != nil {
				t.Fatal(err)
			}
			if rootAfter != rootBefore {
				t.Fatalf("root namespace ip_forward changed from %s to %s", rootBefore, rootAfter)
			}
		})
	}
}

// eniState is what a test observes of one ENI's host networking.
type eniState struct {
	routes    []string // table routes, "dst gw scope"
	rules     []string // 32765 rules for the ENI's table or address
	mainRoute bool     // main still routes the ENI's subnet via its link
}

func observe(t *testing.T, e ENI) (eniState, error) {
	t.Helper()
	var st eniState
	table := routing.ENITable(e.DeviceNumber)
	routes, err := netlinkutil.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return st, err
	}
	for _, r := range routes {
		st.routes = append(st.routes, fmt.Sprintf("%s %s %s", r.Dst, r.Gw, r.Scope))
	}
	src := netlinkutil.HostNet(net.IP(e.PrimaryIP.AsSlice()))
	rules, err := netlinkutil.FindRules(netlink.FAMILY_V4, func(r *netlink.Rule) bool {
		return r.Priority == routing.PrioENIPrimary && (r.Table == table || srcIs(r, src))
	})
	if err != nil {
		return st, err
	}
	for i := range rules {
		st.rules = append(st.rules, netlinkutil.RuleString(&rules[i]))
	}
	if l, err := LinkByMAC(e.MAC); err == nil {
		main, err := netlinkutil.RouteListFiltered(netlink.FAMILY_V4,
			&netlink.Route{Table: routing.MainTable, LinkIndex: l.Attrs().Index, Dst: e.subnetNet()},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
		if err != nil {
			return st, err
		}
		st.mainRoute = len(main) > 0
	}
	return st, nil
}

var testENI = ENI{
	MAC:          mustMAC("02:00:00:00:00:02"),
	PrimaryIP:    netip.MustParseAddr("10.0.2.10"),
	Subnet:       netip.MustParsePrefix("10.0.2.0/24"),
	DeviceNumber: 2,
	MTU:          9001,
}

func checkSetUp(t *testing.T, e ENI, wantName string) error {
	t.Helper()
	return checkWired(t, e, wantName, "2")
}

// checkWired is checkSetUp with the link's rp_filter given.
func checkWired(t *testing.T, e ENI, wantName, wantRPFilter string) error {
	t.Helper()
	l, err := LinkByMAC(e.MAC)
	if err != nil {
		return err
	}
	a := l.Attrs()
	if a.Name != wantName || a.MTU != e.MTU || a.Flags&net.FlagUp == 0 {
		return fmt.Errorf("link %s mtu %d flags %v, want %s mtu %d up", a.Name, a.MTU, a.Flags, wantName, e.MTU)
	}
	addrs, err := netlinkutil.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.0.2.10/24" {
		return fmt.Errorf("addresses %v, want only 10.0.2.10/24", addrs)
	}
	if rp, err := readSysctl("net/ipv4/conf/" + a.Name + "/rp_filter"); err != nil || rp != wantRPFilter {
		return fmt.Errorf("rp_filter = %q (%v), want %s", rp, err, wantRPFilter)
	}
	st, err := observe(t, e)
	if err != nil {
		return err
	}
	wantRoutes := map[string]bool{"10.0.2.1/32 <nil> link": true, "0.0.0.0/0 10.0.2.1 universe": true}
	if len(st.routes) != 2 || !wantRoutes[st.routes[0]] || !wantRoutes[st.routes[1]] || st.routes[0] == st.routes[1] {
		return fmt.Errorf("table %d routes %q, want %v", routing.ENITable(e.DeviceNumber), st.routes, wantRoutes)
	}
	if len(st.rules) != 1 || st.rules[0] != "32765: from 10.0.2.10/32 lookup 1002" {
		return fmt.Errorf("ENI rules %q, want exactly 32765: from 10.0.2.10/32 lookup 1002", st.rules)
	}
	if st.mainRoute {
		return errors.New("main table still routes 10.0.2.0/24 via the secondary ENI")
	}
	return nil
}

func TestSetupENI(t *testing.T) {
	tests := []struct {
		name  string
		stale func(l netlink.Link) error // state left over before SetupENI
	}{
		{name: "fresh link", stale: func(netlink.Link) error { return nil }},
		{name: "stale state", stale: func(l netlink.Link) error {
			// An AMI's network scripts configured the ENI: up, address
			// with its kernel connected route in main, a foreign address.
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
			for _, a := range []string{"10.0.2.10/24", "192.168.9.9/24"} {
				ipn, _ := netlink.ParseIPNet(a)
				if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
					return err
				}
			}
			// An earlier ENI at device 2 left a rule and a route in
			// table 1002, and this address once had another table.
			if err := addENILink("old0", mustMAC("02:00:00:00:00:0f")); err != nil {
				return err
			}
			old, err := netlinkutil.LinkByName("old0")
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(old); err != nil {
				return err
			}
			_, dst, _ := net.ParseCIDR("10.9.0.0/16")
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: old.Attrs().Index, Dst: dst, Table: 1002}); err != nil {
				return err
			}
			for _, r := range []struct {
				src   string
				table int
			}{{"10.0.2.99", 1002}, {"10.0.2.10", 1005}} {
				rule := netlink.NewRule()
				rule.Priority, rule.Table = routing.PrioENIPrimary, r.table
				rule.Src = netlinkutil.HostNet(net.ParseIP(r.src))
				if err := netlink.RuleAdd(rule); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNS(t)
			in(t, n, func() error {
				if err := addENILink("eth1", testENI.MAC); err != nil {
					return err
				}
				l, err := netlinkutil.LinkByName("eth1")
				if err != nil {
					return err
				}
				if err := tc.stale(l); err != nil {
					return fmt.Errorf("prepare stale state: %w", err)
				}
				if tc.name == "stale state" {
					if st, err := observe(t, testENI); err != nil || !st.mainRoute {
						return fmt.Errorf("precondition: main subnet route via eth1 = %v (%v), want present", st.mainRoute, err)
					}
				}
				for i := 1; i <= 2; i++ { // idempotent
					name, err := SetupENI(context.Background(), testENI, time.Second)
					if err != nil {
						return fmt.Errorf("SetupENI #%d: %w", i, err)
					}
					if name != "eth1" {
						return fmt.Errorf("SetupENI #%d = %q, want eth1", i, name)
					}
					if err := checkSetUp(t, testENI, "eth1"); err != nil {
						return fmt.Errorf("after SetupENI #%d: %w", i, err)
					}
				}
				// The kernel must not bring the connected route back when
				// the link flaps.
				if err := netlink.LinkSetDown(l); err != nil {
					return err
				}
				if err := netlink.LinkSetUp(l); err != nil {
					return err
				}
				if st, err := observe(t, testENI); err != nil || st.mainRoute {
					return fmt.Errorf("after a link flap: main subnet route via eth1 = %v (%v), want absent", st.mainRoute, err)
				}
				return nil
			})
		})
	}
}

func TestSetupENIInvalid(t *testing.T) {
	n := newNS(t)
	mod := func(f func(*ENI)) ENI { e := testENI; f(&e); return e }
	tests := []struct {
		name string
		eni  ENI
		want string
	}{
		{"primary device", mod(func(e *ENI) { e.DeviceNumber = 0 }), "not a secondary ENI"},
		{"no MAC", mod(func(e *ENI) { e.MAC = nil }), "no MAC"},
		{"IPv6", mod(func(e *ENI) { e.PrimaryIP = netip.MustParseAddr("2001:db8::1") }), "not an IPv4"},
		{"IP outside subnet", mod(func(e *ENI) { e.PrimaryIP = netip.MustParseAddr("10.0.3.1") }), "not in subnet"},
		{"no subnet", mod(func(e *ENI) { e.Subnet = netip.Prefix{} }), "subnet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in(t, n, func() error {
				_, err := SetupENI(context.Background(), tc.eni, 10*time.Millisecond)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					return fmt.Errorf("SetupENI = %v, want an error containing %q", err, tc.want)
				}
				return nil
			})
		})
	}
}

func TestSetupENIWaitsForHotPlug(t *testing.T) {
	n := newNS(t)
	const delay = 200 * time.Millisecond
	plugged := make(chan error, 1)
	go func() {
		time.Sleep(delay)
		// A goroutine of its own, so its own ns.Do locks its own thread.
		plugged <- n.Do(func(ns.NetNS) error { return addENILink("eth2", testENI.MAC) })
	}()
	in(t, n, func() error {
		start := time.Now()
		name, err := SetupENI(context.Background(), testENI, 5*time.Second)
		if err != nil {
			return fmt.Errorf("SetupENI: %w", err)
		}
		if took := time.Since(start); took < delay {
			return fmt.Errorf("SetupENI returned after %s, before the link was plugged", took)
		}
		if name != "eth2" {
			return fmt.Errorf("SetupENI = %q, want eth2", name)
		}
		return checkSetUp(t, testENI, "eth2")
	})
	if err := <-plugged; err != nil {
		t.Fatal(err)
	}
}

func TestSetupENIMissingLink(t *testing.T) {
	n := newNS(t)
	t.Run("timeout", func(t *testing.T) {
		in(t, n, func() error {
			start := time.Now()
			_, err := SetupENI(context.Background(), testENI, 300*time.Millisecond)
			if !errors.Is(err, ErrLinkNotFound) {
				return fmt.Errorf("SetupENI = %v, want ErrLinkNotFound", err)
			}
			if msg := err.Error(); !strings.Contains(msg, testENI.MAC.String()) || !strings.Contains(msg, "300ms") {
				return fmt.Errorf("error %q does not name the MAC and the timeout", msg)
			}
			if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
				return fmt.Errorf("gave up after %s, want about 300ms", took)
			}
			return nil
		})
	})
	t.Run("context canceled", func(t *testing.T) {
		in(t, n, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			_, err := SetupENI(ctx, testENI, time.Minute)
			if !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("SetupENI = %v, want the context's error", err)
			}
			return nil
		})
	})
}

func TestTeardownENI(t *testing.T) {
	tests := []struct {
		name       string
		deleteLink bool
	}{
		{name: "link present"},
		{name: "link gone", deleteLink: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNS(t)
			in(t, n, func() error {
				if err := addENILink("eth1", testENI.MAC); err != nil {
					return err
				}
				if _, err := SetupENI(context.Background(), testENI, time.Second); err != nil {
					return err
				}
				// A pod on this ENI (1536 -> 1002) and one on another ENI
				// (1536 -> 1003), plus a to-pod rule: only the first goes.
				mine := netlinkutil.FromPodRule(net.ParseIP("10.0.2.20"), 1002)
				other := netlinkutil.FromPodRule(net.ParseIP("10.0.3.20"), 1003)
				toPod := netlinkutil.ToPodRule(net.ParseIP("10.0.2.20"))
				for _, r := range []*netlink.Rule{mine, other, toPod} {
					if _, err := netlinkutil.EnsureRule(r); err != nil {
						return err
					}
				}
				if tc.deleteLink {
					l, err := netlinkutil.LinkByName("eth1")
					if err != nil {
						return err
					}
					if err := netlink.LinkDel(l); err != nil {
						return err
					}
				}
				for i := 1; i <= 2; i++ { // idempotent
					if err := TeardownENI(testENI); err != nil {
						return fmt.Errorf("TeardownENI #%d: %w", i, err)
					}
					st, err := observe(t, testENI)
					if err != nil {
						return err
					}
					if len(st.routes) != 0 || len(st.rules) != 0 {
						return fmt.Errorf("after TeardownENI #%d: table routes %q, ENI rules %q, want none", i, st.routes, st.rules)
					}
					for _, c := range []struct {
						r    *netlink.Rule
						want bool
					}{{mine, false}, {other, true}, {toPod, true}} {
						got, err := netlinkutil.FindRules(netlink.FAMILY_V4, func(x *netlink.Rule) bool { return netlinkutil.RuleEqual(x, c.r) })
						if err != nil {
							return err
						}
						if (len(got) > 0) != c.want {
							return fmt.Errorf("after TeardownENI #%d: rule %q present = %v, want %v", i, netlinkutil.RuleString(c.r), len(got) > 0, c.want)
						}
					}
				}
				return nil
			})
		})
	}
	t.Run("primary device refused", func(t *testing.T) {
		e := testENI
		e.DeviceNumber = 0
		in(t, newNS(t), func() error {
			if err := TeardownENI(e); err == nil {
				return errors.New("TeardownENI of device 0 succeeded; it must never touch the main table")
			}
			return nil
		})
	})
}

func TestLinkByMACAndLinkExists(t *testing.T) {
	n := newNS(t)
	in(t, n, func() error {
		mac := mustMAC("02:00:00:00:00:05")
		if err := addENILink("eth5", mac); err != nil {
			return err
		}
		l, err := LinkByMAC(mac)
		if err != nil || l.Attrs().Name != "eth5" {
			return fmt.Errorf("LinkByMAC = %v, %v; want eth5", l, err)
		}
		// A VLAN on the ENI shares its MAC; the ENI itself must win.
		vla := netlink.NewLinkAttrs()
		vla.Name, vla.ParentIndex = "a.vlan", l.Attrs().Index
		if err := netlink.LinkAdd(&netlink.Vlan{LinkAttrs: vla, VlanId: 10}); err != nil {
			t.Logf("no VLAN support here (%v): upper-device preference not checked", err)
		} else {
			for i := 0; i < 3; i++ {
				if l, err := LinkByMAC(mac); err != nil || l.Attrs().Name != "eth5" {
					return fmt.Errorf("LinkByMAC with a VLAN on top = %v, %v; want eth5", l, err)
				}
			}
		}
		if _, err := LinkByMAC(mustMAC("02:00:00:00:00:77")); !errors.Is(err, ErrLinkNotFound) {
			return fmt.Errorf("LinkByMAC(unknown) = %v, want ErrLinkNotFound", err)
		}
		for name, want := range map[string]bool{"lo": true, "eth5": true, "nope0": false} {
			if got := LinkExists(name); got != want {
				return fmt.Errorf("LinkExists(%q) = %v, want %v", name, got, want)
			}
		}
		return nil
	})
}
