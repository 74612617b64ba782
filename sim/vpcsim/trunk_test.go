package vpcsim

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// createENI creates an ENI of an interface type in a subnet, in groups
// (none: the VPC's default group).
func (r *region) createENI(t *testing.T, subnet, typ string, groups ...string) string {
	t.Helper()
	out, err := r.ec2.CreateNetworkInterface(context.Background(), &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(subnet),
		InterfaceType: types.NetworkInterfaceCreationType(typ), Groups: groups})
	if err != nil {
		t.Fatalf("create %s ENI: %v", typ, err)
	}
	return aws.ToString(out.NetworkInterface.NetworkInterfaceId)
}

// attachTrunk creates a trunk ENI and attaches it to instance at device 1.
func (r *region) attachTrunk(t *testing.T, instance string) string {
	t.Helper()
	trunk := r.createENI(t, r.subnet, "trunk")
	if _, err := r.ec2.AttachNetworkInterface(context.Background(), &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(trunk),
		InstanceId: aws.String(instance), DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatalf("attach trunk: %v", err)
	}
	return trunk
}

func (r *region) associate(branch, trunk string, vlan, gre *int32) (*ec2.AssociateTrunkInterfaceOutput, error) {
	return r.ec2.AssociateTrunkInterface(context.Background(), &ec2.AssociateTrunkInterfaceInput{BranchInterfaceId: aws.String(branch),
		TrunkInterfaceId: aws.String(trunk), VlanId: vlan, GreKey: gre})
}

func (r *region) describeENI(t *testing.T, id string) types.NetworkInterface {
	t.Helper()
	out, err := r.ec2.DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
	if err != nil || len(out.NetworkInterfaces) != 1 {
		t.Fatalf("describe %s: %v", id, err)
	}
	return out.NetworkInterfaces[0]
}

