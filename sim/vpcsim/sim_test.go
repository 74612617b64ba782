package vpcsim

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// region is a small control-plane-only region: one VPC, one /24 subnet and
// an m5.large node.
type region struct {
	sim    *Sim
	vpc    string
	subnet string
	node   Node
	ec2    *ec2.Client
}

func newRegion(t *testing.T, subnetCIDR string, opts Options) *region {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	vpc, err := s.Cloud.AddVPC("10.0.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := s.Cloud.AddSubnet(vpc, subnetCIDR, "us-west-2a", nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.LaunchNode(LaunchSpec{Name: "node1", InstanceType: "m5.large", SubnetID: sub})
	if err != nil {
		t.Fatal(err)
	}
	return &region{sim: s, vpc: vpc, subnet: sub, node: n, ec2: sdkClient(s.EC2URL, 3)}
}

// sdkClient is an unmodified aws-sdk-go-v2 EC2 client pointed at endpoint.
func sdkClient(endpoint string, attempts int) *ec2.Client {
	cfg := aws.Config{Region: "us-west-2", Credentials: credentials.NewStaticCredentialsProvider("AKIDSIM", "secret", ""),
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = attempts
				o.MaxBackoff = 50 * time.Millisecond
			})
		}}
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func (r *region) createAttach(t *testing.T, dev int32) (eniID, attID string) {
	t.Helper()
	ctx := context.Background()
	out, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet),
		Description: aws.String("test"),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface,
			Tags: []types.Tag{{Key: aws.String("node.k8s.amazonaws.com/instance_id"), Value: aws.String(r.node.InstanceID)}}}}})
	if err != nil {
		t.Fatalf("CreateNetworkInterface: %v", err)
	}
	eniID = *out.NetworkInterface.NetworkInterfaceId
	att, err := r.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(eniID),
		InstanceId: aws.String(r.node.InstanceID), DeviceIndex: aws.Int32(dev)})
	if err != nil {
		t.Fatalf("AttachNetworkInterface: %v", err)
	}
	return eniID, *att.AttachmentId
}

func TestENILifecycleAndLimits(t *testing.T) {
	r := newRegion(t, "10.0.1.0/24", Options{})
	ctx := context.Background()
	eni, att := r.createAttach(t, 1)

	as, err := r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni),
		SecondaryPrivateIpAddressCount: aws.Int32(5)})
	if err != nil {
		t.Fatal(err)
	}
	if len(as.AssignedPrivateIpAddresses) != 5 {
		t.Fatalf("assigned %d, want 5", len(as.AssignedPrivateIpAddresses))
	}
	d, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
	if err != nil {
		t.Fatal(err)
	}
	got := d.NetworkInterfaces[0]
	if len(got.PrivateIpAddresses) != 6 || !*got.PrivateIpAddresses[0].Primary || got.Attachment == nil ||
		*got.Attachment.DeviceIndex != 1 || *got.Attachment.AttachmentId != att || got.Status != types.NetworkInterfaceStatusInUse {
		t.Fatalf("describe: %+v", got)
	}
	for i, a := range as.AssignedPrivateIpAddresses {
		if *a.PrivateIpAddress != *got.PrivateIpAddresses[i+1].PrivateIpAddress {
			t.Errorf("address %d: assign said %s, describe says %s", i, *a.PrivateIpAddress, *got.PrivateIpAddresses[i+1].PrivateIpAddress)
		}
	}

	// Ten IPv4 slots per ENI on m5.large: primary + 5 + 4 fit, an eleventh fails.
	if _, err := r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni),
		SecondaryPrivateIpAddressCount: aws.Int32(4)}); err != nil {
		t.Fatal(err)
	}
	_, err = r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni),
		SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if apiCode(err) != "PrivateIpAddressLimitExceeded" {
		t.Fatalf("11th address: %v, want PrivateIpAddressLimitExceeded", err)
	}

	// m5.large takes 3 ENIs: primary + 2; the fourth fails.
	r.createAttach(t, 2)
	out, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: out.NetworkInterface.NetworkInterfaceId,
		InstanceId: aws.String(r.node.InstanceID), DeviceIndex: aws.Int32(3)})
	if apiCode(err) != "AttachmentLimitExceeded" {
		t.Fatalf("4th ENI: %v, want AttachmentLimitExceeded", err)
	}

	// Filters: attachment.instance-id, status, tag-key, tag:K.
	tests := []struct {
		name    string
		filters []types.Filter
		want    int
	}{
		{"instance", []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{r.node.InstanceID}}}, 3},
		{"available", []types.Filter{{Name: aws.String("status"), Values: []string{"available"}}}, 1},
		{"tag-key", []types.Filter{{Name: aws.String("tag-key"), Values: []string{"node.k8s.amazonaws.com/instance_id"}}}, 2},
		{"tag value", []types.Filter{{Name: aws.String("tag:node.k8s.amazonaws.com/instance_id"), Values: []string{r.node.InstanceID}}}, 2},
		{"tag other value", []types.Filter{{Name: aws.String("tag:node.k8s.amazonaws.com/instance_id"), Values: []string{"i-other"}}}, 0},
		{"vpc and subnet", []types.Filter{{Name: aws.String("vpc-id"), Values: []string{r.vpc}}, {Name: aws.String("subnet-id"), Values: []string{r.subnet}}}, 4},
	}
	for _, tt := range tests {
		d, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: tt.filters})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if len(d.NetworkInterfaces) != tt.want {
			t.Errorf("%s: %d ENIs, want %d", tt.name, len(d.NetworkInterfaces), tt.want)
		}
	}
	_, err = r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{{Name: aws.String("bogus"), Values: []string{"x"}}}})
	if apiCode(err) != "InvalidParameterValue" {
		t.Errorf("unknown filter: %v", err)
	}
	// Pagination through the SDK paginator sees every ENI once.
	p := ec2.NewDescribeNetworkInterfacesPaginator(r.ec2, &ec2.DescribeNetworkInterfacesInput{MaxResults: aws.Int32(5)})
	seen := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen += len(page.NetworkInterfaces)
	}
	if seen != 4 {
		t.Errorf("paginator saw %d ENIs, want 4", seen)
	}

	// Detach, delete, and the ID is gone.
	if _, err := r.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(eni)}); apiCode(err) != "InvalidNetworkInterface.InUse" {
		t.Errorf("delete attached: %v", err)
	}
	if _, err := r.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String(att)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(eni)}); err != nil {
		t.Fatal(err)
	}
	_, err = r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
	if apiCode(err) != "InvalidNetworkInterfaceID.NotFound" {
		t.Errorf("describe deleted: %v", err)
	}
}

