// IPv6 in the simulated VPC: the router forwards ENIs' IPv6 addresses and
// /80 prefixes to the ENI's MAC, checks sources as EC2's source/destination
// check does, and reaches an IPv6 internet host through an egress-only
// internet gateway (replies come back in, new connections from outside do
// not).

package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// OutsideAddr6 is the IPv6 internet host on the outside namespace's link.
	OutsideAddr6 = "2001:db8:ff::10"
	// OutsideRouterAddr6 is the router's IPv6 address on the outside link.
	OutsideRouterAddr6 = "2001:db8:ff::1"
	// OutsidePrefixLen6 is the IPv6 prefix length of the outside link.
	OutsidePrefixLen6 = 64
	// RouterLinkLocal is the VPC router's address on every ENI link: the
	// IPv6 gateway of nodes. (EC2's router advertises its own link-local;
	// nodes here are configured statically, so one fixed address serves.)
	RouterLinkLocal = "fe80::1"
)

var linkLocalNet = netip.MustParsePrefix("fe80::/64")

// setupIPv6 gives the router<->outside link its IPv6 addresses and default
// routes and installs the router's IPv6 filtering. Called from setup, once
// the link is up.
func (f *Fabric) setupIPv6(rl, ol netlink.Link) error {
	if err := f.rtr.AddrAdd(rl, nodad(netip.PrefixFrom(netip.MustParseAddr(OutsideRouterAddr6), OutsidePrefixLen6))); err != nil {
		return fmt.Errorf("router outside IPv6 address: %w", err)
	}
	if err := f.out.AddrAdd(ol, nodad(netip.PrefixFrom(netip.MustParseAddr(OutsideAddr6), OutsidePrefixLen6))); err != nil {
		return fmt.Errorf("outside IPv6 address: %w", err)
	}
	if err := f.out.RouteReplace(&netlink.Route{LinkIndex: ol.Attrs().Index, Dst: ipnet(netip.MustParsePrefix("::/0")),
		Gw: ip(netip.MustParseAddr(OutsideRouterAddr6))}); err != nil {
		return fmt.Errorf("outside IPv6 default route: %w", err)
	}
	if err := f.rtr.RouteReplace(&netlink.Route{LinkIndex: rl.Attrs().Index, Dst: ipnet(netip.MustParsePrefix("::/0")),
		Gw: ip(netip.MustParseAddr(OutsideAddr6))}); err != nil {
		return fmt.Errorf("router IPv6 default route: %w", err)
	}
	// EC2's source/destination check for IPv6: a packet is forwarded only if
	// its source is routed back out of the link it came in on (rp_filter is
	// IPv4-only, so ip6tables' rpfilter match does it).
	if err := iptablesRestore(f.rtrName, "ip6tables-restore",
		"*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -m rpfilter --invert -j DROP\nCOMMIT\n"); err != nil {
		return fmt.Errorf("router IPv6 source check: %w", err)
	}
	return f.renderFilter6Locked()
}

// addSubnet6Locked makes the router drop what is sent to an address of an
// IPv6 subnet that no ENI holds (instead of sending it to the internet).
func (f *Fabric) addSubnet6Locked(cidr netip.Prefix) error {
	if cidr.Bits() != 64 || cidr.Masked() != cidr {
		return fmt.Errorf("dataplane: invalid IPv6 subnet %v (want a masked /64)", cidr)
	}
	if _, ok := f.subnets[cidr]; ok {
		return nil
	}
	if err := f.rtr.RouteReplace(&netlink.Route{Dst: ipnet(cidr), Type: unix.RTN_BLACKHOLE}); err != nil {
		return fmt.Errorf("router blackhole route %v: %w", cidr, err)
	}
	f.subnets[cidr] = struct{}{}
	return nil
}

// nodad is an address without duplicate address detection (usable at once).
func nodad(p netip.Prefix) *netlink.Addr {
	a := addr(p)
	a.Flags = unix.IFA_F_NODAD
	return a
}

// eui64LinkLocal is the link-local address the kernel derives from a MAC
// (RFC 4291 appendix A): the node-side address of an ENI link.
func eui64LinkLocal(mac net.HardwareAddr) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	b[8], b[9], b[10] = mac[0]^0x02, mac[1], mac[2]
	b[11], b[12] = 0xff, 0xfe
	b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}

// setupENIIPv6 prepares a freshly attached ENI's router link for IPv6: the
// router's link-local gateway address and a permanent neighbour entry for
// the node end's link-local, through which the ENI's IPv6 addresses and
// prefixes are routed (as EC2 delivers them to the ENI's MAC).
func (f *Fabric) setupENIIPv6(rl netlink.Link, mac net.HardwareAddr) error {
	if err := writeSysctls(f.rtrName, []sysctl{
		{"net/ipv6/conf/" + rl.Attrs().Name + "/accept_dad", "0"},
		{"net/ipv6/conf/" + rl.Attrs().Name + "/accept_ra", "0"},
	}); err != nil {
		return err
	}
	if err := f.rtr.AddrReplace(rl, nodad(netip.PrefixFrom(netip.MustParseAddr(RouterLinkLocal), 64))); err != nil {
		return fmt.Errorf("router link-local on %s: %w", rl.Attrs().Name, err)
	}
	if err := f.rtr.NeighSet(&netlink.Neigh{
		LinkIndex:    rl.Attrs().Index,
		Family:       netlink.FAMILY_V6,
		State:        netlink.NUD_PERMANENT,
		IP:           ip(eui64LinkLocal(mac)),
		HardwareAddr: mac,
	}); err != nil {
		return fmt.Errorf("router IPv6 neighbour on %s: %w", rl.Attrs().Name, err)
	}
	return nil
}

