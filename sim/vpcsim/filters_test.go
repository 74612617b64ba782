package vpcsim

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// DescribeNetworkInterfaces' filters as EC2's API reference lists them,
// and EC2's filter values: "Wildcards can be included in filter values; *
// specifies that zero or more characters must match, and ? specifies that
// exactly one character must match. Use a backslash to escape special
// characters."
func TestENIFilters(t *testing.T) {
	r := newRegion(t, "10.0.15.0/24", Options{})
	ctx := context.Background()
	cr, err := r.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{VpcId: aws.String(r.vpc),
		GroupName: aws.String("pods-a"), Description: aws.String("pods")})
	if err != nil {
		t.Fatal(err)
	}
	pods := aws.ToString(cr.GroupId)
	// One ENI in group pods-a with a secondary address, its check off,
	// tagged "cluster=blue*?"; the node's primary ENI in the default group.
	out, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet), Groups: []string{pods},
		PrivateIpAddress: aws.String("10.0.15.100"), PrivateIpAddresses: []types.PrivateIpAddressSpecification{{PrivateIpAddress: aws.String("10.0.15.101")}},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface,
			Tags: []types.Tag{{Key: aws.String("cluster"), Value: aws.String("blue*?")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	eni := aws.ToString(out.NetworkInterface.NetworkInterfaceId)
	if _, err := r.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(eni),
		InstanceId: aws.String(r.node.InstanceID), DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(eni),
		SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		filter string
		values []string
		want   int // of the two ENIs
	}{
		{"group-id", []string{pods}, 1},
		{"group-name", []string{"default"}, 1},
		{"group-name", []string{"pods-?"}, 1},
		{"group-name", []string{"pods-"}, 0},
		{"private-ip-address", []string{"10.0.15.101"}, 1},
		{"addresses.private-ip-address", []string{"10.0.15.10*"}, 1},
		{"owner-id", []string{"123456789012"}, 2},
		{"requester-managed", []string{"false"}, 2},
		{"source-dest-check", []string{"false"}, 1},
		{"attachment.status", []string{"attached"}, 2},
		{"attachment.delete-on-termination", []string{"true"}, 1},
		{"attachment.instance-owner-id", []string{"123456789012"}, 2},
		{"tag:cluster", []string{"bl*"}, 1},
		{"tag:cluster", []string{"blu?*"}, 1},
		{"tag:cluster", []string{"blu?"}, 0},
		{"tag:cluster", []string{`blue\*\?`}, 1},
		{"tag:cluster", []string{`blue\*`}, 0},
		{"tag-key", []string{"clu*"}, 1},
		{"description", []string{"Primary network*"}, 1},
	}
	for _, tt := range tests {
		d, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{
			{Name: aws.String("attachment.instance-id"), Values: []string{r.node.InstanceID}},
			{Name: aws.String(tt.filter), Values: tt.values}}})
		if err != nil {
			t.Errorf("%s=%v: %v", tt.filter, tt.values, err)
			continue
		}
		if len(d.NetworkInterfaces) != tt.want {
			t.Errorf("%s=%v: %d ENIs, want %d", tt.filter, tt.values, len(d.NetworkInterfaces), tt.want)
		}
	}
}

// EC2's filter value wildcards: * is zero or more characters, ? exactly
// one, a backslash escapes.
func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"?", "", false},
		{"?", "a", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"*.k8s.io", "node.k8s.io", true},
		{"i-0*", "i-0123", true},
		{"abc", "abcd", false},
		{`\*`, "*", true},
		{`\*`, "a", false},
		{`a\\b`, `a\b`, true},
		{"**a", "a", true},
		{"日本*", "日本語", true},
		{"??", "語a", true},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}