func TestSubnetFullAndPrefixes(t *testing.T) {
	// A /27 has 32-5 = 27 usable addresses.
	r := newRegion(t, "10.0.2.0/27", Options{})
	ctx := context.Background()
	sub, err := r.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{r.subnet}})
	if err != nil {
		t.Fatal(err)
	}
	if n := *sub.Subnets[0].AvailableIpAddressCount; n != 26 { // 27 minus the node's primary IP
		t.Fatalf("available = %d, want 26", n)
	}
	eni, _ := r.createAttach(t, 1) // takes one more: 25 left
	// The only /28 fully inside the usable range is .16/28 (.0-.3 reserved, .31 reserved).
	as, err := r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni), Ipv4PrefixCount: aws.Int32(1)})
	if apiCode(err) != "InsufficientCidrBlocks" {
		// .16/28 ends at .31, the broadcast address: no /28 fits.
		t.Fatalf("prefix in a /27: %v %+v, want InsufficientCidrBlocks", err, as)
	}
	_, err = r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(r.primaryENI(t)),
		SecondaryPrivateIpAddressCount: aws.Int32(9)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni), SecondaryPrivateIpAddressCount: aws.Int32(9)})
	if err != nil {
		t.Fatal(err)
	}
	// 25 - 18 = 7 left; ask for 8 on a fresh ENI.
	out, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet), SecondaryPrivateIpAddressCount: aws.Int32(7)})
	if apiCode(err) != "InsufficientFreeAddressesInSubnet" {
		t.Fatalf("full subnet: %v %+v, want InsufficientFreeAddressesInSubnet", err, out)
	}

	// Prefixes in a bigger subnet: aligned on /28 and disjoint from every IP.
	r2 := newRegion(t, "10.0.4.0/24", Options{})
	eni2, _ := r2.createAttach(t, 1)
	if _, err := r2.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni2), SecondaryPrivateIpAddressCount: aws.Int32(5)}); err != nil {
		t.Fatal(err)
	}
	pa, err := r2.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni2), Ipv4PrefixCount: aws.Int32(3)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := r2.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
	if err != nil {
		t.Fatal(err)
	}
	var ips []netip.Addr
	for _, e := range d.NetworkInterfaces {
		for _, a := range e.PrivateIpAddresses {
			ips = append(ips, netip.MustParseAddr(*a.PrivateIpAddress))
		}
	}
	var pfx []netip.Prefix
	for _, p := range pa.AssignedIpv4Prefixes {
		pp := netip.MustParsePrefix(*p.Ipv4Prefix)
		if pp.Bits() != 28 || pp.Masked() != pp {
			t.Errorf("prefix %s not /28-aligned", pp)
		}
		for _, a := range ips {
			if pp.Contains(a) {
				t.Errorf("prefix %s overlaps address %s", pp, a)
			}
		}
		for _, q := range pfx {
			if q.Overlaps(pp) {
				t.Errorf("prefixes %s and %s overlap", q, pp)
			}
		}
		pfx = append(pfx, pp)
	}
	if len(pfx) != 3 {
		t.Fatalf("got %d prefixes", len(pfx))
	}
	// EC2 reserves 5 addresses of every subnet: a /24 has 251 usable. Taken
	// here: the node's primary IP, eni2's primary IP, 5 secondary IPs and
	// three /28s (48): 251 - 55 = 196 left. Unassigning a prefix frees its
	// 16 addresses: 212.
	available := func() int32 {
		t.Helper()
		out, err := r2.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{r2.subnet}})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToInt32(out.Subnets[0].AvailableIpAddressCount)
	}
	if n := available(); n != 196 {
		t.Errorf("available = %d with 7 addresses and three /28s taken from a /24, want 196", n)
	}
	if _, err := r2.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni2), Ipv4Prefixes: []string{pfx[0].String()}}); err != nil {
		t.Fatal(err)
	}
	if n := available(); n != 212 {
		t.Errorf("available = %d after unassigning one /28, want 212", n)
	}
}

