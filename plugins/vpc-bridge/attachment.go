package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcchain/vpcchain/internal/veth"
)

// plugin names vpc-bridge in its errors and log lines.
const plugin veth.Plugin = "vpc-bridge"

// attachment is what every verb starts from: the configuration, the IPAM
// plugin, and for ADD, DEL and CHECK the attachment they are about. Close
// it when done.
type attachment struct {
	conf *NetConf
	args *skel.CmdArgs
	ipam *ipamPlugin
	// owner is the attachment (container ID, ifname); ADD, DEL and CHECK.
	owner veth.Owner
	// hostVeth is the host veth's name by the naming rule; ADD and DEL
	// (CHECK takes it from prevResult).
	hostVeth string
	// podNS is the pod's netns (CNI_NETNS); ADD and CHECK. DEL opens it
	// itself: a netns that is gone must not fail DEL.
	podNS ns.NetNS
}

func (a *attachment) close() {
	if a.podNS != nil {
		_ = a.podNS.Close()
	}
}

// load is the opening of every verb: it parses the configuration and, for
// the verbs about one attachment, validates CNI_IFNAME; ADD and DEL parse
// CNI_ARGS for the host veth's name (CHECK does not read CNI_ARGS), and ADD
// and CHECK open the pod's netns. DEL does not fail on CNI_ARGS that ADD
// would have refused: it falls back to the container-ID name and
// prevResult rather than refuse to clean up.
func load(args *skel.CmdArgs, verb string) (*attachment, error) {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return nil, err
	}
	a := &attachment{conf: conf, args: args}
	if verb == "STATUS" || verb == "GC" {
		a.ipam = newIPAM(conf, args, nil)
		return a, nil
	}
	if err := checkIfName(args.IfName); err != nil {
		return nil, err
	}
	a.owner = veth.Owner{ContainerID: args.ContainerID, IfName: args.IfName}
	var k8s *K8sArgs
	if verb != "CHECK" {
		k8s, err = loadK8sArgs(args.Args)
		switch {
		case err != nil && verb == "DEL":
			plugin.Logf("DEL: %v; using prevResult and the container-ID veth name", err)
		case err != nil:
			return nil, err
		}
		a.hostVeth = hostVethName(conf.VethPrefix, k8s, args.ContainerID, args.IfName)
	}
	if verb == "ADD" || verb == "CHECK" {
		if a.podNS, err = plugin.OpenNetNS(args.Netns); err != nil {
			return nil, err
		}
	}
	a.ipam = newIPAM(conf, args, k8s)
	return a, nil
}
