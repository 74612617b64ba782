package main

// A pod with a branch ENI (security groups for pods) is wired as the AWS
// VPC CNI wires it (docs/design.md, "Branch-ENI pods"), in strict mode:
//
//	pod netns           host netns
//	eth0 <ip>/32 ─ veth ─ eni<hash>          vlan.eth.<vlan>  (802.1Q <vlan> on the
//	  default via 169.254.1.1                   trunk's link, the branch's MAC)
//	                     table <vlan>+100:  <gw> dev vlan.eth.<vlan> scope link
//	                                        default via <gw> dev vlan.eth.<vlan>
//	                                        <ip> dev eni<hash> scope link
//	                     rule 10: iif eni<hash> lookup <vlan>+100
//	                     rule 10: iif vlan.eth.<vlan> lookup <vlan>+100
//
// Strict: everything the pod sends leaves by its VLAN, everything it gets
// comes in by it, so the branch's security groups see all of it (even the
// node's own traffic to the pod, which goes out to the VPC and back). The
// main table has no route to the pod.
//
// Standard: the pod is routed like any pod of a secondary ENI, with the
// branch table as its ENI table: "<ip> dev eni<hash>" in the main table,
// rule 512 "to <ip> lookup main", rule 1536 "from <ip> lookup <vlan>+100",
// and the branch table without the pod's route. Its node and the node's
// pods reach it directly (the branch's groups do not see that traffic);
// what it sends anywhere else leaves by its VLAN.
//
// The VLAN link and the host veth carry the attachment's alias with the
// branch table, which is how DEL and a retried ADD find them.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/cniext"
	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
	"github.com/vpcchain/vpcchain/internal/veth"
	"github.com/vpcchain/vpcchain/internal/vethname"
)

// branchWiring is what ADD builds for a branch and CHECK expects.
type branchWiring struct {
	vlanName string
	vlanID   int
	table    int
	mac      net.HardwareAddr
	trunkMAC net.HardwareAddr
	gw       net.IP
	podIP    net.IP
	hostVeth string
	// standard: standard mode's rules by address, not strict mode's by
	// incoming interface.
	standard bool
}

func newBranchWiring(b *cniext.Branch, podIP net.IP, hostVeth string, standard bool) (*branchWiring, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	if podIP.To4() == nil {
		return nil, fmt.Errorf("branch ENI %s with IPv6 address %s: only IPv4 branches are wired", b.ENIID, podIP)
	}
	mac, _ := net.ParseMAC(b.MAC)
	trunkMAC, _ := net.ParseMAC(b.TrunkMAC)
	return &branchWiring{
		vlanName: vethname.VLANName(b.VLANID),
		vlanID:   b.VLANID,
		table:    routing.BranchTable(b.VLANID),
		mac:      mac,
		trunkMAC: trunkMAC,
		gw:       net.ParseIP(b.SubnetGateway).To4(),
		podIP:    podIP.To4(),
		hostVeth: hostVeth,
		standard: standard,
	}, nil
}

// routes are the branch table's routes; vlan and host are the links'
// indexes. In standard mode the main table routes to the pod.
func (w *branchWiring) routes(vlan, host int) []netlink.Route {
	rs := []netlink.Route{
		{LinkIndex: vlan, Dst: netlinkutil.HostNet(w.gw), Scope: netlink.SCOPE_LINK, Table: w.table},
		{LinkIndex: vlan, Dst: veth.DefaultNet(w.podIP), Gw: w.gw, Scope: netlink.SCOPE_UNIVERSE, Table: w.table},
	}
	if !w.standard {
		rs = append(rs, netlink.Route{LinkIndex: host, Dst: netlinkutil.HostNet(w.podIP), Scope: netlink.SCOPE_LINK, Table: w.table})
	}
	return rs
}

// rules are the strict mode's rules: what enters by the host veth or the
// VLAN link uses the branch table. Standard mode has none of them (its
// rules are by address: ensurePodRules).
func (w *branchWiring) rules() []*netlink.Rule {
	if w.standard {
		return nil
	}
	return []*netlink.Rule{netlinkutil.IifRule(w.hostVeth, w.table), netlinkutil.IifRule(w.vlanName, w.table)}
}

