package cloud

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// Subnet describes one subnet by ID (IsNotFound if EC2 has none).
func (c *Client) Subnet(ctx context.Context, id string) (Subnet, error) {
	out, err := c.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{id}})
	if err != nil {
		return Subnet{}, fmt.Errorf("describe subnet %s: %w", id, err)
	}
	if len(out.Subnets) != 1 {
		return Subnet{}, fmt.Errorf("describe subnet %s: EC2 returned %d subnets", id, len(out.Subnets))
	}
	s := out.Subnets[0]
	cidr, err := netip.ParsePrefix(aws.ToString(s.CidrBlock))
	if err != nil {
		return Subnet{}, fmt.Errorf("subnet %s: CIDR %q: %w", id, aws.ToString(s.CidrBlock), err)
	}
	c.mu.Lock()
	c.subnetCIDRs[id] = cidr
	c.mu.Unlock()
	return Subnet{ID: id, VPCID: aws.ToString(s.VpcId), CIDR: cidr, AZ: aws.ToString(s.AvailabilityZone),
		Available: int(aws.ToInt32(s.AvailableIpAddressCount)), Tags: tagMap(s.Tags)}, nil
}

// SecurityGroupVPCs returns the VPC of each security group (IsNotFound if
// one does not exist).
func (c *Client) SecurityGroupVPCs(ctx context.Context, ids []string) (map[string]string, error) {
	out, err := c.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: ids})
	if err != nil {
		return nil, fmt.Errorf("describe security groups %v: %w", ids, err)
	}
	vpcs := map[string]string{}
	for _, g := range out.SecurityGroups {
		vpcs[aws.ToString(g.GroupId)] = aws.ToString(g.VpcId)
	}
	return vpcs, nil
}
