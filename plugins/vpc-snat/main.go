// Command vpc-snat is the chained plugin that lets pods reach destinations
// outside the VPC with the node's primary address, and keeps NodePort and
// pod-initiated external flows on the primary ENI (package internal/snat
// has the design). Per pod it only adds or removes one ipset entry; the
// node-level rules are reconciled by the daemon.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
	bv "github.com/containernetworking/plugins/pkg/utils/buildversion"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus},
		version.All, bv.BuildString("vpc-snat"))
}
