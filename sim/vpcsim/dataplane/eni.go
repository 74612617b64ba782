// ENIs: hot-plugging them into nodes, the addresses the router delivers
// through them, and the router side links.

package dataplane

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AttachENI hot-plugs e into node. The node gets link eth<DeviceIndex> with
// e.MAC (MTU 9001); the router gets a link named after e.ID with a permanent
// neighbour entry primaryIP->MAC and a /32 route for the primary IP. For the
// primary ENI (DeviceIndex 0) the node is configured like an EC2 OS after
// DHCP: primaryIP/<subnet bits> on eth0, up, default route via the subnet
// gateway. Other ENIs appear DOWN without addresses. e.Subnet is added (see
// AddSubnet) if needed. On error nothing is left behind.
func (f *Fabric) AttachENI(nodeName string, e ENI) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	n, ok := f.nodes[nodeName]
	if !ok {
		return fmt.Errorf("dataplane: unknown node %q", nodeName)
	}
	if err := f.validateENI(n, e); err != nil {
		return err
	}
	if err := f.addSubnetLocked(e.Subnet); err != nil {
		return err
	}
	rname := f.routerLinkName(e.ID)
	nodeLink := e.NodeLink()
	mac := append(net.HardwareAddr(nil), e.MAC...)

	attrs := netlink.NewLinkAttrs()
	attrs.Name = rname
	attrs.MTU = ENIMTU
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         nodeLink,
		PeerHardwareAddr: mac,
		PeerNamespace:    netlink.NsFd(int(n.ns)),
		PeerMTU:          ENIMTU,
		PeerTxQLen:       -1,
	}
	if err := f.rtr.LinkAdd(veth); err != nil {
		return fmt.Errorf("dataplane: create ENI veth %s/%s: %w", rname, nodeLink, err)
	}
	fail := func(err error) error {
		if l, lerr := f.rtr.LinkByName(rname); lerr == nil {
			if derr := f.rtr.LinkDel(l); derr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", derr))
			}
		}
		return err
	}
	rl, err := f.wireRouterLink(rname, mac, e.PrimaryIP, "1")
	if err != nil {
		return fail(fmt.Errorf("dataplane: %w", err))
	}
	if err := f.setupENIIPv6(rl, mac); err != nil {
		return fail(fmt.Errorf("dataplane: %w", err))
	}

	nl, err := n.h.LinkByName(nodeLink)
	if err != nil {
		return fail(fmt.Errorf("dataplane: node link %s: %w", nodeLink, err))
	}
	if e.DeviceIndex == 0 && e.NetworkCard == 0 {
		if err := n.h.AddrAdd(nl, addr(netip.PrefixFrom(e.PrimaryIP, e.Subnet.Bits()))); err != nil {
			return fail(fmt.Errorf("dataplane: node address: %w", err))
		}
		if err := n.h.LinkSetUp(nl); err != nil {
			return fail(err)
		}
		if err := n.h.RouteReplace(&netlink.Route{LinkIndex: nl.Attrs().Index, Gw: ip(Gateway(e.Subnet))}); err != nil {
			return fail(fmt.Errorf("dataplane: node default route: %w", err))
		}
		// Like a booted instance, return only once eth0 can carry traffic.
		if err := waitOperUp(n.h, nodeLink); err != nil {
			return fail(err)
		}
		if err := waitOperUp(f.rtr, rname); err != nil {
			return fail(err)
		}
	}

	f.enis[e.ID] = &eniState{
		ENI:       ENI{ID: e.ID, MAC: mac, DeviceIndex: e.DeviceIndex, NetworkCard: e.NetworkCard, PrimaryIP: e.PrimaryIP, Subnet: e.Subnet},
		node:      n.name,
		rlink:     rname,
		secondary: map[netip.Addr]struct{}{},
		prefixes:  map[netip.Prefix]struct{}{},
		ipv6:      map[netip.Addr]struct{}{},
		prefixes6: map[netip.Prefix]struct{}{},
	}
	f.rlinkNames[rname] = e.ID
	n.enis[nodeLink] = e.ID
	return nil
}