// trunkLink finds the trunk ENI's link by its MAC in the host netns (not a
// VLAN link, which may carry a MAC of its own choosing).
func trunkLink(mac net.HardwareAddr) (netlink.Link, error) {
	links, err := netlinkutil.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if _, vlan := l.(*netlink.Vlan); !vlan && strings.EqualFold(l.Attrs().HardwareAddr.String(), mac.String()) {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no link with the trunk ENI's MAC %s on this node", mac)
}

// wireBranch builds the VLAN link, the branch table and the rules. What it
// made is removed by unwireBranch (the caller's undo).
func wireBranch(w *branchWiring, owner veth.Owner, host netlink.Link) error {
	if err := clearVLANLink(w.vlanName, owner); err != nil {
		return err
	}
	parent, err := trunkLink(w.trunkMAC)
	if err != nil {
		return err
	}
	// The trunk's own link only carries its branches' tagged frames: it
	// needs to be up, and nothing else (no address, route or rule, and no
	// IPv6 link-local address sending untagged solicitations). A freshly
	// attached trunk, or one on a rebooted node, is down; the AWS VPC CNI's
	// ipamd brings it up when it finds it, here the first branch's ADD
	// does. DEL leaves it up for the trunk's other branches.
	if parent.Attrs().Flags&net.FlagUp == 0 {
		if err := disableIPv6(parent.Attrs().Name); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(parent); err != nil {
			return fmt.Errorf("set the trunk ENI's link %s up: %w", parent.Attrs().Name, err)
		}
	}
	la := netlink.NewLinkAttrs()
	la.Name = w.vlanName
	la.ParentIndex = parent.Attrs().Index
	la.HardwareAddr = w.mac
	if err := netlink.LinkAdd(&netlink.Vlan{LinkAttrs: la, VlanId: w.vlanID}); err != nil {
		return fmt.Errorf("create VLAN link %s (id %d on %s, MAC %s): %w", w.vlanName, w.vlanID, parent.Attrs().Name, w.mac, err)
	}
	vlan, err := netlinkutil.LinkByName(w.vlanName)
	if err != nil {
		return fmt.Errorf("look up new VLAN link %s: %w", w.vlanName, err)
	}
	if err := netlink.LinkSetAlias(vlan, owner.Alias()); err != nil {
		return fmt.Errorf("set alias of VLAN link %s: %w", w.vlanName, err)
	}
	for _, sc := range w.sysctls() {
		if _, err := sysctl.Sysctl(sc.key, sc.value); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", sc.key, sc.value, err)
		}
	}
	// No IPv6 on an IPv4 branch's link: no link-local address, router
	// solicitations or DAD out of the branch.
	if err := disableIPv6(w.vlanName); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(vlan); err != nil {
		return fmt.Errorf("set VLAN link %s up: %w", w.vlanName, err)
	}
	for _, r := range w.routes(vlan.Attrs().Index, host.Attrs().Index) {
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("add route %s (gw %v) to table %d: %w", r.Dst, r.Gw, w.table, err)
		}
	}
	// Rules by incoming interface for these names that are not this
	// wiring's: left by an earlier owner, or by strict mode on a node now
	// in standard mode (which has none).
	for _, name := range []string{w.hostVeth, w.vlanName} {
		if _, err := netlinkutil.DeleteRules(netlink.FAMILY_V4, func(x *netlink.Rule) bool {
			return netlinkutil.IsIifRule(name)(x) && (w.standard || x.Table != w.table)
		}); err != nil {
			return fmt.Errorf("remove stale rules for iif %s: %w", name, err)
		}
	}
	for _, r := range w.rules() {
		if _, err := netlinkutil.EnsureRule(r); err != nil {
			return err
		}
	}
	return nil
}

type sysctlValue struct{ key, value string }

