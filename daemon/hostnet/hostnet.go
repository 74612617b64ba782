// Package hostnet sets up the host networking of the node's ENIs for the
// warm-pool daemon: the node-wide sysctls and the primary ENI's MTU
// (SetupNode), and for every secondary ENI its link, address, per-ENI route
// table and "from <ENI primary IP>" rule (SetupENI / TeardownENI), following
// the AWS VPC CNI's setupENINetwork (docs/design.md, "Routing").
//
// Everything acts on the network namespace of the calling OS thread: the
// daemon runs in the node's namespace, tests lock a thread into a namespace
// of their own (ns.Do). The package never switches namespaces itself.
package hostnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
)

// MainTable and RouteTable are daemon/ipamd's names for routing.MainTable
// and routing.ENITable.
const MainTable = routing.MainTable

// RouteTable is routing.ENITable.
func RouteTable(deviceNumber int) int { return routing.ENITable(deviceNumber) }

// ENI is what host networking needs to know about one attached ENI.
type ENI struct {
	MAC          net.HardwareAddr
	PrimaryIP    netip.Addr
	Subnet       netip.Prefix
	DeviceNumber int
	MTU          int // 0 leaves the link's MTU alone
}

// ErrLinkNotFound means no link in the namespace carries the wanted MAC
// (yet: SetupENI waits for a hot-plugged ENI before returning it).
var ErrLinkNotFound = errors.New("link not found")

// pollInterval is how often SetupENI looks for a hot-plugged link.
const pollInterval = 50 * time.Millisecond

// LinkByMAC returns the link whose hardware address is mac. Stacked links
// inherit their parent's MAC (VLAN, macvlan, ipvlan; a bridge or bond takes
// a port's), so when several links match, the one that is no such upper
// device is the ENI.
func LinkByMAC(mac net.HardwareAddr) (netlink.Link, error) {
	if len(mac) == 0 {
		return nil, fmt.Errorf("look up link by MAC: empty MAC address: %w", ErrLinkNotFound)
	}
	links, err := netlinkutil.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var first netlink.Link
	for _, l := range links {
		if !bytes.Equal(l.Attrs().HardwareAddr, mac) {
			continue
		}
		if !isUpperDevice(l) {
			return l, nil
		}
		if first == nil {
			first = l
		}
	}
	if first != nil {
		return first, nil
	}
	return nil, fmt.Errorf("no link with MAC %s: %w", mac, ErrLinkNotFound)
}

// isUpperDevice goes by link type, not ParentIndex: a veth (the simulator's
// ENI) reports its peer there too.
func isUpperDevice(l netlink.Link) bool {
	switch l.Type() {
	case "vlan", "macvlan", "macvtap", "ipvlan", "ipvtap", "bridge", "bond":
		return true
	}
	return false
}

// LinkExists reports whether a link called name exists. A lookup that fails
// for any other reason than "not found" reports true: callers use absence to
// clean up, and must not clean up what they merely failed to see.
func LinkExists(name string) bool {
	_, err := netlinkutil.LinkByName(name)
	return err == nil || !netlinkutil.IsNotFound(err)
}

// SetupNode prepares the node namespace: the primary ENI's MTU (if mtu > 0;
// its addresses and routes belong to the OS and are left alone), IPv4
// forwarding (pods are routed, not bridged), and loose reverse-path filtering
// on the primary ENI, as the reference's init container does: replies to
// pods on secondary ENIs, and connmarked NodePort flows, may arrive on an
// interface other than the one the route back would use, and strict rp_filter
// would drop them. A sysctl that is wrong and cannot be set does not stop
// the rest: it comes back as a *SysctlError once everything else is done.
func SetupNode(primaryMAC net.HardwareAddr, mtu int) error {
	link, err := LinkByMAC(primaryMAC)
	if err != nil {
		return fmt.Errorf("find primary ENI: %w", err)
	}
	name := link.Attrs().Name
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set MTU %d on primary ENI %s: %w", mtu, name, err)
		}
	}
	var bad sysctlProblems
	if err := bad.add(ensureSysctl("net/ipv4/ip_forward", "1")); err != nil {
		return err
	}
	if err := bad.add(setRPFilterLoose(name)); err != nil {
		return err
	}
	return bad.err()
}

