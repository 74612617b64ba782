package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

const testCluster = "test-cluster"

// env is a control-plane-only region: one VPC (10.0.0.0/16), a /24 subnet
// and a security group in us-west-2a, an m5.large node, and a Client for it.
type env struct {
	sim    *vpcsim.Sim
	vpc    string
	subnet string
	sg     string
	node   vpcsim.Node
	c      *Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s, err := vpcsim.Start(vpcsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	e := &env{sim: s}
	if e.vpc, err = s.Cloud.AddVPC("10.0.0.0/16"); err != nil {
		t.Fatal(err)
	}
	if e.subnet, err = s.Cloud.AddSubnet(e.vpc, "10.0.1.0/24", "us-west-2a", nil); err != nil {
		t.Fatal(err)
	}
	if e.sg, err = s.Cloud.AddSecurityGroup(e.vpc); err != nil {
		t.Fatal(err)
	}
	if e.node, err = s.LaunchNode(vpcsim.LaunchSpec{Name: "node1", InstanceType: "m5.large", SubnetID: e.subnet, GroupIDs: []string{e.sg}}); err != nil {
		t.Fatal(err)
	}
	e.c = e.client(t, nil)
	return e
}

// client builds a Client for the node: no client-side rate limit, three
// attempts and millisecond backoffs, so tests stay fast.
func (e *env) client(t *testing.T, mod func(*Options)) *Client {
	t.Helper()
	o := Options{EC2Endpoint: e.node.EC2Endpoint, IMDSEndpoint: e.node.IMDSEndpoint,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDSIM", "secret", ""),
		MutatingQPS: -1, DescribeQPS: -1, MaxAttempts: 3, MaxBackoff: 5 * time.Millisecond,
		DetachTimeout: 5 * time.Second, ClusterName: testCluster, Logf: t.Logf}
	if mod != nil {
		mod(&o)
	}
	c, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) input(dev, ips, prefixes int) CreateENIInput {
	return CreateENIInput{SubnetID: e.subnet, Groups: []string{e.sg}, InstanceID: e.node.InstanceID,
		DeviceIndex: dev, IPCount: ips, PrefixCount: prefixes}
}

func (e *env) createAttach(t *testing.T, c *Client, dev, ips int) ENI {
	t.Helper()
	eni, err := c.CreateAndAttachENI(context.Background(), e.input(dev, ips, 0))
	if err != nil {
		t.Fatalf("CreateAndAttachENI: %v", err)
	}
	return eni
}

func (e *env) deleteOnTermination(t *testing.T, eniID string) bool {
	t.Helper()
	for _, i := range e.sim.Cloud.Instances() {
		if i.InstanceID == e.node.InstanceID {
			return i.DeleteOnTermination[eniID]
		}
	}
	t.Fatalf("instance %s not found", e.node.InstanceID)
	return false
}

// checkENI compares an ENI the client returned with the simulator's state.
func checkENI(t *testing.T, e *env, got ENI) {
	t.Helper()
	v, ok := e.sim.Cloud.ENI(got.ID)
	if !ok {
		t.Fatalf("ENI %s does not exist in EC2", got.ID)
	}
	want := ENI{ID: v.ID, MAC: v.MAC, DeviceNumber: v.DeviceIndex, NetworkCard: v.NetworkCard, InterfaceType: v.InterfaceType,
		SubnetID: v.SubnetID, SubnetCIDR: v.SubnetCIDR,
		PrimaryIP: v.PrimaryIP, IPs: v.Secondary, Prefixes: v.Prefixes, Tags: v.Tags, Description: v.Description,
		AttachmentID: v.AttachmentID, Primary: v.DeviceIndex == 0, Status: v.Status}
	got.DeleteOnTermination = false // the tests check it against the instance's attachments
	if !reflect.DeepEqual(norm(got), norm(want)) {
		t.Errorf("ENI\n got %+v\nwant %+v", got, want)
	}
}

// norm makes empty and nil slices compare equal.
func norm(e ENI) ENI {
	// AttachNetworkInterface answers no attach time: only describes have it.
	e.AttachTime = time.Time{}
	if len(e.IPs) == 0 {
		e.IPs = nil
	}
	if len(e.Prefixes) == 0 {
		e.Prefixes = nil
	}
	if len(e.Tags) == 0 {
		e.Tags = nil
	}
	if len(e.IPv6s) == 0 {
		e.IPv6s = nil
	}
	if len(e.IPv6Prefixes) == 0 {
		e.IPv6Prefixes = nil
	}
	return e
}

// IPv6 as EC2 documents it: one /80 prefix (Nitro) from the subnet's /64,
// shown by EC2's describe and by IMDS (ipv6-prefix, subnet and VPC IPv6
// blocks).
func TestIPv6Prefix(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vpc6, aerr := e.sim.Cloud.AssociateVPCIPv6(e.vpc)
	if aerr != nil {
		t.Fatal(aerr)
	}
	sub6 := netip.PrefixFrom(vpc6.Addr(), 64)
	if aerr := e.sim.Cloud.AssociateSubnetIPv6(e.subnet, sub6); aerr != nil {
		t.Fatal(aerr)
	}
	n, err := e.c.MetadataNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	prim := n.ENIs[0]
	if len(prim.IPv6Prefixes) != 0 {
		t.Fatalf("fresh ENI has IPv6 prefixes %v", prim.IPv6Prefixes)
	}
	p, err := e.c.AssignIPv6Prefix(ctx, prim.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p.Bits() != 80 || !sub6.Contains(p.Addr()) {
		t.Errorf("assigned %v, want a /80 of %v", p, sub6)
	}
	enis, err := e.c.InstanceENIs(ctx, n.InstanceID)
	if err != nil {
		t.Fatal(err)
	}
	if len(enis) != 1 || !reflect.DeepEqual(enis[0].IPv6Prefixes, []netip.Prefix{p}) {
		t.Errorf("EC2 describe: %+v, want the primary ENI with IPv6 prefix %v", enis, p)
	}
	n, err = e.c.MetadataNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := n.ENIs[0]; !reflect.DeepEqual(got.IPv6Prefixes, []netip.Prefix{p}) || got.SubnetIPv6CIDR != sub6 {
		t.Errorf("IMDS: prefixes %v subnet %v, want %v and %v", got.IPv6Prefixes, got.SubnetIPv6CIDR, p, sub6)
	}
	if !reflect.DeepEqual(n.VPCIPv6CIDRs, []netip.Prefix{vpc6}) {
		t.Errorf("IMDS VPC IPv6 blocks %v, want %v", n.VPCIPv6CIDRs, []netip.Prefix{vpc6})
	}
}

func TestMetadataNode(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if e.c.Region() != "us-west-2" {
		t.Errorf("region from IMDS = %q", e.c.Region())
	}
	added, err := e.c.CreateAndAttachENI(ctx, e.input(1, 0, 2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.AssignIPs(ctx, added.ID, 2); err != nil {
		t.Fatal(err)
	}
	n, err := e.c.MetadataNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := e.sim.Cloud.InstanceNetwork(e.node.InstanceID)
	prim := in.ENIs[0]
	sec, _ := e.sim.Cloud.ENI(added.ID)
	tests := []struct {
		field     string
		got, want any
	}{
		{"InstanceID", n.InstanceID, e.node.InstanceID},
		{"InstanceType", n.InstanceType, "m5.large"},
		{"AZ", n.AZ, "us-west-2a"},
		{"Region", n.Region, "us-west-2"},
		{"VPCID", n.VPCID, e.vpc},
		{"SubnetID", n.SubnetID, e.subnet},
		{"PrimaryMAC", n.PrimaryMAC, prim.MAC},
		{"PrimaryIP", n.PrimaryIP, prim.PrimaryIP},
		{"VPCCIDRs", n.VPCCIDRs, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}},
		{"SecurityGroups", n.SecurityGroups, []string{e.sg}},
		{"len(ENIs)", len(n.ENIs), 2},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.field, tt.got, tt.want)
		}
	}
	if len(n.ENIs) != 2 {
		t.FailNow()
	}
	enis := []struct {
		got  ENI
		want vpcsim.ENIView
	}{{n.ENIs[0], prim}, {n.ENIs[1], sec}}
	for i, x := range enis {
		w := ENI{ID: x.want.ID, MAC: x.want.MAC, DeviceNumber: x.want.DeviceIndex, SubnetID: x.want.SubnetID,
			SubnetCIDR: x.want.SubnetCIDR, PrimaryIP: x.want.PrimaryIP, IPs: x.want.Secondary, Prefixes: x.want.Prefixes,
			Primary: i == 0, Status: "in-use"}
		if !reflect.DeepEqual(norm(x.got), norm(w)) {
			t.Errorf("IMDS ENI %d\n got %+v\nwant %+v", i, x.got, w)
		}
	}
	if len(n.ENIs[1].IPs) != 2 || len(n.ENIs[1].Prefixes) != 2 {
		t.Errorf("secondary ENI from IMDS: %d IPs, %d prefixes; want 2 and 2", len(n.ENIs[1].IPs), len(n.ENIs[1].Prefixes))
	}
}

func TestCreateAndAttachENI(t *testing.T) {
	tests := []struct {
		name          string
		ips, prefixes int
	}{
		{"bare", 0, 0},
		{"with IPs", 4, 0},
		{"with prefixes", 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			before := time.Now().Add(-time.Second)
			eni, err := e.c.CreateAndAttachENI(ctx, e.input(2, tt.ips, tt.prefixes))
			if err != nil {
				t.Fatal(err)
			}
			checkENI(t, e, eni)
			if eni.DeviceNumber != 2 || eni.Primary || eni.AttachmentID == "" || eni.Status != "in-use" || !eni.SubnetCIDR.IsValid() ||
				!eni.PrimaryIP.IsValid() || eni.MAC == "" || len(eni.IPs) != tt.ips || len(eni.Prefixes) != tt.prefixes {
				t.Errorf("returned ENI: %+v", eni)
			}
			if e.deleteOnTermination(t, eni.ID) || eni.DeleteOnTermination {
				t.Error("DeleteOnTermination set by the create: it is the caller's, off the pods' path")
			}
			if err := e.c.SetDeleteOnTermination(ctx, eni.ID, eni.AttachmentID); err != nil {
				t.Fatal(err)
			}
			if !e.deleteOnTermination(t, eni.ID) {
				t.Error("DeleteOnTermination not set")
			}
			eni.DeleteOnTermination = true // as EC2 now describes it
			if got := eni.Tags[TagInstanceID]; got != e.node.InstanceID {
				t.Errorf("tag %s = %q", TagInstanceID, got)
			}
			if got := eni.Tags[TagClusterName]; got != testCluster {
				t.Errorf("tag %s = %q", TagClusterName, got)
			}
			if eni.Tags[TagCreateToken] == "" {
				t.Errorf("no %s tag", TagCreateToken)
			}
			created, err := time.Parse(time.RFC3339, eni.Tags[TagCreatedAt])
			if err != nil || created.Before(before) || created.After(time.Now().Add(time.Second)) {
				t.Errorf("tag %s = %q (%v)", TagCreatedAt, eni.Tags[TagCreatedAt], err)
			}

			// EC2's view through InstanceENIs and DescribeENI is the same ENI.
			enis, err := e.c.InstanceENIs(ctx, e.node.InstanceID)
			if err != nil {
				t.Fatal(err)
			}
			if len(enis) != 2 || !enis[0].Primary || enis[0].DeviceNumber != 0 || enis[1].ID != eni.ID {
				t.Fatalf("InstanceENIs = %+v", enis)
			}
			for _, x := range enis {
				checkENI(t, e, x)
			}
			if !reflect.DeepEqual(norm(enis[1]), norm(eni)) {
				t.Errorf("InstanceENIs %+v\n!= created %+v", enis[1], eni)
			}
			d, err := e.c.DescribeENI(ctx, eni.ID)
			if err != nil || !reflect.DeepEqual(norm(d), norm(eni)) {
				t.Errorf("DescribeENI = %+v, %v", d, err)
			}
		})
	}
}

