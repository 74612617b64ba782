package main

// DEL semantics (keyed by container ID + ifname, idempotent):
//
//  1. Host-side cleanup runs first and never depends on the IPAM plugin or its
//     daemon. The pod's addresses are collected from prevResult, from the
//     /32 routes of the host veth, and from the pod's ifname when the netns
//     still exists. Then the pod ifname is deleted (which deletes the pair),
//     the host veth is deleted if its alias says it belongs to this
//     attachment, and for every address the main-table /32 route and the
//     512/1536 rules are removed -- unless the address is now routed to an
//     interface of another attachment (it was already handed to a new pod),
//     in which case nothing of it is touched.
//  2. Only when the host side is verifiably clean is IPAM DEL called. Tearing
//     down before releasing means the daemon can never hand out an address
//     whose old rules still exist. If the host side is not clean, DEL fails
//     without IPAM DEL and the runtime's retry repeats the whole DEL.
//  3. An IPAM DEL error is returned (code and message as the IPAM plugin gave
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

	"github.com/vpcchain/vpcchain/internal/naming"
	"github.com/vpcchain/vpcchain/internal/netlinkutil"
)

func cmdDel(args *skel.CmdArgs) error {
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
		// ADD would have failed on the same CNI_ARGS; fall back to the
		// container-ID name and prevResult rather than refusing to clean up.
		logf("DEL: %v; using prevResult and the container-ID veth name", err)
		k8s = nil
	}
	owner := naming.VethOwner{ContainerID: args.ContainerID, IfName: args.IfName}
	names := []string{hostVethName(conf.VethPrefix, k8s, args.ContainerID, args.IfName)}
	var ips []net.IP
	if conf.PrevResult != nil {
		prev, err := types100.NewResultFromResult(conf.PrevResult)
		if err != nil {
			logf("DEL: ignoring unusable prevResult: %v", err)
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

	if err := teardown(args, names, owner, ips); err != nil {
		return types.NewError(types.ErrInternal, "vpc-bridge: DEL could not clean the host side, IPAM DEL not attempted: "+err.Error(), "")
	}

	if err := ipamDelegate(ctx, "DEL", conf, args.StdinData); err != nil {
		if isDaemonUnreachable(err) {
			logf("DEL: IPAM daemon unreachable (%v); host side is clean, the daemon reclaims the address when it reconciles", err)
			return nil
		}
		return err
	}
	return nil
}

// teardown removes the attachment's veth, routes and rules and verifies that
// none are left.
func teardown(args *skel.CmdArgs, names []string, owner naming.VethOwner, ips []net.IP) error {
	names = uniqueStrings(names)
	var owned []netlink.Link
	for _, name := range names {
		l, err := netlinkutil.LinkByName(name)
		if err != nil {
			if netlinkutil.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("look up host veth %s: %w", name, err)
		}
		if !ownedBy(l, owner) {
			logf("DEL: leaving %s alone: it does not belong to %s (alias %q)", name, owner, l.Attrs().Alias)
			continue
		}
		owned = append(owned, l)
		more, err := ipsRoutedTo(l)
		if err != nil {
			return err
		}
		ips = append(ips, more...)
	}

	if args.Netns != "" {
		podIPs, err := deletePodIf(args.Netns, args.IfName)
		if err != nil {
			return err
		}
		ips = append(ips, podIPs...)
	}

	var errs []error
	for _, l := range owned {
		if err := netlink.LinkDel(l); err != nil && !netlinkutil.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete host veth %s: %w", l.Attrs().Name, err))
		}
	}
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
	return verifyClean(names, owner, released)
}

// deletePodIf deletes ifName in the pod netns and returns its addresses. A
// netns that no longer exists (or is no longer a netns) is not an error.
func deletePodIf(netnsPath, ifName string) ([]net.IP, error) {
	podNS, err := ns.GetNS(netnsPath)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &notExist) || errors.As(err, &notNS) {
			return nil, nil
		}
		return nil, fmt.Errorf("open netns %q: %w", netnsPath, err)
	}
	defer podNS.Close()
	var ips []net.IP
	err = podNS.Do(func(ns.NetNS) error {
		l, err := netlinkutil.LinkByName(ifName)
		if err != nil {
			if netlinkutil.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("look up pod interface %s: %w", ifName, err)
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
		if err := netlink.LinkDel(l); err != nil && !netlinkutil.IsNotFound(err) {
			return fmt.Errorf("delete pod interface %s: %w", ifName, err)
		}
		return nil
	})
	return ips, err
}

// verifyClean reports what of the attachment is still present on the host.
func verifyClean(names []string, owner naming.VethOwner, ips []net.IP) error {
	var left []string
	for _, name := range names {
		if l, err := netlinkutil.LinkByName(name); err == nil && ownedBy(l, owner) {
			left = append(left, "host veth "+name)
		}
	}
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
		routes, err := netlinkutil.HostRoutes(ip, netlinkutil.MainTable)
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