// SetupNodeSysctls does, once and with a writable /proc/sys, what the
// daemon needs of the node's sysctls for good: SetupNode's (forwarding,
// loose reverse-path filtering on the primary ENI), loose filtering as the
// default of links created later, so every secondary ENI the daemon
// attaches is loose from the start, and loose filtering on the links of
// enis (MAC addresses) that exist already: after a reboot the ENIs the
// daemon attached earlier come up before anything loosened the default.
// A DaemonSet runs it from a privileged init container; the daemon itself
// then runs unprivileged, its /proc/sys read-only, and finds every value
// already set (it writes only what differs). It returns the names of the
// links of enis it found; a MAC without a link is skipped.
func SetupNodeSysctls(primaryMAC net.HardwareAddr, enis []net.HardwareAddr, ipv6 bool) ([]string, error) {
	if err := SetupNode(primaryMAC, 0); err != nil {
		return nil, err
	}
	if ipv6 {
		if err := SetupNodeIPv6(primaryMAC); err != nil {
			return nil, err
		}
	}
	// The default first: a link hot-plugged while the others are looked
	// up is loose from the start.
	if err := ensureSysctl("net/ipv4/conf/default/rp_filter", "2"); err != nil {
		return nil, err
	}
	var names []string
	for _, mac := range enis {
		link, err := LinkByMAC(mac)
		if errors.Is(err, ErrLinkNotFound) {
			continue
		}
		if err != nil {
			return names, fmt.Errorf("find ENI %s: %w", mac, err)
		}
		name := link.Attrs().Name
		if err := setRPFilterLoose(name); err != nil {
			return names, fmt.Errorf("ENI %s: %w", mac, err)
		}
		names = append(names, name)
	}
	return names, nil
}

// SetupNodeIPv6 makes the node forward IPv6 to its pods. Forwarding turns
// router advertisements off on every link unless accept_ra is 2, so the
// primary ENI gets 2: its default route comes from the VPC router's
// advertisements. Sysctls that cannot be set come back as a *SysctlError.
func SetupNodeIPv6(primaryMAC net.HardwareAddr) error {
	link, err := LinkByMAC(primaryMAC)
	if err != nil {
		return fmt.Errorf("find primary ENI: %w", err)
	}
	var bad sysctlProblems
	if err := bad.add(ensureSysctl(filepath.Join("net/ipv6/conf", link.Attrs().Name, "accept_ra"), "2")); err != nil {
		return err
	}
	if err := bad.add(ensureSysctl("net/ipv6/conf/all/forwarding", "1")); err != nil {
		return err
	}
	return bad.err()
}

func (e ENI) validate() error {
	switch {
	case len(e.MAC) == 0:
		return errors.New("no MAC address")
	case e.DeviceNumber < 1:
		// The primary ENI's table is main, which holds the node's own
		// routes: per-ENI setup and teardown would wreck them.
		return fmt.Errorf("device number %d is not a secondary ENI", e.DeviceNumber)
	case !e.PrimaryIP.Is4():
		return fmt.Errorf("primary IP %s is not an IPv4 address (only IPv4 ENIs are supported)", e.PrimaryIP)
	case !e.Subnet.IsValid() || !e.Subnet.Addr().Is4() || e.Subnet.Bits() > 30:
		return fmt.Errorf("subnet %s is not an IPv4 subnet with room for a gateway", e.Subnet)
	case !e.Subnet.Contains(e.PrimaryIP):
		return fmt.Errorf("primary IP %s is not in subnet %s", e.PrimaryIP, e.Subnet)
	}
	return nil
}

func (e ENI) String() string {
	return fmt.Sprintf("ENI %s (device %d, %s)", e.MAC, e.DeviceNumber, e.PrimaryIP)
}

// gateway is the VPC router's address in the subnet: the base address + 1.
func (e ENI) gateway() net.IP { return net.IP(e.Subnet.Masked().Addr().Next().AsSlice()) }

func (e ENI) primaryIPNet() *net.IPNet {
	return &net.IPNet{IP: net.IP(e.PrimaryIP.AsSlice()), Mask: net.CIDRMask(e.Subnet.Bits(), 32)}
}

