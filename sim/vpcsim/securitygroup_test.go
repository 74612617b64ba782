package vpcsim

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The security group and VPC CIDR actions through an unmodified SDK client,
// with EC2's documented answers and errors.
func TestSecurityGroupsAndCIDRsAPI(t *testing.T) {
	r := newRegion(t, "10.0.7.0/24", Options{})
	ctx := context.Background()

	// The VPC's default group allows everything from its own members.
	out, err := r.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{r.vpc}}, {Name: aws.String("group-name"), Values: []string{"default"}}}})
	if err != nil || len(out.SecurityGroups) != 1 {
		t.Fatalf("default group: %v, %v", out, err)
	}
	def := out.SecurityGroups[0]
	if len(def.IpPermissions) != 1 || aws.ToString(def.IpPermissions[0].IpProtocol) != "-1" ||
		len(def.IpPermissions[0].UserIdGroupPairs) != 1 || aws.ToString(def.IpPermissions[0].UserIdGroupPairs[0].GroupId) != aws.ToString(def.GroupId) {
		t.Errorf("default group's ingress %+v, want all traffic from itself", def.IpPermissions)
	}

	cr, err := r.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{VpcId: aws.String(r.vpc), GroupName: aws.String("pods"),
		Description: aws.String("pods of custom networking")})
	if err != nil {
		t.Fatal(err)
	}
	sg := aws.ToString(cr.GroupId)
	if _, err := r.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{VpcId: aws.String(r.vpc), GroupName: aws.String("pods"),
		Description: aws.String("again")}); apiCode(err) != "InvalidGroup.Duplicate" {
		t.Errorf("duplicate name: %v, want InvalidGroup.Duplicate", err)
	}
	web := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(8080), ToPort: aws.Int32(8080),
		IpRanges: []types.IpRange{{CidrIp: aws.String("100.64.32.0/19")}}}
	fromDefault := types.IpPermission{IpProtocol: aws.String("-1"), UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: def.GroupId}}}
	ping6 := types.IpPermission{IpProtocol: aws.String("58"), FromPort: aws.Int32(-1), ToPort: aws.Int32(-1),
		Ipv6Ranges: []types.Ipv6Range{{CidrIpv6: aws.String("2600:1f00::/24")}}}
	if _, err := r.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(sg),
		IpPermissions: []types.IpPermission{web, fromDefault, ping6}}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		name string
		perm types.IpPermission
		code string
	}{
		{"the same rule again", web, "InvalidPermission.Duplicate"},
		{"malformed CIDR", types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
			IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/33")}}}, "InvalidParameterValue"},
		{"IPv4 CIDR given as IPv6", types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
			Ipv6Ranges: []types.Ipv6Range{{CidrIpv6: aws.String("10.0.0.0/16")}}}, "InvalidParameterValue"},
		{"IPv6 CIDR with host bits", types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
			Ipv6Ranges: []types.Ipv6Range{{CidrIpv6: aws.String("2600:1f00::1/24")}}}, "InvalidParameterValue"},
		{"ports reversed", types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(90), ToPort: aws.Int32(80),
			IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/16")}}}, "InvalidParameterValue"},
		{"unknown protocol", types.IpPermission{IpProtocol: aws.String("sctp-ish"),
			IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/16")}}}, "InvalidParameterValue"},
		{"source group of no such", types.IpPermission{IpProtocol: aws.String("-1"),
			UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String("sg-0123456789abcdef0")}}}, "InvalidGroup.NotFound"},
	} {
		_, err := r.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(sg),
			IpPermissions: []types.IpPermission{bad.perm}})
		if apiCode(err) != bad.code {
			t.Errorf("%s: %v, want %s", bad.name, err, bad.code)
		}
	}
	got, err := r.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{sg}})
	if err != nil || len(got.SecurityGroups) != 1 || len(got.SecurityGroups[0].IpPermissions) != 3 ||
		aws.ToString(got.SecurityGroups[0].VpcId) != r.vpc {
		t.Fatalf("describe %s: %+v, %v; want its 3 permissions in %s", sg, got, err, r.vpc)
	}
	if p := got.SecurityGroups[0].IpPermissions[0]; aws.ToInt32(p.FromPort) != 8080 || aws.ToString(p.IpRanges[0].CidrIp) != "100.64.32.0/19" {
		t.Errorf("first permission %+v, want tcp 8080 from 100.64.32.0/19", p)
	}
	if p := got.SecurityGroups[0].IpPermissions[2]; aws.ToString(p.IpProtocol) != "icmpv6" || len(p.Ipv6Ranges) != 1 ||
		aws.ToString(p.Ipv6Ranges[0].CidrIpv6) != "2600:1f00::/24" || len(p.IpRanges) != 0 {
		t.Errorf("third permission %+v, want icmpv6 from 2600:1f00::/24", p)
	}
	if _, err := r.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{"sg-0123456789abcdef0"}}); apiCode(err) != "InvalidGroup.NotFound" {
		t.Errorf("describe an unknown group: %v, want InvalidGroup.NotFound", err)
	}
	// An ENI with a group of another VPC is refused.
	other, _ := r.sim.Cloud.AddVPC("172.16.0.0/16")
	foreign, _ := r.sim.Cloud.AddSecurityGroup(other)
	if _, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet),
		Groups: []string{foreign}}); apiCode(err) != "InvalidGroup.NotFound" {
		t.Errorf("ENI with another VPC's group: %v, want InvalidGroup.NotFound", err)
	}

	// A secondary CIDR, and a subnet in it.
	as, err := r.ec2.AssociateVpcCidrBlock(ctx, &ec2.AssociateVpcCidrBlockInput{VpcId: aws.String(r.vpc), CidrBlock: aws.String("100.64.0.0/16")})
	if err != nil || aws.ToString(as.CidrBlockAssociation.CidrBlock) != "100.64.0.0/16" ||
		as.CidrBlockAssociation.CidrBlockState.State != types.VpcCidrBlockStateCodeAssociated {
		t.Fatalf("associate 100.64.0.0/16: %+v, %v", as, err)
	}
	for _, bad := range []struct{ cidr, code string }{{"100.64.128.0/17", "CidrConflict"}, {"100.0.0.0/12", "InvalidVpc.Range"}} {
		if _, err := r.ec2.AssociateVpcCidrBlock(ctx, &ec2.AssociateVpcCidrBlockInput{VpcId: aws.String(r.vpc), CidrBlock: aws.String(bad.cidr)}); apiCode(err) != bad.code {
			t.Errorf("associate %s: %v, want %s", bad.cidr, err, bad.code)
		}
	}
	sub, err := r.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(r.vpc), CidrBlock: aws.String("100.64.0.0/19"),
		AvailabilityZone: aws.String("us-west-2a")})
	if err != nil || aws.ToString(sub.Subnet.CidrBlock) != "100.64.0.0/19" || aws.ToInt32(sub.Subnet.AvailableIpAddressCount) != 8192-5 {
		t.Fatalf("subnet in the secondary CIDR: %+v, %v (EC2 reserves 5 addresses per subnet)", sub, err)
	}
	if _, err := r.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(r.vpc), CidrBlock: aws.String("100.65.0.0/20"),
		AvailabilityZone: aws.String("us-west-2a")}); apiCode(err) != "InvalidSubnet.Range" {
		t.Errorf("subnet outside the VPC's CIDRs: %v, want InvalidSubnet.Range", err)
	}
}

