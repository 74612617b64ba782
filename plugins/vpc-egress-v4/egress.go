package main

// ADD (after the interface plugin, for a pod without IPv4):
//
//	pod netns                               host netns
//	v4if0  <v4>/32 ─────── veth ─────────── egv4<hash>   (no address, IPv6 off)
//	  <gw>/32 dev v4if0 scope link            <v4>/32 dev egv4<hash> scope link
//	  default via <gw> dev v4if0              neigh <v4> lladdr <pod MAC> permanent
//	  neigh <gw> lladdr <host MAC> permanent  nat POSTROUTING -s <v4> -j VPCE4-<hash>:
//	                                            to the range or multicast: RETURN
//	                                            else MASQUERADE (the node's IPv4)
//	                                          filter FORWARD -i/-o egv4<hash> -j VPCE4-<hash>:
//	                                            in from the pod to the range: DROP
//	                                            out to the pod, not a reply: DROP
//
// <v4> and <gw> come from the delegated IPAM plugin (host-local on
// 169.254.172.0/22 gives .1 as the gateway). No host interface owns <gw>: the
// permanent neighbour entries make ARP unnecessary both ways. The filter
// chain keeps pods from reaching each other over their egress addresses,
// where NetworkPolicy does not look. Every step is undone (with an IPAM
// DEL) when a later one fails. The result is the chain's result before
// this plugin, unchanged: the pod's address stays its IPv6 one, and the
// egress address never shows in Kubernetes.
//
// The veth, its routes and neighbours are internal/veth's; the rules are
// this plugin's own (nat.go).

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/veth"
)

// plugin names vpc-egress-v4 in its errors and log lines.
const plugin veth.Plugin = "vpc-egress-v4"

// attachment names what one (container, ifname) gets on the host.
type attachment struct {
	containerID, ifName string
}

func (a attachment) hash() string {
	h := sha1.Sum([]byte(a.containerID + "/" + a.ifName))
	return hex.EncodeToString(h[:])
}

// hostVeth is the host-side veth name (15 characters).
func (a attachment) hostVeth() string { return hostVethPrefix + a.hash()[:11] }

// alias marks the host veth as this attachment's.
func (a attachment) alias() string { return "vpc-egress-v4:" + a.containerID + ":" + a.ifName }

// chainPrefix starts every nat chain of this plugin; chainName matches
// the names chain gives.
const chainPrefix = "VPCE4-"

var chainName = regexp.MustCompile("^" + chainPrefix + "[0-9A-F]{20}$")

// chain is the attachment's nat chain (at most 28 characters).
func (a attachment) chain() string { return chainPrefix + strings.ToUpper(a.hash()[:20]) }

// chainVeth is the host veth of the attachment whose nat chain is chain (a
// chainName): both names come from the same hash.
func chainVeth(chain string) string {
	return hostVethPrefix + strings.ToLower(chain[len(chainPrefix):][:11])
}

// comment tags the nat rules (no spaces: iptables -S prints it unquoted).
func (a attachment) comment() string { return "vpc-egress-v4:" + a.containerID }

// prevResult is the chain's result so far; a plugin that is not chained
// after an interface plugin has nothing to add egress to.
func prevResult(conf *NetConf) (*types100.Result, error) {
	if conf.PrevResult == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			"vpc-egress-v4: no prevResult: chain it after the interface plugin (vpc-bridge) that gives the pod its IPv6 address", "")
	}
	r, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "vpc-egress-v4: cannot convert prevResult: "+err.Error(), "")
	}
	return r, nil
}

// hasIPv4 reports whether the pod has an IPv4 address already (an IPv4
// cluster): it needs no egress address then.
func hasIPv4(r *types100.Result) bool {
	for _, c := range r.IPs {
		if c != nil && c.Address.IP.To4() != nil {
			return true
		}
	}
	return false
}

func cmdAdd(args *skel.CmdArgs) (retErr error) {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := prevResult(conf)
	if err != nil {
		return err
	}
	if hasIPv4(prev) {
		return types.PrintResult(prev, conf.CNIVersion) // an IPv4 pod reaches IPv4 itself
	}
	if args.IfName == conf.IfName {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-egress-v4: ifName %q is the pod's main interface (CNI_IFNAME): pick another", conf.IfName), "")
	}
	podNS, err := plugin.OpenNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	att := attachment{containerID: args.ContainerID, ifName: args.IfName}
	if _, err := invoke.FindInPath(conf.IPAM.Type, filepath.SplitList(os.Getenv("CNI_PATH"))); err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-egress-v4: ipam.type %q: IPAM plugin not found in CNI_PATH %q", conf.IPAM.Type, os.Getenv("CNI_PATH")), err.Error())
	}
	if err := clearStale(att, podNS, conf.IfName); err != nil {
		return err
	}

	r, err := invoke.DelegateAdd(context.Background(), conf.IPAM.Type, conf.raw, nil)
	if err != nil {
		return err
	}
	defer func() {
		if retErr == nil {
			return
		}
		if err := teardown(att, podNS, conf.IfName); err != nil {
			plugin.Logf("rollback after failed ADD: %v", err)
		}
		if err := invoke.DelegateDel(context.Background(), conf.IPAM.Type, conf.raw, nil); err != nil {
			plugin.Logf("rollback after failed ADD: IPAM DEL: %v", err)
		}
	}()
	addr, gw, err := egressAddress(r, conf.IPAM.Type)
	if err != nil {
		return err
	}
	hostMAC, err := netlinkutil.RandomLAAMAC()
	if err != nil {
		return fmt.Errorf("vpc-egress-v4: %w", err)
	}
	podMAC, err := veth.Create(podNS, conf.IfName, att.hostVeth(), conf.MTU, hostMAC)
	if err != nil {
		return fmt.Errorf("vpc-egress-v4: %w", err)
	}
	if err := podNS.Do(func(ns.NetNS) error { return veth.SetupPod(conf.IfName, addr.IP, gw, hostMAC) }); err != nil {
		return fmt.Errorf("vpc-egress-v4: %w", err)
	}
	if err := setupHostSide(att, addr.IP, podMAC); err != nil {
		return err
	}
	// A node in IPv6 mode may have had no IPv4 pods to forward for.
	if err := ip.EnableIP4Forward(); err != nil {
		return fmt.Errorf("vpc-egress-v4: enable IPv4 forwarding: %w", err)
	}
	if err := setupRules(att, addr); err != nil {
		return err
	}
	return types.PrintResult(prev, conf.CNIVersion)
}

