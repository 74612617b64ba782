package vpcsim

import (
	"context"
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
