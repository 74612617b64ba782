// Command vpc-ipam is the IPAM plugin of the vpcchain CNI chain. It asks the
// node's warm-pool daemon (over ttrpc on a root-only unix socket, see
// internal/ipamclient) for the address of a (network name, container ID,
// ifname) key and returns it as a CNI result with the vpcchain extension
// (internal/cniext) that tells vpc-bridge the ENI's route table. The verbs,
// configuration and error codes are in internal/vpcipam, which vpc-bridge
// also calls in-process.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
	bv "github.com/containernetworking/plugins/pkg/utils/buildversion"

	"github.com/vpcchain/vpcchain/internal/vpcipam"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    vpcipam.CmdAdd,
		Del:    vpcipam.CmdDel,
		Check:  vpcipam.CmdCheck,
		Status: vpcipam.CmdStatus,
		GC:     vpcipam.CmdGC,
	}, version.All, bv.BuildString("vpc-ipam"))
}