func (e ENI) subnetNet() *net.IPNet {
	p := e.Subnet.Masked()
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

// SetupENI wires a secondary ENI into the node: it waits up to timeout for
// the hot-plugged link with e.MAC, sets its MTU and loose rp_filter and
// brings it up, gives it
// e.PrimaryIP/<subnet bits> (dropping other global addresses), fills table
// routing.ENITable(e.DeviceNumber) with "<gw>/32 dev <link> scope link" and
// "default via <gw> dev <link>", and adds "from <primary IP> lookup <table>"
// at priority 32765. Stale routes in that table and stale 32765 rules for
// the table or the address (an earlier ENI at the same device index) are
// removed. It is idempotent and returns the link's name. A timeout <= 0
// looks for the link once; the wait also ends with ctx. When the only
// failure is a sysctl that cannot be set, the ENI is wired all the same and
// the error wraps a *SysctlError.
func SetupENI(ctx context.Context, e ENI, timeout time.Duration) (string, error) {
	if err := e.validate(); err != nil {
		return "", fmt.Errorf("set up ENI %s: %w", e.MAC, err)
	}
	link, err := waitLink(ctx, e.MAC, timeout)
	if err != nil {
		return "", fmt.Errorf("set up %s: %w", e, err)
	}
	name := link.Attrs().Name
	if err := setupLink(link, e); err != nil {
		return name, fmt.Errorf("set up %s on link %s: %w", e, name, err)
	}
	return name, nil
}

// setupLink wires the link. A sysctl it cannot set does not stop it: the
// ENI is wired all the same, and the *SysctlError is returned alone when
// nothing else failed (any other error is returned instead, naming it).
func setupLink(link netlink.Link, e ENI) error {
	var bad sysctlProblems
	err := wireLink(link, e, &bad)
	if err != nil && len(bad) > 0 {
		return fmt.Errorf("%w (also: %v)", err, bad.err())
	}
	if err != nil {
		return err
	}
	return bad.err()
}

func wireLink(link netlink.Link, e ENI, bad *sysctlProblems) error {
	attrs := link.Attrs()
	if e.MTU > 0 && attrs.MTU != e.MTU {
		if err := netlink.LinkSetMTU(link, e.MTU); err != nil {
			return fmt.Errorf("set MTU %d: %w", e.MTU, err)
		}
	}
	// Loose rp_filter before traffic flows, for the same reason as on the
	// primary ENI: flows may come in on one ENI and leave by another.
	if err := bad.add(setRPFilterLoose(attrs.Name)); err != nil {
		return err
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set link up: %w", err)
		}
	}
	if err := ensureAddr(link, e); err != nil {
		return err
	}
	if err := deleteMainSubnetRoute(link, e); err != nil {
		return err
	}
	if err := ensureTableRoutes(link, e); err != nil {
		return err
	}
	return ensureRule(e)
}

// waitLink polls for the link with mac: after AttachNetworkInterface the
// device is hot-plugged (and maybe renamed by udev) some time later.
func waitLink(ctx context.Context, mac net.HardwareAddr, timeout time.Duration) (netlink.Link, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		link, err := LinkByMAC(mac)
		if err == nil {
			return link, nil
		}
		if !errors.Is(err, ErrLinkNotFound) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for link with MAC %s: %w", mac, ctx.Err())
		case <-deadline.C:
			return nil, fmt.Errorf("no link with MAC %s appeared within %s: %w", mac, timeout, ErrLinkNotFound)
		case <-tick.C:
		}
	}
}

// ensureAddr leaves exactly the ENI's primary address among the link's
// global IPv4 addresses (link-scoped ones, e.g. 169.254/16, are kept as the
// reference keeps them). The address carries IFA_F_NOPREFIXROUTE: its
// connected route in main is what deleteMainSubnetRoute removes, and without
// the flag the kernel would add it back whenever the link flaps. The kernel
// does not update the flags of an existing IPv4 address, so an address that
// someone else added without the flag is deleted and added again, once.
func ensureAddr(link netlink.Link, e ENI) error {
	want := e.primaryIPNet()
	addrs, err := netlinkutil.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	have := false
	for _, a := range addrs {
		if a.IPNet.String() == want.String() && a.Flags&unix.IFA_F_NOPREFIXROUTE != 0 {
			have = true
			continue
		}
		if a.Scope != int(netlink.SCOPE_UNIVERSE) && !a.IP.Equal(want.IP) {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil && !netlinkutil.IsNotFound(err) &&
			!errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("delete stale address %s: %w", a.IPNet, err)
		}
	}
	if have {
		return nil
	}
	addr := &netlink.Addr{IPNet: want, Flags: unix.IFA_F_NOPREFIXROUTE}
	if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("add address %s: %w", want, err)
	}
	return nil
}

// deleteMainSubnetRoute removes "<subnet> dev <link>" from main, as the
// reference does: the main table keeps serving the node's own traffic via
// the primary ENI, and a connected route through a secondary ENI would send
// node (and primary-ENI pod) traffic to that subnet out of the wrong ENI,
// where EC2's source/destination check drops it. Traffic sourced from the
// ENI's addresses finds the subnet through the ENI's own table.
func deleteMainSubnetRoute(link netlink.Link, e ENI) error {
	subnet := e.subnetNet()
	routes, err := netlinkutil.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: routing.MainTable, LinkIndex: link.Attrs().Index, Dst: subnet},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
	if err != nil {
		return fmt.Errorf("list main-table routes to %s: %w", subnet, err)
	}
	for i := range routes {
		if err := netlink.RouteDel(&routes[i]); err != nil && !netlinkutil.IsNotFound(err) {
			return fmt.Errorf("delete main-table route %s: %w", routes[i], err)
		}
	}
	return nil
}

