package vpcsim

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EC2's idempotency: "If you retry a request that completed successfully
// using the same client token and the same parameters, the retry succeeds
// without performing any further actions. If you retry a successful
// request using the same client token, but one or more of the parameters
// are different, ... the retry fails with an IdempotentParameterMismatch
// error." A response lost after the association was made is retried by the
// SDK with the token it filled in: one association results.
func TestTrunkClientToken(t *testing.T) {
	r := newRegion(t, "10.0.25.0/24", Options{})
	ctx := context.Background()
	trunk := r.attachTrunk(t, r.node.InstanceID)
	b1, b2 := r.createENI(t, r.subnet, "branch"), r.createENI(t, r.subnet, "branch")
	assoc := func(branch string, vlan int32, token string) (string, error) {
		out, err := r.ec2.AssociateTrunkInterface(ctx, &ec2.AssociateTrunkInterfaceInput{BranchInterfaceId: aws.String(branch),
			TrunkInterfaceId: aws.String(trunk), VlanId: aws.Int32(vlan), ClientToken: aws.String(token)})
		if err != nil {
			return "", err
		}
		if aws.ToString(out.ClientToken) != token {
			t.Errorf("clientToken %q in the answer, want %q", aws.ToString(out.ClientToken), token)
		}
		return aws.ToString(out.InterfaceAssociation.AssociationId), nil
	}
	dis := func(id, token string) error {
		_, err := r.ec2.DisassociateTrunkInterface(ctx, &ec2.DisassociateTrunkInterfaceInput{AssociationId: aws.String(id), ClientToken: aws.String(token)})
		return err
	}
	first, err := assoc(b1, 5, "tok-a")
	if err != nil {
		t.Fatal(err)
	}
	again, err := assoc(b1, 5, "tok-a")
	if err != nil || again != first {
		t.Errorf("the same request again: %s, %v; want %s", again, err, first)
	}
	if _, err := assoc(b1, 6, "tok-a"); apiCode(err) != "IdempotentParameterMismatch" {
		t.Errorf("the token with another VLAN ID: %v, want IdempotentParameterMismatch", err)
	}
	if _, err := assoc(b2, 5, "tok-a"); apiCode(err) != "IdempotentParameterMismatch" {
		t.Errorf("the token with another branch: %v, want IdempotentParameterMismatch", err)
	}
	if n := len(r.sim.Cloud.TrunkAssociations()); n != 1 {
		t.Fatalf("%d associations, want 1", n)
	}
	second, err := assoc(b2, 6, "tok-b")
	if err != nil {
		t.Fatal(err)
	}
	if err := dis(first, "tok-d"); err != nil {
		t.Fatal(err)
	}
	if err := dis(first, "tok-d"); err != nil {
		t.Errorf("the same disassociation again (the association is gone): %v, want success", err)
	}
	if err := dis(second, "tok-d"); apiCode(err) != "IdempotentParameterMismatch" {
		t.Errorf("the token with another association: %v, want IdempotentParameterMismatch", err)
	}
	// The first token's answer stands even after its association is gone.
	if again, err := assoc(b1, 5, "tok-a"); err != nil || again != first {
		t.Errorf("the first request once more: %s, %v; want %s", again, err, first)
	}
	if n := len(r.sim.Cloud.TrunkAssociations()); n != 1 {
		t.Errorf("%d associations, want 1 (the second)", n)
	}

	// Lost responses, retried by the SDK (3 attempts) with its own token.
	r.sim.Faults.LoseResponses("AssociateTrunkInterface", 1)
	out, err := r.associate(b1, trunk, aws.Int32(7), nil)
	if err != nil {
		t.Fatalf("associate after a lost response: %v", err)
	}
	r.sim.Faults.LoseResponses("DisassociateTrunkInterface", 1)
	if _, err := r.ec2.DisassociateTrunkInterface(ctx, &ec2.DisassociateTrunkInterfaceInput{AssociationId: out.InterfaceAssociation.AssociationId}); err != nil {
		t.Errorf("disassociate after a lost response: %v", err)
	}
	if got := r.sim.Cloud.TrunkAssociations(); len(got) != 1 || got[0].ID != second {
		t.Errorf("associations %+v, want only %s", got, second)
	}
}

