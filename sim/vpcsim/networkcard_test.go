package vpcsim

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EC2's documented behaviour for instance types with several network cards
// and for interface types: device indexes are numbered per card, each card
// has its own ENI limit, branch interfaces are not attached to instances,
// and describe and IMDS say where an ENI is.
func TestNetworkCardsAndInterfaceTypes(t *testing.T) {
	r := newRegion(t, "10.0.6.0/24", Options{})
	ctx := context.Background()
	// c6in.32xlarge: two network cards of 8 ENIs each (EC2's table).
	big, err := r.sim.LaunchNode(LaunchSpec{Name: "big", InstanceType: "c6in.32xlarge", SubnetID: r.subnet})
	if err != nil {
		t.Fatal(err)
	}
	create := func(typ string) (string, error) {
		out, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet),
			InterfaceType: types.NetworkInterfaceCreationType(typ)})
		if err != nil {
			return "", err
		}
		return aws.ToString(out.NetworkInterface.NetworkInterfaceId), nil
	}
	attach := func(eni, instance string, card, dev int32) error {
		_, err := r.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(eni),
			InstanceId: aws.String(instance), DeviceIndex: aws.Int32(dev), NetworkCardIndex: aws.Int32(card)})
		return err
	}
	mustCreate := func(typ string) string {
		t.Helper()
		id, err := create(typ)
		if err != nil {
			t.Fatalf("create %q ENI: %v", typ, err)
		}
		return id
	}

	if _, err := create("bogus"); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("interface type bogus: %v, want InvalidParameterValue", err)
	}
	efa := mustCreate("efa")
	onCard1 := mustCreate("interface")
	// The same device index on two cards is two slots.
	if err := attach(efa, big.InstanceID, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := attach(onCard1, big.InstanceID, 1, 1); err != nil {
		t.Fatalf("device 1 on card 1 while card 0 has a device 1: %v", err)
	}
	if err := attach(mustCreate("interface"), big.InstanceID, 1, 1); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("second ENI at card 1 device 1: %v, want InvalidParameterValue", err)
	}
	// m5.large has one card; c6in.32xlarge has no card 2.
	if err := attach(mustCreate("interface"), r.node.InstanceID, 1, 1); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("card 1 on an m5.large: %v, want InvalidParameterValue", err)
	}
	if err := attach(mustCreate("interface"), big.InstanceID, 2, 1); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("card 2 on a c6in.32xlarge: %v, want InvalidParameterValue", err)
	}
	if err := attach(mustCreate("branch"), big.InstanceID, 0, 2); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("attaching a branch ENI: %v, want InvalidParameterValue", err)
	}
	// Card 1 takes 8 ENIs; its ninth is over the card's limit, although
	// card 0 has room.
	for dev := int32(2); dev <= 8; dev++ {
		if err := attach(mustCreate("interface"), big.InstanceID, 1, dev); err != nil {
			t.Fatalf("ENI %d on card 1: %v", dev, err)
		}
	}
	if err := attach(mustCreate("interface"), big.InstanceID, 1, 9); apiCode(err) != "AttachmentLimitExceeded" {
		t.Errorf("ninth ENI on card 1: %v, want AttachmentLimitExceeded", err)
	}
	if err := attach(mustCreate("trunk"), big.InstanceID, 0, 9); err != nil {
		t.Errorf("a trunk ENI on card 0 (2 of 8 used): %v", err)
	}
	// EC2's EFA guide: "For each additional network interface, use the
	// next unused network card index, device index 0 for EFA-only network
	// interface"; device index 0 of card 0 is the primary's.
	if err := attach(mustCreate("efa-only"), big.InstanceID, 0, 0); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("an ENI at card 0 device 0: %v, want InvalidParameterValue", err)
	}
	big2, err := r.sim.LaunchNode(LaunchSpec{Name: "big2", InstanceType: "c6in.32xlarge", SubnetID: r.subnet})
	if err != nil {
		t.Fatal(err)
	}
	if err := attach(mustCreate("efa-only"), big2.InstanceID, 1, 0); err != nil {
		t.Errorf("an EFA-only ENI at card 1 device 0: %v", err)
	}

	// Describe says the type and the card, and filters on them.
	out, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{efa, onCard1}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ni := range out.NetworkInterfaces {
		got[aws.ToString(ni.NetworkInterfaceId)] = fmt.Sprintf("%s card %d", ni.InterfaceType, aws.ToInt32(ni.Attachment.NetworkCardIndex))
	}
	if got[efa] != "efa card 0" || got[onCard1] != "interface card 1" {
		t.Errorf("describe: %v; want efa on card 0 and interface on card 1", got)
	}
	// An instance's interfaces are described with their type too
	// (InstanceNetworkInterface.InterfaceType).
	di, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{big.InstanceID}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ni := range di.Reservations[0].Instances[0].NetworkInterfaces {
		if id := aws.ToString(ni.NetworkInterfaceId); id == efa && aws.ToString(ni.InterfaceType) != "efa" {
			t.Errorf("DescribeInstances: %s has type %q, want efa", id, aws.ToString(ni.InterfaceType))
		}
	}
	for _, f := range []struct {
		name, value string
		want        int
	}{{"interface-type", "efa", 1}, {"interface-type", "trunk", 1}, {"attachment.network-card-index", "1", 8}} {
		out, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{
			{Name: aws.String("attachment.instance-id"), Values: []string{big.InstanceID}},
			{Name: aws.String(f.name), Values: []string{f.value}}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.NetworkInterfaces) != f.want {
			t.Errorf("filter %s=%s: %d ENIs, want %d", f.name, f.value, len(out.NetworkInterfaces), f.want)
		}
	}

	// IMDS gives each ENI's card.
	md := imds.New(imds.Options{Endpoint: big.IMDSEndpoint})
	v, _ := r.sim.Cloud.ENI(onCard1)
	res, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: "network/interfaces/macs/" + v.MAC + "/network-card"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Content)
	if strings.TrimSpace(string(b)) != "1" {
		t.Errorf("IMDS network-card of the card-1 ENI: %q, want 1", b)
	}
}

