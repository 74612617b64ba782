// Package netlinkutil holds small, idempotent netlink helpers for the policy
// routing that vpcchain installs on a node (its numbers are package
// routing's): ensure/find/delete for ip rules, per-address host routes, a
// random locally administered MAC, and the sync of a hash:net ipset. Every function works on the network namespace of the calling OS
// thread (lock the thread, e.g. via ns.Do, to target another namespace),
// except where it takes a netlink handle.
package netlinkutil

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/routing"
)

// HostNet returns ip as a single-host network (/32 or /128).
func HostNet(ip net.IP) *net.IPNet {
	if v4 := ip.To4(); v4 != nil {
		return &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip.To16(), Mask: net.CIDRMask(128, 128)}
}

// Family returns netlink.FAMILY_V4 or FAMILY_V6 for ip.
func Family(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// ToPodRule is "to <ip>/32 lookup main" at routing.PrioToPod.
func ToPodRule(ip net.IP) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = Family(ip)
	r.Priority = routing.PrioToPod
	r.Dst = HostNet(ip)
	r.Table = routing.MainTable
	return r
}

// FromPodRule is "from <ip>/32 lookup <table>" at routing.PrioFromPod.
func FromPodRule(ip net.IP, table int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = Family(ip)
	r.Priority = routing.PrioFromPod
	r.Src = HostNet(ip)
	r.Table = table
	return r
}

// RuleString renders a rule the way `ip rule` does, for messages.
func RuleString(r *netlink.Rule) string {
	from, to := "all", "all"
	if r.Src != nil {
		from = r.Src.String()
	}
	if r.Dst != nil {
		to = r.Dst.String()
	}
	s := fmt.Sprintf("%d: from %s", r.Priority, from)
	if r.Dst != nil {
		s += " to " + to
	}
	if r.Mark != 0 || r.Mask != nil {
		s += fmt.Sprintf(" fwmark %#x", r.Mark)
		if r.Mask != nil {
			s += fmt.Sprintf("/%#x", *r.Mask)
		}
	}
	if r.IifName != "" {
		s += " iif " + r.IifName
	}
	if r.OifName != "" {
		s += " oif " + r.OifName
	}
	return s + " lookup " + tableName(r.Table)
}

func tableName(t int) string {
	switch t {
	case routing.MainTable:
		return "main"
	case routing.LocalTable:
		return "local"
	case routing.DefaultTable:
		return "default"
	}
	return fmt.Sprint(t)
}

func netEqual(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if !a.IP.Equal(b.IP) {
		return false
	}
	ao, ab := a.Mask.Size()
	bo, bb := b.Mask.Size()
	return ao == bo && ab == bb
}

func maskValue(m *uint32) (uint32, bool) {
	if m == nil {
		return 0, false
	}
	return *m, true
}

// RuleEqual reports whether two rules select the same packets with the same
// action: priority, source, destination, table, fwmark/mask, iif, oif,
// invert. Fields vpcchain never sets (ports, uid range, tos, ...) are ignored.
func RuleEqual(a, b *netlink.Rule) bool {
	am, aHas := maskValue(a.Mask)
	bm, bHas := maskValue(b.Mask)
	// The kernel reports mask 0xffffffff for a mark given without a mask.
	if aHas != bHas {
		if !aHas {
			am, aHas = 0xffffffff, a.Mark != 0
		}
		if !bHas {
			bm, bHas = 0xffffffff, b.Mark != 0
		}
	}
	return a.Priority == b.Priority &&
		netEqual(a.Src, b.Src) && netEqual(a.Dst, b.Dst) &&
		a.Table == b.Table &&
		a.Mark == b.Mark && aHas == bHas && am == bm &&
		a.IifName == b.IifName && a.OifName == b.OifName &&
		a.Invert == b.Invert
}