// sysctls are the VLAN link's and the host veth's filtering. Standard
// mode: loose on the VLAN link, since a reply from the VPC comes in by it
// while the main table (which reverse-path filtering consults, not the
// rules) routes its source by an ENI. Strict mode sends the node's own
// connections to the pod (kubelet probes) out to the VPC: they come back
// in by the VLAN link with one of the node's addresses as source, and the
// pod's answers come in by the host veth, whose address the main table
// does not route there. Linux drops both unless the VLAN link accepts
// local sources and neither link filters by reverse path (the kernel
// applies the larger of the link's rp_filter and conf.all's, so this takes
// conf.all.rp_filter=0, the kernel's and systemd's default). EC2 checks
// every ENI's sources, so nothing else can send with the node's addresses.
func (w *branchWiring) sysctls() []sysctlValue {
	conf := func(link, key string) string { return "net/ipv4/conf/" + link + "/" + key }
	if w.standard {
		return []sysctlValue{{conf(w.vlanName, "rp_filter"), "2"}}
	}
	return []sysctlValue{{conf(w.vlanName, "rp_filter"), "0"}, {conf(w.vlanName, "accept_local"), "1"},
		{conf(w.hostVeth, "rp_filter"), "0"}}
}

// disableIPv6 turns IPv6 off on a link (a kernel without IPv6 has none to
// turn off).
func disableIPv6(link string) error {
	key := "net/ipv6/conf/" + link + "/disable_ipv6"
	if _, err := os.Stat("/proc/sys/" + key); err != nil {
		return nil
	}
	if _, err := sysctl.Sysctl(key, "1"); err != nil {
		return fmt.Errorf("sysctl %s=1: %w", key, err)
	}
	return nil
}

// clearVLANLink removes a VLAN link of this name left by an earlier attempt
// of the same attachment; one of another attachment is ErrTryAgainLater
// (its DEL frees it), any other link of that name an error.
func clearVLANLink(name string, owner veth.Owner) error {
	l, err := netlinkutil.LinkByName(name)
	switch {
	case netlinkutil.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("look up VLAN link %s: %w", name, err)
	}
	prev, aliased := veth.ParseAlias(l.Attrs().Alias)
	switch {
	case aliased && prev.SameAttachment(owner):
		if err := unwireBranch(owner, nil); err != nil {
			return err
		}
		return nil
	case aliased:
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("vpc-bridge: VLAN link %s is in use by another attachment (%s), whose DEL has not run yet", name, prev), "")
	}
	return types.NewError(types.ErrInternal,
		fmt.Sprintf("vpc-bridge: VLAN link name %s is taken by an interface that vpc-bridge did not create (alias %q)", name, l.Attrs().Alias), "")
}

