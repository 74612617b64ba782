package main

// vpc-bridge's own routing on top of the veth (internal/veth builds that):
// rules 512 and 1536, and the checks that keep an ADD or a late DEL from
// touching the routing of an address that another attachment holds.

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
	"github.com/vpcchain/vpcchain/internal/veth"
)

// checkAddressFree refuses an address that the main table already routes to
// an interface of another attachment: the IPAM handed out a live address.
func checkAddressFree(ip net.IP, owner veth.Owner) error {
	other, err := routedElsewhere(ip, owner)
	if err != nil {
		return err
	}
	if other != "" {
		return types.NewError(types.ErrInternal,
			fmt.Sprintf("vpc-bridge: address %s from IPAM is already in use on this node: it is routed to %s", ip, other), "")
	}
	return nil
}

// routedElsewhere returns a description of the interface that the main table
// routes ip/32 to, when that interface is not this attachment's; "" if none.
func routedElsewhere(ip net.IP, owner veth.Owner) (string, error) {
	routes, err := netlinkutil.HostRoutes(ip, routing.MainTable)
	if err != nil {
		return "", err
	}
	for _, r := range routes {
		if r.LinkIndex <= 0 {
			return fmt.Sprintf("a %s route without interface", r.Dst), nil
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			if netlinkutil.IsNotFound(err) {
				continue
			}
			return "", fmt.Errorf("vpc-bridge: look up link %d of route %s: %w", r.LinkIndex, r.Dst, err)
		}
		if !owner.Owns(l) {
			desc := fmt.Sprintf("interface %s", l.Attrs().Name)
			if o, ok := veth.ParseAlias(l.Attrs().Alias); ok {
				desc += fmt.Sprintf(" (%s)", o)
			}
			return desc, nil
		}
	}
	return "", nil
}

// ensurePodRules installs rule 512 (to pod, main) and, for an address of a
// secondary ENI, rule 1536 (from pod, ENI table); it removes 1536 rules for
// the address that point at another table (leaked by an earlier owner).
func ensurePodRules(ip net.IP, table int) error {
	family := netlinkutil.Family(ip)
	isFrom := netlinkutil.IsFromPodRule(ip)
	if _, err := netlinkutil.DeleteRules(family, func(r *netlink.Rule) bool {
		return isFrom(r) && (table == routing.MainTable || r.Table != table)
	}); err != nil {
		return fmt.Errorf("vpc-bridge: remove stale from-pod rules for %s: %w", ip, err)
	}
	if _, err := netlinkutil.EnsureRule(netlinkutil.ToPodRule(ip)); err != nil {
		return fmt.Errorf("vpc-bridge: %w", err)
	}
	if table != routing.MainTable {
		if _, err := netlinkutil.EnsureRule(netlinkutil.FromPodRule(ip, table)); err != nil {
			return fmt.Errorf("vpc-bridge: %w", err)
		}
	}
	return nil
}

// ipsRoutedTo returns the destinations of the single-host routes in the main
// table that go out of link (the pod addresses behind a host veth).
func ipsRoutedTo(link netlink.Link) ([]net.IP, error) {
	var out []net.IP
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlinkutil.RouteListFiltered(family,
			&netlink.Route{LinkIndex: link.Attrs().Index, Table: routing.MainTable},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("vpc-bridge: list routes of %s: %w", link.Attrs().Name, err)
		}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if ones, bits := r.Dst.Mask.Size(); ones == bits {
				out = append(out, r.Dst.IP)
			}
		}
	}
	return out, nil
}

// releaseHostIP removes the main-table /32 route and the 512/1536 rules of a
// pod address, unless the address is now routed to an interface of another
// attachment (it was handed to a new pod): then it touches nothing and
// returns skipped=true, so a late or repeated DEL cannot break a live pod.
func releaseHostIP(ip net.IP, owner veth.Owner) (skipped bool, err error) {
	other, err := routedElsewhere(ip, owner)
	if err != nil {
		return false, err
	}
	if other != "" {
		plugin.Logf("not removing rules for %s: the address is now routed to %s", ip, other)
		return true, nil
	}
	var errs []error
	routes, err := netlinkutil.HostRoutes(ip, routing.MainTable)
	if err != nil {
		return false, err
	}
	for i := range routes {
		if err := netlink.RouteDel(&routes[i]); err != nil && !netlinkutil.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", routes[i].Dst, err))
		}
	}
	errs = append(errs, releaseRulesOf(ip))
	return false, errors.Join(errs...)
}

// releaseRulesOf removes the 512 and 1536 rules of an address.
func releaseRulesOf(ip net.IP) error {
	family := netlinkutil.Family(ip)
	var errs []error
	if _, err := netlinkutil.DeleteRules(family, netlinkutil.IsToPodRule(ip)); err != nil {
		errs = append(errs, err)
	}
	if _, err := netlinkutil.DeleteRules(family, netlinkutil.IsFromPodRule(ip)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
