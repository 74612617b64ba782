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
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "vpc-bridge: "+format+"\n", a...)
}

// openNetNS opens the container netns; a missing or invalid path is
// ErrInvalidNetNS (8) naming the path.
func openNetNS(path string) (ns.NetNS, error) {
	if path == "" {
		return nil, types.NewError(types.ErrInvalidNetNS, "vpc-bridge: CNI_NETNS is empty", "")
	}
	n, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		switch {
		case errors.As(err, &notExist):
			return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("vpc-bridge: CNI_NETNS %q does not exist", path), err.Error())
		case errors.As(err, &notNS):
			return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("vpc-bridge: CNI_NETNS %q is not a network namespace", path), err.Error())
		}
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("vpc-bridge: cannot open CNI_NETNS %q: %v", path, err), "")
	}
	return n, nil
}

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

	podNS, err := openNetNS(args.Netns)
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
	hostMAC, podMAC, vethErr := createVethPair(podNS, hostNS, args.IfName, hostVeth, conf.MTU, undo)
	reply := <-ipamDone
	if reply.err != nil {
		// No address was assigned: only the pair (if made) is undone.
		if err := undo.run(); err != nil {
			logf("rollback after failed IPAM ADD: %v", err)
		}
		return reply.err
	}

	// From here on a failure removes what was created and releases the address.
	defer func() {
		if retErr == nil {
			return
		}
		if err := undo.run(); err != nil {
			logf("rollback after failed ADD: %v", err)
		}
		if err := ipamDelegate(ctx, "DEL", conf, args); err != nil {
			logf("rollback after failed ADD: IPAM DEL: %v", err)
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

	hostLink, err := setupHostVeth(hostVeth, owner, podIP.To4() == nil)
	if err != nil {
		return err
	}

	if err := podNS.Do(func(ns.NetNS) error { return setupPodSide(args.IfName, podIP, hostMAC) }); err != nil {
		return err
	}
	if err := injectFault("pod"); err != nil {
		return err
	}

	route := &netlink.Route{
		LinkIndex: hostLink.Attrs().Index,
		Dst:       netlinkutil.HostNet(podIP),
		Scope:     netlink.SCOPE_LINK,
		Table:     routing.MainTable,
	}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("vpc-bridge: add host route %s dev %s scope link: %w", route.Dst, hostVeth, err)
	}
	if podIP.To4() == nil {
		// No NDP: the host knows the pod's MAC as the pod knows the host's.
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: hostLink.Attrs().Index, Family: netlink.FAMILY_V6,
			State: netlink.NUD_PERMANENT, IP: podIP, HardwareAddr: podMAC}); err != nil {
			return fmt.Errorf("vpc-bridge: add host neighbour %s lladdr %s dev %s nud permanent: %w", podIP, podMAC, hostVeth, err)
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
			Gateway:   gatewayFor(podIP),
		}},
		Routes: []*types.Route{{Dst: *defaultNet(podIP), GW: gatewayFor(podIP)}},
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

// createVethPair creates the pair from inside the pod netns with the peer
// placed directly in the host netns (no link moved between namespaces), the
// host end with a random MAC no host link uses. It returns the host and pod
// MACs and records the creation in undo.
func createVethPair(podNS, hostNS ns.NetNS, ifName, hostVeth string, mtu int, undo *addUndo) (hostMAC, podMAC net.HardwareAddr, err error) {
	hostMAC, err = uniqueHostMAC()
	if err != nil {
		return nil, nil, err
	}
	err = podNS.Do(func(ns.NetNS) error {
		la := netlink.NewLinkAttrs()
		la.Name = ifName
		la.MTU = mtu
		veth := &netlink.Veth{
			LinkAttrs:        la,
			PeerName:         hostVeth,
			PeerNamespace:    netlink.NsFd(int(hostNS.Fd())),
			PeerHardwareAddr: hostMAC,
			PeerMTU:          uint32(mtu),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("vpc-bridge: create veth pair %s (pod) / %s (host): %w", ifName, hostVeth, err)
		}
		undo.vethCreated = true
		l, err := netlinkutil.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("vpc-bridge: look up new pod interface %s: %w", ifName, err)
		}
		podMAC = l.Attrs().HardwareAddr
		return nil
	})
	return hostMAC, podMAC, err
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