// egressAddress is the one IPv4 address (and its gateway) of the IPAM
// result.
func egressAddress(r types.Result, ipamType string) (*net.IPNet, net.IP, error) {
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return nil, nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("vpc-egress-v4: IPAM plugin %q: unusable result: %v", ipamType, err), "")
	}
	var v4 []*types100.IPConfig
	var all []string
	for _, c := range res.IPs {
		all = append(all, c.Address.String())
		if c.Address.IP.To4() != nil {
			v4 = append(v4, c)
		}
	}
	if len(v4) != 1 || len(all) != 1 {
		return nil, nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-egress-v4: IPAM plugin %q returned [%s]: want exactly one IPv4 address (e.g. of 169.254.172.0/22)", ipamType, strings.Join(all, ", ")), "")
	}
	c := v4[0]
	addr := &net.IPNet{IP: c.Address.IP.To4(), Mask: c.Address.Mask}
	gw := c.Gateway.To4()
	if gw == nil { // the range's first address, as host-local picks it
		first, _ := netip.AddrFromSlice(addr.IP.Mask(addr.Mask))
		gw = first.Next().AsSlice()
	}
	if gw.Equal(addr.IP) || !addr.Contains(gw) {
		return nil, nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-egress-v4: IPAM plugin %q returned %s with gateway %s: the gateway must be another address of the range", ipamType, addr, gw), "")
	}
	return addr, gw, nil
}

// setupHostSide labels, configures and routes the host end, and answers
// the pod's address with a permanent neighbour entry.
func setupHostSide(att attachment, podIP net.IP, podMAC net.HardwareAddr) error {
	l, err := veth.SetupHost(att.hostVeth(), att.alias(), false)
	if err == nil {
		err = veth.AddHostRoute(l, podIP)
	}
	if err == nil {
		err = veth.SetHostNeighbour(l, podIP, podMAC)
	}
	if err != nil {
		return fmt.Errorf("vpc-egress-v4: %w", err)
	}
	return nil
}

// clearStale removes what an earlier, interrupted ADD of the same
// attachment left; a host veth of that name that is not ours is an error.
func clearStale(att attachment, podNS ns.NetNS, ifName string) error {
	left, err := veth.FindLeftover(podNS, ifName, att.hostVeth())
	switch {
	case err != nil:
		return fmt.Errorf("vpc-egress-v4: %w", err)
	case left.Host != nil && left.Host.Attrs().Alias != att.alias():
		return types.NewError(types.ErrInternal, fmt.Sprintf("vpc-egress-v4: host interface %s exists and is not this attachment's (alias %q)", att.hostVeth(), left.Host.Attrs().Alias), "")
	case left.Host != nil:
		plugin.Logf("replacing %s left by an earlier attempt of %s", att.hostVeth(), att.containerID)
		return teardown(att, podNS, ifName)
	case left.PodIf:
		// The pod has the interface but the host has no end of ours: not
		// something an earlier attempt of ours leaves.
		return plugin.IfExistsError(ifName, podNS)
	}
	// No host end: at most the chains of an attempt that died before the
	// veth; ADD's restore rewrites them and DEL removes them.
	return nil
}

// teardown deletes the veth pair (from whichever end exists) and the nat
// and filter rules; what is already gone is not an error.
func teardown(att attachment, podNS ns.NetNS, ifName string) error {
	var errs []error
	if l, err := netlinkutil.LinkByName(att.hostVeth()); err == nil && l.Attrs().Alias == att.alias() {
		if err := veth.DeleteLink(l); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", att.hostVeth(), err))
		}
	}
	if podNS != nil {
		if err := veth.DeletePodLink(podNS, ifName); err != nil {
			errs = append(errs, err)
		}
	}
	if err := dropRules(att.chain()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	att := attachment{containerID: args.ContainerID, ifName: args.IfName}
	var podNS ns.NetNS
	if args.Netns != "" {
		if n, err := ns.GetNS(args.Netns); err == nil { // a netns already gone is normal
			podNS = n
			defer n.Close()
		}
	}
	if err := teardown(att, podNS, conf.IfName); err != nil {
		return types.NewError(types.ErrInternal, "vpc-egress-v4: DEL could not clean the host side, IPAM DEL not attempted: "+err.Error(), "")
	}
	return invoke.DelegateDel(context.Background(), conf.IPAM.Type, conf.raw, nil)
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	return invoke.DelegateStatus(context.Background(), conf.IPAM.Type, conf.raw, nil)
}
