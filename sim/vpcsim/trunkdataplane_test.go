package vpcsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// recordingDataPlane records the branch calls the control plane makes and
// the groups it last gave each ENI; failAssociate makes AssociateBranch
// fail.
type recordingDataPlane struct {
	mu            sync.Mutex
	calls         []string
	eniGroups     map[string][]string
	failAssociate bool
}

func (d *recordingDataPlane) record(s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, s)
}

func (d *recordingDataPlane) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.calls
	d.calls = nil
	return c
}

func (d *recordingDataPlane) AddSubnet(netip.Prefix) error { return nil }
func (d *recordingDataPlane) AddNode(string) error         { return nil }
func (d *recordingDataPlane) RemoveNode(string) error      { return nil }
func (d *recordingDataPlane) AttachENI(string, string, net.HardwareAddr, Slot, netip.Addr, netip.Prefix) error {
	return nil
}
func (d *recordingDataPlane) DetachENI(id string) error { d.record("detach " + id); return nil }
func (d *recordingDataPlane) SetENIAddresses(id string, sec []netip.Addr, _ []netip.Prefix) error {
	d.record(fmt.Sprintf("addresses %s %v", id, sec))
	return nil
}
func (d *recordingDataPlane) SetENIIPv6(string, []netip.Addr, []netip.Prefix) error { return nil }
func (d *recordingDataPlane) SetSecurityGroups(_ map[string][]Permission, eniGroups map[string][]string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.eniGroups = eniGroups
	return nil
}
func (d *recordingDataPlane) AssociateBranch(trunkID, branchID string, mac net.HardwareAddr, vlan int, primary netip.Addr, _ netip.Prefix) error {
	d.mu.Lock()
	fail := d.failAssociate
	d.mu.Unlock()
	if fail {
		return errors.New("no VLAN links")
	}
	d.record(fmt.Sprintf("associate %s %s vlan %d %v %v", trunkID, branchID, vlan, mac, primary))
	return nil
}
func (d *recordingDataPlane) DisassociateBranch(id string) error {
	d.record("disassociate " + id)
	return nil
}

// What the data plane is told of branch ENIs: a VLAN association (not a
// GRE one) with the branch's MAC, primary IP and VLAN id, then its
// addresses; its own groups with the others'; its address changes;
// disassociation, deletion and the trunk instance's termination (branches
// before the trunk); a data-plane failure fails the association.
func TestTrunkDataPlaneCalls(t *testing.T) {
	r := newRegion(t, "10.0.28.0/24", Options{})
	ctx := context.Background()
	dp := &recordingDataPlane{}
	r.sim.Cloud.SetDataPlane(dp)
	sg, err := r.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("branch"), Description: aws.String("branch"), VpcId: aws.String(r.vpc)})
	if err != nil {
		t.Fatal(err)
	}
	group := aws.ToString(sg.GroupId)
	trunk := r.attachTrunk(t, r.node.InstanceID)
	branch := r.createENI(t, r.subnet, "branch", group)
	gre := r.createENI(t, r.subnet, "branch")
	ni := r.describeENI(t, branch)
	dp.take()

	dp.failAssociate = true
	if _, err := r.associate(branch, trunk, aws.Int32(7), nil); apiCode(err) != "InternalError" {
		t.Fatalf("associate with a failing data plane: %v, want InternalError", err)
	}
	if a := r.sim.Cloud.TrunkAssociations(); len(a) != 0 {
		t.Fatalf("associations after a data-plane failure: %v", a)
	}
	dp.failAssociate = false

	a, err := r.associate(branch, trunk, aws.Int32(7), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("associate %s %s vlan 7 %s %s", trunk, branch, aws.ToString(ni.MacAddress), aws.ToString(ni.PrivateIpAddress)),
		fmt.Sprintf("addresses %s []", branch),
	}
	if got := dp.take(); !slices.Equal(got, want) {
		t.Errorf("associating by VLAN: %q, want %q", got, want)
	}
	dp.mu.Lock()
	groups, ok := dp.eniGroups[branch]
	dp.mu.Unlock()
	if !ok || !slices.Equal(groups, []string{group}) {
		t.Errorf("the branch's groups in the data plane: %v (%v), want [%s]", groups, ok, group)
	}
	if _, err := r.associate(gre, trunk, nil, aws.Int32(9)); err != nil {
		t.Fatal(err)
	}
	if got := dp.take(); len(got) != 0 {
		t.Errorf("associating by GRE key told the data plane %q, want nothing", got)
	}

	as, err := r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(branch), SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil || len(as.AssignedPrivateIpAddresses) != 1 {
		t.Fatalf("assign a secondary IP to the branch: %v", err)
	}
	if got := dp.take(); len(got) != 1 || got[0] != fmt.Sprintf("addresses %s [%s]", branch, aws.ToString(as.AssignedPrivateIpAddresses[0].PrivateIpAddress)) {
		t.Errorf("a branch's new secondary IP: %q", got)
	}

	if _, err := r.ec2.DisassociateTrunkInterface(ctx, &ec2.DisassociateTrunkInterfaceInput{AssociationId: a.InterfaceAssociation.AssociationId}); err != nil {
		t.Fatal(err)
	}
	if got := dp.take(); !slices.Equal(got, []string{"disassociate " + branch}) {
		t.Errorf("disassociating: %q", got)
	}

	if _, err := r.associate(branch, trunk, aws.Int32(7), nil); err != nil {
		t.Fatal(err)
	}
	dp.take()
	if _, err := r.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(branch)}); err != nil {
		t.Fatal(err)
	}
	if got := dp.take(); !slices.Equal(got, []string{"disassociate " + branch}) {
		t.Errorf("deleting an associated branch: %q", got)
	}

	b2 := r.createENI(t, r.subnet, "branch")
	if _, err := r.associate(b2, trunk, aws.Int32(8), nil); err != nil {
		t.Fatal(err)
	}
	dp.take()
	if err := r.sim.Cloud.TerminateInstance(r.node.InstanceID); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(dp.take(), "; ")
	if i, j := strings.Index(got, "disassociate "+b2), strings.Index(got, "detach "+trunk); i < 0 || j < 0 || i > j {
		t.Errorf("terminating the trunk's instance: %q, want the branch disassociated before the trunk is detached", got)
	}
}