// defaultNet is the default route's destination of ip's family.
func defaultNet(ip net.IP) *net.IPNet {
	if ip.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
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

// uniqueHostMAC returns a random locally administered MAC that no link in
// the host netns uses.
func uniqueHostMAC() (net.HardwareAddr, error) {
	links, err := netlinkutil.LinkList()
	if err != nil {
		return nil, fmt.Errorf("vpc-bridge: list host links: %w", err)
	}
	for i := 0; i < 10; i++ {
		mac, err := netlinkutil.RandomLAAMAC()
		if err != nil {
			return nil, err
		}
		clash := false
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == mac.String() {
				clash = true
				break
			}
		}
		if !clash {
			return mac, nil
		}
	}
	return nil, errors.New("vpc-bridge: could not find an unused MAC address for the host veth")
}

// setupHostVeth labels the new host end with its owner, sets its IPv6 up
// and brings it up. The host veth carries no address at all, as Felix
// expects: for an IPv4 pod IPv6 is off on it; for an IPv6 pod IPv6 is on
// (to forward) but makes no link-local address, does no DAD and takes no
// router advertisement.
func setupHostVeth(name string, owner veth.Owner, ipv6 bool) (netlink.Link, error) {
	link, err := netlinkutil.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("vpc-bridge: look up host veth %s: %w", name, err)
	}
	if err := netlink.LinkSetAlias(link, owner.Alias()); err != nil {
		return nil, fmt.Errorf("vpc-bridge: set alias of host veth %s: %w", name, err)
	}
	settings := [][2]string{{"accept_ra", "0"}, {"disable_ipv6", "1"}}
	if ipv6 {
		settings = [][2]string{{"accept_ra", "0"}, {"accept_dad", "0"}, {"addr_gen_mode", "1"}, {"disable_ipv6", "0"}}
	}
	if err := ipv6Sysctls(name, !ipv6, settings); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("vpc-bridge: set host veth %s up: %w", name, err)
	}
	return netlinkutil.LinkByName(name)
}

// ipv6Sysctls writes net.ipv6.conf.<name>.* in the current netns. A kernel
// without IPv6 is fine when optional (nothing to turn off), an error when
// the pod needs IPv6.
func ipv6Sysctls(name string, optional bool, settings [][2]string) error {
	dir := "/proc/sys/net/ipv6/conf/" + name
	if _, err := os.Stat(dir); err != nil {
		if optional {
			return nil
		}
		return fmt.Errorf("vpc-bridge: IPv6 pod on %s, but the kernel has no IPv6 there: %w", name, err)
	}
	for _, kv := range settings {
		if err := os.WriteFile(dir+"/"+kv[0], []byte(kv[1]), 0o644); err != nil {
			return fmt.Errorf("vpc-bridge: sysctl net.ipv6.conf.%s.%s=%s: %w", name, kv[0], kv[1], err)
		}
	}
	return nil
}