func (r *region) primaryENI(t *testing.T) string {
	n, _ := r.sim.Cloud.InstanceNetwork(r.node.InstanceID)
	return n.ENIs[0].ID
}

func TestPrefixDelegationNitroOnly(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	vpc, _ := s.Cloud.AddVPC("10.1.0.0/16")
	sub, _ := s.Cloud.AddSubnet(vpc, "10.1.0.0/24", "us-west-2a", nil)
	n, err := s.LaunchNode(LaunchSpec{Name: "xen", InstanceType: "t2.micro", SubnetID: sub})
	if err != nil {
		t.Fatal(err)
	}
	c := sdkClient(s.EC2URL, 1)
	net0, _ := s.Cloud.InstanceNetwork(n.InstanceID)
	_, err = c.AssignPrivateIpAddresses(context.Background(), &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(net0.ENIs[0].ID), Ipv4PrefixCount: aws.Int32(1)})
	if apiCode(err) != "InvalidParameterValue" {
		t.Fatalf("prefix on t2.micro: %v, want InvalidParameterValue", err)
	}
}

func TestIMDSFollowsEC2WithLag(t *testing.T) {
	r := newRegion(t, "10.0.5.0/24", Options{IMDSLag: 300 * time.Millisecond})
	ctx := context.Background()
	eni, _ := r.createAttach(t, 1)
	as, err := r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni), SecondaryPrivateIpAddressCount: aws.Int32(5)})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	v, _ := r.sim.Cloud.ENI(eni)
	want = append(want, v.PrimaryIP.String())
	for _, a := range as.AssignedPrivateIpAddresses {
		want = append(want, *a.PrivateIpAddress)
	}
	md := imds.New(imds.Options{Endpoint: r.node.IMDSEndpoint})
	read := func() (string, error) {
		out, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: "network/interfaces/macs/" + v.MAC + "/local-ipv4s"})
		if err != nil {
			return "", err
		}
		b := make([]byte, 4096)
		n, _ := out.Content.Read(b)
		return string(b[:n]), nil
	}
	// Right after the change IMDS does not know the ENI yet (lag).
	if _, err := read(); err == nil {
		t.Fatal("IMDS showed the new ENI before the lag passed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := read()
		if err == nil {
			lines := splitLines(got)
			sort.Strings(lines)
			sort.Strings(want)
			if len(lines) == 6 && equal(lines, want) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("IMDS never showed %v (last: %q, %v)", want, got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	id, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, _ := id.Content.Read(b)
	if string(b[:n]) != r.node.InstanceID {
		t.Errorf("instance-id = %q", b[:n])
	}
}

func splitLines(s string) []string {
	var out []string
	cur := ""
	for _, c := range s {
		if c == '\n' {
			if cur != "" {
				out = append(out, cur)
			}
			cur = ""
			continue
		}
		cur += string(c)
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFaults(t *testing.T) {
	r := newRegion(t, "10.0.6.0/24", Options{})
	ctx := context.Background()

	// Throttling: a bucket of 2 with no refill answers RequestLimitExceeded,
	// which the SDK's retryer treats as a throttle and retries.
	r.sim.Faults.SetRateLimit("describe", 0.001, 2)
	before := r.sim.Faults.Calls()["DescribeSubnets"]
	var err error
	for i := 0; i < 3 && err == nil; i++ {
		_, err = r.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	}
	if apiCode(err) != "RequestLimitExceeded" {
		t.Fatalf("throttle: %v", err)
	}
	if !retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err).Bool() {
		t.Errorf("SDK does not see %v as a throttle", err)
	}
	if got := r.sim.Faults.Calls()["DescribeSubnets"] - before; got != 2+3 {
		t.Errorf("calls = %d, want 5 (2 admitted + 3 attempts of the throttled one)", got)
	}
	r.sim.Faults.SetRateLimit("describe", 0, 0)

	// Injected 5xx is retried by the SDK and then succeeds.
	r.sim.Faults.Inject("DescribeInstances", "InternalError", 2)
	if _, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
		t.Errorf("InternalError x2 then success with 3 attempts: %v", err)
	}
	// Injected non-retryable code comes straight back.
	r.sim.Faults.Inject("AttachNetworkInterface", "AttachmentLimitExceeded", 1)
	_, err = r.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String("eni-x"), InstanceId: aws.String(r.node.InstanceID), DeviceIndex: aws.Int32(1)})
	if apiCode(err) != "AttachmentLimitExceeded" {
		t.Errorf("injected: %v", err)
	}
	r.sim.Faults.Deny("CreateTags", true)
	_, err = r.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{r.node.InstanceID}, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
	if apiCode(err) != "UnauthorizedOperation" {
		t.Errorf("deny: %v", err)
	}

	// A lost CreateNetworkInterface response: the SDK retries with the same
	// ClientToken and gets the ENI the first attempt created; nothing leaks.
	r.sim.Faults.LoseResponses("CreateNetworkInterface", 1)
	out, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet)})
	if err != nil {
		t.Fatalf("create after lost response: %v", err)
	}
	if n := len(r.sim.Cloud.ENIs()); n != 2 {
		t.Errorf("%d ENIs after one lost response, want 2 (primary + one)", n)
	}
	// A lost AssignPrivateIpAddresses: the change is made, the caller sees an error
	// only if retries run out; with one attempt it does.
	one := sdkClient(r.sim.EC2URL, 1)
	r.sim.Faults.LoseResponses("AssignPrivateIpAddresses", 1)
	_, err = one.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: out.NetworkInterface.NetworkInterfaceId, SecondaryPrivateIpAddressCount: aws.Int32(2)})
	if err == nil {
		t.Fatal("lost response reported success")
	}
	if v, _ := r.sim.Cloud.ENI(*out.NetworkInterface.NetworkInterfaceId); len(v.Secondary) != 2 {
		t.Errorf("the lost call should still have assigned 2 addresses, ENI has %d", len(v.Secondary))
	}
	if r.sim.Faults.Errors()["RequestLimitExceeded"] == 0 {
		t.Error("error counters not kept")
	}
}

