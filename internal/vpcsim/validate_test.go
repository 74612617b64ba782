package vpcsim

import (
	"context"
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