func TestDescribeENINotFound(t *testing.T) {
	e := newEnv(t)
	_, err := e.c.DescribeENI(context.Background(), "eni-0000000000000000f")
	if !IsNotFound(err) {
		t.Errorf("DescribeENI of a missing ENI: %v, want IsNotFound", err)
	}
}

// A lost or failed answer anywhere in create -> attach -> modify must end
// with exactly one new, attached ENI.
func TestCreateAndAttachENIRecovers(t *testing.T) {
	tests := []struct {
		name     string
		attempts int
		fault    func(f *vpcsim.Faults)
	}{
		{"lost create, SDK retry with the same ClientToken", 3, func(f *vpcsim.Faults) { f.LoseResponses("CreateNetworkInterface", 1) }},
		{"lost create, no retry: found by create-token tag", 1, func(f *vpcsim.Faults) { f.LoseResponses("CreateNetworkInterface", 1) }},
		{"lost create, then throttled: found by tag", 2, func(f *vpcsim.Faults) {
			// One mutating token: the first attempt is carried out and its
			// answer lost, the SDK's retry is throttled.
			f.SetRateLimit("mutating", 0.001, 1)
			f.LoseResponses("CreateNetworkInterface", 1)
		}},
		{"create 5xx then success", 3, func(f *vpcsim.Faults) { f.Inject("CreateNetworkInterface", "InternalError", 2) }},
		{"lost attach, SDK retry fails in use: re-described", 3, func(f *vpcsim.Faults) { f.LoseResponses("AttachNetworkInterface", 1) }},
		{"lost attach, no retry: re-described", 1, func(f *vpcsim.Faults) { f.LoseResponses("AttachNetworkInterface", 1) }},
		{"throttled attach", 3, func(f *vpcsim.Faults) { f.Inject("AttachNetworkInterface", "RequestLimitExceeded", 2) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			c := e.client(t, func(o *Options) {
				o.MaxAttempts = tt.attempts
				// Lift any EC2 rate limit once the create is recovered, so
				// the attach goes through.
				o.Logf = func(f string, a ...any) {
					t.Logf(f, a...)
					e.sim.Faults.SetRateLimit("mutating", 0, 0)
				}
			})
			tt.fault(e.sim.Faults)
			eni, err := c.CreateAndAttachENI(context.Background(), e.input(1, 3, 0))
			if err != nil {
				t.Fatalf("CreateAndAttachENI: %v", err)
			}
			if n := len(e.sim.Cloud.ENIs()); n != 2 {
				t.Errorf("%d ENIs exist, want 2 (primary + one)", n)
			}
			checkENI(t, e, eni)
			if eni.AttachmentID == "" || eni.DeviceNumber != 1 || len(eni.IPs) != 3 {
				t.Errorf("ENI %+v", eni)
			}
		})
	}
}