func TestDescribeInstancesAndTypes(t *testing.T) {
	r := newRegion(t, "10.0.7.0/24", Options{})
	ctx := context.Background()
	r.createAttach(t, 2)
	di, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{r.node.InstanceID}})
	if err != nil {
		t.Fatal(err)
	}
	inst := di.Reservations[0].Instances[0]
	if inst.InstanceType != types.InstanceTypeM5Large || len(inst.NetworkInterfaces) != 2 || *inst.Placement.AvailabilityZone != "us-west-2a" {
		t.Fatalf("instance: %+v", inst)
	}
	devs := map[int32]bool{}
	for _, e := range inst.NetworkInterfaces {
		devs[*e.Attachment.DeviceIndex] = true
	}
	if !devs[0] || !devs[2] {
		t.Errorf("device indexes %v, want 0 and 2", devs)
	}
	it, err := r.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{"m5.large", "t2.micro"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range it.InstanceTypes {
		switch x.InstanceType {
		case "m5.large":
			if *x.NetworkInfo.MaximumNetworkInterfaces != 3 || *x.NetworkInfo.Ipv4AddressesPerInterface != 10 || x.Hypervisor != types.InstanceTypeHypervisorNitro {
				t.Errorf("m5.large: %+v", x.NetworkInfo)
			}
		case "t2.micro":
			if *x.NetworkInfo.MaximumNetworkInterfaces != 2 || *x.NetworkInfo.Ipv4AddressesPerInterface != 2 || x.Hypervisor != types.InstanceTypeHypervisorXen {
				t.Errorf("t2.micro: %+v", x.NetworkInfo)
			}
		}
	}
	_, err = r.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{"m5.huge"}})
	if apiCode(err) != "InvalidInstanceType" {
		t.Errorf("unknown type: %v", err)
	}
	// Unsigned requests are refused like EC2 does.
	sub, err := r.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("availability-zone"), Values: []string{"us-west-2a"}}}})
	if err != nil || len(sub.Subnets) != 1 {
		t.Errorf("subnets by AZ: %v %v", err, sub)
	}
}

