package main

// DEL semantics (keyed by container ID + ifname, idempotent):
//
//  1. Host-side cleanup runs first and never depends on the IPAM plugin or its
//     daemon. The pod's addresses are collected from prevResult, from the
//     /32 routes of the host veth, and from the pod's ifname when the netns
//     still exists. For every address the main-table /32 route and the
//     512/1536 rules are removed -- unless the address is now routed to an
//     interface of another attachment (it was already handed to a new pod),
//     in which case nothing of it is touched -- and verified gone.
//  2. Only when the address's routing is verifiably gone is IPAM DEL called:
//     the daemon can never hand out an address whose old route or rules still
//     exist. If they are not gone, DEL fails without IPAM DEL and the
//     runtime's retry repeats the whole DEL.
//  3. IPAM DEL runs while the kernel deletes the veth pair (the pod ifname,
//     which takes its peer with it, and the host veth if its alias says it
//     belongs to this attachment): the deletion waits on the kernel for most
//     of its time, and nothing reaches the pod without its route. As the
//     upstream ptp and bridge plugins do, the address may so be released
//     before its veth is gone; a veth that could not be deleted fails DEL
//     and the runtime's retry deletes it.
//  4. An IPAM DEL error is returned (code and message as the IPAM plugin gave
//     them) so that the runtime retries -- except cniext.ErrDaemonUnreachable:
//     then the daemon is down, the host is already clean, and the daemon
//     reclaims the address when it reconciles, so DEL succeeds (as the AWS VPC
//     CNI does when ipamd is unreachable).
//
// A missing netns, a missing veth, a missing prevResult are all normal.

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

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
	"github.com/vpcchain/vpcchain/internal/veth"
)

func cmdDel(args *skel.CmdArgs) error {
	ctx := context.Background()
	a, err := load(args, "DEL")
	if err != nil {
		return err
	}
	names := []string{a.hostVeth}
	var ips []net.IP
	if a.conf.PrevResult != nil {
		prev, err := types100.NewResultFromResult(a.conf.PrevResult)
		if err != nil {
			plugin.Logf("DEL: ignoring unusable prevResult: %v", err)
		} else {
			for _, itf := range prev.Interfaces {
				if itf != nil && itf.Sandbox == "" && itf.Name != "" {
					names = append(names, itf.Name)
				}
			}
			for _, c := range prev.IPs {
				ips = append(ips, c.Address.IP)
			}
		}
	}

	names = uniqueStrings(names)
	owned, err := ownedHostLinks(names, a.owner)
	if err != nil {
		return types.NewError(types.ErrInternal, "vpc-bridge: DEL could not clean the host side, IPAM DEL not attempted: "+err.Error(), "")
	}
	// A branch-ENI pod's VLAN link, table routes and iif rules go first:
	// they name the host veth, which goes later.
	if err := unwireBranch(a.owner, owned); err != nil {
		return types.NewError(types.ErrInternal, "vpc-bridge: DEL could not remove the branch ENI's VLAN wiring, IPAM DEL not attempted: "+err.Error(), "")
	}
	if err := unroute(args, owned, a.owner, ips); err != nil {
		return types.NewError(types.ErrInternal, "vpc-bridge: DEL could not clean the host side, IPAM DEL not attempted: "+err.Error(), "")
	}

	ipamDone := make(chan error, 1)
	go func() { ipamDone <- a.ipam.run(ctx, "DEL") }()
	linkErr := deleteLinks(args, names, a.owner, owned)
	ipamErr := <-ipamDone
	if linkErr != nil {
		return types.NewError(types.ErrInternal, "vpc-bridge: DEL could not delete the veth pair: "+linkErr.Error(), "")
	}
	if ipamErr != nil {
		if isDaemonUnreachable(ipamErr) {
			plugin.Logf("DEL: IPAM daemon unreachable (%v); host side is clean, the daemon reclaims the address when it reconciles", ipamErr)
			return nil
		}
		return ipamErr
	}
	return nil
}