// An ENI made a moment ago may be missing from EC2's describe (eventual
// consistency). Freeing it must not take "not found" for "deleted": that
// left it detached, for the leak sweep. With its attachment known, it is
// detached and deleted; without, it is deleted if detached, and an
// attached one is reported, not taken for freed.
func TestFreeENINotDescribedYet(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		known    bool
		detached bool
	}{{"attachment known", true, false}, {"attachment unknown, attached", false, false}, {"attachment unknown, detached", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.sim.Cloud.SetDescribeLag(time.Hour)
			eni := e.createAttach(t, e.c, 1, 2)
			if tt.detached {
				if aerr := e.sim.Cloud.DetachNetworkInterface(eni.AttachmentID); aerr != nil {
					t.Fatal(aerr)
				}
			}
			att := eni.AttachmentID
			if !tt.known {
				att = ""
			}
			err := e.c.FreeENI(ctx, eni.ID, att)
			if !tt.known && !tt.detached {
				if err == nil {
					t.Fatal("FreeENI of an attached ENI EC2 does not describe yet, attachment unknown: no error")
				}
				if v, ok := e.sim.Cloud.ENI(eni.ID); !ok || v.Status != "in-use" {
					t.Fatalf("ENI %v (exists %v), want it left attached", v.Status, ok)
				}
				e.sim.Cloud.SetDescribeLag(0)
				err = e.c.FreeENI(ctx, eni.ID, att)
			}
			if err != nil {
				t.Fatalf("FreeENI: %v", err)
			}
			if v, ok := e.sim.Cloud.ENI(eni.ID); ok {
				t.Errorf("ENI still exists (%s)", v.Status)
			}
		})
	}
}

// A create whose every answer was lost, with EC2's describe not showing
// the new ENI yet (so its create-token tag finds nothing): one more create
// with the same ClientToken gets that same ENI back, as EC2 promises for a
// token, instead of failing and leaving it to the leak sweep.
func TestCreateENILostAndNotDescribedYet(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, func(o *Options) { o.MaxAttempts = 1 })
	e.sim.Cloud.SetDescribeLag(time.Hour)
	e.sim.Faults.LoseResponses("CreateNetworkInterface", 1)
	eni, err := c.CreateAndAttachENI(context.Background(), e.input(1, 2, 0))
	e.sim.Cloud.SetDescribeLag(0)
	if err != nil {
		t.Fatalf("CreateAndAttachENI: %v", err)
	}
	if n := len(e.sim.Cloud.ENIs()); n != 2 {
		t.Errorf("%d ENIs exist, want 2: the primary and the one the token made", n)
	}
	checkENI(t, e, eni)
	if got := e.sim.Faults.Calls()["CreateNetworkInterface"]; got != 2 {
		t.Errorf("CreateNetworkInterface called %d times, want 2 (the lost one, the same token again)", got)
	}
}

