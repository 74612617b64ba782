package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
	"github.com/vpcchain/vpcchain/internal/veth"
	"github.com/vpcchain/vpcchain/internal/vethname"
)

// cmdCheck verifies every piece that ADD built and reports each difference.
// IPAM CHECK runs first; an IPAM error is returned as the IPAM plugin gave it.
func cmdCheck(args *skel.CmdArgs) error {
	ctx := context.Background()
	a, err := load(args, "CHECK")
	if err != nil {
		return err
	}
	defer a.close()

	if a.conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "vpc-bridge: CHECK needs prevResult (the ADD result)", "")
	}
	prev, err := types100.NewResultFromResult(a.conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("vpc-bridge: cannot convert prevResult: %v", err), "")
	}
	exp, err := expectedFromResult(prev, args)
	if err != nil {
		return err
	}
	// The daemon keeps nothing for a branch-ENI pod (AWS's resource
	// controller owns the branch): there is nothing for IPAM to check.
	if exp.vlanName == "" {
		if err := a.ipam.run(ctx, "CHECK"); err != nil {
			return err
		}
	}

	var problems []string
	hostMAC := checkHost(exp, a.conf, a.owner, &problems)
	if err := a.podNS.Do(func(ns.NetNS) error {
		checkPod(exp, a.conf, hostMAC, &problems)
		return nil
	}); err != nil {
		return fmt.Errorf("vpc-bridge: CHECK: enter pod netns: %w", err)
	}
	if len(problems) > 0 {
		return types.NewError(types.ErrInternal, "vpc-bridge: CHECK failed: "+strings.Join(problems, "; "), "")
	}
	return nil
}

// expected is what ADD recorded in its result.
type expected struct {
	hostName, hostMAC string
	podName, podMAC   string
	ip                net.IP
	// vlanName and vlanMAC: a branch-ENI pod's VLAN link.
	vlanName, vlanMAC string
}

func expectedFromResult(r *types100.Result, args *skel.CmdArgs) (*expected, error) {
	e := &expected{}
	podIdx := -1
	for i, itf := range r.Interfaces {
		switch {
		case itf.Sandbox == "" && e.hostName == "":
			e.hostName, e.hostMAC = itf.Name, itf.Mac
		case itf.Name == args.IfName && itf.Sandbox == args.Netns:
			e.podName, e.podMAC, podIdx = itf.Name, itf.Mac, i
		case itf.Sandbox == "" && strings.HasPrefix(itf.Name, vethname.VLANPrefix):
			e.vlanName, e.vlanMAC = itf.Name, itf.Mac
		}
	}
	if e.hostName == "" || podIdx < 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-bridge: prevResult lacks the host veth or the pod interface %s in sandbox %s", args.IfName, args.Netns), "")
	}
	n := 0
	for _, c := range r.IPs {
		if c.Interface != nil && *c.Interface == podIdx {
			n++
			e.ip = c.Address.IP
			if v4 := e.ip.To4(); v4 != nil {
				e.ip = v4
			}
		}
	}
	if n != 1 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-bridge: prevResult has %d addresses on interface %d (%s), want one", n, podIdx, args.IfName), "")
	}
	return e, nil
}

// checkHost checks the host side and returns the host veth's MAC (nil if absent).
func checkHost(e *expected, conf *NetConf, owner veth.Owner, problems *[]string) net.HardwareAddr {
	bad := func(format string, a ...any) { *problems = append(*problems, fmt.Sprintf(format, a...)) }
	owner.RouteTable = routing.MainTable

	var hostMAC net.HardwareAddr
	link, err := netlinkutil.LinkByName(e.hostName)
	if err != nil {
		bad("host veth %s not found: %v", e.hostName, err)
	} else {
		a := link.Attrs()
		hostMAC = a.HardwareAddr
		if _, ok := link.(*netlink.Veth); !ok {
			bad("host interface %s is a %s, not a veth", e.hostName, link.Type())
		}
		if a.Flags&net.FlagUp == 0 {
			bad("host veth %s is down", e.hostName)
		}
		if e.hostMAC != "" && !strings.EqualFold(a.HardwareAddr.String(), e.hostMAC) {
			bad("host veth %s has MAC %s, ADD reported %s", e.hostName, a.HardwareAddr, e.hostMAC)
		}
		if a.MTU != conf.MTU {
			bad("host veth %s has MTU %d, want %d", e.hostName, a.MTU, conf.MTU)
		}
		if o, ok := veth.ParseAlias(a.Alias); !ok || !o.SameAttachment(owner) {
			bad("host veth %s has alias %q, want %q", e.hostName, a.Alias, owner.Alias())
		} else {
			owner.RouteTable = o.RouteTable
		}
		if addrs, err := netlinkutil.AddrList(link, netlink.FAMILY_ALL); err != nil {
			bad("list addresses of host veth %s: %v", e.hostName, err)
		} else if len(addrs) > 0 {
			var s []string
			for _, ad := range addrs {
				s = append(s, ad.IPNet.String())
			}
			bad("host veth %s has address(es) %s, it must have none", e.hostName, strings.Join(s, ", "))
		}
		if e.vlanName != "" {
			checkBranch(e.vlanName, e.vlanMAC, link, owner, e.ip, conf.standard(), problems)
			if !conf.standard() {
				return hostMAC
			}
		}

		routes, err := netlinkutil.HostRoutes(e.ip, routing.MainTable)
		if err != nil {
			bad("%v", err)
		}
		found := false
		for _, r := range routes {
			// IPv6 routes have no scope: the kernel reports universe.
			if r.LinkIndex == a.Index && (r.Scope == netlink.SCOPE_LINK || e.ip.To4() == nil) && r.Gw == nil {
				found = true
			} else {
				bad("unexpected host route %s (ifindex %d, scope %s) in main", r.Dst, r.LinkIndex, r.Scope)
			}
		}
		if !found {
			bad("host route %s dev %s scope link missing from main table", netlinkutil.HostNet(e.ip), e.hostName)
		}
		if e.ip.To4() == nil {
			*problems = append(*problems, netlinkutil.NeighbourProblems(a.Index, "host veth "+e.hostName, e.ip, e.podMAC)...)
		}
	}

	if e.vlanName != "" && !conf.standard() {
		// Strict mode: no main-table route, no rule 512/1536 for the pod.
		return hostMAC
	}
	family := netlinkutil.Family(e.ip)
	want512 := netlinkutil.ToPodRule(e.ip)
	if rules, err := netlinkutil.FindRules(family, netlinkutil.IsToPodRule(e.ip)); err != nil {
		bad("%v", err)
	} else {
		ok := false
		for i := range rules {
			if rules[i].Table == routing.MainTable {
				ok = true
			} else {
				bad("unexpected rule %q", netlinkutil.RuleString(&rules[i]))
			}
		}
		if !ok {
			bad("rule %q missing", netlinkutil.RuleString(want512))
		}
	}
	if rules, err := netlinkutil.FindRules(family, netlinkutil.IsFromPodRule(e.ip)); err != nil {
		bad("%v", err)
	} else {
		ok := owner.RouteTable == routing.MainTable
		for i := range rules {
			if owner.RouteTable != routing.MainTable && rules[i].Table == owner.RouteTable {
				ok = true
			} else {
				bad("unexpected rule %q (the pod's route table is %d)", netlinkutil.RuleString(&rules[i]), owner.RouteTable)
			}
		}
		if !ok {
			bad("rule %q missing", netlinkutil.RuleString(netlinkutil.FromPodRule(e.ip, owner.RouteTable)))
		}
	}
	return hostMAC
}