// An ENI's describe names each of its groups. EC2's GroupIdentifier
// (Groups[] of a NetworkInterface, GroupSet of an instance's interface)
// holds "groupId: the ID of the security group" and "groupName: the name
// of the security group"; a VPC's default group is named "default"; the
// console's launch wizard names the groups it creates "launch-wizard-N".
func TestENIDescribeNamesItsGroups(t *testing.T) {
	r := newRegion(t, "10.0.8.0/24", Options{})
	ctx := context.Background()
	cr, err := r.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{VpcId: aws.String(r.vpc),
		GroupName: aws.String("pods"), Description: aws.String("pods of custom networking")})
	if err != nil {
		t.Fatal(err)
	}
	pods := aws.ToString(cr.GroupId)
	generated, err := r.sim.Cloud.AddSecurityGroup(r.vpc)
	if err != nil {
		t.Fatal(err)
	}
	def, err := r.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{r.vpc}}, {Name: aws.String("group-name"), Values: []string{"default"}}}})
	if err != nil || len(def.SecurityGroups) != 1 {
		t.Fatalf("default group: %v, %v", def, err)
	}
	defID := aws.ToString(def.SecurityGroups[0].GroupId)
	names := func(gs []types.GroupIdentifier) map[string]string {
		out := map[string]string{}
		for _, g := range gs {
			out[aws.ToString(g.GroupId)] = aws.ToString(g.GroupName)
		}
		return out
	}
	created, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet),
		Groups: []string{pods, generated}})
	if err != nil {
		t.Fatal(err)
	}
	eni := aws.ToString(created.NetworkInterface.NetworkInterfaceId)
	described, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{r.node.InstanceID}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		groups []types.GroupIdentifier
		want   map[string]string
	}{
		{"CreateNetworkInterface's answer", created.NetworkInterface.Groups, map[string]string{pods: "pods", generated: "launch-wizard-1"}},
		{"DescribeNetworkInterfaces", described.NetworkInterfaces[0].Groups, map[string]string{pods: "pods", generated: "launch-wizard-1"}},
		{"DescribeInstances: the primary ENI in the default group", inst.Reservations[0].Instances[0].NetworkInterfaces[0].Groups,
			map[string]string{defID: "default"}},
	}
	for _, tt := range tests {
		if got := names(tt.groups); !maps.Equal(got, tt.want) {
			t.Errorf("%s: groups %v, want %v", tt.name, got, tt.want)
		}
	}
}

