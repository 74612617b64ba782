package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
	"github.com/vpcchain/vpcchain/internal/snat"
	"github.com/vpcchain/vpcchain/internal/veth"
)

// nodeConfig reads the daemon's file. Missing means the daemon has not
// started yet: try again later.
func nodeConfig(conf *NetConf) (snat.NodeConfig, error) {
	nc, err := snat.ReadNodeConfig(conf.NodeConfig)
	if errors.Is(err, fs.ErrNotExist) {
		return nc, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("vpc-snat: %s does not exist: the vpcchain daemon has not set up SNAT on this node yet", conf.NodeConfig), "")
	}
	if err != nil {
		return nc, types.NewError(types.ErrInternal, "vpc-snat: "+err.Error(), "")
	}
	return nc, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	res, ips, err := conf.podIPv4s()
	if err != nil {
		return err
	}
	nc, err := nodeConfig(conf)
	if err != nil {
		return err
	}
	if !nc.ExternalSNAT {
		if err := checkPodIPs(ips, nc); err != nil {
			return err
		}
		for i, ip := range ips {
			if err := snat.AddPod(ip); err != nil {
				for _, done := range ips[:i] { // leave nothing half-done
					_ = snat.DelPod(done)
				}
				code := uint(types.ErrInternal)
				if errors.Is(err, snat.ErrNotSetUp) {
					code = types.ErrTryAgainLater
				}
				return types.NewError(code, "vpc-snat: "+err.Error(), "")
			}
		}
	}
	return types.PrintResult(res, conf.CNIVersion)
}

// routedToOther names the attachment whose host veth (vpc-bridge's alias,
// internal/veth) the main table routes ip/32 to, when that is not me; ""
// otherwise, including when it cannot tell (the entry is then removed, as
// before: DEL must not fail on a lookup).
func routedToOther(ip netip.Addr, me veth.Owner) string {
	routes, err := netlinkutil.HostRoutes(net.IP(ip.AsSlice()), routing.MainTable)
	if err != nil {
		return ""
	}
	for _, r := range routes {
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		if o, ok := veth.ParseAlias(l.Attrs().Alias); ok && !o.SameAttachment(me) {
			return o.String()
		}
	}
	return ""
}

// checkPodIPs refuses prevResult addresses that cannot be a pod's: outside
// the VPC's CIDRs, or the node's own primary address. In the SNAT set they
// would change how the node's or foreign traffic is translated.
func checkPodIPs(ips []netip.Addr, nc snat.NodeConfig) error {
	for _, ip := range ips {
		inVPC := false
		for _, c := range nc.VPCCIDRs {
			inVPC = inVPC || c.Contains(ip)
		}
		switch {
		case ip == nc.PrimaryIP:
			return types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("vpc-snat: prevResult address %s is the node's primary address, not a pod's", ip), "")
		case !inVPC:
			return types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("vpc-snat: prevResult address %s is not in the VPC's CIDRs %v: not a pod address of this VPC", ip, nc.VPCCIDRs), "")
		}
	}
	return nil
}

// cmdDel removes the pod's addresses from the SNAT set whatever the mode
// (a mode switch may have happened since ADD); absent is success.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return nil // nothing to go by: the daemon's set has no owner info
	}
	_, ips, err := conf.podIPv4s()
	if err != nil {
		return err
	}
	me := veth.Owner{ContainerID: args.ContainerID, IfName: args.IfName}
	for _, ip := range ips {
		if other := routedToOther(ip, me); other != "" {
			// A late or repeated DEL: the address was released and handed
			// to another pod, whose SNAT entry this is now.
			fmt.Fprintf(os.Stderr, "vpc-snat: DEL: leaving %s in ipset %s: it now belongs to %s\n", ip, snat.PodSet, other)
			continue
		}
		if err := snat.DelPod(ip); err != nil && !errors.Is(err, snat.ErrNotSetUp) {
			return types.NewError(types.ErrInternal, "vpc-snat: "+err.Error(), "")
		}
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	_, ips, err := conf.podIPv4s()
	if err != nil {
		return err
	}
	nc, err := nodeConfig(conf)
	if err != nil {
		return err
	}
	if nc.ExternalSNAT {
		return nil
	}
	for _, ip := range ips {
		ok, err := snat.HasPod(ip)
		if err != nil {
			return types.NewError(types.ErrInternal, "vpc-snat: CHECK: "+err.Error(), "")
		}
		if !ok {
			return types.NewError(types.ErrInternal, fmt.Sprintf("vpc-snat: CHECK: %s is not in ipset %s", ip, snat.PodSet), "")
		}
	}
	return nil
}

// cmdStatus: ready once the daemon has written the node config.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := nodeConfig(conf); err != nil {
		return types.NewError(errPluginNotAvailable, err.Error(), "")
	}
	return nil
}

// errPluginNotAvailable is CNI 1.1's STATUS code 50 (not in cni v1.3.0's
// types).
const errPluginNotAvailable uint = 50