// A CreateNetworkInterface attempt that arrives after its ENI was created
// (by an earlier attempt with the same ClientToken), attached and deleted
// again gets the first answer, as from EC2: it must not make a second ENI,
// which nobody would ever attach or delete.
func TestCreateTokenOutlivesTheENI(t *testing.T) {
	r := newRegion(t, "10.0.8.0/24", Options{})
	ctx := context.Background()
	in := &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet), ClientToken: aws.String("late-attempt")}
	first, err := r.ec2.CreateNetworkInterface(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(first.NetworkInterface.NetworkInterfaceId)
	if _, err := r.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	before := len(r.sim.Cloud.ENIs())
	again, err := r.ec2.CreateNetworkInterface(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(again.NetworkInterface.NetworkInterfaceId); got != id {
		t.Errorf("repeated token got %s, want the first answer %s", got, id)
	}
	if after := len(r.sim.Cloud.ENIs()); after != before {
		t.Errorf("%d ENIs before the repeated create, %d after: it made a new one", before, after)
	}
}

// Software on a node needs no keys: the SDK's instance-role provider gets
// temporary credentials from IMDS (iam/security-credentials/<role>, as
// EC2's), and EC2 accepts requests signed with them.
func TestInstanceProfileCredentials(t *testing.T) {
	r := newRegion(t, "10.0.6.0/24", Options{})
	ctx := context.Background()
	md := imds.New(imds.Options{Endpoint: r.node.IMDSEndpoint})
	prov := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = md })
	creds, err := prov.Retrieve(ctx)
	if err != nil {
		t.Fatalf("instance-role credentials from IMDS: %v", err)
	}
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" || creds.SessionToken == "" || !creds.CanExpire ||
		time.Until(creds.Expires) < 30*time.Minute {
		t.Fatalf("credentials %+v: want a key, a secret, a session token and an expiry in the future", creds)
	}
	cfg := aws.Config{Region: "us-west-2", Credentials: aws.NewCredentialsCache(prov)}
	client := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(r.sim.EC2URL) })
	out, err := client.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{r.node.InstanceID}})
	if err != nil || len(out.Reservations) != 1 {
		t.Fatalf("DescribeInstances with the instance role's credentials: %+v, %v", out, err)
	}
}

// TestCallsCountedPerNode: requests through a node's own endpoint count for
// that node, throttled ones too, while the account-wide bucket and totals
// see them all.
func TestCallsCountedPerNode(t *testing.T) {
	r := newRegion(t, "10.0.7.0/24", Options{})
	ctx := context.Background()
	a := httptest.NewServer(r.sim.ec2.forNode("a"))
	defer a.Close()
	b := httptest.NewServer(r.sim.ec2.forNode("b"))
	defer b.Close()
	ca, cb := sdkClient(a.URL, 1), sdkClient(b.URL, 1)
	// One account bucket of 3 describes, never refilled: two of a's and
	// one of b's pass, b's second is throttled.
	r.sim.Faults.SetRateLimit("describe", 0.0001, 3)
	for _, c := range []*ec2.Client{ca, ca, cb} {
		if _, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cb.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{}); apiCode(err) != "RequestLimitExceeded" {
		t.Fatalf("4th describe of a bucket of 3: %v", err)
	}
	for _, tc := range []struct {
		node            string
		calls, throttle int64
	}{{"a", 2, 0}, {"b", 2, 1}, {"c", 0, 0}} {
		if got := r.sim.Faults.CallsFrom(tc.node); got["DescribeSubnets"] != tc.calls || got[""] != tc.calls {
			t.Errorf("calls from %s: %v, want %d DescribeSubnets", tc.node, got, tc.calls)
		}
		if got := r.sim.Faults.ThrottledFrom(tc.node)["DescribeSubnets"]; got != tc.throttle {
			t.Errorf("throttled from %s: %d, want %d", tc.node, got, tc.throttle)
		}
	}
	if got := r.sim.Faults.Calls()["DescribeSubnets"]; got < 4 {
		t.Errorf("account-wide DescribeSubnets = %d, want at least the 4 of a and b", got)
	}
}