// SetENIIPv6 makes the router deliver exactly the given IPv6 addresses
// (/128) and prefixes (typically /80) through the ENI; what it delivered
// before and is not listed stops. On the primary ENI (card 0, device 0)
// the node is configured as an EC2 OS after DHCPv6: the addresses as /128 on
// eth0 and a default route via the router's link-local.
func (f *Fabric) SetENIIPv6(eniID string, addrs []netip.Addr, prefixes []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	e, ok := f.enis[eniID]
	if !ok {
		return fmt.Errorf("dataplane: unknown ENI %q", eniID)
	}
	if e.trunk != "" {
		return fmt.Errorf("dataplane: branch %s: branch ENIs carry IPv4 only", eniID)
	}
	rl, err := f.rtr.LinkByName(e.rlink)
	if err != nil {
		return fmt.Errorf("dataplane: router link %s: %w", e.rlink, err)
	}
	gw := ip(eui64LinkLocal(e.MAC))
	route := func(p netip.Prefix) *netlink.Route {
		return &netlink.Route{LinkIndex: rl.Attrs().Index, Dst: ipnet(p), Gw: gw, Table: unix.RT_TABLE_MAIN}
	}
	desired := map[netip.Prefix]*netlink.Route{}
	for _, a := range addrs {
		if !a.Is6() || a.Is4In6() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() {
			return fmt.Errorf("dataplane: ENI %s: %v is not a global IPv6 address", eniID, a)
		}
		desired[netip.PrefixFrom(a, 128)] = route(netip.PrefixFrom(a, 128))
	}
	for _, p := range prefixes {
		if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() || p.Masked() != p || p.Bits() < 64 {
			return fmt.Errorf("dataplane: ENI %s: %v is not a masked IPv6 prefix of /64 or longer", eniID, p)
		}
		desired[p] = route(p)
	}
	// Only the routes via the node's link-local are the ENI's (not the
	// link's own fe80::/64 and the like).
	errs := f.syncLinkRoutesLocked(rl.Attrs().Index, netlink.FAMILY_V6, desired,
		func(r netlink.Route) bool { return r.Dst != nil && r.Gw.Equal(gw) })
	e.ipv6 = map[netip.Addr]struct{}{}
	for _, a := range addrs {
		e.ipv6[a] = struct{}{}
	}
	e.prefixes6 = map[netip.Prefix]struct{}{}
	for _, p := range prefixes {
		e.prefixes6[p] = struct{}{}
	}
	if e.DeviceIndex == 0 && e.NetworkCard == 0 {
		if err := f.configureNodeIPv6(f.nodes[e.node], e); err != nil {
			errs = append(errs, err)
		}
	}
	if err := f.syncMembersLocked(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("dataplane: ENI %s: %w", eniID, errors.Join(errs...))
	}
	return nil
}

// configureNodeIPv6 makes the node's eth0 hold exactly the primary ENI's
// IPv6 addresses (/128, as DHCPv6 gives them) with a default route via the
// router.
func (f *Fabric) configureNodeIPv6(n *node, e *eniState) error {
	nl, err := n.h.LinkByName(e.NodeLink())
	if err != nil {
		return fmt.Errorf("node link %s: %w", e.NodeLink(), err)
	}
	have, err := n.h.AddrList(nl, netlink.FAMILY_V6)
	if err != nil {
		return err
	}
	for _, a := range have {
		pa, ok := netip.AddrFromSlice(a.IP)
		if !ok || pa.IsLinkLocalUnicast() {
			continue
		}
		if _, keep := e.ipv6[pa]; keep && maskOnes(a) == 128 {
			continue
		}
		if err := n.h.AddrDel(nl, &a); err != nil {
			return fmt.Errorf("node address %v: %w", a.IPNet, err)
		}
	}
	for a := range e.ipv6 {
		if err := n.h.AddrReplace(nl, nodad(netip.PrefixFrom(a, 128))); err != nil {
			return fmt.Errorf("node address %v: %w", a, err)
		}
	}
	def := &netlink.Route{LinkIndex: nl.Attrs().Index, Dst: ipnet(netip.MustParsePrefix("::/0")),
		Gw: ip(netip.MustParseAddr(RouterLinkLocal))}
	if len(e.ipv6) == 0 {
		if err := n.h.RouteDel(def); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("node IPv6 default route: %w", err)
		}
		return nil
	}
	if err := n.h.RouteReplace(def); err != nil {
		return fmt.Errorf("node IPv6 default route: %w", err)
	}
	return nil
}

// ENIIPv6 returns the IPv6 addresses and prefixes the router delivers
// through the ENI (sorted).
func (f *Fabric) ENIIPv6(eniID string) ([]netip.Addr, []netip.Prefix, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.enis[eniID]
	if !ok {
		return nil, nil, false
	}
	var as []netip.Addr
	for a := range e.ipv6 {
		as = append(as, a)
	}
	sortAddrs(as)
	return as, sortedPrefixes(e.prefixes6), true
}

func maskOnes(a netlink.Addr) int {
	ones, _ := a.Mask.Size()
	return ones
}