// The Amazon VPC quota "Security groups per network interface" is 5 by
// default and can be raised to 16; over it, CreateNetworkInterface and
// ModifyNetworkInterfaceAttribute fail with
// SecurityGroupsPerInterfaceLimitExceeded ("You've exceeded the maximum
// number of security groups that can be associated with a network
// interface") and launching an instance with
// SecurityGroupsPerInstanceLimitExceeded.
func TestSecurityGroupsPerInterfaceQuota(t *testing.T) {
	tests := []struct {
		name  string
		quota int // 0: the simulator's default
		fits  int // groups the quota admits
	}{
		{"default quota", 0, 5},
		{"raised to the maximum", 16, 16},
		{"raised to 8", 8, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRegion(t, "10.0.10.0/24", Options{SecurityGroupsPerInterface: tt.quota})
			ctx := context.Background()
			var groups []string
			for range tt.fits + 1 {
				g, err := r.sim.Cloud.AddSecurityGroup(r.vpc)
				if err != nil {
					t.Fatal(err)
				}
				groups = append(groups, g)
			}
			out, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet), Groups: groups[:tt.fits]})
			if err != nil {
				t.Fatalf("ENI with %d groups: %v", tt.fits, err)
			}
			eni := out.NetworkInterface.NetworkInterfaceId
			if _, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet),
				Groups: groups}); apiCode(err) != "SecurityGroupsPerInterfaceLimitExceeded" {
				t.Errorf("ENI with %d groups: %v, want SecurityGroupsPerInterfaceLimitExceeded", len(groups), err)
			}
			if _, err := r.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: eni,
				Groups: groups}); apiCode(err) != "SecurityGroupsPerInterfaceLimitExceeded" {
				t.Errorf("modify to %d groups: %v, want SecurityGroupsPerInterfaceLimitExceeded", len(groups), err)
			}
			if v, _ := r.sim.Cloud.ENI(aws.ToString(eni)); len(v.Groups) != tt.fits {
				t.Errorf("a refused modify changed the groups to %v", v.Groups)
			}
			_, err = r.sim.LaunchNode(LaunchSpec{Name: "crowded", InstanceType: "m5.large", SubnetID: r.subnet, GroupIDs: groups})
			var aerr *APIError
			if !errors.As(err, &aerr) || aerr.Code != "SecurityGroupsPerInstanceLimitExceeded" {
				t.Errorf("launch with %d groups: %v, want SecurityGroupsPerInstanceLimitExceeded", len(groups), err)
			}
		})
	}
}

// The quota can be raised to 16 at most; below 1 it means nothing.
func TestSecurityGroupsPerInterfaceQuotaRange(t *testing.T) {
	for _, n := range []int{-1, 17} {
		if _, err := Start(Options{SecurityGroupsPerInterface: n}); err == nil {
			t.Errorf("quota %d accepted, want refused (EC2's is 1 to 16)", n)
		}
	}
}