// DescribeTrunkInterfaceAssociations' filters (the API reference's
// gre-key and interface-protocol "VLAN and GRE", and
// trunk-interface-association.trunk-interface-id, which AWS's VPC resource
// controller gives), AssociationId.N, and pagination with MaxResults
// "Minimum value of 5. Maximum value of 255."
func TestDescribeTrunkInterfaceAssociations(t *testing.T) {
	r := newRegion(t, "10.0.26.0/24", Options{})
	ctx := context.Background()
	big, err := r.sim.LaunchNode(LaunchSpec{Name: "big", InstanceType: "m5.24xlarge", SubnetID: r.subnet})
	if err != nil {
		t.Fatal(err)
	}
	t1, t2 := r.attachTrunk(t, r.node.InstanceID), r.attachTrunk(t, big.InstanceID)
	// t1: VLANs 1-4 and GRE keys 100, 200; t2: VLANs 1-6.
	var ids []string
	add := func(trunk string, vlan, gre *int32) {
		out, err := r.associate(r.createENI(t, r.subnet, "branch"), trunk, vlan, gre)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, aws.ToString(out.InterfaceAssociation.AssociationId))
	}
	for v := int32(1); v <= 4; v++ {
		add(t1, aws.Int32(v), nil)
	}
	add(t1, nil, aws.Int32(100))
	add(t1, nil, aws.Int32(200))
	for v := int32(1); v <= 6; v++ {
		add(t2, aws.Int32(v), nil)
	}
	filter := func(name string, values ...string) types.Filter {
		return types.Filter{Name: aws.String(name), Values: values}
	}
	tests := []struct {
		name    string
		in      ec2.DescribeTrunkInterfaceAssociationsInput
		want    int
		code    string
		checkID string // every answer's trunk
	}{
		{"all", ec2.DescribeTrunkInterfaceAssociationsInput{}, 12, "", ""},
		{"by ID", ec2.DescribeTrunkInterfaceAssociationsInput{AssociationIds: ids[:2]}, 2, "", t1},
		{"one trunk's", ec2.DescribeTrunkInterfaceAssociationsInput{Filters: []types.Filter{
			filter("trunk-interface-association.trunk-interface-id", t2)}}, 6, "", t2},
		{"GRE", ec2.DescribeTrunkInterfaceAssociationsInput{Filters: []types.Filter{filter("interface-protocol", "GRE")}}, 2, "", t1},
		{"VLAN on t1", ec2.DescribeTrunkInterfaceAssociationsInput{Filters: []types.Filter{filter("interface-protocol", "VLAN"),
			filter("trunk-interface-association.trunk-interface-id", t1)}}, 4, "", t1},
		{"gre-key", ec2.DescribeTrunkInterfaceAssociationsInput{Filters: []types.Filter{filter("gre-key", "200")}}, 1, "", t1},
		{"gre-key, a wildcard", ec2.DescribeTrunkInterfaceAssociationsInput{Filters: []types.Filter{filter("gre-key", "?00")}}, 2, "", t1},
		{"IDs and a filter", ec2.DescribeTrunkInterfaceAssociationsInput{AssociationIds: ids, Filters: []types.Filter{
			filter("interface-protocol", "GRE")}}, 2, "", t1},
		{"unknown filter", ec2.DescribeTrunkInterfaceAssociationsInput{Filters: []types.Filter{filter("vlan", "1")}}, 0, "InvalidParameterValue", ""},
		{"unknown ID", ec2.DescribeTrunkInterfaceAssociationsInput{AssociationIds: []string{"trunk-assoc-0123456789abcdef0"}}, 0,
			"InvalidAssociationID.NotFound", ""},
		{"MaxResults 4", ec2.DescribeTrunkInterfaceAssociationsInput{MaxResults: aws.Int32(4)}, 0, "InvalidParameterValue", ""},
		{"MaxResults 256", ec2.DescribeTrunkInterfaceAssociationsInput{MaxResults: aws.Int32(256)}, 0, "InvalidParameterValue", ""},
		{"MaxResults 255", ec2.DescribeTrunkInterfaceAssociationsInput{MaxResults: aws.Int32(255)}, 12, "", ""},
		{"MaxResults 5: a page", ec2.DescribeTrunkInterfaceAssociationsInput{MaxResults: aws.Int32(5)}, 5, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := r.ec2.DescribeTrunkInterfaceAssociations(ctx, &tt.in)
			if apiCode(err) != tt.code {
				t.Fatalf("%v, want %q", err, tt.code)
			}
			if err != nil {
				return
			}
			if len(out.InterfaceAssociations) != tt.want {
				t.Errorf("%d associations, want %d", len(out.InterfaceAssociations), tt.want)
			}
			for _, a := range out.InterfaceAssociations {
				if tt.checkID != "" && aws.ToString(a.TrunkInterfaceId) != tt.checkID {
					t.Errorf("%s is of trunk %s, want %s", aws.ToString(a.AssociationId), aws.ToString(a.TrunkInterfaceId), tt.checkID)
				}
			}
		})
	}
	// The SDK's paginator sees every association once.
	p := ec2.NewDescribeTrunkInterfaceAssociationsPaginator(r.ec2, &ec2.DescribeTrunkInterfaceAssociationsInput{MaxResults: aws.Int32(5)})
	seen := map[string]bool{}
	pages := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, a := range page.InterfaceAssociations {
			seen[aws.ToString(a.AssociationId)] = true
		}
	}
	if len(seen) != 12 || pages != 3 {
		t.Errorf("paginator: %d associations in %d pages, want 12 in 3", len(seen), pages)
	}
}

