package cloud

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
)

// InstanceLimits returns the network limits of an instance type: from the
// embedded table when it knows the type (as the reference CNI does: a
// daemon start then costs no DescribeInstanceTypes, which matters when a
// whole fleet restarts against one account-wide rate limit), else from
// DescribeInstanceTypes (cached), for types newer than the table.
func (c *Client) InstanceLimits(ctx context.Context, instanceType string) (instancelimits.Limits, error) {
	if tl, found := instancelimits.Lookup(instanceType); found {
		return tl, nil
	}
	c.mu.Lock()
	l, ok := c.limits[instanceType]
	c.mu.Unlock()
	if ok {
		return l, nil
	}
	l, err := c.describeInstanceType(ctx, instanceType)
	if err == nil {
		c.mu.Lock()
		c.limits[instanceType] = l
		c.mu.Unlock()
		return l, nil
	}
	msg := fmt.Sprintf("instance type %q is unknown to the built-in table and to EC2", instanceType)
	if sim := instancelimits.Similar(instanceType, 3); len(sim) > 0 {
		msg += " (similar: " + strings.Join(sim, ", ") + ")"
	}
	return instancelimits.Limits{}, fmt.Errorf("%s: %w", msg, err)
}

func (c *Client) describeInstanceType(ctx context.Context, instanceType string) (instancelimits.Limits, error) {
	out, err := c.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{
		InstanceTypes: []types.InstanceType{types.InstanceType(instanceType)}})
	if err != nil {
		return instancelimits.Limits{}, fmt.Errorf("describe instance type %s: %w", instanceType, err)
	}
	for _, it := range out.InstanceTypes {
		if string(it.InstanceType) != instanceType {
			continue
		}
		ni := it.NetworkInfo
		if ni == nil || aws.ToInt32(ni.MaximumNetworkInterfaces) <= 0 || aws.ToInt32(ni.Ipv4AddressesPerInterface) <= 0 {
			return instancelimits.Limits{}, fmt.Errorf("describe instance type %s: no network limits in the answer", instanceType)
		}
		l := instancelimits.Limits{InstanceType: instanceType, Hypervisor: string(it.Hypervisor),
			BareMetal: aws.ToBool(it.BareMetal), NetworkCards: map[int]int{},
			MaxENIs: int(aws.ToInt32(ni.MaximumNetworkInterfaces)), IPv4PerENI: int(aws.ToInt32(ni.Ipv4AddressesPerInterface))}
		def := int(aws.ToInt32(ni.DefaultNetworkCardIndex))
		l.DefaultNetworkCard = def
		for _, card := range ni.NetworkCards {
			idx, n := int(aws.ToInt32(card.NetworkCardIndex)), int(aws.ToInt32(card.MaximumNetworkInterfaces))
			l.NetworkCards[idx] = n
			// The daemon uses the default card only (as the AWS VPC CNI):
			// on multi-card types EC2's MaximumNetworkInterfaces is the
			// instance's total, more than the daemon can attach.
			if idx == def && n > 0 {
				l.MaxENIs = n
			}
		}
		return l, nil
	}
	return instancelimits.Limits{}, fmt.Errorf("describe instance type %s: %w", instanceType, errors.New("not in the answer"))
}
