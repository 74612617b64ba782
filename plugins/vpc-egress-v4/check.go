package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
)

// cmdCheck verifies what ADD built and names every difference. The egress
// address is not in prevResult (the chain's result stays the pod's IPv6
// one), so it is read from the pod's interface.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := prevResult(conf)
	if err != nil {
		return err
	}
	if hasIPv4(prev) {
		return nil
	}
	podNS, err := plugin.OpenNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	att := attachment{containerID: args.ContainerID, ifName: args.IfName}
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }

	var podIP net.IP
	var podMAC string
	if err := podNS.Do(func(ns.NetNS) error {
		podIP, podMAC = checkPod(conf.IfName, bad)
		return nil
	}); err != nil {
		return fmt.Errorf("vpc-egress-v4: CHECK: enter pod netns: %w", err)
	}
	l, err := netlinkutil.LinkByName(att.hostVeth())
	switch {
	case err != nil:
		bad("host veth %s not found: %v", att.hostVeth(), err)
	case l.Attrs().Alias != att.alias():
		bad("host veth %s has alias %q, want %q", att.hostVeth(), l.Attrs().Alias, att.alias())
	case l.Attrs().Flags&net.FlagUp == 0:
		bad("host veth %s is down", att.hostVeth())
	case podIP != nil:
		routes, err := netlinkutil.HostRoutes(podIP, routing.MainTable)
		if err != nil || len(routes) != 1 || routes[0].LinkIndex != l.Attrs().Index {
			bad("host route %s/32 dev %s missing (%v)", podIP, att.hostVeth(), err)
		}
		problems = append(problems, netlinkutil.NeighbourProblems(l.Attrs().Index, "host veth "+att.hostVeth(), podIP, podMAC)...)
	}
	if podIP != nil {
		checkRules(att, podIP, bad)
	}
	if len(problems) > 0 {
		return types.NewError(types.ErrInternal, "vpc-egress-v4: CHECK failed: "+strings.Join(problems, "; "), "")
	}
	return nil
}

// checkPod runs in the pod netns: the interface, its one IPv4 address, the
// default route and the gateway's permanent neighbour entry.
func checkPod(ifName string, bad func(string, ...any)) (net.IP, string) {
	l, err := netlinkutil.LinkByName(ifName)
	if err != nil {
		bad("pod interface %s not found: %v", ifName, err)
		return nil, ""
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		bad("pod interface %s is down", ifName)
	}
	addrs, err := netlinkutil.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 {
		bad("pod interface %s has IPv4 addresses %v (%v), want one", ifName, addrs, err)
		return nil, ""
	}
	routes, err := netlinkutil.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: l.Attrs().Index, Table: routing.MainTable},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	var gw net.IP
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw != nil {
			gw = r.Gw
		}
	}
	if err != nil || gw == nil {
		bad("pod route default dev %s missing (%v)", ifName, err)
	} else {
		for _, m := range netlinkutil.NeighbourProblems(l.Attrs().Index, "pod interface "+ifName, gw, "") {
			bad("%s", m)
		}
	}
	return addrs[0].IP, l.Attrs().HardwareAddr.String()
}

// checkRules checks the POSTROUTING jump for the pod's address, the nat
// chain's MASQUERADE rule, the FORWARD jumps for the host veth both ways
// and the filter chain's two DROP rules.
func checkRules(att attachment, podIP net.IP, bad func(string, ...any)) {
	b, err := natTable()
	if err != nil {
		bad("%v", err)
		return
	}
	ipt := b.ipt
	chain, veth := att.chain(), att.hostVeth()
	// has reports whether a rule of table/chain has every one of parts.
	has := func(table, chain string, parts ...string) bool {
		rules, err := ipt.List(table, chain)
		if err != nil {
			return false
		}
		for _, r := range rules {
			if !strings.HasPrefix(r, "-A ") {
				continue
			}
			all := true
			for _, p := range parts {
				all = all && strings.Contains(r+" ", " "+p+" ")
			}
			if all {
				return true
			}
		}
		return false
	}
	if !has("nat", "POSTROUTING", "-s "+podIP.String()+"/32", "-j "+chain) {
		bad("nat POSTROUTING has no rule sending %s to %s", podIP, chain)
	}
	if !has("nat", chain, "-j MASQUERADE") {
		bad("nat chain %s has no MASQUERADE rule", chain)
	}
	for _, dir := range []string{"-i", "-o"} {
		if !has("filter", "FORWARD", dir+" "+veth, "-j "+chain) {
			bad("filter FORWARD has no rule sending %s %s to %s", dir, veth, chain)
		}
	}
	if !has("filter", chain, "-i "+veth, "-j DROP") {
		bad("filter chain %s does not drop what %s sends to the egress range", chain, veth)
	}
	if !has("filter", chain, "-o "+veth, "RELATED,ESTABLISHED", "-j DROP") {
		bad("filter chain %s does not drop what is not a reply towards %s", chain, veth)
	}
}

// cmdGC removes the host veths and chains (nat and filter) of attachments
// the runtime no longer has, and forwards GC to the IPAM plugin (which keys
// its leases by the same attachments). The chains go too when their host
// veth is gone:
// the pod's netns was deleted without a DEL, which takes the veth pair
// with it but leaves the chain, whatever the runtime still lists.
func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.ValidAttachments == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "vpc-egress-v4: GC needs cni.dev/valid-attachments (a list, possibly empty)", "")
	}
	valid, validChain := map[string]bool{}, map[string]bool{}
	for _, a := range conf.ValidAttachments {
		att := attachment{containerID: a.ContainerID, ifName: a.IfName}
		valid[att.alias()], validChain[att.chain()] = true, true
	}
	links, err := netlinkutil.LinkList()
	if err != nil {
		return fmt.Errorf("vpc-egress-v4: GC: list links: %w", err)
	}
	var errs []string
	for _, l := range links {
		alias := l.Attrs().Alias
		rest, ok := strings.CutPrefix(alias, "vpc-egress-v4:")
		if !ok || valid[alias] {
			continue
		}
		i := strings.LastIndex(rest, ":")
		if i < 0 {
			continue
		}
		att := attachment{containerID: rest[:i], ifName: rest[i+1:]}
		if err := teardown(att, nil, ""); err != nil {
			errs = append(errs, err.Error())
		}
	}
	// The veths are looked up after the chains are listed: a chain whose
	// ADD is under way already has its veth (ADD writes the chains last).
	names, err := chains()
	if err != nil {
		errs = append(errs, err.Error())
	}
	for _, chain := range names {
		if validChain[chain] && chainVethExists(chain) {
			continue
		}
		if err := dropRules(chain); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return types.NewError(types.ErrInternal, "vpc-egress-v4: GC: "+strings.Join(errs, "; "), "")
	}
	return invoke.DelegateGC(context.Background(), conf.IPAM.Type, conf.raw, nil)
}

// chainVethExists says the host veth of chain's attachment exists; when
// that cannot be told, it is assumed to (the chain is kept).
func chainVethExists(chain string) bool {
	_, err := netlinkutil.LinkByName(chainVeth(chain))
	return !netlinkutil.IsNotFound(err)
}