// The trunk actions are counted per node and throttled in the classes
// EC2's API reference puts them in: "Describe actions ... have the highest
// request limit", actions that "create or modify resources ... a lower
// request limit".
func TestTrunkActionsThrottledAndCounted(t *testing.T) {
	for _, tt := range []struct {
		action   string
		mutating bool
	}{
		{"AssociateTrunkInterface", true},
		{"DisassociateTrunkInterface", true},
		{"DescribeTrunkInterfaceAssociations", false},
	} {
		if IsMutating(tt.action) != tt.mutating {
			t.Errorf("IsMutating(%s) = %v, want %v", tt.action, !tt.mutating, tt.mutating)
		}
	}
	r := newRegion(t, "10.0.28.0/24", Options{})
	ctx := context.Background()
	trunk := r.attachTrunk(t, r.node.InstanceID)
	branch := r.createENI(t, r.subnet, "branch")
	srv := httptest.NewServer(r.sim.ec2.forNode("node1"))
	defer srv.Close()
	c := sdkClient(srv.URL, 1)
	// A mutating bucket of 1, never refilled: the association passes, the
	// disassociation is throttled; describes are not in that bucket.
	r.sim.Faults.SetRateLimit("mutating", 0.0001, 1)
	out, err := c.AssociateTrunkInterface(ctx, &ec2.AssociateTrunkInterfaceInput{BranchInterfaceId: aws.String(branch),
		TrunkInterfaceId: aws.String(trunk), VlanId: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DisassociateTrunkInterface(ctx, &ec2.DisassociateTrunkInterfaceInput{AssociationId: out.InterfaceAssociation.AssociationId}); apiCode(err) != "RequestLimitExceeded" {
		t.Errorf("second mutating call of a bucket of 1: %v, want RequestLimitExceeded", err)
	}
	if _, err := c.DescribeTrunkInterfaceAssociations(ctx, &ec2.DescribeTrunkInterfaceAssociationsInput{}); err != nil {
		t.Errorf("a describe with the mutating bucket empty: %v", err)
	}
	r.sim.Faults.SetRateLimit("mutating", 0, 0)
	r.sim.Faults.SetRateLimit("describe", 0.0001, 0)
	if _, err := c.DescribeTrunkInterfaceAssociations(ctx, &ec2.DescribeTrunkInterfaceAssociationsInput{}); apiCode(err) != "RequestLimitExceeded" {
		t.Errorf("a describe with an empty describe bucket: %v, want RequestLimitExceeded", err)
	}
	calls, throttled := r.sim.Faults.CallsFrom("node1"), r.sim.Faults.ThrottledFrom("node1")
	for _, want := range []struct {
		action           string
		calls, throttles int64
	}{
		{"AssociateTrunkInterface", 1, 0},
		{"DisassociateTrunkInterface", 1, 1},
		{"DescribeTrunkInterfaceAssociations", 2, 1},
	} {
		if calls[want.action] != want.calls || throttled[want.action] != want.throttles {
			t.Errorf("%s from node1: %d calls, %d throttled; want %d, %d", want.action, calls[want.action], throttled[want.action],
				want.calls, want.throttles)
		}
	}
}
