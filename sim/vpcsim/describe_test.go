package vpcsim

import (
	"context"
	"fmt"
	"sort"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// DescribeNetworkInterfaces preselects ENIs by ID, instance and status
// before copying them; the answer must be what the full filter pass gives.
func TestDescribeNetworkInterfacesSelection(t *testing.T) {
	r := newRegion(t, "10.0.0.0/24", Options{})
	ctx := context.Background()
	n2, err := r.sim.LaunchNode(LaunchSpec{Name: "node2", InstanceType: "m5.large", SubnetID: r.subnet})
	if err != nil {
		t.Fatal(err)
	}
	create := func() string {
		out, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface,
				Tags: []types.Tag{{Key: aws.String("made-by"), Value: aws.String("test")}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.NetworkInterface.NetworkInterfaceId)
	}
	attached, free := create(), create()
	if _, err := r.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(attached),
		InstanceId: aws.String(r.node.InstanceID), DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	primary := func(inst string) string {
		in, _ := r.sim.Cloud.InstanceNetwork(inst)
		return in.ENIs[0].ID
	}
	p1, p2 := primary(r.node.InstanceID), primary(n2.InstanceID)
	f := func(name string, v ...string) types.Filter { return types.Filter{Name: aws.String(name), Values: v} }

	for _, tc := range []struct {
		name    string
		ids     []string
		filters []types.Filter
		want    []string
		code    string
	}{
		{name: "all", want: []string{p1, p2, attached, free}},
		{name: "by instance", filters: []types.Filter{f("attachment.instance-id", r.node.InstanceID)}, want: []string{p1, attached}},
		{name: "by status", filters: []types.Filter{f("status", "available")}, want: []string{free}},
		{name: "instance and status", filters: []types.Filter{f("attachment.instance-id", r.node.InstanceID), f("status", "available")}},
		{name: "instance and vpc", filters: []types.Filter{f("attachment.instance-id", n2.InstanceID), f("vpc-id", r.vpc)}, want: []string{p2}},
		{name: "by tag", filters: []types.Filter{f("tag:made-by", "test")}, want: []string{attached, free}},
		{name: "by tag and status", filters: []types.Filter{f("tag:made-by", "test"), f("status", "in-use")}, want: []string{attached}},
		{name: "by tag value not held", filters: []types.Filter{f("tag:made-by", "other")}},
		{name: "by id", ids: []string{free, p2}, want: []string{free, p2}},
		{name: "id on another instance than the filter", ids: []string{p2}, filters: []types.Filter{f("attachment.instance-id", r.node.InstanceID)}},
		{name: "unknown id", ids: []string{"eni-0000000000000000f"}, code: "InvalidNetworkInterfaceID.NotFound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: tc.ids, Filters: tc.filters})
			if tc.code != "" {
				if code := apiCode(err); code != tc.code {
					t.Fatalf("error %v, want code %s", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ni := range out.NetworkInterfaces {
				got = append(got, aws.ToString(ni.NetworkInterfaceId))
			}
			sort.Strings(got)
			want := append([]string(nil), tc.want...)
			sort.Strings(want)
			if len(got) != len(want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("got %v, want %v", got, want)
				}
			}
		})
	}
}

// DescribeInstances as EC2's API reference has it: an instance's groupSet
// ("the security groups for the instance"); the filters subnet-id,
// availability-zone, private-ip-address ("the private IPv4 address of the
// instance") and instance.group-id; MaxResults (5 to 1000, "You cannot
// specify this parameter and the instance IDs parameter in the same
// request") with NextToken.
func TestDescribeInstances(t *testing.T) {
	r := newRegion(t, "10.0.18.0/24", Options{})
	ctx := context.Background()
	for i := range 5 {
		if _, err := r.sim.LaunchNode(LaunchSpec{Name: fmt.Sprintf("more%d", i), InstanceType: "m5.large", SubnetID: r.subnet}); err != nil {
			t.Fatal(err)
		}
	}
	def := r.defaultGroup(t)
	out, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{r.node.InstanceID}})
	if err != nil {
		t.Fatal(err)
	}
	inst := out.Reservations[0].Instances[0]
	if len(inst.SecurityGroups) != 1 || aws.ToString(inst.SecurityGroups[0].GroupId) != def || aws.ToString(inst.SecurityGroups[0].GroupName) != "default" {
		t.Errorf("instance groups %+v, want the default group %s", inst.SecurityGroups, def)
	}
	tests := []struct {
		filter, value string
		want          int
	}{
		{"subnet-id", r.subnet, 6},
		{"availability-zone", "us-west-2a", 6},
		{"private-ip-address", aws.ToString(inst.PrivateIpAddress), 1},
		{"instance.group-id", def, 6},
	}
	for _, tt := range tests {
		out, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String(tt.filter), Values: []string{tt.value}}}})
		if err != nil {
			t.Errorf("%s: %v", tt.filter, err)
			continue
		}
		if n := len(out.Reservations); n != tt.want {
			t.Errorf("%s=%s: %d instances, want %d", tt.filter, tt.value, n, tt.want)
		}
	}
	p := ec2.NewDescribeInstancesPaginator(r.ec2, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5)})
	pages, seen := 0, 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		seen += len(page.Reservations)
	}
	if pages != 2 || seen != 6 {
		t.Errorf("%d pages of %d instances, want 2 pages of 6", pages, seen)
	}
	if _, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{r.node.InstanceID},
		MaxResults: aws.Int32(5)}); apiCode(err) != "InvalidParameterCombination" {
		t.Errorf("InstanceIds with MaxResults: %v, want InvalidParameterCombination", err)
	}
}