// SetDeleteOnTermination survives a lost answer (the SDK's retry sets it
// again: the call is idempotent), and a refusal leaves the ENI attached and
// working, with a classifiable error for the caller's retry.
func TestSetDeleteOnTermination(t *testing.T) {
	for _, tt := range []struct {
		name     string
		attempts int
		fault    func(f *vpcsim.Faults)
		wantCode string
	}{
		{"lost answer, SDK retry", 3, func(f *vpcsim.Faults) { f.LoseResponses("ModifyNetworkInterfaceAttribute", 1) }, ""},
		{"refused", 3, func(f *vpcsim.Faults) { f.Inject("ModifyNetworkInterfaceAttribute", "UnauthorizedOperation", 1) }, "UnauthorizedOperation"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			c := e.client(t, func(o *Options) { o.MaxAttempts = tt.attempts })
			eni := e.createAttach(t, c, 1, 2)
			tt.fault(e.sim.Faults)
			err := c.SetDeleteOnTermination(context.Background(), eni.ID, eni.AttachmentID)
			if tt.wantCode != "" {
				if ErrorCode(err) != tt.wantCode {
					t.Fatalf("error %v, want code %s", err, tt.wantCode)
				}
				if e.deleteOnTermination(t, eni.ID) {
					t.Error("DeleteOnTermination set although refused")
				}
				if got, derr := c.DescribeENI(context.Background(), eni.ID); derr != nil || got.AttachmentID != eni.AttachmentID {
					t.Errorf("the ENI after a refused modify: %+v, %v; want it still attached", got, derr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !e.deleteOnTermination(t, eni.ID) {
				t.Error("DeleteOnTermination not set")
			}
			if got, err := c.DescribeENI(context.Background(), eni.ID); err != nil || !got.DeleteOnTermination {
				t.Errorf("describe after the modify: DeleteOnTermination %v, %v", got.DeleteOnTermination, err)
			}
		})
	}
}

// A failed create or attach leaves no ENI behind and keeps the error
// classifiable.
func TestCreateAndAttachENIFailureLeavesNothing(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, e *env) CreateENIInput
		check func(err error) bool
	}{
		{"4th ENI on m5.large: AttachmentLimitExceeded", func(t *testing.T, e *env) CreateENIInput {
			e.createAttach(t, e.c, 1, 0)
			e.createAttach(t, e.c, 2, 0)
			return e.input(3, 0, 0)
		}, func(err error) bool { return IsLimitExceeded(err) && ErrorCode(err) == "AttachmentLimitExceeded" }},
		{"attach refused", func(t *testing.T, e *env) CreateENIInput {
			e.sim.Faults.Deny("AttachNetworkInterface", true)
			return e.input(1, 0, 0)
		}, func(err error) bool { return ErrorCode(err) == "UnauthorizedOperation" }},
		{"subnet full", func(t *testing.T, e *env) CreateENIInput {
			tiny, err := e.sim.Cloud.AddSubnet(e.vpc, "10.0.9.0/28", "us-west-2a", nil)
			if err != nil {
				t.Fatal(err)
			}
			in := e.input(1, 11, 0) // 11 usable addresses in a /28; 12 wanted
			in.SubnetID = tiny
			return in
		}, func(err error) bool {
			return IsSubnetFull(err) && ErrorCode(err) == "InsufficientFreeAddressesInSubnet"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			in := tt.setup(t, e)
			before := len(e.sim.Cloud.ENIs())
			_, err := e.c.CreateAndAttachENI(context.Background(), in)
			if err == nil || !tt.check(err) {
				t.Fatalf("err = %v (code %q)", err, ErrorCode(err))
			}
			if after := len(e.sim.Cloud.ENIs()); after != before {
				t.Errorf("%d ENIs before, %d after: leaked", before, after)
			}
		})
	}
}

func TestCreateAndAttachENICancelledStillCleansUp(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	// Attach is refused and the caller gives up at the same moment; the
	// clean-up must still delete the ENI.
	e.sim.Faults.Inject("AttachNetworkInterface", "AttachmentLimitExceeded", 1)
	e.sim.Faults.SetLatency("AttachNetworkInterface", 50*time.Millisecond)
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, err := e.c.CreateAndAttachENI(ctx, e.input(1, 0, 0)); err == nil {
		t.Fatal("CreateAndAttachENI succeeded")
	}
	if n := len(e.sim.Cloud.ENIs()); n != 1 {
		t.Errorf("%d ENIs, want only the primary", n)
	}
	if calls := e.sim.Faults.Calls(); calls["CreateNetworkInterface"] != 1 || calls["DeleteNetworkInterface"] != 1 {
		t.Errorf("calls %v: want one create and one delete", calls)
	}
}