// setupPodSide runs inside the pod netns.
func setupPodSide(ifName string, ip net.IP, hostMAC net.HardwareAddr) error {
	link, err := netlinkutil.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("vpc-bridge: look up pod interface %s: %w", ifName, err)
	}
	v6 := ip.To4() == nil
	if v6 {
		// The address is the VPC's and unique: no DAD delay before use.
		if err := ipv6Sysctls(ifName, false, [][2]string{{"accept_dad", "0"}, {"accept_ra", "0"}, {"disable_ipv6", "0"}}); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("vpc-bridge: set pod interface %s up: %w", ifName, err)
	}
	addr := &netlink.Addr{IPNet: netlinkutil.HostNet(ip)}
	if v6 {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("vpc-bridge: add address %s to pod interface %s: %w", addr.IPNet, ifName, err)
	}
	idx := link.Attrs().Index
	gw := gatewayFor(ip)
	if !v6 {
		// IPv4 needs an on-link route to a link-local gateway; IPv6's
		// fe80::/64 is on-link by definition.
		gwRoute := &netlink.Route{LinkIndex: idx, Dst: netlinkutil.HostNet(gw), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(gwRoute); err != nil {
			return fmt.Errorf("vpc-bridge: add pod route %s dev %s scope link: %w", gwRoute.Dst, ifName, err)
		}
	}
	defRoute := &netlink.Route{LinkIndex: idx, Dst: defaultNet(ip), Gw: gw, Scope: netlink.SCOPE_UNIVERSE}
	if err := netlink.RouteReplace(defRoute); err != nil {
		return fmt.Errorf("vpc-bridge: add pod route default via %s dev %s: %w", gw, ifName, err)
	}
	neigh := &netlink.Neigh{
		LinkIndex:    idx,
		Family:       netlinkutil.Family(ip),
		State:        netlink.NUD_PERMANENT,
		IP:           gw,
		HardwareAddr: hostMAC,
	}
	if err := netlink.NeighSet(neigh); err != nil {
		return fmt.Errorf("vpc-bridge: add pod neighbour %s lladdr %s dev %s nud permanent: %w", gw, hostMAC, ifName, err)
	}
	return nil
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
		err := u.podNS.Do(func(ns.NetNS) error {
			l, err := netlinkutil.LinkByName(u.ifName)
			if err != nil {
				if netlinkutil.IsNotFound(err) {
					return nil
				}
				return err
			}
			return netlink.LinkDel(l)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("delete pod interface %s: %w", u.ifName, err))
		}
		if l, err := netlinkutil.LinkByName(u.hostVeth); err == nil {
			if err := netlink.LinkDel(l); err != nil && !netlinkutil.IsNotFound(err) {
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
	podPeerIdx, podHasIf := -1, false
	err := podNS.Do(func(ns.NetNS) error {
		l, err := netlinkutil.LinkByName(ifName)
		if err != nil {
			if netlinkutil.IsNotFound(err) {
				return nil
			}
			return err
		}
		podHasIf = true
		if v, ok := l.(*netlink.Veth); ok {
			if idx, err := netlink.VethPeerIndex(v); err == nil {
				podPeerIdx = idx
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("vpc-bridge: inspect pod netns: %w", err)
	}

	link, err := netlinkutil.LinkByName(hostVeth)
	switch {
	case err != nil && !netlinkutil.IsNotFound(err):
		return fmt.Errorf("vpc-bridge: look up host veth %s: %w", hostVeth, err)
	case err == nil:
		prev, aliased := veth.ParseAlias(link.Attrs().Alias)
		paired := podHasIf && podPeerIdx == link.Attrs().Index
		switch {
		case paired || (aliased && prev.SameAttachment(owner)):
			ips, err := ipsRoutedTo(link)
			if err != nil {
				return err
			}
			logf("replacing host veth %s left by an earlier attempt of %s", hostVeth, owner)
			if err := netlink.LinkDel(link); err != nil && !netlinkutil.IsNotFound(err) {
				return fmt.Errorf("vpc-bridge: delete stale host veth %s: %w", hostVeth, err)
			}
			for _, ip := range ips {
				if _, err := releaseHostIP(ip, owner); err != nil {
					return err
				}
			}
			if paired {
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

	if podHasIf {
		// Re-check: the stale pair may just have been removed.
		exists := false
		_ = podNS.Do(func(ns.NetNS) error {
			_, err := netlinkutil.LinkByName(ifName)
			exists = err == nil
			return nil
		})
		if exists {
			return types.NewError(types.ErrInternal,
				fmt.Sprintf("vpc-bridge: interface %q already exists in network namespace %q", ifName, podNS.Path()), "")
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
		logf("not removing rules for %s: the address is now routed to %s", ip, other)
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