// FindRules returns the rules of family for which match returns true.
func FindRules(family int, match func(*netlink.Rule) bool) ([]netlink.Rule, error) {
	rules, err := RuleList(family)
	if err != nil {
		return nil, fmt.Errorf("list ip rules: %w", err)
	}
	var out []netlink.Rule
	for i := range rules {
		if match(&rules[i]) {
			out = append(out, rules[i])
		}
	}
	return out, nil
}

// EnsureRule adds r unless an equal rule (RuleEqual) exists already. It
// reports whether it added the rule.
func EnsureRule(r *netlink.Rule) (added bool, err error) {
	family := r.Family
	if family == 0 {
		switch {
		case r.Src != nil:
			family = Family(r.Src.IP)
		case r.Dst != nil:
			family = Family(r.Dst.IP)
		default:
			family = netlink.FAMILY_V4
		}
	}
	existing, err := FindRules(family, func(x *netlink.Rule) bool { return RuleEqual(x, r) })
	if err != nil {
		return false, err
	}
	if len(existing) > 0 {
		return false, nil
	}
	if err := netlink.RuleAdd(r); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			return false, nil
		}
		return false, fmt.Errorf("add ip rule %q: %w", RuleString(r), err)
	}
	return true, nil
}

// DeleteRules deletes every rule of family for which match returns true and
// returns how many it deleted. A rule that vanished meanwhile is not an error.
func DeleteRules(family int, match func(*netlink.Rule) bool) (int, error) {
	rules, err := FindRules(family, match)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for i := range rules {
		r := rules[i]
		if err := netlink.RuleDel(&r); err != nil {
			if IsNotFound(err) {
				continue
			}
			errs = append(errs, fmt.Errorf("delete ip rule %q: %w", RuleString(&r), err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// IsToPodRule matches "to <ip>/32 lookup main" at routing.PrioToPod.
func IsToPodRule(ip net.IP) func(*netlink.Rule) bool {
	dst := HostNet(ip)
	return func(r *netlink.Rule) bool {
		return r.Priority == routing.PrioToPod && r.Src == nil && netEqual(r.Dst, dst)
	}
}

// IsFromPodRule matches "from <ip>/32 lookup <any table>" at routing.PrioFromPod.
func IsFromPodRule(ip net.IP) func(*netlink.Rule) bool {
	src := HostNet(ip)
	return func(r *netlink.Rule) bool {
		return r.Priority == routing.PrioFromPod && r.Dst == nil && netEqual(r.Src, src)
	}
}

// HostRoutes returns the routes "<ip>/32 ..." in table (0 = main).
func HostRoutes(ip net.IP, table int) ([]netlink.Route, error) {
	if table == 0 {
		table = routing.MainTable
	}
	filter := &netlink.Route{Dst: HostNet(ip), Table: table}
	routes, err := RouteListFiltered(Family(ip), filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes to %s: %w", HostNet(ip), err)
	}
	return routes, nil
}

// IsNotFound reports whether err means "no such link/route/rule/neighbour".
func IsNotFound(err error) bool {
	if err == nil {
		return false
	}
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH) ||
		errors.Is(err, syscall.ENODEV)
}

// RandomLAAMAC returns a random unicast, locally administered MAC address.
func RandomLAAMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("generate MAC address: %w", err)
	}
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac, nil
}

// IifRule is "iif <name> lookup <table>" at routing.PrioBranch (IPv4): a
// branch-ENI pod's rule for what enters by its host veth or its VLAN link.
func IifRule(name string, table int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = netlink.FAMILY_V4
	r.Priority = routing.PrioBranch
	r.IifName = name
	r.Table = table
	return r
}

// IsIifRule matches "iif <name> lookup <any table>" at routing.PrioBranch.
func IsIifRule(name string) func(*netlink.Rule) bool {
	return func(r *netlink.Rule) bool {
		return r.Priority == routing.PrioBranch && r.IifName == name && r.Src == nil && r.Dst == nil
	}
}