func TestAssignUnassign(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	eni := e.createAttach(t, e.c, 1, 0)

	ips, err := e.c.AssignIPs(ctx, eni.ID, 3)
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := e.c.AssignPrefixes(ctx, eni.ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := e.sim.Cloud.ENI(eni.ID)
	if !slices.Equal(ips, v.Secondary) || !slices.Equal(pfx, v.Prefixes) {
		t.Fatalf("assigned %v %v; EC2 has %v %v", ips, pfx, v.Secondary, v.Prefixes)
	}
	for _, p := range pfx {
		if p.Bits() != 28 {
			t.Errorf("prefix %s is not a /28", p)
		}
	}

	steps := []struct {
		name              string
		do                func() error
		wantIPs, wantPfxs int
	}{
		{"unassign one IP", func() error { return e.c.UnassignIPs(ctx, eni.ID, ips[:1]) }, 2, 2},
		{"unassign it again (idempotent)", func() error { return e.c.UnassignIPs(ctx, eni.ID, ips[:1]) }, 2, 2},
		{"unassign nothing", func() error { return e.c.UnassignIPs(ctx, eni.ID, nil) }, 2, 2},
		{"unassign a prefix", func() error { return e.c.UnassignPrefixes(ctx, eni.ID, pfx[:1]) }, 2, 1},
		{"unassign it again (idempotent)", func() error { return e.c.UnassignPrefixes(ctx, eni.ID, pfx[:1]) }, 2, 1},
		{"unassign after a lost answer", func() error {
			e.sim.Faults.LoseResponses("UnassignPrivateIpAddresses", 1)
			return e.c.UnassignIPs(ctx, eni.ID, ips[1:2])
		}, 1, 1},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		v, _ := e.sim.Cloud.ENI(eni.ID)
		if len(v.Secondary) != s.wantIPs || len(v.Prefixes) != s.wantPfxs {
			t.Errorf("%s: ENI has %d IPs, %d prefixes; want %d, %d", s.name, len(v.Secondary), len(v.Prefixes), s.wantIPs, s.wantPfxs)
		}
	}
	// EC2 refuses a batch with an address the ENI does not have (never
	// had, or no longer has: its answer is the same, and for a release
	// both mean done); the others in the batch are still given back.
	last := v.Secondary[len(v.Secondary)-1]
	if err := e.c.UnassignIPs(ctx, eni.ID, []netip.Addr{last, netip.MustParseAddr("10.0.1.250")}); err != nil {
		t.Errorf("unassigning %s with an address the ENI does not have: %v", last, err)
	}
	if v, _ := e.sim.Cloud.ENI(eni.ID); slices.Contains(v.Secondary, last) {
		t.Errorf("%s is still on the ENI", last)
	}
	// Any other refusal is still an error.
	if err := e.c.UnassignIPs(ctx, eni.ID, []netip.Addr{v.PrimaryIP}); err == nil {
		t.Error("unassigning the primary address succeeded")
	}
}

func TestAssignLostAnswerNotRetried(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	eni := e.createAttach(t, e.c, 1, 0)
	// A blind retry would assign 2 more; the error goes to the caller, who
	// re-reads the ENI.
	e.sim.Faults.LoseResponses("AssignPrivateIpAddresses", 1)
	if _, err := e.c.AssignIPs(ctx, eni.ID, 2); err == nil {
		t.Fatal("AssignIPs with a lost answer succeeded")
	}
	d, err := e.c.DescribeENI(ctx, eni.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.IPs) != 2 {
		t.Errorf("ENI has %d secondary IPs after one lost call for 2, want 2", len(d.IPs))
	}
	if got := e.c.Stats()["AssignPrivateIpAddresses"]; got != 1 {
		t.Errorf("AssignPrivateIpAddresses sent %d times, want 1", got)
	}
}

func TestAddressErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tiny, err := e.sim.Cloud.AddSubnet(e.vpc, "10.0.9.0/28", "us-west-2a", nil)
	if err != nil {
		t.Fatal(err)
	}
	in := e.input(1, 0, 0)
	in.SubnetID = tiny
	small, err := e.c.CreateAndAttachENI(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	big := e.createAttach(t, e.c, 2, 0)
	// An unattached ENI may hold up to 50 addresses: the subnet runs out first.
	out, err := e.c.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(tiny)})
	if err != nil {
		t.Fatal(err)
	}
	loose := *out.NetworkInterface.NetworkInterfaceId
	tests := []struct {
		name  string
		do    func() error
		check func(error) bool
		code  string
	}{
		{"prefix in a /28 subnet", func() error { _, err := e.c.AssignPrefixes(ctx, small.ID, 1); return err }, IsSubnetFull, "InsufficientCidrBlocks"},
		{"more IPs than the /28 has", func() error { _, err := e.c.AssignIPs(ctx, loose, 20); return err }, IsSubnetFull, "InsufficientFreeAddressesInSubnet"},
		{"more IPs than an m5.large ENI holds", func() error { _, err := e.c.AssignIPs(ctx, big.ID, 10); return err }, IsLimitExceeded, "PrivateIpAddressLimitExceeded"},
		{"unknown ENI", func() error { _, err := e.c.AssignIPs(ctx, "eni-0000000000000000f", 1); return err }, IsNotFound, "InvalidNetworkInterfaceID.NotFound"},
	}
	for _, tt := range tests {
		err := tt.do()
		if !tt.check(err) || ErrorCode(err) != tt.code {
			t.Errorf("%s: %v, want code %s", tt.name, err, tt.code)
		}
	}
}

func TestThrottling(t *testing.T) {
	tests := []struct {
		name         string
		inject       int
		wantErr      bool
		wantAttempts int64
	}{
		{"two throttles then success", 2, false, 3},
		{"retries exhausted", 3, true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.sim.Faults.Inject("DescribeSubnets", "RequestLimitExceeded", tt.inject)
			subs, err := e.c.Subnets(context.Background(), e.vpc, "us-west-2a")
			if tt.wantErr {
				if !IsThrottle(err) || ErrorCode(err) != "RequestLimitExceeded" {
					t.Fatalf("err = %v, want a throttle", err)
				}
			} else if err != nil || len(subs) != 1 {
				t.Fatalf("Subnets = %v, %v", subs, err)
			}
			st := e.c.Stats()
			if st["DescribeSubnets"] != tt.wantAttempts || st["throttles"] != int64(tt.inject) {
				t.Errorf("stats %v: want %d attempts, %d throttles", st, tt.wantAttempts, tt.inject)
			}
			if wantErrs := map[bool]int64{false: 0, true: 1}[tt.wantErr]; st["errors"] != wantErrs {
				t.Errorf("errors = %d, want %d", st["errors"], wantErrs)
			}
		})
	}
}