func (f *Fabric) validateENI(n *node, e ENI) error {
	if err := f.validateNewLocked("ENI", e.ID, e.MAC); err != nil {
		return err
	}
	if e.DeviceIndex < 0 || e.DeviceIndex > 999 {
		return fmt.Errorf("dataplane: ENI %s: invalid device index %d", e.ID, e.DeviceIndex)
	}
	if e.NetworkCard < 0 || e.NetworkCard > 99 {
		return fmt.Errorf("dataplane: ENI %s: invalid network card %d", e.ID, e.NetworkCard)
	}
	if other, ok := n.enis[e.NodeLink()]; ok {
		return fmt.Errorf("dataplane: node %s: device index %d on card %d already used by %s", n.name, e.DeviceIndex, e.NetworkCard, other)
	}
	return f.validatePrimaryLocked(e.ID, e.PrimaryIP, e.Subnet)
}

// validatePrimaryLocked checks an ENI's (or a branch's) subnet and that its
// primary IP is usable there and nobody else's.
func (f *Fabric) validatePrimaryLocked(id string, primary netip.Addr, subnet netip.Prefix) error {
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Masked() != subnet {
		return fmt.Errorf("dataplane: ENI %s: invalid subnet %v", id, subnet)
	}
	if !primary.Is4() || !subnet.Contains(primary) || primary == Gateway(subnet) || primary == subnet.Addr() {
		return fmt.Errorf("dataplane: ENI %s: primary IP %v not usable in subnet %v", id, primary, subnet)
	}
	for _, o := range f.enis {
		if o.PrimaryIP == primary {
			return fmt.Errorf("dataplane: ENI %s: primary IP %v already used by %s", id, primary, o.ID)
		}
	}
	if owner, ok := f.addrOwner[primary]; ok {
		return fmt.Errorf("dataplane: ENI %s: primary IP %v is a secondary IP of %s", id, primary, owner)
	}
	for p, owner := range f.prefixOwner {
		if p.Contains(primary) {
			return fmt.Errorf("dataplane: ENI %s: primary IP %v is inside prefix %v of %s", id, primary, p, owner)
		}
	}
	return nil
}

// DetachENI unplugs an ENI: its link disappears from the node and the router
// link, neighbour entry and all routes of its addresses are removed.
func (f *Fabric) DetachENI(eniID string) error {
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
		return fmt.Errorf("dataplane: %s is a branch ENI: disassociate it", eniID)
	}
	return f.detachLocked(e)
}

