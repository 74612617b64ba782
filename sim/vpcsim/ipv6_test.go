package vpcsim

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// IPv6 as EC2 documents it for an EKS IPv6 cluster: an Amazon-provided /56
// per VPC, a /64 per subnet, /80 prefixes on Nitro ENIs and /128
// addresses, in describe and in IMDS.
func TestIPv6ControlPlane(t *testing.T) {
	r := newRegion(t, "10.0.8.0/24", Options{})
	ctx := context.Background()
	av, err := r.ec2.AssociateVpcCidrBlock(ctx, &ec2.AssociateVpcCidrBlockInput{VpcId: aws.String(r.vpc), AmazonProvidedIpv6CidrBlock: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	vpc6, err := netip.ParsePrefix(aws.ToString(av.Ipv6CidrBlockAssociation.Ipv6CidrBlock))
	if err != nil || vpc6.Bits() != 56 || !vpc6.Addr().Is6() {
		t.Fatalf("VPC IPv6 block %v (%v), want a /56", av.Ipv6CidrBlockAssociation.Ipv6CidrBlock, err)
	}
	if _, err := r.ec2.AssociateVpcCidrBlock(ctx, &ec2.AssociateVpcCidrBlockInput{VpcId: aws.String(r.vpc),
		AmazonProvidedIpv6CidrBlock: aws.Bool(true)}); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("a second /56: %v, want InvalidParameterValue", err)
	}
	// The subnet's /64: the VPC's block with 0x01 in the 8 bits of the
	// subnet number.
	b := vpc6.Addr().As16()
	b[7] = 1
	sub6 := netip.PrefixFrom(netip.AddrFrom16(b), 64)
	for _, bad := range []struct {
		cidr, code string
	}{
		{"2001:db8::/64", "InvalidSubnet.Range"},
		{netip.PrefixFrom(netip.AddrFrom16(b), 72).String(), "InvalidParameterValue"},
	} {
		if _, err := r.ec2.AssociateSubnetCidrBlock(ctx, &ec2.AssociateSubnetCidrBlockInput{SubnetId: aws.String(r.subnet),
			Ipv6CidrBlock: aws.String(bad.cidr)}); apiCode(err) != bad.code {
			t.Errorf("subnet block %s: %v, want %s", bad.cidr, err, bad.code)
		}
	}
	eni := r.primaryENI(t)
	if _, err := r.ec2.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: aws.String(eni),
		Ipv6AddressCount: aws.Int32(1)}); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("IPv6 on a subnet without an IPv6 block: %v, want InvalidParameterValue", err)
	}
	if _, err := r.ec2.AssociateSubnetCidrBlock(ctx, &ec2.AssociateSubnetCidrBlockInput{SubnetId: aws.String(r.subnet),
		Ipv6CidrBlock: aws.String(sub6.String())}); err != nil {
		t.Fatal(err)
	}
	ds, err := r.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{r.subnet}})
	if err != nil || len(ds.Subnets[0].Ipv6CidrBlockAssociationSet) != 1 ||
		aws.ToString(ds.Subnets[0].Ipv6CidrBlockAssociationSet[0].Ipv6CidrBlock) != sub6.String() {
		t.Fatalf("describe subnet: %+v, %v; want its /64 %s", ds, err, sub6)
	}

	// The EKS IPv6 node: one /80 on the primary ENI (m5.large is Nitro).
	ap, err := r.ec2.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: aws.String(eni), Ipv6PrefixCount: aws.Int32(1)})
	if err != nil || len(ap.AssignedIpv6Prefixes) != 1 {
		t.Fatalf("assign a /80: %+v, %v", ap, err)
	}
	p80 := netip.MustParsePrefix(ap.AssignedIpv6Prefixes[0])
	if p80.Bits() != 80 || !sub6.Contains(p80.Addr()) || p80.Masked() != p80 {
		t.Errorf("prefix %s, want an aligned /80 in %s", p80, sub6)
	}
	aa, err := r.ec2.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: aws.String(eni), Ipv6AddressCount: aws.Int32(2)})
	if err != nil || len(aa.AssignedIpv6Addresses) != 2 {
		t.Fatalf("assign 2 addresses: %+v, %v", aa, err)
	}
	for _, s := range aa.AssignedIpv6Addresses {
		a := netip.MustParseAddr(s)
		if !sub6.Contains(a) || p80.Contains(a) {
			t.Errorf("address %s: want it in %s and outside the ENI's /80", a, sub6)
		}
	}
	// An m5.large ENI takes 10 IPv6 addresses (EC2's table): 3 used.
	if _, err := r.ec2.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: aws.String(eni),
		Ipv6AddressCount: aws.Int32(8)}); apiCode(err) != "PrivateIpAddressLimitExceeded" {
		t.Errorf("11 on one m5.large ENI: %v, want PrivateIpAddressLimitExceeded", err)
	}
	dn, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
	if err != nil || len(dn.NetworkInterfaces[0].Ipv6Addresses) != 2 || len(dn.NetworkInterfaces[0].Ipv6Prefixes) != 1 ||
		aws.ToString(dn.NetworkInterfaces[0].Ipv6Prefixes[0].Ipv6Prefix) != p80.String() {
		t.Errorf("describe ENI: %+v, %v; want 2 addresses and %s", dn.NetworkInterfaces[0], err, p80)
	}

	// IMDS shows them on the ENI's MAC, and the instance's ipv6.
	v, _ := r.sim.Cloud.ENI(eni)
	md := imds.New(imds.Options{Endpoint: r.node.IMDSEndpoint})
	get := func(path string) string {
		t.Helper()
		out, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err != nil {
			t.Fatalf("IMDS %s: %v", path, err)
		}
		body, _ := io.ReadAll(out.Content)
		return strings.TrimSpace(string(body))
	}
	base := "network/interfaces/macs/" + v.MAC + "/"
	for path, want := range map[string]string{
		base + "ipv6-prefix":             p80.String(),
		base + "subnet-ipv6-cidr-blocks": sub6.String(),
		base + "vpc-ipv6-cidr-blocks":    vpc6.String(),
		base + "ipv6s":                   strings.Join(aa.AssignedIpv6Addresses, "\n"),
		"ipv6":                           aa.AssignedIpv6Addresses[0],
	} {
		if got := get(path); got != want {
			t.Errorf("IMDS %s = %q, want %q", path, got, want)
		}
	}

	// Unassigning: what the ENI holds goes; anything else is refused.
	if _, err := r.ec2.UnassignIpv6Addresses(ctx, &ec2.UnassignIpv6AddressesInput{NetworkInterfaceId: aws.String(eni),
		Ipv6Addresses: []string{"2001:db8::1"}}); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("unassign an address the ENI does not hold: %v, want InvalidParameterValue", err)
	}
	if _, err := r.ec2.UnassignIpv6Addresses(ctx, &ec2.UnassignIpv6AddressesInput{NetworkInterfaceId: aws.String(eni),
		Ipv6Prefixes: []string{p80.String()}, Ipv6Addresses: aa.AssignedIpv6Addresses}); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.sim.Cloud.ENI(eni); len(v.IPv6s)+len(v.IPv6Prefixes) != 0 {
		t.Errorf("after unassigning: %v %v left", v.IPv6s, v.IPv6Prefixes)
	}
}

