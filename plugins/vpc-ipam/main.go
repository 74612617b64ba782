// Command vpc-ipam is the IPAM plugin of the vpcchain CNI chain. It asks the
// node's warm-pool daemon (over gRPC on a root-only unix socket, see
// internal/ipamclient) for the address of a (network name, container ID,
// ifname) key and returns it as a CNI result with the vpcchain extension
// (internal/cniext) that tells vpc-bridge the ENI's route table. See ipam.go
// for the verbs and errors.go for the error codes.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
	bv "github.com/containernetworking/plugins/pkg/utils/buildversion"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		Status: cmdStatus,
		GC:     cmdGC,
	}, version.All, bv.BuildString("vpc-ipam"))
}