func tableRoutes(link netlink.Link, e ENI) []netlink.Route {
	table, gw, idx := routing.ENITable(e.DeviceNumber), e.gateway(), link.Attrs().Index
	return []netlink.Route{
		{LinkIndex: idx, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK, Table: table},
		{LinkIndex: idx, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: gw, Table: table},
	}
}

func sameRoute(a, b *netlink.Route) bool {
	dst := func(r *netlink.Route) string {
		if r.Dst == nil {
			return "0.0.0.0/0"
		}
		return r.Dst.String()
	}
	return a.LinkIndex == b.LinkIndex && dst(a) == dst(b) && a.Gw.Equal(b.Gw) && a.Table == b.Table
}

// ensureTableRoutes makes the ENI's table hold exactly its two routes. The
// table belongs to the device index, so anything else in it is left over
// from an earlier ENI at that index and would misroute this one's traffic.
func ensureTableRoutes(link netlink.Link, e ENI) error {
	want := tableRoutes(link, e)
	table := routing.ENITable(e.DeviceNumber)
	existing, err := listTable(table)
	if err != nil {
		return err
	}
	for i := range existing {
		r := &existing[i]
		if sameRoute(r, &want[0]) || sameRoute(r, &want[1]) {
			continue
		}
		if err := netlink.RouteDel(r); err != nil && !netlinkutil.IsNotFound(err) {
			return fmt.Errorf("delete stale route %s from table %d: %w", r, table, err)
		}
	}
	// The gateway's /32 first: the default route's next hop must be
	// reachable on the link when it is added.
	for i := range want {
		if err := netlink.RouteReplace(&want[i]); err != nil {
			return fmt.Errorf("add route %s to table %d: %w", &want[i], table, err)
		}
	}
	return nil
}

func listTable(table int) ([]netlink.Route, error) {
	routes, err := netlinkutil.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes of table %d: %w", table, err)
	}
	return routes, nil
}

func primaryRule(e ENI) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = netlink.FAMILY_V4
	r.Priority = routing.PrioENIPrimary
	r.Src = netlinkutil.HostNet(net.IP(e.PrimaryIP.AsSlice()))
	r.Table = routing.ENITable(e.DeviceNumber)
	return r
}

func srcIs(r *netlink.Rule, src *net.IPNet) bool {
	return r.Src != nil && r.Dst == nil && r.Src.String() == src.String()
}

// ensureRule adds "from <primary IP> lookup <table>" at 32765 after removing
// 32765 rules that send this address elsewhere or send another address to
// this table (both left over from an earlier ENI at this index or address).
func ensureRule(e ENI) error {
	want := primaryRule(e)
	if _, err := netlinkutil.DeleteRules(netlink.FAMILY_V4, func(r *netlink.Rule) bool {
		return r.Priority == want.Priority && !netlinkutil.RuleEqual(r, want) &&
			(srcIs(r, want.Src) || r.Table == want.Table)
	}); err != nil {
		return fmt.Errorf("delete stale ENI rules: %w", err)
	}
	if _, err := netlinkutil.EnsureRule(want); err != nil {
		return err
	}
	return nil
}

// TeardownENI undoes SetupENI before an ENI is detached: it empties the
// ENI's table and deletes the 32765 rules for its table or address and the
// from-pod (1536) rules that still point at the table. Addresses and the
// link are left alone: they go with the ENI. It is idempotent and works
// when the link is gone already (its routes went with it; rules do not).
func TeardownENI(e ENI) error {
	if e.DeviceNumber < 1 {
		return fmt.Errorf("tear down %s: device number %d is not a secondary ENI", e, e.DeviceNumber)
	}
	table := routing.ENITable(e.DeviceNumber)
	var errs []error
	routes, err := listTable(table)
	if err != nil {
		errs = append(errs, err)
	}
	for i := range routes {
		if err := netlink.RouteDel(&routes[i]); err != nil && !netlinkutil.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete route %s from table %d: %w", &routes[i], table, err))
		}
	}
	var src *net.IPNet
	if e.PrimaryIP.Is4() {
		src = netlinkutil.HostNet(net.IP(e.PrimaryIP.AsSlice()))
	}
	if _, err := netlinkutil.DeleteRules(netlink.FAMILY_V4, func(r *netlink.Rule) bool {
		switch r.Priority {
		case routing.PrioENIPrimary:
			return r.Table == table || (src != nil && srcIs(r, src))
		case routing.PrioFromPod:
			return r.Table == table
		}
		return false
	}); err != nil {
		errs = append(errs, fmt.Errorf("delete rules for table %d: %w", table, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down %s: %w", e, err)
	}
	return nil
}