func TestClientSideRateLimit(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, func(o *Options) { o.DescribeQPS, o.DescribeBurst, o.MutatingQPS = 20, 1, 0 })
	start := time.Now()
	for range 4 {
		if _, err := c.Subnets(context.Background(), e.vpc, "us-west-2a"); err != nil {
			t.Fatal(err)
		}
	}
	// Burst 1 at 20/s: three waits of ~50ms.
	if el := time.Since(start); el < 120*time.Millisecond {
		t.Errorf("4 describe calls at 20/s with burst 1 took %v", el)
	}
	if st := c.Stats(); st["ratelimited"] != 3 || st["DescribeSubnets"] != 4 {
		t.Errorf("stats %v", st)
	}
	// The mutating bucket is separate and was never touched.
	if c.mutating.tokens != float64(DefaultMutatingBurst) {
		t.Errorf("mutating bucket drained: %v", c.mutating.tokens)
	}
}

func TestBucket(t *testing.T) {
	now := time.Unix(0, 0)
	b := newBucket(10, 2)
	b.now = func() time.Time { return now }
	waits := []time.Duration{b.reserve(), b.reserve(), b.reserve(), b.reserve()}
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond}
	if !slices.Equal(waits, want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
	now = now.Add(time.Second) // refills to burst, not beyond
	if d := b.reserve(); d != 0 {
		t.Errorf("after refill: wait %v", d)
	}
	if newBucket(-1, 1) != nil {
		t.Error("negative rate should mean no bucket")
	}
	// A cancelled wait gives its token back.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b2 := newBucket(1, 1)
	b2.reserve()
	if _, err := b2.wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("wait on a cancelled ctx: %v", err)
	}
	if b2.tokens > 0.001 || b2.tokens < -0.001 {
		t.Errorf("tokens after a cancelled wait = %v, want 0", b2.tokens)
	}
}