func (f *Fabric) detachLocked(e *eniState) error {
	var err error
	// A trunk's branches ride on its link: they go first.
	for _, id := range f.branchesLocked(e.ID) {
		err = errors.Join(err, f.detachLocked(f.enis[id]))
	}
	if l, lerr := f.rtr.LinkByName(e.rlink); lerr == nil {
		// Deleting one veth end deletes the node end too; routes and
		// neighbour entries on the link go with it.
		if derr := f.rtr.LinkDel(l); derr != nil {
			err = fmt.Errorf("dataplane: delete router link %s: %w", e.rlink, derr)
		}
	} else {
		var nf netlink.LinkNotFoundError
		if !errors.As(lerr, &nf) {
			err = lerr
		}
	}
	for a := range e.secondary {
		delete(f.addrOwner, a)
	}
	for p := range e.prefixes {
		delete(f.prefixOwner, p)
	}
	delete(f.rlinkNames, e.rlink)
	delete(f.enis, e.ID)
	if n, ok := f.nodes[e.node]; ok && e.trunk == "" {
		delete(n.enis, e.NodeLink())
	}
	if f.rtr != nil {
		if serr := f.syncMembersLocked(); serr != nil {
			err = errors.Join(err, serr)
		}
		if e.trunk != "" {
			if rerr := f.renderBranchRPFLocked(); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}
	return err
}

// SetENIAddresses makes the router deliver exactly the ENI's primary IP, the
// given secondary IPs (/32) and delegated prefixes (typically /28) through the
// ENI; everything else previously assigned to it is removed. The change takes
// effect immediately. Addresses and prefixes must lie in the ENI's subnet. An
// address or prefix currently assigned to another ENI is moved (as EC2 does
// with AllowReassignment).
func (f *Fabric) SetENIAddresses(eniID string, secondary []netip.Addr, prefixes []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	e, ok := f.enis[eniID]
	if !ok {
		return fmt.Errorf("dataplane: unknown ENI %q", eniID)
	}
	wantAddrs := map[netip.Addr]struct{}{}
	for _, a := range secondary {
		if !a.Is4() || !e.Subnet.Contains(a) || a == Gateway(e.Subnet) || a == e.Subnet.Addr() {
			return fmt.Errorf("dataplane: ENI %s: secondary IP %v not usable in subnet %v", eniID, a, e.Subnet)
		}
		for _, o := range f.enis {
			if o.PrimaryIP == a {
				return fmt.Errorf("dataplane: ENI %s: %v is the primary IP of %s", eniID, a, o.ID)
			}
		}
		wantAddrs[a] = struct{}{}
	}
	wantPfx := map[netip.Prefix]struct{}{}
	for _, p := range prefixes {
		if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p || p.Bits() < e.Subnet.Bits() || p.Bits() > 32 || !e.Subnet.Contains(p.Addr()) {
			return fmt.Errorf("dataplane: ENI %s: prefix %v not a masked prefix inside subnet %v", eniID, p, e.Subnet)
		}
		wantPfx[p] = struct{}{}
	}

	rl, err := f.rtr.LinkByName(e.rlink)
	if err != nil {
		return fmt.Errorf("dataplane: router link %s: %w", e.rlink, err)
	}
	idx := rl.Attrs().Index
	desired := map[netip.Prefix]*netlink.Route{}
	desired[netip.PrefixFrom(e.PrimaryIP, 32)] = primaryRoute(idx, e.PrimaryIP)
	for a := range wantAddrs {
		desired[netip.PrefixFrom(a, 32)] = viaPrimaryRoute(idx, netip.PrefixFrom(a, 32), e.PrimaryIP)
	}
	for p := range wantPfx {
		desired[p] = viaPrimaryRoute(idx, p, e.PrimaryIP)
	}

	errs := f.syncLinkRoutesLocked(idx, netlink.FAMILY_V4, desired, func(r netlink.Route) bool { return r.Dst != nil })

	// Book-keeping, including moves away from other ENIs.
	for a := range e.secondary {
		delete(f.addrOwner, a)
	}
	for p := range e.prefixes {
		delete(f.prefixOwner, p)
	}
	e.secondary = wantAddrs
	e.prefixes = wantPfx
	for a := range wantAddrs {
		if prev, ok := f.addrOwner[a]; ok && prev != e.ID {
			delete(f.enis[prev].secondary, a)
		}
		f.addrOwner[a] = e.ID
	}
	for p := range wantPfx {
		if prev, ok := f.prefixOwner[p]; ok && prev != e.ID {
			delete(f.enis[prev].prefixes, p)
		}
		f.prefixOwner[p] = e.ID
	}
	if err := f.syncMembersLocked(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("dataplane: ENI %s: %w", eniID, errors.Join(errs...))
	}
	return nil
}

// syncLinkRoutesLocked makes the router's main-table routes of one family
// out of link idx exactly desired: it installs (or moves here) the desired
// routes first, then deletes every other route ours accepts.
func (f *Fabric) syncLinkRoutesLocked(idx, family int, desired map[netip.Prefix]*netlink.Route, ours func(netlink.Route) bool) []error {
	var errs []error
	for _, dst := range sortedPrefixes(desired) {
		if err := f.rtr.RouteReplace(desired[dst]); err != nil {
			errs = append(errs, fmt.Errorf("route %v: %w", dst, err))
		}
	}
	current, err := f.rtr.RouteListFiltered(family,
		&netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		errs = append(errs, err)
	}
	for i := range current {
		r := current[i]
		if !ours(r) {
			continue
		}
		if dst, ok := prefixFromIPNet(r.Dst); ok {
			if _, want := desired[dst]; want {
				continue
			}
		}
		if err := f.rtr.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %v: %w", r.Dst, err))
		}
	}
	return errs
}

