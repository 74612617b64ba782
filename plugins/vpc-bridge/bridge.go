package main

// ADD builds the routed veth of the AWS VPC CNI (docs/design.md, "Routing"):
//
//	pod netns                              host netns
//	eth0  <ip>/32 ─────── veth ─────────── eni<hash>   (no address, up)
//	  169.254.1.1/32 dev eth0 scope link     <ip>/32 dev eni<hash> scope link   (main)
//	  default via 169.254.1.1 dev eth0       rule 512:  to <ip>/32 lookup main
//	  neigh 169.254.1.1 lladdr <host MAC>    rule 1536: from <ip>/32 lookup <ENI table>
//	        nud permanent                               (only for a secondary-ENI address)
//
// Steps, each undone on a later failure together with an IPAM DEL:
//  1. validate config, CNI_IFNAME, CNI_ARGS, open the netns (nothing to undo);
//  2. clear a veth left by an earlier attempt for the same attachment, refuse a
//     name taken by anyone else (before an address is allocated);
//  3. IPAM ADD (raw, to read the vpcchain extension);
//  4. create the veth from inside the pod netns with the peer in the host netns;
//  5. host end: owner alias, IPv6 off, up; pod end: up, /32, routes, neighbour;
//  6. host /32 route, rule 512, rule 1536.
//
// An IPv6 pod (IPv6 mode) gets the same shape with <ip>/128, default via
// fe80::1 (permanent neighbour, no on-link route needed), DAD off on both
// ends, a permanent host-side neighbour for the pod, IPv6 on but no address
// on the host veth, and no rule 1536 (IPv6 pods live on the primary ENI).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/cniext"
	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
	"github.com/vpcchain/vpcchain/internal/veth"
)

// GatewayIP and GatewayIP6 are the pod's link-local default gateways,
// answered by a permanent neighbour entry (the host veth MAC); no host
// interface owns them.
var (
	GatewayIP  = net.IPv4(169, 254, 1, 1).To4()
	GatewayIP6 = net.ParseIP("fe80::1")
)

// gatewayFor is the pod gateway of ip's family.
func gatewayFor(ip net.IP) net.IP {
	if ip.To4() != nil {
		return GatewayIP
	}
	return GatewayIP6
}

// plugin names vpc-bridge in its errors and log lines.
const plugin veth.Plugin = "vpc-bridge"