// A branch ENI associated with a trunk ENI and disassociated again, as EC2's
// API reference gives the three actions: AssociateTrunkInterface answers
// interfaceAssociation (associationId, branchInterfaceId,
// trunkInterfaceId, interfaceProtocol "VLAN or GRE", vlanId "when you use
// the VLAN protocol", greKey "when you use the GRE protocol") and the
// clientToken; DisassociateTrunkInterface answers return "true if the
// request succeeds"; DescribeTrunkInterfaceAssociations lists
// interfaceAssociationSet. DescribeNetworkInterfaces shows each ENI's
// interfaceType; the branch is in use while associated and available after.
func TestTrunkAssociationLifecycle(t *testing.T) {
	r := newRegion(t, "10.0.20.0/24", Options{})
	ctx := context.Background()
	cr, err := r.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{VpcId: aws.String(r.vpc),
		GroupName: aws.String("pod-a"), Description: aws.String("the group of pod a")})
	if err != nil {
		t.Fatal(err)
	}
	podGroup := aws.ToString(cr.GroupId)
	cr2, err := r.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{VpcId: aws.String(r.vpc),
		GroupName: aws.String("pod-b"), Description: aws.String("another")})
	if err != nil {
		t.Fatal(err)
	}
	trunk := r.attachTrunk(t, r.node.InstanceID)
	branch := r.createENI(t, r.subnet, "branch", podGroup)
	gre := r.createENI(t, r.subnet, "branch")

	out, err := r.associate(branch, trunk, aws.Int32(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := out.InterfaceAssociation
	assoc := aws.ToString(a.AssociationId)
	if !strings.HasPrefix(assoc, "trunk-assoc-") || aws.ToString(a.BranchInterfaceId) != branch || aws.ToString(a.TrunkInterfaceId) != trunk ||
		a.InterfaceProtocol != types.InterfaceProtocolTypeVlan || aws.ToInt32(a.VlanId) != 1 || a.GreKey != nil {
		t.Errorf("association %+v: want trunk-assoc-..., %s on %s, VLAN 1, no GRE key", a, branch, trunk)
	}
	// The SDK fills ClientToken in (an idempotency token); EC2 gives it back.
	if aws.ToString(out.ClientToken) == "" {
		t.Error("no clientToken in the answer")
	}
	gout, err := r.associate(gre, trunk, nil, aws.Int32(0))
	if err != nil {
		t.Fatal(err)
	}
	if g := gout.InterfaceAssociation; g.InterfaceProtocol != types.InterfaceProtocolTypeGre || g.GreKey == nil || *g.GreKey != 0 || g.VlanId != nil {
		t.Errorf("GRE association %+v: want GRE with key 0 and no VLAN ID", g)
	}

	d, err := r.ec2.DescribeTrunkInterfaceAssociations(ctx, &ec2.DescribeTrunkInterfaceAssociationsInput{AssociationIds: []string{assoc}})
	if err != nil || len(d.InterfaceAssociations) != 1 {
		t.Fatalf("describe %s: %+v, %v", assoc, d, err)
	}
	if got := d.InterfaceAssociations[0]; aws.ToString(got.AssociationId) != assoc || aws.ToString(got.BranchInterfaceId) != branch ||
		aws.ToString(got.TrunkInterfaceId) != trunk || got.InterfaceProtocol != types.InterfaceProtocolTypeVlan || aws.ToInt32(got.VlanId) != 1 {
		t.Errorf("described %+v, want what AssociateTrunkInterface answered", got)
	}

	tests := []struct {
		eni    string
		typ    types.NetworkInterfaceType
		status types.NetworkInterfaceStatus
		attach bool
	}{
		{trunk, types.NetworkInterfaceTypeTrunk, types.NetworkInterfaceStatusInUse, true},
		{branch, types.NetworkInterfaceTypeBranch, types.NetworkInterfaceStatusInUse, false},
	}
	for _, tt := range tests {
		ni := r.describeENI(t, tt.eni)
		if ni.InterfaceType != tt.typ || ni.Status != tt.status || (ni.Attachment != nil) != tt.attach {
			t.Errorf("%s: type %s, status %s, attachment %v; want %s, %s, attached %v", tt.eni, ni.InterfaceType, ni.Status,
				ni.Attachment != nil, tt.typ, tt.status, tt.attach)
		}
	}
	// The same through the filters.
	f, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{
		{Name: aws.String("interface-type"), Values: []string{"branch"}}, {Name: aws.String("status"), Values: []string{"in-use"}}}})
	if err != nil || len(f.NetworkInterfaces) != 2 {
		t.Errorf("branches in use: %d, %v; want 2", len(f.NetworkInterfaces), err)
	}

	// The Go API: the trunk's node and each branch with its VLAN ID, MAC,
	// addresses and its own groups, as a data plane needs them.
	tv, ok := r.sim.Cloud.Trunk(trunk)
	if !ok || tv.Node != "node1" || tv.InstanceID != r.node.InstanceID || len(tv.Branches) != 2 {
		t.Fatalf("trunk view %+v: want node1 with 2 branches", tv)
	}
	bv := tv.Branches[0] // VLAN before GRE
	ni := r.describeENI(t, branch)
	if bv.ID != assoc || bv.VLANID != 1 || bv.ENI.ID != branch || bv.ENI.MAC != aws.ToString(ni.MacAddress) ||
		bv.ENI.PrimaryIP.String() != aws.ToString(ni.PrivateIpAddress) || !slices.Equal(bv.ENI.Groups, []string{podGroup}) ||
		bv.ENI.TrunkAssociationID != assoc || bv.ENI.SubnetCIDR.String() != "10.0.20.0/24" {
		t.Errorf("branch view %+v: want %s on VLAN 1 with the described MAC and address, group %s", bv, branch, podGroup)
	}
	if g := tv.Branches[1]; g.Protocol != "GRE" || g.ENI.ID != gre {
		t.Errorf("second branch %+v: want the GRE one", g)
	}
	// A branch's groups are its own and follow a change.
	if _, err := r.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(branch),
		Groups: []string{podGroup, aws.ToString(cr2.GroupId)}}); err != nil {
		t.Fatal(err)
	}
	if tv, _ := r.sim.Cloud.Trunk(trunk); len(tv.Branches[0].ENI.Groups) != 2 {
		t.Errorf("branch groups after the change: %v, want 2", tv.Branches[0].ENI.Groups)
	}
	if n := len(r.sim.Cloud.Trunks()); n != 1 {
		t.Errorf("%d trunks, want 1", n)
	}
	// And to another process, through the control API's state.
	res, err := http.Get(r.sim.EC2URL + "/sim/state")
	if err != nil {
		t.Fatal(err)
	}
	var st State
	err = json.NewDecoder(res.Body).Decode(&st)
	_ = res.Body.Close()
	if err != nil || len(st.Trunks) != 1 || st.Trunks[0].ENI.ID != trunk || len(st.Trunks[0].Branches) != 2 ||
		st.Trunks[0].Branches[0].VLANID != 1 || st.Trunks[0].Branches[0].ENI.MAC != bv.ENI.MAC {
		t.Errorf("/sim/state trunks %+v, %v; want %s with VLAN 1 first", st.Trunks, err, trunk)
	}

	dis, err := r.ec2.DisassociateTrunkInterface(ctx, &ec2.DisassociateTrunkInterfaceInput{AssociationId: aws.String(assoc)})
	if err != nil || !aws.ToBool(dis.Return) {
		t.Fatalf("disassociate: %+v, %v", dis, err)
	}
	if ni := r.describeENI(t, branch); ni.Status != types.NetworkInterfaceStatusAvailable {
		t.Errorf("branch after disassociation: %s, want available", ni.Status)
	}
	if _, err := r.ec2.DescribeTrunkInterfaceAssociations(ctx, &ec2.DescribeTrunkInterfaceAssociationsInput{AssociationIds: []string{assoc}}); apiCode(err) != "InvalidAssociationID.NotFound" {
		t.Errorf("describe a removed association: %v, want InvalidAssociationID.NotFound", err)
	}
	if _, err := r.ec2.DisassociateTrunkInterface(ctx, &ec2.DisassociateTrunkInterfaceInput{AssociationId: aws.String(assoc)}); apiCode(err) != "InvalidAssociationID.NotFound" {
		t.Errorf("disassociate again: %v, want InvalidAssociationID.NotFound", err)
	}
	if tv, _ := r.sim.Cloud.Trunk(trunk); len(tv.Branches) != 1 {
		t.Errorf("trunk after disassociation: %d branches, want 1", len(tv.Branches))
	}
	// Free again, the branch can be associated anew, with the VLAN ID it had.
	if _, err := r.associate(branch, trunk, aws.Int32(1), nil); err != nil {
		t.Errorf("associate again: %v", err)
	}
}

