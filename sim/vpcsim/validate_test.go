package vpcsim

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EC2 checks an ID's form before looking it up. Its error codes: "The
// specified network interface ID is malformed ... in the form eni-xxxxxxxx"
// (InvalidNetworkInterfaceId.Malformed), "... instance ID is malformed ...
// i-xxxxxxxx or i-xxxxxxxxxxxxxxxxx" (InvalidInstanceID.Malformed), "...
// subnet ID is malformed ... subnet-xxxxxxxx" (InvalidSubnetID.Malformed),
// "... security group ID is malformed ... sg-xxxxxxxx"
// (InvalidGroupId.Malformed), "... VPC ID is malformed ... vpc-xxxxxxxx"
// (InvalidVpcID.Malformed), "The ID for the network interface attachment
// is malformed ... eni-attach-xxxxxxxx"
// (InvalidNetworkInterfaceAttachmentId.Malformed); a well-formed ID of
// nothing is *.NotFound. A required ID left out is MissingParameter.
func TestMalformedAndMissingIDs(t *testing.T) {
	r := newRegion(t, "10.0.11.0/24", Options{})
	ctx := context.Background()
	eni, att := r.createAttach(t, 1)
	tests := []struct {
		name string
		call func() error
		code string
	}{
		{"describe a malformed ENI ID", func() error {
			_, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-12345"}})
			return err
		}, "InvalidNetworkInterfaceId.Malformed"},
		{"describe an ENI ID of 16 hex digits", func() error {
			_, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-0000000000000000"}})
			return err
		}, "InvalidNetworkInterfaceId.Malformed"},
		{"describe a well-formed unknown ENI ID", func() error {
			_, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-0123456789abcdef0"}})
			return err
		}, "InvalidNetworkInterfaceID.NotFound"},
		{"describe an 8-digit unknown ENI ID", func() error {
			_, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-0123abcd"}})
			return err
		}, "InvalidNetworkInterfaceID.NotFound"},
		{"delete a malformed ENI ID", func() error {
			_, err := r.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String("eni-nope")})
			return err
		}, "InvalidNetworkInterfaceId.Malformed"},
		{"assign to a malformed ENI ID", func() error {
			_, err := r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni + "x"),
				SecondaryPrivateIpAddressCount: aws.Int32(1)})
			return err
		}, "InvalidNetworkInterfaceId.Malformed"},
		{"attach to a malformed instance ID", func() error {
			_, err := r.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(eni),
				InstanceId: aws.String("i-other"), DeviceIndex: aws.Int32(2)})
			return err
		}, "InvalidInstanceID.Malformed"},
		{"describe a malformed instance ID", func() error {
			_, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-123"}})
			return err
		}, "InvalidInstanceID.Malformed"},
		{"create in a malformed subnet ID", func() error {
			_, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String("subnet-1")})
			return err
		}, "InvalidSubnetID.Malformed"},
		{"create with a malformed group ID", func() error {
			_, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet), Groups: []string{"sg-web"}})
			return err
		}, "InvalidGroupId.Malformed"},
		{"describe a malformed group ID", func() error {
			_, err := r.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{"default"}})
			return err
		}, "InvalidGroupId.Malformed"},
		{"describe a malformed subnet ID", func() error {
			_, err := r.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{"subnet-id"}})
			return err
		}, "InvalidSubnetID.Malformed"},
		{"create a group in a malformed VPC ID", func() error {
			_, err := r.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{VpcId: aws.String("vpc-1"), GroupName: aws.String("x"),
				Description: aws.String("x")})
			return err
		}, "InvalidVpcID.Malformed"},
		{"detach a malformed attachment ID (the ENI's)", func() error {
			_, err := r.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String(eni)})
			return err
		}, "InvalidNetworkInterfaceAttachmentId.Malformed"},
		{"detach a well-formed unknown attachment ID", func() error {
			_, err := r.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String("eni-attach-0123456789abcdef0")})
			return err
		}, "InvalidAttachmentID.NotFound"},
		{"detach without an attachment ID", func() error {
			_, err := r.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String("")})
			return err
		}, "MissingParameter"},
		{"delete without an ENI ID", func() error {
			_, err := r.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String("")})
			return err
		}, "MissingParameter"},
		{"unassign without an ENI ID", func() error {
			_, err := r.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(""),
				PrivateIpAddresses: []string{"10.0.11.9"}})
			return err
		}, "MissingParameter"},
		{"authorize from a malformed source group ID", func() error {
			_, err := r.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(r.defaultGroup(t)),
				IpPermissions: []types.IpPermission{{IpProtocol: aws.String("-1"), UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String("sg-peers")}}}}})
			return err
		}, "InvalidGroupId.Malformed"},
		{"modify delete-on-termination with a malformed attachment ID", func() error {
			_, err := r.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(eni),
				Attachment: &types.NetworkInterfaceAttachmentChanges{AttachmentId: aws.String("att-1"), DeleteOnTermination: aws.Bool(true)}})
			return err
		}, "InvalidNetworkInterfaceAttachmentId.Malformed"},
	}
	for _, tt := range tests {
		if err := tt.call(); apiCode(err) != tt.code {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.code)
		}
	}
	// The ENI and its attachment are as they were.
	if v, ok := r.sim.Cloud.ENI(eni); !ok || v.AttachmentID != att {
		t.Errorf("ENI %s after the refused calls: %+v", eni, v)
	}
}