func TestSubnets(t *testing.T) {
	e := newEnv(t)
	tagged, err := e.sim.Cloud.AddSubnet(e.vpc, "10.0.2.0/24", "us-west-2a", map[string]string{"kubernetes.io/role/cni": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.Cloud.AddSubnet(e.vpc, "10.0.3.0/24", "us-west-2b", nil); err != nil {
		t.Fatal(err)
	}
	other, _ := e.sim.Cloud.AddVPC("10.1.0.0/16")
	if _, err := e.sim.Cloud.AddSubnet(other, "10.1.1.0/24", "us-west-2a", nil); err != nil {
		t.Fatal(err)
	}
	subs, err := e.c.Subnets(context.Background(), e.vpc, "us-west-2a")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Subnet{}
	for _, s := range subs {
		got[s.ID] = s
	}
	want := map[string]Subnet{
		e.subnet: {ID: e.subnet, VPCID: e.vpc, CIDR: netip.MustParsePrefix("10.0.1.0/24"), AZ: "us-west-2a", Available: 251 - 1, Tags: map[string]string{}},
		tagged:   {ID: tagged, VPCID: e.vpc, CIDR: netip.MustParsePrefix("10.0.2.0/24"), AZ: "us-west-2a", Available: 251, Tags: map[string]string{"kubernetes.io/role/cni": "1"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Subnets\n got %+v\nwant %+v", got, want)
	}
	// One subnet by ID, whatever its VPC; an unknown ID is NotFound.
	if s, err := e.c.Subnet(context.Background(), tagged); err != nil || !reflect.DeepEqual(s, want[tagged]) {
		t.Errorf("Subnet(%s) = %+v, %v; want %+v", tagged, s, err, want[tagged])
	}
	if _, err := e.c.Subnet(context.Background(), "subnet-0123456789abcdef0"); !IsNotFound(err) {
		t.Errorf("Subnet of an unknown ID: %v, want NotFound", err)
	}
}

func TestFreeENI(t *testing.T) {
	tests := []struct {
		name string
		free func(e *env, eni ENI) error
	}{
		{"with attachment ID", func(e *env, eni ENI) error { return e.c.FreeENI(context.Background(), eni.ID, eni.AttachmentID) }},
		{"attachment looked up", func(e *env, eni ENI) error { return e.c.FreeENI(context.Background(), eni.ID, "") }},
		{"already detached", func(e *env, eni ENI) error {
			if aerr := e.sim.Cloud.DetachNetworkInterface(eni.AttachmentID); aerr != nil {
				return aerr
			}
			return e.c.FreeENI(context.Background(), eni.ID, eni.AttachmentID)
		}},
		{"lost detach and delete answers", func(e *env, eni ENI) error {
			e.sim.Faults.LoseResponses("DetachNetworkInterface", 1)
			e.sim.Faults.LoseResponses("DeleteNetworkInterface", 1)
			return e.c.FreeENI(context.Background(), eni.ID, eni.AttachmentID)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			eni := e.createAttach(t, e.c, 1, 2)
			if err := tt.free(e, eni); err != nil {
				t.Fatalf("FreeENI: %v", err)
			}
			if _, ok := e.sim.Cloud.ENI(eni.ID); ok {
				t.Error("ENI still exists")
			}
			// Freeing it again is a no-op.
			if err := e.c.FreeENI(context.Background(), eni.ID, eni.AttachmentID); err != nil {
				t.Errorf("second FreeENI: %v", err)
			}
		})
	}
	e := newEnv(t)
	in, _ := e.sim.Cloud.InstanceNetwork(e.node.InstanceID)
	if err := e.c.FreeENI(context.Background(), in.ENIs[0].ID, ""); err == nil {
		t.Error("freeing the primary ENI succeeded")
	}
}

func TestSweepLeakedENIs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	other := e.client(t, func(o *Options) { o.ClusterName = "other-cluster" })
	noCluster := e.client(t, func(o *Options) { o.ClusterName = "" })

	// leak creates an ENI with c, attached at device 1, then detaches it
	// behind the daemon's back, as a node dying between calls would.
	leak := func(c *Client) string {
		eni := e.createAttach(t, c, 1, 1)
		if aerr := e.sim.Cloud.DetachNetworkInterface(eni.AttachmentID); aerr != nil {
			t.Fatal(aerr)
		}
		return eni.ID
	}
	raw := func(tags map[string]string) string {
		in := &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(e.subnet)}
		if len(tags) > 0 {
			ts := types.TagSpecification{ResourceType: types.ResourceTypeNetworkInterface}
			for k, v := range tags {
				ts.Tags = append(ts.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
			}
			in.TagSpecifications = []types.TagSpecification{ts}
		}
		out, err := e.c.ec2.CreateNetworkInterface(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		return *out.NetworkInterface.NetworkInterfaceId
	}

	leaked := leak(e.c)
	noCreatedAt := leak(e.c)
	if _, err := e.c.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{noCreatedAt},
		Tags: []types.Tag{{Key: aws.String(TagCreatedAt)}}}); err != nil {
		t.Fatal(err)
	}
	survivors := map[string]string{
		leak(other):     "other cluster",
		leak(noCluster): "no cluster tag",
		raw(nil):        "untagged",
		raw(map[string]string{TagInstanceID: e.node.InstanceID, TagClusterName: testCluster,
			TagCreatedAt: "2020-01-01T00:00:00Z"}): "AWS VPC CNI's (no create token)",
		e.createAttach(t, e.c, 2, 0).ID: "attached",
	}

	// Young ENIs survive minAge; the one without a creation time gets one.
	deleted, err := e.c.SweepLeakedENIs(ctx, e.vpc, time.Hour)
	if err != nil || len(deleted) != 0 {
		t.Fatalf("sweep with minAge 1h: %v, %v", deleted, err)
	}
	if v, _ := e.sim.Cloud.ENI(noCreatedAt); v.Tags[TagCreatedAt] == "" {
		t.Error("ENI without a creation time was not tagged")
	}
	// Another VPC's sweep touches nothing here.
	if deleted, err := e.c.SweepLeakedENIs(ctx, "vpc-0000000000000000", 0); err != nil || len(deleted) != 0 {
		t.Fatalf("sweep of another VPC: %v, %v", deleted, err)
	}

	deleted, err = e.c.SweepLeakedENIs(ctx, e.vpc, 0)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(deleted)
	want := []string{leaked, noCreatedAt}
	slices.Sort(want)
	if !slices.Equal(deleted, want) {
		t.Errorf("deleted %v, want %v", deleted, want)
	}
	for id, what := range survivors {
		if _, ok := e.sim.Cloud.ENI(id); !ok {
			t.Errorf("%s ENI %s was deleted", what, id)
		}
	}
	// The cluster-less daemon sweeps only its own cluster-less ENI.
	deleted, err = noCluster.SweepLeakedENIs(ctx, e.vpc, 0)
	if err != nil || len(deleted) != 1 || survivors[deleted[0]] != "no cluster tag" {
		t.Errorf("cluster-less sweep: %v, %v", deleted, err)
	}
}

// A daemon killed between creating an ENI and attaching it (or between
// detaching and deleting one) leaves it available; its successor on the
// node deletes it at once, whatever its age, and nothing else: not another
// node's, not one created after the successor started.
func TestSweepNodeENIs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	leak := func() string {
		eni := e.createAttach(t, e.c, 1, 1)
		if aerr := e.sim.Cloud.DetachNetworkInterface(eni.AttachmentID); aerr != nil {
			t.Fatal(aerr)
		}
		return eni.ID
	}
	leaked := leak()
	started := time.Now().Add(2 * time.Second) // after leaked was created, in whole seconds
	young := leak()
	if aerr := e.sim.Cloud.CreateTags([]string{young}, map[string]string{TagCreatedAt: started.Add(time.Minute).UTC().Format(time.RFC3339)}); aerr != nil {
		t.Fatal(aerr)
	}
	otherNode := leak()
	if aerr := e.sim.Cloud.CreateTags([]string{otherNode}, map[string]string{TagInstanceID: "i-0123456789abcdef0"}); aerr != nil {
		t.Fatal(aerr)
	}

	deleted, err := e.c.SweepNodeENIs(ctx, e.vpc, e.node.InstanceID, started)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deleted, []string{leaked}) {
		t.Errorf("deleted %v, want only %s", deleted, leaked)
	}
	for id, what := range map[string]string{young: "created after the start", otherNode: "another node's"} {
		if _, ok := e.sim.Cloud.ENI(id); !ok {
			t.Errorf("%s ENI %s was deleted", what, id)
		}
	}
}