// Every rule AssociateTrunkInterface enforces, each with its EC2 error
// code, and nothing changes on a refusal. The trunk must be of type trunk
// and attached to an instance of a type that takes trunking
// (instance-limits.tsv: m5.large "true 9", t3.medium "false 0"); the branch
// of type branch, free, in the trunk's VPC and Availability Zone; the VLAN
// ID within 802.1Q's 1 to 4094 and, like a GRE key, free on the trunk.
func TestAssociateTrunkInterfaceErrors(t *testing.T) {
	r := newRegion(t, "10.0.21.0/24", Options{})
	trunk := r.attachTrunk(t, r.node.InstanceID)
	small, err := r.sim.LaunchNode(LaunchSpec{Name: "small", InstanceType: "t3.medium", SubnetID: r.subnet})
	if err != nil {
		t.Fatal(err)
	}
	smallTrunk := r.attachTrunk(t, small.InstanceID)
	detached := r.createENI(t, r.subnet, "trunk")
	plain := r.createENI(t, r.subnet, "interface")
	free := r.createENI(t, r.subnet, "branch")
	taken := r.createENI(t, r.subnet, "branch")
	if _, err := r.associate(taken, trunk, aws.Int32(10), nil); err != nil {
		t.Fatal(err)
	}
	greTaken := r.createENI(t, r.subnet, "branch")
	if _, err := r.associate(greTaken, trunk, nil, aws.Int32(7)); err != nil {
		t.Fatal(err)
	}
	otherAZ, err := r.sim.Cloud.AddSubnet(r.vpc, "10.0.22.0/24", "us-west-2b", nil)
	if err != nil {
		t.Fatal(err)
	}
	inOtherAZ := r.createENI(t, otherAZ, "branch")
	otherVPC, _ := r.sim.Cloud.AddVPC("172.16.0.0/16")
	otherVPCSubnet, err := r.sim.Cloud.AddSubnet(otherVPC, "172.16.0.0/24", "us-west-2a", nil)
	if err != nil {
		t.Fatal(err)
	}
	inOtherVPC := r.createENI(t, otherVPCSubnet, "branch")
	primary := r.primaryENI(t)
	const unknown = "eni-0123456789abcdef0"

	tests := []struct {
		name          string
		branch, trunk string
		vlan, gre     *int32
		code          string
	}{
		{"VLAN ID 0", free, trunk, aws.Int32(0), nil, "InvalidParameterValue"},
		{"VLAN ID 4095", free, trunk, aws.Int32(4095), nil, "InvalidParameterValue"},
		{"negative GRE key", free, trunk, nil, aws.Int32(-1), "InvalidParameterValue"},
		{"both VLAN ID and GRE key", free, trunk, aws.Int32(5), aws.Int32(5), "InvalidParameterCombination"},
		{"neither VLAN ID nor GRE key", free, trunk, nil, nil, "MissingParameter"},
		{"malformed branch ID", "eni-nothex", trunk, aws.Int32(5), nil, "InvalidNetworkInterfaceId.Malformed"},
		{"malformed trunk ID", free, "trunk-1", aws.Int32(5), nil, "InvalidNetworkInterfaceId.Malformed"},
		{"unknown branch", unknown, trunk, aws.Int32(5), nil, "InvalidNetworkInterfaceID.NotFound"},
		{"unknown trunk", free, unknown, aws.Int32(5), nil, "InvalidNetworkInterfaceID.NotFound"},
		{"trunk of type interface (the primary)", free, primary, aws.Int32(5), nil, "InvalidParameterValue"},
		{"branch of type trunk", detached, trunk, aws.Int32(5), nil, "InvalidParameterValue"},
		{"trunk not attached", free, detached, aws.Int32(5), nil, "IncorrectState"},
		{"trunk on a t3.medium", free, smallTrunk, aws.Int32(5), nil, "UnsupportedOperation"},
		{"branch in another Availability Zone", inOtherAZ, trunk, aws.Int32(5), nil, "InvalidParameterValue"},
		{"branch in another VPC", inOtherVPC, trunk, aws.Int32(5), nil, "InvalidParameterValue"},
		{"branch already associated", taken, trunk, aws.Int32(11), nil, "InvalidNetworkInterface.InUse"},
		{"VLAN ID in use on the trunk", free, trunk, aws.Int32(10), nil, "InvalidParameterValue"},
		{"GRE key in use on the trunk", free, trunk, nil, aws.Int32(7), "InvalidParameterValue"},
	}
	before := r.sim.Cloud.TrunkAssociations()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := r.associate(tt.branch, tt.trunk, tt.vlan, tt.gre); apiCode(err) != tt.code {
				t.Errorf("%v, want %s", err, tt.code)
			}
		})
	}
	if after := r.sim.Cloud.TrunkAssociations(); !slices.Equal(after, before) {
		t.Errorf("associations changed by refused requests: %+v, were %+v", after, before)
	}
	if ni := r.describeENI(t, free); ni.Status != types.NetworkInterfaceStatusAvailable {
		t.Errorf("the branch of refused requests is %s, want available", ni.Status)
	}
	// A plain interface is a branch too (EC2's reference asks for a trunk
	// of type trunk, and "a network interface" for each branch: AWS's VPC
	// resource controller makes its branches so); once associated it is in
	// use and cannot be attached.
	if _, err := r.associate(plain, trunk, aws.Int32(5), nil); err != nil {
		t.Errorf("a branch of type interface: %v", err)
	}
	if ni := r.describeENI(t, plain); ni.Status != types.NetworkInterfaceStatusInUse {
		t.Errorf("the associated interface is %s, want in-use", ni.Status)
	}
	if _, err := r.ec2.AttachNetworkInterface(context.Background(), &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(plain),
		InstanceId: aws.String(r.node.InstanceID), DeviceIndex: aws.Int32(2)}); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("attach an associated interface: %v, want InvalidParameterValue", err)
	}
	// The edges of the VLAN range are taken.
	for _, vlan := range []int32{1, 4094} {
		b := r.createENI(t, r.subnet, "branch")
		if _, err := r.associate(b, trunk, aws.Int32(vlan), nil); err != nil {
			t.Errorf("VLAN ID %d: %v", vlan, err)
		}
	}
}