// The private address parameters of CreateNetworkInterface and
// AssignPrivateIpAddresses, as EC2's API reference gives them.
// CreateNetworkInterface: PrivateIpAddress is "the primary private IPv4
// address of the network interface"; PrivateIpAddresses "can't" be given
// with "a count of private IPv4 addresses ... or a count of IPv4
// prefixes"; "if you specify an IP address, you cannot indicate any IP
// addresses specified in privateIpAddresses as primary (only one IP address
// can be designated as primary)". AssignPrivateIpAddresses:
// PrivateIpAddress.N "can't" be given "when also specifying a number of
// secondary IP addresses". A combination EC2 refuses is
// InvalidParameterCombination ("an incorrect combination of parameters").
func TestPrivateAddressParameters(t *testing.T) {
	r := newRegion(t, "10.0.12.0/24", Options{})
	ctx := context.Background()
	spec := func(a string, primary bool) types.PrivateIpAddressSpecification {
		return types.PrivateIpAddressSpecification{PrivateIpAddress: aws.String(a), Primary: aws.Bool(primary)}
	}
	tests := []struct {
		name               string
		in                 ec2.CreateNetworkInterfaceInput
		code               string // "" = created
		primary, secondary string
	}{
		{"PrivateIpAddress is the primary", ec2.CreateNetworkInterfaceInput{PrivateIpAddress: aws.String("10.0.12.20")}, "", "10.0.12.20", ""},
		{"PrivateIpAddresses with one primary", ec2.CreateNetworkInterfaceInput{PrivateIpAddresses: []types.PrivateIpAddressSpecification{
			spec("10.0.12.31", false), spec("10.0.12.30", true)}}, "", "10.0.12.30", "10.0.12.31"},
		{"PrivateIpAddress and secondary PrivateIpAddresses", ec2.CreateNetworkInterfaceInput{PrivateIpAddress: aws.String("10.0.12.40"),
			PrivateIpAddresses: []types.PrivateIpAddressSpecification{spec("10.0.12.41", false)}}, "", "10.0.12.40", "10.0.12.41"},
		{"PrivateIpAddress and another primary", ec2.CreateNetworkInterfaceInput{PrivateIpAddress: aws.String("10.0.12.50"),
			PrivateIpAddresses: []types.PrivateIpAddressSpecification{spec("10.0.12.51", true)}}, "InvalidParameterCombination", "", ""},
		{"PrivateIpAddresses and a count of addresses", ec2.CreateNetworkInterfaceInput{SecondaryPrivateIpAddressCount: aws.Int32(2),
			PrivateIpAddresses: []types.PrivateIpAddressSpecification{spec("10.0.12.60", false)}}, "InvalidParameterCombination", "", ""},
		{"PrivateIpAddresses and a count of prefixes", ec2.CreateNetworkInterfaceInput{Ipv4PrefixCount: aws.Int32(1),
			PrivateIpAddresses: []types.PrivateIpAddressSpecification{spec("10.0.12.61", false)}}, "InvalidParameterCombination", "", ""},
		{"a primary address in use", ec2.CreateNetworkInterfaceInput{PrivateIpAddress: aws.String("10.0.12.20")}, "InvalidIPAddress.InUse", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.SubnetId = aws.String(r.subnet)
			out, err := r.ec2.CreateNetworkInterface(ctx, &in)
			if apiCode(err) != tt.code {
				t.Fatalf("create: %v, want %q", err, tt.code)
			}
			if tt.code != "" {
				return
			}
			ni := out.NetworkInterface
			var primary, secondary []string
			for _, a := range ni.PrivateIpAddresses {
				if aws.ToBool(a.Primary) {
					primary = append(primary, aws.ToString(a.PrivateIpAddress))
				} else {
					secondary = append(secondary, aws.ToString(a.PrivateIpAddress))
				}
			}
			if aws.ToString(ni.PrivateIpAddress) != tt.primary || len(primary) != 1 || primary[0] != tt.primary ||
				strings.Join(secondary, ",") != tt.secondary {
				t.Errorf("primary %s %v, secondary %v; want %s, [%s]", aws.ToString(ni.PrivateIpAddress), primary, secondary, tt.primary, tt.secondary)
			}
		})
	}
	eni, _ := r.createAttach(t, 1)
	_, err := r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni),
		PrivateIpAddresses: []string{"10.0.12.70"}, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if apiCode(err) != "InvalidParameterCombination" {
		t.Errorf("assign addresses and a count: %v, want InvalidParameterCombination", err)
	}
}