// ENIAddresses returns the secondary IPs and prefixes currently assigned to
// the ENI in the router (sorted).
func (f *Fabric) ENIAddresses(eniID string) ([]netip.Addr, []netip.Prefix, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.enis[eniID]
	if !ok {
		return nil, nil, false
	}
	var as []netip.Addr
	for a := range e.secondary {
		as = append(as, a)
	}
	sort.Slice(as, func(i, j int) bool { return as[i].Less(as[j]) })
	var ps []netip.Prefix
	for p := range e.prefixes {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].String() < ps[j].String() })
	return as, ps, true
}

// routerLinkName derives a unique (per fabric) <=15 char link name from the
// ENI ID: "e" + the last 13 alphanumerics of the ID (without "eni-"), or a
// hash-based name on collision.
func (f *Fabric) routerLinkName(id string) string {
	var b strings.Builder
	for _, r := range strings.TrimPrefix(id, "eni-") {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	s := b.String()
	if len(s) > 13 {
		s = s[len(s)-13:]
	}
	name := "e" + s
	if _, taken := f.rlinkNames[name]; !taken && s != "" {
		return name
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	for i := 0; ; i++ {
		name = fmt.Sprintf("h%08x%d", h.Sum32(), i)
		if _, taken := f.rlinkNames[name]; !taken {
			return name
		}
	}
}

func primaryRoute(linkIndex int, primary netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       ipnet(netip.PrefixFrom(primary, 32)),
		Scope:     netlink.SCOPE_LINK,
		Table:     unix.RT_TABLE_MAIN,
	}
}

func viaPrimaryRoute(linkIndex int, dst netip.Prefix, primary netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       ipnet(dst),
		Gw:        ip(primary),
		Flags:     int(netlink.FLAG_ONLINK),
		Scope:     netlink.SCOPE_UNIVERSE,
		Table:     unix.RT_TABLE_MAIN,
	}
}

// wireRouterLink makes the router's end of an ENI's link (a veth, or a
// branch's VLAN sub-interface) what EC2's fabric is for that ENI: proxy ARP
// answers for the gateway, its primary address is reached through it
// alone, and rpFilter ("1": strict, an ENI's source/destination check; "0"
// where another rule checks) is its rp_filter.
func (f *Fabric) wireRouterLink(rname string, mac net.HardwareAddr, primary netip.Addr, rpFilter string) (netlink.Link, error) {
	if err := writeSysctls(f.rtrName, []sysctl{
		{"net/ipv4/conf/" + rname + "/rp_filter", rpFilter},
		{"net/ipv4/conf/" + rname + "/proxy_arp", "1"},
		{"net/ipv4/conf/" + rname + "/arp_ignore", "0"},
		{"net/ipv4/conf/" + rname + "/send_redirects", "0"},
		{"net/ipv4/neigh/" + rname + "/proxy_delay", "0"},
	}); err != nil {
		return nil, fmt.Errorf("router link sysctls: %w", err)
	}
	rl, err := f.rtr.LinkByName(rname)
	if err != nil {
		return nil, err
	}
	if err := f.rtr.LinkSetUp(rl); err != nil {
		return nil, err
	}
	if err := f.rtr.NeighSet(&netlink.Neigh{
		LinkIndex:    rl.Attrs().Index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           ip(primary),
		HardwareAddr: mac,
	}); err != nil {
		return nil, fmt.Errorf("router neighbour %v: %w", primary, err)
	}
	if err := f.rtr.RouteReplace(primaryRoute(rl.Attrs().Index, primary)); err != nil {
		return nil, fmt.Errorf("router route %v: %w", primary, err)
	}
	return rl, nil
}

// validateNewLocked checks what an ENI and a branch both need before the
// router gets a link for them: an ID not yet in use and a unicast MAC.
func (f *Fabric) validateNewLocked(kind, id string, mac net.HardwareAddr) error {
	if id == "" {
		return fmt.Errorf("dataplane: %s without ID", kind)
	}
	if _, ok := f.enis[id]; ok {
		return fmt.Errorf("dataplane: %s %s already attached or associated", kind, id)
	}
	if len(mac) != 6 || mac[0]&1 != 0 || isZero(mac) {
		return fmt.Errorf("dataplane: %s %s: invalid unicast MAC %v", kind, id, mac)
	}
	return nil
}