// CreateSecurityGroup's GroupName: "Names are case-insensitive and must be
// unique within the VPC. Constraints: Up to 255 characters in length.
// Can't start with sg-. Valid characters: a-z, A-Z, 0-9, spaces, and
// ._-:/()#,@[]+=&;{}!$*"; its Description: "Up to 255 characters in
// length", the same characters. InvalidGroup.Reserved: "The name 'default'
// is reserved, and cannot be used to create a new security group";
// InvalidGroup.Duplicate: a group "with the same name as an existing
// security group in the same VPC".
func TestCreateSecurityGroupNames(t *testing.T) {
	r := newRegion(t, "10.0.17.0/24", Options{})
	ctx := context.Background()
	tests := []struct {
		name, desc, code string
	}{
		{"web tier", "HTTP from the ALB", ""},
		{"WEB TIER", "the same name in capitals", "InvalidGroup.Duplicate"},
		{"default", "x", "InvalidGroup.Reserved"},
		{"sg-mine", "x", "InvalidParameterValue"},
		{strings.Repeat("n", 255), "255 characters", ""},
		{strings.Repeat("n", 256), "256 characters", "InvalidParameterValue"},
		{"pods (custom networking) #1: a.b/c-d_e@f[g]+h=i&j;k{l}!m$n*o,", "every valid character", ""},
		{"pods|x", "a bar", "InvalidParameterValue"},
		{"pods<x>", "angle brackets", "InvalidParameterValue"},
		{"ok name", strings.Repeat("d", 256), "InvalidParameterValue"},
		{"ok name 2", "a description with a ~", "InvalidParameterValue"},
	}
	for _, tt := range tests {
		_, err := r.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{VpcId: aws.String(r.vpc), GroupName: aws.String(tt.name),
			Description: aws.String(tt.desc)})
		if apiCode(err) != tt.code {
			t.Errorf("name %.40q, description %.40q: %v, want %q", tt.name, tt.desc, err, tt.code)
		}
	}
}

// Amazon VPC quotas: "Inbound or outbound rules per security group: 60 ...
// This quota is enforced separately for IPv4 rules and IPv6 rules ... A
// rule that references a security group or prefix list ID counts as one
// rule for IPv4 and one rule for IPv6"; "the quota for inbound or outbound
// rules per security group multiplied by the quota for security groups per
// network interface cannot exceed 1,000". Over it, EC2 answers
// RulesPerSecurityGroupLimitExceeded.
func TestRulesPerSecurityGroup(t *testing.T) {
	r := newRegion(t, "10.0.20.0/24", Options{})
	ctx := context.Background()
	sg, err := r.sim.Cloud.AddSecurityGroup(r.vpc)
	if err != nil {
		t.Fatal(err)
	}
	cidrs4 := func(from, n int) []types.IpRange {
		var out []types.IpRange
		for i := from; i < from+n; i++ {
			out = append(out, types.IpRange{CidrIp: aws.String(fmt.Sprintf("10.%d.%d.0/24", i/256, i%256))})
		}
		return out
	}
	cidrs6 := func(n int) []types.Ipv6Range {
		var out []types.Ipv6Range
		for i := range n {
			out = append(out, types.Ipv6Range{CidrIpv6: aws.String(fmt.Sprintf("2600:1f00:%x::/48", i))})
		}
		return out
	}
	tcp := func(port int32) types.IpPermission {
		return types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(port), ToPort: aws.Int32(port)}
	}
	p1, p2, p3, p4, p5 := tcp(1), tcp(2), tcp(3), tcp(4), tcp(5)
	p1.IpRanges = cidrs4(0, 59)
	p2.IpRanges = cidrs4(100, 1)
	p3.IpRanges = cidrs4(200, 1)
	p4.Ipv6Ranges = cidrs6(60)
	p5.UserIdGroupPairs = []types.UserIdGroupPair{{GroupId: aws.String(sg)}}
	tests := []struct {
		name string
		perm types.IpPermission
		code string
	}{
		{"59 IPv4 rules", p1, ""},
		{"the 60th", p2, ""},
		{"a 61st", p3, "RulesPerSecurityGroupLimitExceeded"},
		{"60 IPv6 rules besides", p4, ""},
		{"a group reference (one more of each)", p5, "RulesPerSecurityGroupLimitExceeded"},
	}
	for _, tt := range tests {
		_, err := r.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(sg),
			IpPermissions: []types.IpPermission{tt.perm}})
		if apiCode(err) != tt.code {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.code)
		}
	}
	// The two quotas' product stays within 1,000.
	c := r.sim.Cloud
	if err := c.SetSecurityGroupsPerInterface(16); err != nil {
		t.Errorf("16 groups per interface with 60 rules per group (960): %v", err)
	}
	if err := c.SetRulesPerSecurityGroup(63); err == nil {
		t.Error("63 rules per group with 16 groups per interface (1,008) accepted")
	}
	if err := c.SetRulesPerSecurityGroup(62); err != nil {
		t.Errorf("62 rules per group with 16 groups per interface (992): %v", err)
	}
}
