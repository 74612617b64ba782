// Package routing is the policy-routing contract of a vpcchain node
// (docs/design.md, "Routing"): the route table of each ENI, the priorities
// of the ip rules that send traffic to and from pods, and the pods' default
// gateway. The daemon builds the ENIs' tables and rules to it, vpc-ipam
// reports a pod's table and gateway in its result, and vpc-bridge installs
// the pod's routes and rules by it.
//
// It holds numbers only, no netlink code, so that vpc-ipam (which never
// touches the host's network) can share it without linking netlink.
package routing

import "net"

// Kernel route tables (RT_TABLE_*).
const (
	// MainTable is the kernel's main table: the primary ENI's table.
	MainTable = 254
	// DefaultTable and LocalTable are reserved by the kernel; no ENI's
	// routes may go there.
	DefaultTable = 253
	LocalTable   = 255
)

// Rule priorities, as in the AWS VPC CNI.
const (
	// PrioToPod: "to <pod ip>/32 lookup main", so traffic to a pod is routed
	// by the main table's /32 route to its veth whatever the source.
	PrioToPod = 512
	// PrioConnmark: "fwmark <mark>/<mask> lookup main" for connmarked replies
	// and NodePort flows that must use the primary ENI.
	PrioConnmark = 1024
	// PrioFromPod: "from <pod ip>/32 lookup <ENI table>" for pods whose
	// address belongs to a secondary ENI.
	PrioFromPod = 1536
	// PrioENIPrimary: "from <secondary ENI primary ip> lookup <ENI table>".
	PrioENIPrimary = 32765
)

// HostRouteProtocol is the protocol of each pod's "<ip> dev <host veth>"
// route in the main table: RTPROT_STATIC (4). Calico Felix, with its route
// sync on (which its WireGuard needs) and FELIX_REMOVEEXTERNALROUTES=false,
// takes a route on a workload interface for its own only if it is "boot"
// (3, what netlink gives a route that names none) or its own 80: any other
// protocol it leaves alone, so it never deletes a pod's route it has no
// endpoint for yet.
const HostRouteProtocol = 4

// tableBase offsets the per-ENI route tables of secondary ENIs.
//
// Why not the reference's device+1: Calico Felix owns a range of route
// tables (default 1-250, 65-99 as the operator configures it on EKS) and
// always claims the lowest index of it for WireGuard; with WireGuard off it
// deletes every ip rule that looks up that table. Tables 1001.. stay clear
// of both ranges, of the reserved 253-255, and of the reference's 10000+
// tables for other network cards, so Felix never touches our rules whatever
// range it is given below 1000.
const tableBase = 1000

// ENITable is the policy-routing table of the ENI at deviceNumber: main for
// the primary ENI (device 0), 1000+deviceNumber for the others.
func ENITable(deviceNumber int) int {
	if deviceNumber == 0 {
		return MainTable
	}
	return tableBase + deviceNumber
}

// PodGateway4 and PodGateway6 are the pods' default gateways: link-local
// next hops that no host interface owns. vpc-bridge answers them in the pod
// with a permanent neighbour entry for the host veth's MAC; vpc-ipam
// writes them into its result (the ENI subnet's gateway would be wrong: a
// pod with a /32 or /128 has no on-link route to it).
var (
	PodGateway4 = net.IPv4(169, 254, 1, 1).To4()
	PodGateway6 = net.ParseIP("fe80::1")
)

// PodGateway is the gateway of a pod whose address is ip.
func PodGateway(ip net.IP) net.IP {
	if ip.To4() != nil {
		return PodGateway4
	}
	return PodGateway6
}

// PrioBranch is the priority of a branch-ENI pod's rules ("iif <link>
// lookup <branch table>"), the AWS VPC CNI's VlanRulePriority: before
// every other rule, so that in strict mode nothing the pod sends or
// receives through its VLAN link is routed by the node's ENIs' tables.
const PrioBranch = 10

// branchTableBase offsets a branch's table from its VLAN id, as the AWS VPC
// CNI does. AWS's resource controller numbers a node's branches from 1 up
// to the instance type's branch limit (at most 120), so the tables stay in
// 101..220, clear of ENITable's 1001.. and of the kernel's 253..255.
const branchTableBase = 100

// BranchTable is the route table of the branch-ENI pod on VLAN vlanID.
func BranchTable(vlanID int) int { return branchTableBase + vlanID }