// checkPod runs inside the pod netns.
func checkPod(e *expected, conf *NetConf, hostMAC net.HardwareAddr, problems *[]string) {
	bad := func(format string, a ...any) { *problems = append(*problems, fmt.Sprintf(format, a...)) }
	link, err := netlinkutil.LinkByName(e.podName)
	if err != nil {
		bad("pod interface %s not found: %v", e.podName, err)
		return
	}
	a := link.Attrs()
	if _, ok := link.(*netlink.Veth); !ok {
		bad("pod interface %s is a %s, not a veth", e.podName, link.Type())
	}
	if a.Flags&net.FlagUp == 0 {
		bad("pod interface %s is down", e.podName)
	}
	if e.podMAC != "" && !strings.EqualFold(a.HardwareAddr.String(), e.podMAC) {
		bad("pod interface %s has MAC %s, ADD reported %s", e.podName, a.HardwareAddr, e.podMAC)
	}
	if a.MTU != conf.MTU {
		bad("pod interface %s has MTU %d, want %d", e.podName, a.MTU, conf.MTU)
	}

	family := netlinkutil.Family(e.ip)
	want := netlinkutil.HostNet(e.ip)
	if addrs, err := netlinkutil.AddrList(link, family); err != nil {
		bad("list addresses of pod interface %s: %v", e.podName, err)
	} else {
		found := false
		for _, ad := range addrs {
			if ad.IPNet.String() == want.String() {
				found = true
			}
		}
		if !found {
			bad("pod interface %s lacks address %s", e.podName, want)
		}
	}

	gw := routing.PodGateway(e.ip)
	routes, err := netlinkutil.RouteListFiltered(family,
		&netlink.Route{LinkIndex: a.Index, Table: routing.MainTable}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		bad("list routes of pod interface %s: %v", e.podName, err)
	} else {
		gwRoute, defRoute := family == netlink.FAMILY_V6, false // IPv6: fe80::/64 is on-link anyway
		def := veth.DefaultNet(e.ip).String()
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == netlinkutil.HostNet(gw).String() && r.Scope == netlink.SCOPE_LINK {
				gwRoute = true
			}
			if (r.Dst == nil || r.Dst.String() == def) && r.Gw.Equal(gw) {
				defRoute = true
			}
		}
		if !gwRoute {
			bad("pod route %s dev %s scope link missing", netlinkutil.HostNet(gw), e.podName)
		}
		if !defRoute {
			bad("pod route default via %s dev %s missing", gw, e.podName)
		}
	}
	mac := ""
	if hostMAC != nil {
		mac = hostMAC.String()
	}
	*problems = append(*problems, netlinkutil.NeighbourProblems(a.Index, "pod interface "+e.podName, gw, mac)...)
}

// cmdStatus (CNI 1.1) reports whether the plugin can serve ADD: that is the
// IPAM plugin's (and its daemon's) readiness.
func cmdStatus(args *skel.CmdArgs) error {
	a, err := load(args, "STATUS")
	if err != nil {
		return err
	}
	return a.ipam.run(context.Background(), "STATUS")
}

// cmdGC (CNI 1.1) forwards GC to the IPAM plugin so that it can release
// addresses of attachments the runtime no longer knows. Host-side leftovers
// are not collected here (see caveats in the package docs of del.go).
func cmdGC(args *skel.CmdArgs) error {
	a, err := load(args, "GC")
	if err != nil {
		return err
	}
	return a.ipam.run(context.Background(), "GC")
}
