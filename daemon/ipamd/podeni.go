package ipamd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/daemon/podeni"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

// branchLookupTimeout bounds the API server's answer at an ADD (and for
// status): the plugin's own deadline (ipam.timeout) is longer.
const branchLookupTimeout = 5 * time.Second

// PodENI is the Kubernetes side of security groups for pods
// (daemon/podeni.Client); nil unless ENABLE_POD_ENI=true.
type PodENI interface {
	Branch(ctx context.Context, namespace, name string) (podeni.Branch, bool, error)
	NodeBranches(ctx context.Context) ([]podeni.PodBranchInfo, error)
}

// trunkLocked is the trunk ENI attached to the node (by AWS's VPC resource
// controller), nil while there is none. It is foreign: the daemon never
// takes its addresses, detaches or deletes it (ownership.go).
func (d *Daemon) trunkLocked() *foreignENI {
	for _, f := range d.foreign {
		if f.typ == "trunk" && f.card == 0 {
			return f
		}
	}
	return nil
}

// reservesTrunkSlotLocked: one attachment slot of the default card is kept
// free for the trunk ENI the controller will attach, as the AWS VPC CNI's
// ipamd keeps one (hasRoomForEni's trunkEni) on a trunking-compatible type
// with ENABLE_POD_ENI until the trunk is there; once it is, it holds its
// slot as any foreign ENI does.
func (d *Daemon) reservesTrunkSlotLocked() bool {
	return d.cfg.EnablePodENI && d.limits.TrunkingCompatible && d.trunkLocked() == nil
}

// TrunkRoom says whether the node can take a trunk ENI now, and why not:
// the capability is declared only then, as by the AWS VPC CNI, so that the
// controller never fails for want of a slot. A node the daemon filled
// before ENABLE_POD_ENI was set gets room once the pool frees an ENI.
func (d *Daemon) TrunkRoom() (bool, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case !d.limits.TrunkingCompatible:
		return false, fmt.Sprintf("the instance type %s does not support ENI trunking", d.node.InstanceType)
	case d.trunkLocked() != nil:
		return true, ""
	}
	used := len(d.ledger.enis) + d.foreignOnCard0Locked()
	if used >= d.limits.MaxENIs {
		return false, fmt.Sprintf("no attachment slot for a trunk ENI: %d of the %d ENIs of %s are attached", used, d.limits.MaxENIs, d.node.InstanceType)
	}
	return true, ""
}

// branchReply answers an ADD for a pod the controller gave a branch ENI:
// the branch (from the pod's annotation) and the trunk it is associated
// with. requested is false for any other pod, which gets a pool address.
func (d *Daemon) branchReply(ctx context.Context, namespace, name string) (reply *ipamv1.AddReply, requested bool, err error) {
	if d.podENI == nil || name == "" {
		return nil, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, branchLookupTimeout)
	defer cancel()
	b, requested, err := d.podENI.Branch(ctx, namespace, name)
	switch {
	case !requested && err == nil:
		return nil, false, nil
	case errors.Is(err, podeni.ErrNotAnnotated):
		// The controller annotates a bound pod asynchronously.
		return nil, true, ipamclient.NoAddressStatus(fmt.Sprintf("pod %s/%s: %v", namespace, name, err))
	case err != nil && !requested:
		// The API server did not answer: the pod may need a branch.
		return nil, true, status.Error(codes.Unavailable, fmt.Sprintf("security groups for pods: %v", err))
	case err != nil:
		return nil, true, status.Error(codes.Internal, fmt.Sprintf("pod %s/%s: %v", namespace, name, err))
	}
	gw, _ := b.Gateway() // checked by ParseAnnotation
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.trunkLocked()
	if t == nil {
		return nil, true, ipamclient.NoAddressStatus(fmt.Sprintf("pod %s/%s has branch ENI %s, but no trunk ENI is attached to this node yet", namespace, name, b.ENIID))
	}
	br := &ipamv1.BranchENI{EniId: b.ENIID, Mac: b.MAC, Ip: b.IPv4, Ipv6: b.IPv6, VlanId: int32(b.VLANID),
		SubnetCidr: netip.MustParsePrefix(b.SubnetCIDR).Masked().String(), SubnetGateway: gw.String(), SubnetV6Cidr: b.SubnetV6CIDR,
		TrunkEniId: t.id, TrunkMac: t.mac, TrunkDeviceNumber: int32(t.dev), AssociationId: b.AssociationID}
	for _, p := range d.node.VPCCIDRs {
		br.VpcCidrs = append(br.VpcCidrs, p.String())
	}
	d.counters["branch_eni_adds"]++
	return &ipamv1.AddReply{Branch: br}, true, nil
}

// introspectPodENI is status's view of security groups for pods: the
// trunk from EC2, the branches from this node's pods' annotations (listed
// without holding the daemon's lock).
func (d *Daemon) introspectPodENI(ctx context.Context) *ipamv1.IntrospectPodENI {
	if d.podENI == nil {
		return nil
	}
	out := &ipamv1.IntrospectPodENI{}
	if ok, why := d.TrunkRoom(); !ok {
		out.Problem = why
	}
	d.mu.Lock()
	if t := d.trunkLocked(); t != nil {
		out.Trunk = &ipamv1.IntrospectUnmanagedENI{Id: t.id, DeviceNumber: int32(t.dev), NetworkCard: int32(t.card), Reason: t.reason}
		out.TrunkMac = t.mac
	}
	d.mu.Unlock()
	branches, err := d.podENI.NodeBranches(ctx)
	if err != nil {
		out.Problem = err.Error()
	}
	for _, p := range branches {
		out.Branches = append(out.Branches, &ipamv1.IntrospectBranch{PodNamespace: p.Namespace, PodName: p.Name,
			EniId: p.Branch.ENIID, VlanId: int32(p.Branch.VLANID), Ip: p.Branch.IPv4, Mac: p.Branch.MAC})
	}
	return out
}