// unwireBranch removes the attachment's VLAN links (found by their alias),
// their tables' routes out of them or out of the attachment's host veths
// (hostVeths: those owned by it), and the rules of both. A link or rule
// already gone is not an error, so DEL may repeat it.
func unwireBranch(owner veth.Owner, hostVeths []netlink.Link) error {
	links, err := netlinkutil.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var vlans []netlink.Link
	for _, l := range links {
		if _, ok := l.(*netlink.Vlan); ok && owner.Owns(l) {
			vlans = append(vlans, l)
		}
	}
	var errs []error
	ours := map[int]bool{}
	tables := map[int]bool{}
	var names []string
	for _, l := range append(append([]netlink.Link(nil), vlans...), hostVeths...) {
		ours[l.Attrs().Index] = true
		names = append(names, l.Attrs().Name)
		if o, ok := veth.ParseAlias(l.Attrs().Alias); ok && o.RouteTable != routing.MainTable {
			tables[o.RouteTable] = true
		}
	}
	for _, name := range names {
		if _, err := netlinkutil.DeleteRules(netlink.FAMILY_V4, netlinkutil.IsIifRule(name)); err != nil {
			errs = append(errs, err)
		}
	}
	for t := range tables {
		routes, err := netlinkutil.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: t}, netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, fmt.Errorf("list routes of table %d: %w", t, err))
			continue
		}
		for i := range routes {
			if ours[routes[i].LinkIndex] {
				if err := netlink.RouteDel(&routes[i]); err != nil && !netlinkutil.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("delete route %s from table %d: %w", routes[i].Dst, t, err))
				}
			}
		}
	}
	for _, l := range vlans {
		if err := netlink.LinkDel(l); err != nil && !netlinkutil.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete VLAN link %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// dstString is a route's destination; the kernel may report the default
// route's as nil.
func dstString(n *net.IPNet) string {
	if n == nil {
		return "0.0.0.0/0"
	}
	return n.String()
}

// checkBranch checks the branch's VLAN link, table and (strict mode) iif
// rules; standard mode's main-table route and rules 512/1536 are checked as
// any pod's.
func checkBranch(vlanName, vlanMAC string, hostVeth netlink.Link, owner veth.Owner, ip net.IP, standard bool, problems *[]string) {
	bad := func(format string, a ...any) { *problems = append(*problems, fmt.Sprintf(format, a...)) }
	l, err := netlinkutil.LinkByName(vlanName)
	if err != nil {
		bad("VLAN link %s not found: %v", vlanName, err)
		return
	}
	v, ok := l.(*netlink.Vlan)
	switch {
	case !ok:
		bad("%s is a %s, not a VLAN link", vlanName, l.Type())
		return
	case vethname.VLANName(v.VlanId) != vlanName:
		bad("VLAN link %s has VLAN id %d", vlanName, v.VlanId)
	case routing.BranchTable(v.VlanId) != owner.RouteTable:
		bad("VLAN link %s has VLAN id %d, the host veth's alias says table %d", vlanName, v.VlanId, owner.RouteTable)
	}
	a := l.Attrs()
	if a.Flags&net.FlagUp == 0 {
		bad("VLAN link %s is down", vlanName)
	}
	if p, err := netlink.LinkByIndex(a.ParentIndex); err != nil {
		bad("VLAN link %s: the trunk's link (index %d): %v", vlanName, a.ParentIndex, err)
	} else if p.Attrs().Flags&net.FlagUp == 0 {
		bad("the trunk's link %s, under VLAN link %s, is down", p.Attrs().Name, vlanName)
	}
	w := &branchWiring{vlanName: vlanName, table: owner.RouteTable, podIP: ip, hostVeth: hostVeth.Attrs().Name, standard: standard}
	for _, sc := range w.sysctls() {
		if v, err := sysctl.Sysctl(sc.key); err != nil || strings.TrimSpace(v) != sc.value {
			bad("%s is %q (%v), want %s", strings.ReplaceAll(sc.key, "/", "."), strings.TrimSpace(v), err, sc.value)
		}
	}
	if vlanMAC != "" && !strings.EqualFold(a.HardwareAddr.String(), vlanMAC) {
		bad("VLAN link %s has MAC %s, ADD reported %s", vlanName, a.HardwareAddr, vlanMAC)
	}
	if !owner.Owns(l) {
		bad("VLAN link %s has alias %q, want %q", vlanName, a.Alias, owner.Alias())
	}
	t := owner.RouteTable
	routes, err := netlinkutil.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: t}, netlink.RT_FILTER_TABLE)
	if err != nil {
		bad("list routes of table %d: %v", t, err)
		return
	}
	var gw net.IP
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			if r.LinkIndex == a.Index && r.Gw != nil {
				gw = r.Gw
			}
		}
	}
	if gw == nil {
		bad("route default via <subnet gateway> dev %s missing from table %d", vlanName, t)
	} else {
		w.gw = gw
		for _, want := range w.routes(a.Index, hostVeth.Attrs().Index) {
			found := false
			for _, r := range routes {
				if r.LinkIndex == want.LinkIndex && dstString(r.Dst) == dstString(want.Dst) && r.Gw.Equal(want.Gw) {
					found = true
				}
			}
			if !found {
				name := vlanName
				if want.LinkIndex != a.Index {
					name = hostVeth.Attrs().Name
				}
				bad("route %s dev %s missing from table %d", want.Dst, name, t)
			}
		}
	}
	if standard {
		// Strict mode's rules would send the pod's traffic around rule 512.
		for _, name := range []string{hostVeth.Attrs().Name, vlanName} {
			rules, err := netlinkutil.FindRules(netlink.FAMILY_V4, netlinkutil.IsIifRule(name))
			if err != nil {
				bad("%v", err)
			}
			for i := range rules {
				bad("unexpected rule %q (standard mode routes by the pod's address)", netlinkutil.RuleString(&rules[i]))
			}
		}
		return
	}
	for _, want := range w.rules() {
		rules, err := netlinkutil.FindRules(netlink.FAMILY_V4, func(r *netlink.Rule) bool { return netlinkutil.RuleEqual(r, want) })
		if err != nil {
			bad("%v", err)
		} else if len(rules) == 0 {
			bad("rule %q missing", netlinkutil.RuleString(want))
		}
	}
}
