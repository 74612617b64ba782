// Command vpc-egress-v4 is the chained plugin that gives an IPv6 pod a way
// to IPv4-only destinations, as an EKS IPv6 cluster does: a second veth
// (v4if0) with a node-local address from a link-local range
// (169.254.172.0/22 by default, through the IPAM plugin it delegates to),
// used only for egress and masqueraded to the node's IPv4 address. The pod
// keeps the result of the chain before it: its address is the IPv6 one.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
	bv "github.com/containernetworking/plugins/pkg/utils/buildversion"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC},
		version.All, bv.BuildString("vpc-egress-v4"))
}
