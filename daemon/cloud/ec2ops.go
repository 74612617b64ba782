package cloud

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// ec2Ops are the EC2 operations the daemon calls: its IAM policy, as code.
// The client is reached only through these method values, never stored
// where an interface could hold it: a client in an interface keeps all of
// EC2's several hundred operations in the binary, and with them tens of
// MiB of resident memory (docs/benchmarks.md, "Against the AWS VPC CNI").
type ec2Ops struct {
	AssignIpv6Addresses             func(context.Context, *ec2.AssignIpv6AddressesInput, ...func(*ec2.Options)) (*ec2.AssignIpv6AddressesOutput, error)
	AssignPrivateIpAddresses        func(context.Context, *ec2.AssignPrivateIpAddressesInput, ...func(*ec2.Options)) (*ec2.AssignPrivateIpAddressesOutput, error)
	AttachNetworkInterface          func(context.Context, *ec2.AttachNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.AttachNetworkInterfaceOutput, error)
	CreateNetworkInterface          func(context.Context, *ec2.CreateNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.CreateNetworkInterfaceOutput, error)
	CreateTags                      func(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	DeleteNetworkInterface          func(context.Context, *ec2.DeleteNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.DeleteNetworkInterfaceOutput, error)
	DeleteTags                      func(context.Context, *ec2.DeleteTagsInput, ...func(*ec2.Options)) (*ec2.DeleteTagsOutput, error)
	DescribeInstanceTypes           func(context.Context, *ec2.DescribeInstanceTypesInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error)
	DescribeNetworkInterfaces       func(context.Context, *ec2.DescribeNetworkInterfacesInput, ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error)
	DescribeSecurityGroups          func(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
	DescribeSubnets                 func(context.Context, *ec2.DescribeSubnetsInput, ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	DetachNetworkInterface          func(context.Context, *ec2.DetachNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.DetachNetworkInterfaceOutput, error)
	ModifyNetworkInterfaceAttribute func(context.Context, *ec2.ModifyNetworkInterfaceAttributeInput, ...func(*ec2.Options)) (*ec2.ModifyNetworkInterfaceAttributeOutput, error)
	UnassignPrivateIpAddresses      func(context.Context, *ec2.UnassignPrivateIpAddressesInput, ...func(*ec2.Options)) (*ec2.UnassignPrivateIpAddressesOutput, error)
}

func opsOf(cl *ec2.Client) ec2Ops {
	return ec2Ops{
		AssignIpv6Addresses:             cl.AssignIpv6Addresses,
		AssignPrivateIpAddresses:        cl.AssignPrivateIpAddresses,
		AttachNetworkInterface:          cl.AttachNetworkInterface,
		CreateNetworkInterface:          cl.CreateNetworkInterface,
		CreateTags:                      cl.CreateTags,
		DeleteNetworkInterface:          cl.DeleteNetworkInterface,
		DeleteTags:                      cl.DeleteTags,
		DescribeInstanceTypes:           cl.DescribeInstanceTypes,
		DescribeNetworkInterfaces:       cl.DescribeNetworkInterfaces,
		DescribeSecurityGroups:          cl.DescribeSecurityGroups,
		DescribeSubnets:                 cl.DescribeSubnets,
		DetachNetworkInterface:          cl.DetachNetworkInterface,
		ModifyNetworkInterfaceAttribute: cl.ModifyNetworkInterfaceAttribute,
		UnassignPrivateIpAddresses:      cl.UnassignPrivateIpAddresses,
	}
}
