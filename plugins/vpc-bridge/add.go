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
// The veth steps are internal/veth's; the rules and the address checks are
// vpc-bridge's own (routes.go).
//
// A branch-ENI pod (the IPAM result's extension names a branch) gets the
// same veth and pod side; instead of step 6 its host side is the VLAN
// wiring of branch.go (strict mode: no main-table route, no rule 512/1536;
// standard mode: those, with the branch table as the from-pod rule's).
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

func cmdAdd(args *skel.CmdArgs) (retErr error) {
	ctx := context.Background()
	a, err := load(args, "ADD")
	if err != nil {
		return err
	}
	defer a.close()

	if err := clearStaleAttachment(a); err != nil {
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
		raw, err := a.ipam.add(ctx)
		ipamDone <- ipamReply{raw, err}
	}()
	undo := &addUndo{podNS: a.podNS, ifName: args.IfName, hostVeth: a.hostVeth, owner: a.owner}
	hostMAC, podMAC, vethErr := createPair(a)
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
		if err := a.ipam.run(ctx, "DEL"); err != nil {
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
		return types.NewError(types.ErrInternal, fmt.Sprintf("vpc-bridge: IPAM plugin %q returned an unusable result: %v", a.conf.IPAM.Type, err), "")
	}
	podIP, err := singleAddress(ipamResult, a.conf.IPAM.Type)
	if err != nil {
		return err
	}
	table := ext.Table()
	var branch *branchWiring
	if ext != nil && ext.Branch != nil {
		if branch, err = newBranchWiring(ext.Branch, podIP, a.hostVeth, a.conf.standard()); err != nil {
			return types.NewError(types.ErrInternal, fmt.Sprintf("vpc-bridge: IPAM plugin %q returned an unusable branch ENI: %v", a.conf.IPAM.Type, err), "")
		}
		table = branch.table
	}
	owner := a.owner
	owner.RouteTable = table
	undo.owner = owner
	undo.ip = podIP
	if err := checkAddressFree(podIP, owner); err != nil {
		return err
	}

	hostLink, err := veth.SetupHost(a.hostVeth, owner.Alias(), podIP.To4() == nil)
	if err != nil {
		return fmt.Errorf("vpc-bridge: %w", err)
	}
	gw := routing.PodGateway(podIP)
	if err := a.podNS.Do(func(ns.NetNS) error { return veth.SetupPod(args.IfName, podIP, gw, hostMAC) }); err != nil {
		return fmt.Errorf("vpc-bridge: %w", err)
	}
	if err := injectFault("pod"); err != nil {
		return err
	}

	if branch != nil {
		undo.branch = true
		if err := wireBranchPod(branch, owner, hostLink, podMAC); err != nil {
			return err
		}
	} else if err := wireENIPod(hostLink, podIP, podMAC, table); err != nil {
		return err
	}

	result := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: a.hostVeth, Mac: hostMAC.String()},
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
	if branch != nil {
		// The VLAN link carries the branch ENI's MAC: the address EC2
		// delivers the pod's traffic to.
		result.Interfaces = append(result.Interfaces, &types100.Interface{Name: branch.vlanName, Mac: branch.mac.String()})
	}
	if !a.conf.DNS.IsEmpty() {
		result.DNS = a.conf.DNS
	}
	if err := injectFault("result"); err != nil {
		return err
	}
	return types.PrintResult(result, a.conf.CNIVersion)
}

// wireENIPod routes a pod whose address is one of the node's ENIs': the
// host /32 route, for IPv6 the host's neighbour entry, and rules 512/1536.
func wireENIPod(hostLink netlink.Link, podIP net.IP, podMAC net.HardwareAddr, table int) error {
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
	return injectFault("rules")
}

// wireBranchPod routes a branch-ENI pod through its VLAN (branch.go).
func wireBranchPod(w *branchWiring, owner veth.Owner, hostLink netlink.Link, podMAC net.HardwareAddr) error {
	// The host veth has no address to resolve the pod from: answer it.
	if err := veth.SetHostNeighbour(hostLink, w.podIP, podMAC); err != nil {
		return fmt.Errorf("vpc-bridge: %w", err)
	}
	if err := injectFault("route"); err != nil {
		return err
	}
	if err := wireBranch(w, owner, hostLink); err != nil {
		return fmt.Errorf("vpc-bridge: branch ENI on VLAN %d: %w", w.vlanID, err)
	}
	if w.standard {
		// Routed as a pod of a secondary ENI whose table is the branch's.
		return wireENIPod(hostLink, w.podIP, podMAC, w.table)
	}
	// Standard mode's rules left for the address (the node changed modes):
	// rule 512 would send what comes for the pod to the main table, which
	// has no route to it in strict mode.
	if err := releaseRulesOf(w.podIP); err != nil {
		return err
	}
	return injectFault("rules")
}

// createPair creates the veth pair, the host end with a random MAC that no
// host link uses. It returns the host and pod MACs.
func createPair(a *attachment) (hostMAC, podMAC net.HardwareAddr, err error) {
	hostMAC, err = veth.UniqueHostMAC()
	if err == nil {
		podMAC, err = veth.Create(a.podNS, a.args.IfName, a.hostVeth, a.conf.MTU, hostMAC)
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

// addUndo removes what a failed ADD created.
type addUndo struct {
	podNS       ns.NetNS
	ifName      string
	hostVeth    string
	owner       veth.Owner
	ip          net.IP
	vethCreated bool
	// branch: a branch-ENI pod's VLAN link, table and rules may exist.
	branch bool
}

func (u *addUndo) run() error {
	var errs []error
	if u.branch {
		var hosts []netlink.Link
		if l, err := netlinkutil.LinkByName(u.hostVeth); err == nil && u.owner.Owns(l) {
			hosts = append(hosts, l)
		}
		if err := unwireBranch(u.owner, hosts); err != nil {
			errs = append(errs, err)
		}
	}
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
func clearStaleAttachment(a *attachment) error {
	podNS, ifName, hostVeth, owner := a.podNS, a.args.IfName, a.hostVeth, a.owner
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
