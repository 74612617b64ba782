// Command policy-hook is the chained plugin that lets an unmodified
// calico-node (Felix, policy-only mode) enforce NetworkPolicy on vpcchain's
// pods from their first packet. Chained after vpc-bridge and vpc-snat, on ADD
// it
//
//  1. checks that the host veth in prevResult has the name Felix computes for
//     the pod (<prefix><sha1("ns.pod")[:11]>, internal/veth);
//  2. publishes the pod's addresses on the Pod as annotations
//     (cni.projectcalico.org/podIP, cni.projectcalico.org/podIPs,
//     vpc.amazonaws.com/pod-ips), so Felix builds the workload endpoint before
//     the kubelet reports the pod IP (which it does only after ADD returns);
//  3. optionally waits until Felix has written the endpoint's status file,
//     i.e. has programmed the pod's policy, before the pod starts.
//
// DEL clears the annotations (Calico's "finished" signal) when they still
// hold the released address. The result is prevResult, unchanged.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
	bv "github.com/containernetworking/plugins/pkg/utils/buildversion"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus},
		version.All, bv.BuildString("policy-hook"))
}