// /80 prefixes need a Nitro type, as IPv4 prefixes do.
func TestIPv6PrefixNitroOnly(t *testing.T) {
	r := newRegion(t, "10.0.9.0/24", Options{})
	ctx := context.Background()
	xen, err := r.sim.LaunchNode(LaunchSpec{Name: "xen", InstanceType: "m4.large", SubnetID: r.subnet})
	if err != nil {
		t.Fatal(err)
	}
	vpc6, aerr := r.sim.Cloud.AssociateVPCIPv6(r.vpc)
	if aerr != nil {
		t.Fatal(aerr)
	}
	if aerr := r.sim.Cloud.AssociateSubnetIPv6(r.subnet, netip.PrefixFrom(vpc6.Addr(), 64)); aerr != nil {
		t.Fatal(aerr)
	}
	inet, _ := r.sim.Cloud.InstanceNetwork(xen.InstanceID)
	if _, err := r.ec2.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: aws.String(inet.ENIs[0].ID),
		Ipv6PrefixCount: aws.Int32(1)}); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("a /80 on an m4.large (Xen): %v, want InvalidParameterValue", err)
	}
}

// AssignIpv6Addresses' Ipv6AddressCount: "You can't use this option if
// specifying specific IPv6 addresses" (EC2 API reference): both at once is
// an incorrect combination of parameters.
func TestAssignIPv6CountAndAddresses(t *testing.T) {
	r := newRegion(t, "10.0.21.0/24", Options{})
	vpc6, aerr := r.sim.Cloud.AssociateVPCIPv6(r.vpc)
	if aerr != nil {
		t.Fatal(aerr)
	}
	sub6 := netip.PrefixFrom(vpc6.Addr(), 64)
	if aerr := r.sim.Cloud.AssociateSubnetIPv6(r.subnet, sub6); aerr != nil {
		t.Fatal(aerr)
	}
	inet, _ := r.sim.Cloud.InstanceNetwork(r.node.InstanceID)
	explicit := netip.AddrFrom16(sub6.Addr().As16()).Next().Next().Next().Next().Next().String()
	_, err := r.ec2.AssignIpv6Addresses(context.Background(), &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: aws.String(inet.ENIs[0].ID),
		Ipv6AddressCount: aws.Int32(1), Ipv6Addresses: []string{explicit}})
	if apiCode(err) != "InvalidParameterCombination" {
		t.Errorf("a count and an address: %v, want InvalidParameterCombination", err)
	}
}