// EC2's tag restrictions (User Guide, "Tag restrictions"): at most 50 tags
// per resource, keys of at most 128 characters, values of at most 256, the
// aws: prefix reserved; over the count EC2 answers TagLimitExceeded, a key
// that is empty or starts with aws: InvalidTagKey.Malformed ("Tag keys
// cannot be empty or null, and cannot start with aws:"). CreateTags on an
// ID of nothing is that resource's NotFound; on something that is no
// resource ID, InvalidID ("The specified ID for the resource you are
// trying to tag is not valid"). Security groups take tags.
func TestTagRestrictions(t *testing.T) {
	r := newRegion(t, "10.0.13.0/24", Options{})
	ctx := context.Background()
	eni, _ := r.createAttach(t, 1) // holds one tag
	sg, err := r.sim.Cloud.AddSecurityGroup(r.vpc)
	if err != nil {
		t.Fatal(err)
	}
	tags := func(n, keyLen, valLen int) []types.Tag {
		var out []types.Tag
		for i := range n {
			k := fmt.Sprintf("k%d-", i)
			out = append(out, types.Tag{Key: aws.String(k + strings.Repeat("x", max(0, keyLen-len(k)))), Value: aws.String(strings.Repeat("v", valLen))})
		}
		return out
	}
	tests := []struct {
		name string
		ids  []string
		tags []types.Tag
		code string
	}{
		{"49 more: 50 in all", []string{eni}, tags(49, 10, 10), ""},
		{"the same keys again", []string{eni}, tags(49, 10, 10), ""},
		{"a 51st", []string{eni}, []types.Tag{{Key: aws.String("one-more"), Value: aws.String("x")}}, "TagLimitExceeded"},
		{"a 128-character key, a 256-character value", []string{sg}, tags(1, 128, 256), ""},
		{"a 129-character key", []string{sg}, tags(1, 129, 1), "InvalidParameterValue"},
		{"a 257-character value", []string{sg}, tags(1, 10, 257), "InvalidParameterValue"},
		{"an aws: key", []string{sg}, []types.Tag{{Key: aws.String("aws:cloudformation:stack-name"), Value: aws.String("x")}}, "InvalidTagKey.Malformed"},
		{"an empty key", []string{sg}, []types.Tag{{Key: aws.String(""), Value: aws.String("x")}}, "InvalidTagKey.Malformed"},
		{"an unknown ENI", []string{"eni-0123456789abcdef0"}, tags(1, 5, 5), "InvalidNetworkInterfaceID.NotFound"},
		{"an unknown instance", []string{"i-0123456789abcdef0"}, tags(1, 5, 5), "InvalidInstanceID.NotFound"},
		{"an unknown subnet", []string{"subnet-0123456789abcdef0"}, tags(1, 5, 5), "InvalidSubnetID.NotFound"},
		{"an unknown group", []string{"sg-0123456789abcdef0"}, tags(1, 5, 5), "InvalidGroup.NotFound"},
		{"no resource ID", []string{"pods"}, tags(1, 5, 5), "InvalidID"},
	}
	for _, tt := range tests {
		_, err := r.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: tt.ids, Tags: tt.tags})
		if apiCode(err) != tt.code {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.code)
		}
	}
	if v, _ := r.sim.Cloud.ENI(eni); len(v.Tags) != 50 {
		t.Errorf("ENI has %d tags, want 50", len(v.Tags))
	}
	// At creation, the same limits.
	_, err = r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface, Tags: tags(51, 5, 5)}}})
	if apiCode(err) != "TagLimitExceeded" {
		t.Errorf("create with 51 tags: %v, want TagLimitExceeded", err)
	}
	// A group's tags are described and filtered on.
	out, err := r.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{
		{Name: aws.String("tag-key"), Values: []string{aws.ToString(tags(1, 128, 256)[0].Key)}}}})
	if err != nil || len(out.SecurityGroups) != 1 || aws.ToString(out.SecurityGroups[0].GroupId) != sg || len(out.SecurityGroups[0].Tags) != 1 {
		t.Errorf("groups by tag: %+v, %v; want %s with its tag", out, err, sg)
	}
}