func cmdAdd(args *skel.CmdArgs) (retErr error) {
	ctx := context.Background()
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := checkIfName(args.IfName); err != nil {
		return err
	}
	k8s, err := loadK8sArgs(args.Args)
	if err != nil {
		return err
	}
	hostVeth := hostVethName(conf.VethPrefix, k8s, args.ContainerID, args.IfName)
	owner := veth.Owner{ContainerID: args.ContainerID, IfName: args.IfName}

	podNS, err := plugin.OpenNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return fmt.Errorf("vpc-bridge: open host network namespace: %w", err)
	}
	defer hostNS.Close()

	if err := clearStaleAttachment(hostVeth, owner, podNS, args.IfName); err != nil {
		return err
	}

	// IPAM ADD runs while the veth pair is created: neither needs the
	// other, and starting the IPAM plugin is most of an IPAM call's time.
	type ipamReply struct {
		raw []byte
		err error
	}
	ipamDone := make(chan ipamReply, 1)
	go func() {
		raw, err := ipamAddRaw(ctx, conf, args)
		ipamDone <- ipamReply{raw, err}
	}()
	undo := &addUndo{podNS: podNS, ifName: args.IfName, hostVeth: hostVeth, owner: owner}
	hostMAC, podMAC, vethErr := createPair(podNS, hostNS, args.IfName, hostVeth, conf.MTU)
	undo.vethCreated = vethErr == nil
	reply := <-ipamDone
	if reply.err != nil {
		// No address was assigned: only the pair (if made) is undone.
		if err := undo.run(); err != nil {
			plugin.Logf("rollback after failed IPAM ADD: %v", err)
		}
		return reply.err
	}

	// From here on a failure removes what was created and releases the address.
	defer func() {
		if retErr == nil {
			return
		}
		if err := undo.run(); err != nil {
			plugin.Logf("rollback after failed ADD: %v", err)
		}
		if err := ipamDelegate(ctx, "DEL", conf, args); err != nil {
			plugin.Logf("rollback after failed ADD: IPAM DEL: %v", err)
		}
	}()
	if vethErr != nil {
		return vethErr
	}
	if err := injectFault("veth"); err != nil {
		return err
	}

	ipamResult, ext, err := cniext.Parse(reply.raw)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("vpc-bridge: IPAM plugin %q returned an unusable result: %v", conf.IPAM.Type, err), "")
	}
	podIP, err := singleAddress(ipamResult, conf.IPAM.Type)
	if err != nil {
		return err
	}
	table := ext.Table()
	owner.RouteTable = table
	undo.owner = owner
	undo.ip = podIP
	if err := checkAddressFree(podIP, owner); err != nil {
		return err
	}

	hostLink, err := veth.SetupHost(hostVeth, owner.Alias(), podIP.To4() == nil)
	if err != nil {
		return fmt.Errorf("vpc-bridge: %w", err)
	}
	gw := gatewayFor(podIP)
	if err := podNS.Do(func(ns.NetNS) error { return veth.SetupPod(args.IfName, podIP, gw, hostMAC) }); err != nil {
		return fmt.Errorf("vpc-bridge: %w", err)
	}
	if err := injectFault("pod"); err != nil {
		return err
	}

	if err := veth.AddHostRoute(hostLink, podIP); err != nil {
		return fmt.Errorf("vpc-bridge: %w", err)
	}
	if podIP.To4() == nil {
		// No NDP: the host knows the pod's MAC as the pod knows the host's.
		if err := veth.SetHostNeighbour(hostLink, podIP, podMAC); err != nil {
			return fmt.Errorf("vpc-bridge: %w", err)
		}
	}
	if err := injectFault("route"); err != nil {
		return err
	}

	if err := ensurePodRules(podIP, table); err != nil {
		return err
	}
	if err := injectFault("rules"); err != nil {
		return err
	}

	result := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: hostVeth, Mac: hostMAC.String()},
			{Name: args.IfName, Mac: podMAC.String(), Sandbox: args.Netns},
		},
		IPs: []*types100.IPConfig{{
			Interface: types100.Int(1),
			Address:   *netlinkutil.HostNet(podIP),
			Gateway:   gw,
		}},
		Routes: []*types.Route{{Dst: *veth.DefaultNet(podIP), GW: gw}},
		DNS:    ipamResult.DNS,
	}
	if !conf.DNS.IsEmpty() {
		result.DNS = conf.DNS
	}
	if err := injectFault("result"); err != nil {
		return err
	}
	return types.PrintResult(result, conf.CNIVersion)
}

// createPair creates the veth pair, the host end with a random MAC that no
// host link uses. It returns the host and pod MACs.
func createPair(podNS, hostNS ns.NetNS, ifName, hostVeth string, mtu int) (hostMAC, podMAC net.HardwareAddr, err error) {
	hostMAC, err = veth.UniqueHostMAC()
	if err == nil {
		podMAC, err = veth.Create(podNS, hostNS, ifName, hostVeth, mtu, hostMAC)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("vpc-bridge: %w", err)
	}
	return hostMAC, podMAC, nil
}