// unroute finds the addresses of the attachment's host veths (owned) and
// pod, removes each address's host route and rules and verifies them gone.
func unroute(args *skel.CmdArgs, owned []netlink.Link, owner veth.Owner, ips []net.IP) error {
	for _, l := range owned {
		more, err := ipsRoutedTo(l)
		if err != nil {
			return err
		}
		ips = append(ips, more...)
	}
	if args.Netns != "" {
		podIPs, err := podIfAddrs(args.Netns, args.IfName)
		if err != nil {
			return err
		}
		ips = append(ips, podIPs...)
	}

	var errs []error
	var released []net.IP
	for _, ip := range uniqueIPs(ips) {
		skipped, err := releaseHostIP(ip, owner)
		if err != nil {
			errs = append(errs, err)
		}
		if !skipped {
			released = append(released, ip)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return verifyUnrouted(released)
}

// ownedHostLinks looks up the attachment's host-side links by name once,
// for every step of DEL: those gone are skipped, those another attachment
// owns are left alone.
func ownedHostLinks(names []string, owner veth.Owner) ([]netlink.Link, error) {
	var owned []netlink.Link
	for _, name := range names {
		l, err := netlinkutil.LinkByName(name)
		if err != nil {
			if netlinkutil.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("look up host veth %s: %w", name, err)
		}
		if !owner.Owns(l) {
			plugin.Logf("DEL: leaving %s alone: it does not belong to %s (alias %q)", name, owner, l.Attrs().Alias)
			continue
		}
		owned = append(owned, l)
	}
	return owned, nil
}

// deleteLinks deletes the pod ifname (and with it its peer) and the owned
// host veths, and verifies that none of the attachment's veths is left.
func deleteLinks(args *skel.CmdArgs, names []string, owner veth.Owner, owned []netlink.Link) error {
	if args.Netns != "" {
		if err := deletePodIf(args.Netns, args.IfName); err != nil {
			return err
		}
	}
	var errs []error
	for _, l := range owned {
		if err := veth.DeleteLink(l); err != nil {
			errs = append(errs, fmt.Errorf("delete host veth %s: %w", l.Attrs().Name, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	var left []string
	for _, name := range names {
		if l, err := netlinkutil.LinkByName(name); err == nil && owner.Owns(l) {
			left = append(left, "host veth "+name)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("still present after deletion: %s", strings.Join(left, ", "))
	}
	return nil
}

// podNSDo runs f with the pod netns at netnsPath. A netns that no longer
// exists (or is no longer a netns) is not an error: f does not run.
func podNSDo(netnsPath string, f func(ns.NetNS) error) error {
	podNS, err := veth.OpenNetNSIfExists(netnsPath)
	if err != nil || podNS == nil {
		return err
	}
	defer podNS.Close()
	return f(podNS)
}

// podIfAddrs returns the global addresses of ifName in the pod netns.
func podIfAddrs(netnsPath, ifName string) ([]net.IP, error) {
	var ips []net.IP
	err := podNSDo(netnsPath, func(podNS ns.NetNS) error {
		return podNS.Do(func(ns.NetNS) error {
			l, err := veth.PodLink(ifName)
			if l == nil {
				return err
			}
			addrs, err := netlinkutil.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return fmt.Errorf("list addresses of pod interface %s: %w", ifName, err)
			}
			for _, a := range addrs {
				if a.IPNet != nil && a.IP.IsGlobalUnicast() {
					ips = append(ips, a.IP)
				}
			}
			return nil
		})
	})
	return ips, err
}

// deletePodIf deletes ifName in the pod netns, if both still exist.
func deletePodIf(netnsPath, ifName string) error {
	return podNSDo(netnsPath, func(podNS ns.NetNS) error { return veth.DeletePodLink(podNS, ifName) })
}

// verifyUnrouted reports the routes and rules of the addresses that are
// still present on the host.
func verifyUnrouted(ips []net.IP) error {
	var left []string
	for _, ip := range ips {
		family := netlinkutil.Family(ip)
		isTo, isFrom := netlinkutil.IsToPodRule(ip), netlinkutil.IsFromPodRule(ip)
		rules, err := netlinkutil.FindRules(family, func(r *netlink.Rule) bool { return isTo(r) || isFrom(r) })
		if err != nil {
			return err
		}
		for i := range rules {
			left = append(left, "rule "+netlinkutil.RuleString(&rules[i]))
		}
		routes, err := netlinkutil.HostRoutes(ip, routing.MainTable)
		if err != nil {
			return err
		}
		for _, r := range routes {
			left = append(left, "route "+r.Dst.String())
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("still present after cleanup: %s", strings.Join(left, ", "))
	}
	return nil
}

func uniqueStrings(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func uniqueIPs(in []net.IP) []net.IP {
	seen := map[string]bool{}
	var out []net.IP
	for _, ip := range in {
		if ip == nil {
			continue
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if k := ip.String(); !seen[k] {
			seen[k] = true
			out = append(out, ip)
		}
	}
	return out
}