// ModifyNetworkInterfaceAttribute "modifies the specified network
// interface attribute. You can specify only one attribute at a time"; the
// description and the source/destination check it sets are what
// DescribeNetworkInterfaces then gives (NetworkInterface.Description,
// NetworkInterface.SourceDestCheck "indicates whether source/destination
// checking is enabled"). Two attributes at once are an incorrect
// combination of parameters (InvalidParameterCombination).
func TestModifyNetworkInterfaceAttribute(t *testing.T) {
	r := newRegion(t, "10.0.14.0/24", Options{})
	ctx := context.Background()
	eni, att := r.createAttach(t, 1)
	describe := func() types.NetworkInterface {
		t.Helper()
		out, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
		if err != nil {
			t.Fatal(err)
		}
		return out.NetworkInterfaces[0]
	}
	tests := []struct {
		name  string
		in    ec2.ModifyNetworkInterfaceAttributeInput
		code  string
		check func(types.NetworkInterface) bool
	}{
		{"description", ec2.ModifyNetworkInterfaceAttributeInput{Description: &types.AttributeValue{Value: aws.String("pods of n1")}}, "",
			func(ni types.NetworkInterface) bool { return aws.ToString(ni.Description) == "pods of n1" }},
		{"source/destination check off", ec2.ModifyNetworkInterfaceAttributeInput{SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}}, "",
			func(ni types.NetworkInterface) bool { return ni.SourceDestCheck != nil && !*ni.SourceDestCheck }},
		{"description and groups at once", ec2.ModifyNetworkInterfaceAttributeInput{Description: &types.AttributeValue{Value: aws.String("x")},
			Groups: []string{r.defaultGroup(t)}}, "InvalidParameterCombination",
			func(ni types.NetworkInterface) bool { return aws.ToString(ni.Description) == "pods of n1" }},
		{"attachment and source/destination check at once", ec2.ModifyNetworkInterfaceAttributeInput{
			Attachment:      &types.NetworkInterfaceAttachmentChanges{AttachmentId: aws.String(att), DeleteOnTermination: aws.Bool(true)},
			SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(true)}}, "InvalidParameterCombination",
			func(ni types.NetworkInterface) bool {
				return !*ni.SourceDestCheck && !aws.ToBool(ni.Attachment.DeleteOnTermination)
			}},
		{"source/destination check on", ec2.ModifyNetworkInterfaceAttributeInput{SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(true)}}, "",
			func(ni types.NetworkInterface) bool { return ni.SourceDestCheck != nil && *ni.SourceDestCheck }},
	}
	for _, tt := range tests {
		in := tt.in
		in.NetworkInterfaceId = aws.String(eni)
		if _, err := r.ec2.ModifyNetworkInterfaceAttribute(ctx, &in); apiCode(err) != tt.code {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.code)
		}
		if ni := describe(); !tt.check(ni) {
			t.Errorf("%s: described as %q, source/dest check %v", tt.name, aws.ToString(ni.Description), aws.ToBool(ni.SourceDestCheck))
		}
	}
}

// defaultGroup is the ID of the region's VPC's default group.
func (r *region) defaultGroup(t *testing.T) string {
	t.Helper()
	for _, g := range r.sim.Cloud.SecurityGroups() {
		if g.VPCID == r.vpc && g.Name == "default" {
			return g.ID
		}
	}
	t.Fatal("no default group")
	return ""
}

// DryRun "checks whether you have the required permissions for the
// action, without actually making the request ... If you have the
// required permissions, the error response is DryRunOperation. Otherwise,
// it is UnauthorizedOperation."
func TestDryRun(t *testing.T) {
	r := newRegion(t, "10.0.19.0/24", Options{})
	ctx := context.Background()
	before := len(r.sim.Cloud.ENIs())
	_, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet), DryRun: aws.Bool(true)})
	if apiCode(err) != "DryRunOperation" {
		t.Errorf("dry run: %v, want DryRunOperation", err)
	}
	if n := len(r.sim.Cloud.ENIs()); n != before {
		t.Errorf("a dry run made an ENI: %d ENIs, had %d", n, before)
	}
	r.sim.Faults.Deny("CreateNetworkInterface", true)
	_, err = r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet), DryRun: aws.Bool(true)})
	if apiCode(err) != "UnauthorizedOperation" {
		t.Errorf("dry run without permission: %v, want UnauthorizedOperation", err)
	}
}