// The request-level errors an SDK client cannot send (it checks required
// parameters itself), sent as raw Query API requests: a missing
// BranchInterfaceId, TrunkInterfaceId or AssociationId is MissingParameter,
// a malformed AssociationId InvalidAssociationID.Malformed, a well-formed
// unknown one InvalidAssociationID.NotFound, and a dry run DryRunOperation
// (EC2: "If you have the required permissions, the error response is
// DryRunOperation").
func TestTrunkRequestErrors(t *testing.T) {
	r := newRegion(t, "10.0.23.0/24", Options{})
	trunk := r.attachTrunk(t, r.node.InstanceID)
	branch := r.createENI(t, r.subnet, "branch")
	h := r.sim.EC2Handler()
	tests := []struct {
		name string
		form url.Values
		code string
	}{
		{"associate without a branch", url.Values{"Action": {"AssociateTrunkInterface"}, "TrunkInterfaceId": {trunk}, "VlanId": {"5"}}, "MissingParameter"},
		{"associate without a trunk", url.Values{"Action": {"AssociateTrunkInterface"}, "BranchInterfaceId": {branch}, "VlanId": {"5"}}, "MissingParameter"},
		{"associate with a VLAN ID not a number", url.Values{"Action": {"AssociateTrunkInterface"}, "BranchInterfaceId": {branch},
			"TrunkInterfaceId": {trunk}, "VlanId": {"five"}}, "InvalidParameterValue"},
		{"associate with a GRE key over 32 bits", url.Values{"Action": {"AssociateTrunkInterface"}, "BranchInterfaceId": {branch},
			"TrunkInterfaceId": {trunk}, "GreKey": {"4294967296"}}, "InvalidParameterValue"},
		{"associate, dry run", url.Values{"Action": {"AssociateTrunkInterface"}, "BranchInterfaceId": {branch},
			"TrunkInterfaceId": {trunk}, "VlanId": {"5"}, "DryRun": {"true"}}, "DryRunOperation"},
		{"disassociate without an association", url.Values{"Action": {"DisassociateTrunkInterface"}}, "MissingParameter"},
		{"disassociate a malformed association", url.Values{"Action": {"DisassociateTrunkInterface"}, "AssociationId": {"assoc-1"}}, "InvalidAssociationID.Malformed"},
		{"disassociate an eni- ID", url.Values{"Action": {"DisassociateTrunkInterface"}, "AssociationId": {branch}}, "InvalidAssociationID.Malformed"},
		{"disassociate an unknown association", url.Values{"Action": {"DisassociateTrunkInterface"}, "AssociationId": {"trunk-assoc-0123456789abcdef0"}},
			"InvalidAssociationID.NotFound"},
		{"disassociate, dry run", url.Values{"Action": {"DisassociateTrunkInterface"}, "AssociationId": {"trunk-assoc-0123456789abcdef0"},
			"DryRun": {"true"}}, "DryRunOperation"},
		{"describe a malformed association", url.Values{"Action": {"DescribeTrunkInterfaceAssociations"}, "AssociationId.1": {"trunk-assoc-x"}},
			"InvalidAssociationID.Malformed"},
		{"describe, dry run", url.Values{"Action": {"DescribeTrunkInterfaceAssociations"}, "DryRun": {"true"}}, "DryRunOperation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, code, msg := ec2Call(t, h, tt.form); code != tt.code {
				t.Errorf("%s %q, want %s", code, msg, tt.code)
			}
		})
	}
	if n := len(r.sim.Cloud.TrunkAssociations()); n != 0 {
		t.Errorf("%d associations after refused and dry-run requests, want 0", n)
	}
}