// DescribeInstanceTypes gives an instance type's ENI limit for the instance
// and for each network card. EC2's NetworkInfo: maximumNetworkInterfaces is
// "the maximum number of network interfaces for the instance type",
// NetworkCardInfo.maximumNetworkInterfaces "the maximum number of network
// interfaces for the network card", defaultNetworkCardIndex "the index of
// the default network card, starting at 0". The EC2 User Guide's table of
// network interfaces per instance type lists p4d.24xlarge with 4 network
// cards of 15 (60), c6in.32xlarge with 2 of 8 (16), trn1.32xlarge with 8
// of 5 (40) and m5.large with 1 of 3.
func TestDescribeInstanceTypesNetworkCards(t *testing.T) {
	r := newRegion(t, "10.0.9.0/24", Options{})
	tests := []struct {
		typ          string
		total, cards int
		perCard      int32
	}{
		{"p4d.24xlarge", 60, 4, 15},
		{"c6in.32xlarge", 16, 2, 8},
		{"trn1.32xlarge", 40, 8, 5},
		{"m5.large", 3, 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			out, err := r.ec2.DescribeInstanceTypes(context.Background(), &ec2.DescribeInstanceTypesInput{
				InstanceTypes: []types.InstanceType{types.InstanceType(tt.typ)}})
			if err != nil {
				t.Fatal(err)
			}
			if len(out.InstanceTypes) != 1 {
				t.Fatalf("%d instance types, want 1", len(out.InstanceTypes))
			}
			ni := out.InstanceTypes[0].NetworkInfo
			if got := aws.ToInt32(ni.MaximumNetworkInterfaces); got != int32(tt.total) {
				t.Errorf("MaximumNetworkInterfaces %d, want %d (the instance's)", got, tt.total)
			}
			if got := aws.ToInt32(ni.MaximumNetworkCards); got != int32(tt.cards) {
				t.Errorf("MaximumNetworkCards %d, want %d", got, tt.cards)
			}
			if ni.DefaultNetworkCardIndex == nil || *ni.DefaultNetworkCardIndex != 0 {
				t.Errorf("DefaultNetworkCardIndex %v, want 0", ni.DefaultNetworkCardIndex)
			}
			if len(ni.NetworkCards) != tt.cards {
				t.Fatalf("%d NetworkCards, want %d", len(ni.NetworkCards), tt.cards)
			}
			for i, c := range ni.NetworkCards {
				if aws.ToInt32(c.NetworkCardIndex) != int32(i) || aws.ToInt32(c.MaximumNetworkInterfaces) != tt.perCard {
					t.Errorf("NetworkCards[%d]: index %d, %d ENIs; want index %d, %d ENIs", i,
						aws.ToInt32(c.NetworkCardIndex), aws.ToInt32(c.MaximumNetworkInterfaces), i, tt.perCard)
				}
			}
		})
	}
}

// DescribeInstanceTypes' MaxResults: "Valid Range: Minimum value of 5.
// Maximum value of 100." (EC2 API reference).
func TestDescribeInstanceTypesMaxResults(t *testing.T) {
	r := newRegion(t, "10.0.16.0/24", Options{})
	for _, tt := range []struct {
		max  int32
		code string
	}{{5, ""}, {100, ""}, {101, "InvalidParameterValue"}, {1000, "InvalidParameterValue"}, {4, "InvalidParameterValue"}} {
		out, err := r.ec2.DescribeInstanceTypes(context.Background(), &ec2.DescribeInstanceTypesInput{MaxResults: aws.Int32(tt.max)})
		if apiCode(err) != tt.code {
			t.Errorf("MaxResults %d: %v, want %q", tt.max, err, tt.code)
		}
		if err == nil && len(out.InstanceTypes) != int(tt.max) {
			t.Errorf("MaxResults %d: %d types", tt.max, len(out.InstanceTypes))
		}
	}
}