// singleAddress returns the one address of an IPAM result: IPv4, or IPv6
// (IPv6 mode), not both.
func singleAddress(r *types100.Result, ipamType string) (net.IP, error) {
	var all []string
	var ip net.IP
	for _, c := range r.IPs {
		if c == nil {
			continue
		}
		all = append(all, c.Address.String())
		ip = c.Address.IP
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
	}
	if len(all) != 1 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-bridge: IPAM plugin %q returned %d addresses [%s]: vpc-bridge needs exactly one, IPv4 or IPv6 (dual-stack pods are not supported)", ipamType, len(all), strings.Join(all, ", ")), "")
	}
	if ip.To4() == nil && (ip.To16() == nil || !ip.IsGlobalUnicast()) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-bridge: IPAM plugin %q returned %s: a pod address must be a global unicast address", ipamType, all[0]), "")
	}
	return ip, nil
}

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

// addUndo removes what a failed ADD created.
type addUndo struct {
	podNS       ns.NetNS
	ifName      string
	hostVeth    string
	owner       veth.Owner
	ip          net.IP
	vethCreated bool
}

func (u *addUndo) run() error {
	var errs []error
	if u.vethCreated {
		// Deleting one end of a veth pair deletes both.
		if err := veth.DeletePodLink(u.podNS, u.ifName); err != nil {
			errs = append(errs, err)
		}
		if l, err := netlinkutil.LinkByName(u.hostVeth); err == nil {
			if err := veth.DeleteLink(l); err != nil {
				errs = append(errs, fmt.Errorf("delete host veth %s: %w", u.hostVeth, err))
			}
		}
	}
	if u.ip != nil {
		if _, err := releaseHostIP(u.ip, u.owner); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// clearStaleAttachment runs before IPAM ADD. A host veth with this
// attachment's name that was left by an earlier, interrupted or failed ADD of
// the same (container ID, ifname) -- recognised by its alias, or by being the
// peer of the pod's ifname -- is deleted with its routes and rules. A name
// held by another attachment (an older sandbox of the same pod whose DEL has
// not run yet) is ErrTryAgainLater; one held by a foreign interface is an
// error; so is an existing ifname in the pod netns.
func clearStaleAttachment(hostVeth string, owner veth.Owner, podNS ns.NetNS, ifName string) error {
	left, err := veth.FindLeftover(podNS, ifName, hostVeth)
	if err != nil {
		return fmt.Errorf("vpc-bridge: %w", err)
	}
	podHasIf := left.PodIf
	if link := left.Host; link != nil {
		prev, aliased := veth.ParseAlias(link.Attrs().Alias)
		switch {
		case left.Paired || (aliased && prev.SameAttachment(owner)):
			ips, err := ipsRoutedTo(link)
			if err != nil {
				return err
			}
			plugin.Logf("replacing host veth %s left by an earlier attempt of %s", hostVeth, owner)
			if err := veth.DeleteLink(link); err != nil {
				return fmt.Errorf("vpc-bridge: delete stale host veth %s: %w", hostVeth, err)
			}
			for _, ip := range ips {
				if _, err := releaseHostIP(ip, owner); err != nil {
					return err
				}
			}
			if left.Paired {
				podHasIf = false
			}
		case aliased:
			return types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("vpc-bridge: host veth name %q is in use by another attachment (%s), probably an older sandbox of the same pod that has not been deleted yet; it is freed when that attachment is deleted", hostVeth, prev), "")
		default:
			return types.NewError(types.ErrInternal,
				fmt.Sprintf("vpc-bridge: host veth name %q is taken by an interface that vpc-bridge did not create (alias %q); remove it or use another vethPrefix", hostVeth, link.Attrs().Alias), "")
		}
	}
	// Re-check: the stale pair may just have been removed.
	if podHasIf && veth.HasLink(podNS, ifName) {
		return plugin.IfExistsError(ifName, podNS)
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
	family := netlinkutil.Family(ip)
	if _, err := netlinkutil.DeleteRules(family, netlinkutil.IsToPodRule(ip)); err != nil {
		errs = append(errs, err)
	}
	if _, err := netlinkutil.DeleteRules(family, netlinkutil.IsFromPodRule(ip)); err != nil {
		errs = append(errs, err)
	}
	return false, errors.Join(errs...)
}