func TestInstanceLimits(t *testing.T) {
	// The rows of internal/instancelimits/instance-limits.tsv, read as data:
	//	m5.large	3	10	nitro	false	0	0:3	true	9	...
	//	t2.micro	2	2	xen	false	0	0:2	false	0	...
	m5large := instancelimits.Limits{InstanceType: "m5.large", MaxENIs: 3, IPv4PerENI: 10, Hypervisor: "nitro",
		NetworkCards: map[int]int{0: 3}, TrunkingCompatible: true, BranchInterfaces: 9}
	t2micro := instancelimits.Limits{InstanceType: "t2.micro", MaxENIs: 2, IPv4PerENI: 2, Hypervisor: "xen",
		NetworkCards: map[int]int{0: 2}}
	tests := []struct {
		name     string
		typ      string
		deny     bool
		wantEC2  int64 // DescribeInstanceTypes calls
		wantErr  bool
		wantPD   bool
		wantENIs int
		want     instancelimits.Limits
	}{
		// Known types come from the table: no EC2 call on a daemon start.
		{"m5.large from the table", "m5.large", false, 0, false, true, 3, m5large},
		{"t2.micro from the table (Xen)", "t2.micro", false, 0, false, false, 2, t2micro},
		{"EC2 denied: table", "m5.large", true, 0, false, true, 3, m5large},
		{"unknown to both", "m5.huge", false, 1, true, false, 0, instancelimits.Limits{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.sim.Faults.Deny("DescribeInstanceTypes", tt.deny)
			l, err := e.c.InstanceLimits(context.Background(), tt.typ)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("limits of %s: %+v", tt.typ, l)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(l, tt.want) {
				t.Errorf("limits %+v, want the table row %+v", l, tt.want)
			}
			if l.MaxENIs != tt.wantENIs || l.SupportsPrefixDelegation() != tt.wantPD {
				t.Errorf("limits %+v", l)
			}
			if got := e.c.Stats()["DescribeInstanceTypes"]; got != tt.wantEC2 {
				t.Errorf("DescribeInstanceTypes called %d times, want %d", got, tt.wantEC2)
			}
			// Cached after EC2 answered.
			if _, err := e.c.InstanceLimits(context.Background(), tt.typ); err != nil {
				t.Fatal(err)
			}
			if !tt.deny && e.c.Stats()["DescribeInstanceTypes"] != tt.wantEC2 {
				t.Error("EC2's answer was not cached")
			}
		})
	}
}

// A type the table lacks is read from DescribeInstanceTypes, where EC2
// gives the instance's total in MaximumNetworkInterfaces and each card's in
// NetworkCards; the daemon attaches on the default card only, so its ENI
// limit is that card's, as the AWS VPC CNI's limits generator takes it
// ("only one network card is supported, so use the MaximumNetworkInterfaces
// from the default card"). EC2's User Guide: p4d.24xlarge has 4 network
// cards of 15 network interfaces and 50 IPv4 addresses per interface;
// trn1.32xlarge 8 cards of 5, 50 addresses.
func TestInstanceLimitsFromEC2MultiCard(t *testing.T) {
	tests := []struct {
		typ  string
		want instancelimits.Limits
	}{
		{"p4d.24xlarge", instancelimits.Limits{InstanceType: "p4d.24xlarge", MaxENIs: 15, IPv4PerENI: 50, Hypervisor: "nitro",
			NetworkCards: map[int]int{0: 15, 1: 15, 2: 15, 3: 15}}},
		{"trn1.32xlarge", instancelimits.Limits{InstanceType: "trn1.32xlarge", MaxENIs: 5, IPv4PerENI: 50, Hypervisor: "nitro",
			NetworkCards: map[int]int{0: 5, 1: 5, 2: 5, 3: 5, 4: 5, 5: 5, 6: 5, 7: 5}}},
	}
	e := newEnv(t)
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			l, err := e.c.describeInstanceType(context.Background(), tt.typ)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(l, tt.want) {
				t.Errorf("limits %+v, want %+v", l, tt.want)
			}
		})
	}
}

func TestErrorClassifiers(t *testing.T) {
	tests := []struct {
		code                                     string
		throttle, full, notFound, limit, applied bool
	}{
		{"RequestLimitExceeded", true, false, false, false, true},
		{"Throttling", true, false, false, false, true},
		{"InsufficientFreeAddressesInSubnet", false, true, false, false, false},
		{"InsufficientCidrBlocks", false, true, false, false, false},
		{"InvalidNetworkInterfaceID.NotFound", false, false, true, false, false},
		{"InvalidAttachmentID.NotFound", false, false, true, false, false},
		{"AttachmentLimitExceeded", false, false, false, true, false},
		{"PrivateIpAddressLimitExceeded", false, false, false, true, false},
		{"InternalError", false, false, false, false, true},
		{"UnauthorizedOperation", false, false, false, false, false},
	}
	for _, tt := range tests {
		err := fmt.Errorf("context: %w", &smithy.GenericAPIError{Code: tt.code, Message: "m"})
		got := []bool{IsThrottle(err), IsSubnetFull(err), IsNotFound(err), IsLimitExceeded(err), maybeApplied(err)}
		want := []bool{tt.throttle, tt.full, tt.notFound, tt.limit, tt.applied}
		if ErrorCode(err) != tt.code || !slices.Equal(got, want) {
			t.Errorf("%s: code %q, classes %v, want %v", tt.code, ErrorCode(err), got, want)
		}
	}
	plain := errors.New("connection reset")
	if ErrorCode(plain) != "" || IsThrottle(plain) || !maybeApplied(plain) || maybeApplied(nil) {
		t.Error("plain errors misclassified")
	}
}

// TestObserveCall: the hook sees every call once, retries included in its
// duration, with the final error.
func TestObserveCall(t *testing.T) {
	e := newEnv(t)
	type obs struct {
		action string
		err    error
	}
	var mu sync.Mutex
	var got []obs
	c := e.client(t, func(o *Options) {
		o.ObserveCall = func(action string, took time.Duration, err error) {
			if took <= 0 {
				t.Errorf("%s took %v", action, took)
			}
			mu.Lock()
			got = append(got, obs{action, err})
			mu.Unlock()
		}
	})
	e.sim.Faults.Inject("DescribeSubnets", "RequestLimitExceeded", 3)
	if _, err := c.Subnets(context.Background(), e.vpc, "us-west-2a"); !IsThrottle(err) {
		t.Fatalf("Subnets: %v, want a throttle", err)
	}
	if _, err := c.Subnets(context.Background(), e.vpc, "us-west-2a"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].action != "DescribeSubnets" || ErrorCode(got[0].err) != "RequestLimitExceeded" ||
		got[1].action != "DescribeSubnets" || got[1].err != nil {
		t.Errorf("observed %+v, want a failed then a good DescribeSubnets", got)
	}
	if st := c.Stats(); st["DescribeSubnets"] != 4 {
		t.Errorf("attempts %d, want 4 (3 throttled + 1)", st["DescribeSubnets"])
	}
}