// A trunk takes at most its instance type's branch_interface branches
// (instance-limits.tsv, read by hand: m5.large "true 9", a1.medium
// "true 10"); one more is AttachmentLimitExceeded, and a disassociation
// makes room again.
func TestTrunkBranchLimit(t *testing.T) {
	tests := []struct {
		typ      string
		branches int
	}{
		{"m5.large", 9},
		{"a1.medium", 10},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			r := newRegion(t, "10.0.24.0/24", Options{})
			n, err := r.sim.LaunchNode(LaunchSpec{Name: "n-" + strings.ReplaceAll(tt.typ, ".", "-"), InstanceType: tt.typ, SubnetID: r.subnet})
			if err != nil {
				t.Fatal(err)
			}
			trunk := r.attachTrunk(t, n.InstanceID)
			var first string
			for vlan := 1; vlan <= tt.branches; vlan++ {
				out, err := r.associate(r.createENI(t, r.subnet, "branch"), trunk, aws.Int32(int32(vlan)), nil)
				if err != nil {
					t.Fatalf("branch %d of %d: %v", vlan, tt.branches, err)
				}
				if vlan == 1 {
					first = aws.ToString(out.InterfaceAssociation.AssociationId)
				}
			}
			extra := r.createENI(t, r.subnet, "branch")
			if _, err := r.associate(extra, trunk, aws.Int32(int32(tt.branches+1)), nil); apiCode(err) != "AttachmentLimitExceeded" {
				t.Fatalf("branch %d of %d: %v, want AttachmentLimitExceeded", tt.branches+1, tt.branches, err)
			}
			if _, err := r.ec2.DisassociateTrunkInterface(context.Background(), &ec2.DisassociateTrunkInterfaceInput{AssociationId: aws.String(first)}); err != nil {
				t.Fatal(err)
			}
			if _, err := r.associate(extra, trunk, aws.Int32(int32(tt.branches+1)), nil); err != nil {
				t.Errorf("after a disassociation: %v", err)
			}
		})
	}
}

