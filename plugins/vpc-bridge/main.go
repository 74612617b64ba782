// Command vpc-bridge is the interface plugin of the vpcchain CNI chain: the
// routed veth that joins a pod to the VPC (see add.go for what it builds,
// del.go for DEL semantics).
package main

import (
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	bv "github.com/containernetworking/plugins/pkg/utils/buildversion"
)

func init() {
	// Namespace switches (setns) apply to one OS thread: keep main on the
	// thread group leader, as the upstream plugins do.
	runtime.LockOSThread()
}

func main() {
	if err := preflight(os.Getenv); err != nil {
		_ = err.Print()
		os.Exit(1)
	}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		Status: cmdStatus,
		GC:     cmdGC,
	}, version.All, bv.BuildString("vpc-bridge"))
}

// preflight checks what skel would otherwise reject with a message that does
// not name the value: an over-long or invalid CNI_IFNAME.
func preflight(getenv func(string) string) *types.Error {
	switch getenv("CNI_COMMAND") {
	case "ADD", "DEL", "CHECK":
	default:
		return nil
	}
	if ifName := getenv("CNI_IFNAME"); ifName != "" {
		if err := checkIfName(ifName); err != nil {
			return err.(*types.Error)
		}
	}
	return nil
}