// Deleting and detaching around associations. A branch ENI is deleted with
// its association (AWS's VPC resource controller deleted associated
// branches before it called DisassociateTrunkInterface first, and still
// does when that fails). A trunk with branches is not detached (and, being
// attached, not deleted: InvalidNetworkInterface.InUse); once its branches
// are gone it is. A terminated instance's trunk leaves its branches
// available.
func TestTrunkDeleteAndDetach(t *testing.T) {
	r := newRegion(t, "10.0.27.0/24", Options{})
	ctx := context.Background()
	trunk := r.attachTrunk(t, r.node.InstanceID)
	b1, b2 := r.createENI(t, r.subnet, "branch"), r.createENI(t, r.subnet, "branch")
	a1, err := r.associate(b1, trunk, aws.Int32(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.associate(b2, trunk, aws.Int32(2), nil); err != nil {
		t.Fatal(err)
	}
	att := aws.ToString(r.describeENI(t, trunk).Attachment.AttachmentId)
	if _, err := r.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String(att)}); apiCode(err) != "OperationNotPermitted" {
		t.Errorf("detach a trunk with branches: %v, want OperationNotPermitted", err)
	}
	if _, err := r.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(trunk)}); apiCode(err) != "InvalidNetworkInterface.InUse" {
		t.Errorf("delete a trunk with branches: %v, want InvalidNetworkInterface.InUse", err)
	}
	if _, err := r.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(b1)}); err != nil {
		t.Fatalf("delete an associated branch: %v", err)
	}
	if _, err := r.ec2.DescribeTrunkInterfaceAssociations(ctx, &ec2.DescribeTrunkInterfaceAssociationsInput{
		AssociationIds: []string{aws.ToString(a1.InterfaceAssociation.AssociationId)}}); apiCode(err) != "InvalidAssociationID.NotFound" {
		t.Errorf("the deleted branch's association: %v, want InvalidAssociationID.NotFound", err)
	}
	// VLAN 1 is free again.
	b3 := r.createENI(t, r.subnet, "branch")
	if _, err := r.associate(b3, trunk, aws.Int32(1), nil); err != nil {
		t.Errorf("VLAN 1 after its branch was deleted: %v", err)
	}

	// A second node's trunk, terminated with its instance (the trunk's
	// DeleteOnTermination is false: it stays, available, as do the branches).
	other, err := r.sim.LaunchNode(LaunchSpec{Name: "node2", InstanceType: "m5.large", SubnetID: r.subnet})
	if err != nil {
		t.Fatal(err)
	}
	otherTrunk := r.attachTrunk(t, other.InstanceID)
	b4 := r.createENI(t, r.subnet, "branch")
	if _, err := r.associate(b4, otherTrunk, aws.Int32(1), nil); err != nil {
		t.Fatal(err)
	}
	if err := r.sim.Cloud.TerminateInstance(other.InstanceID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{otherTrunk, b4} {
		if ni := r.describeENI(t, id); ni.Status != types.NetworkInterfaceStatusAvailable {
			t.Errorf("%s after its instance was terminated: %s, want available", id, ni.Status)
		}
	}
	out, err := r.ec2.DescribeTrunkInterfaceAssociations(ctx, &ec2.DescribeTrunkInterfaceAssociationsInput{Filters: []types.Filter{
		{Name: aws.String("trunk-interface-association.trunk-interface-id"), Values: []string{otherTrunk}}}})
	if err != nil || len(out.InterfaceAssociations) != 0 {
		t.Errorf("the terminated instance's trunk: %d associations, %v; want none", len(out.InterfaceAssociations), err)
	}

	// Branches gone, the first trunk detaches and is deleted.
	for _, a := range r.sim.Cloud.TrunkAssociations() {
		if _, err := r.ec2.DisassociateTrunkInterface(ctx, &ec2.DisassociateTrunkInterfaceInput{AssociationId: aws.String(a.ID)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String(att)}); err != nil {
		t.Fatalf("detach a trunk without branches: %v", err)
	}
	if _, err := r.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(trunk)}); err != nil {
		t.Errorf("delete a detached trunk: %v", err)
	}
}
