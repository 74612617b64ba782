package ipamd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/daemon/podeni"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

// With ENABLE_POD_ENI on a trunking-compatible type the pool never takes
// the last attachment slot of the default card, which the controller's
// trunk ENI needs (an m5.large attaches 3 ENIs: the pool stops at 2); on a
// type without trunking, or with the setting off, it uses them all.
func TestPodENIKeepsTheTrunkSlot(t *testing.T) {
	for _, tc := range []struct {
		name, typ string
		podENI    bool
		wantENIs  int
		wantRoom  bool
	}{
		{"m5.large, pod ENI on", "m5.large", true, 2, true},
		{"m5.large, pod ENI off", "m5.large", false, 3, false},
		// t2.medium: 3 ENIs, no trunking (instance-limits.tsv).
		{"t2.medium, pod ENI on", "t2.medium", true, 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"WARM_IP_TARGET": "40", "MY_NODE_NAME": "n1"}
			if tc.podENI {
				env["ENABLE_POD_ENI"] = "true"
			}
			f := newFixtureOfType(t, tc.typ, env)
			d := f.start()
			settle(t, d)
			if n := len(d.Introspect().Enis); n != tc.wantENIs {
				t.Fatalf("the pool has %d ENIs, want %d", n, tc.wantENIs)
			}
			if room, why := d.TrunkRoom(); room != tc.wantRoom {
				t.Errorf("room for a trunk: %v (%s), want %v", room, why, tc.wantRoom)
			}
		})
	}
}

// Once the controller attached the trunk (at the slot left free), the
// daemon leaves it alone and reports it; the pool still stops short of it.
func TestPodENITrunkLeftAlone(t *testing.T) {
	f := newFixtureOfType(t, "m5.large", map[string]string{"WARM_IP_TARGET": "40", "ENABLE_POD_ENI": "true", "MY_NODE_NAME": "n1"})
	d := f.start()
	settle(t, d)
	trunk := newOtherTool(t, f).attach("trunk", 0, 2, nil)
	before := eniFingerprint(t, f, trunk)
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	settle(t, d)
	if room, why := d.TrunkRoom(); !room {
		t.Errorf("with the trunk attached: no room (%s)", why)
	}
	d.mu.Lock()
	tr := d.trunkLocked()
	d.mu.Unlock()
	if tr == nil || tr.id != trunk || tr.dev != 2 || tr.mac == "" {
		t.Fatalf("the daemon's trunk: %+v, want %s at device 2 with its MAC", tr, trunk)
	}
	if after := eniFingerprint(t, f, trunk); after != before {
		t.Errorf("the trunk changed: %s, was %s", after, before)
	}
	if n := len(d.Introspect().Enis); n != 2 {
		t.Errorf("the pool has %d ENIs, want 2 (the third slot is the trunk's)", n)
	}
}

// fakePodENI is the API server's view of a few pods.
type fakePodENI map[string]struct {
	b         podeni.Branch
	requested bool
	err       error
}

func (f fakePodENI) Branch(_ context.Context, ns, name string) (podeni.Branch, bool, error) {
	p, ok := f[ns+"/"+name]
	if !ok {
		return podeni.Branch{}, false, nil
	}
	return p.b, p.requested, p.err
}

func (f fakePodENI) NodeBranches(context.Context) ([]podeni.PodBranchInfo, error) { return nil, nil }

// ADD for a pod with a branch ENI answers the branch and its trunk, and
// takes no pool address; a pod without one gets a pool address; a pod
// whose branch is not there yet, or a node without its trunk, is told to
// try again; an API server that does not answer is unavailable.
func TestAddAnswersTheBranch(t *testing.T) {
	branch := podeni.Branch{ENIID: "eni-0b00000000000001", MAC: "02:00:00:00:0b:01", IPv4: "10.0.0.77", VLANID: 3,
		SubnetCIDR: "10.0.0.0/24", AssociationID: "trunk-assoc-0123456789abcdef0"}
	pods := fakePodENI{
		"shop/db":      {b: branch, requested: true},
		"shop/waiting": {requested: true, err: podeni.ErrNotAnnotated},
		"shop/lost":    {err: errors.New("connection refused")},
	}
	f := newFixtureOfType(t, "m5.large", map[string]string{"ENABLE_POD_ENI": "true", "MY_NODE_NAME": "n1"})
	d, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock, Logf: t.Logf, PodENI: pods})
	if err != nil {
		t.Fatal(err)
	}
	settle(t, d)
	srv, err := NewServer(d)
	if err != nil {
		t.Fatal(err)
	}
	add := func(i int, ns, name string) (*ipamv1.AddReply, error) {
		return srv.Add(context.Background(), &ipamv1.AddRequest{ApiVersion: ipamclient.APIVersion,
			Key: &ipamv1.Key{Network: "vpcchain", ContainerId: fmt.Sprintf("c%d", i), Ifname: "eth0"}, PodNamespace: ns, PodName: name})
	}
	// No trunk yet: the branch pod waits.
	if _, err := add(1, "shop", "db"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("branch pod before the trunk: %v, want ResourceExhausted (try again later)", err)
	}
	trunk := newOtherTool(t, f).attach("trunk", 0, 2, nil)
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	trunkView, _ := f.sim.Cloud.ENI(trunk)
	for i, tc := range []struct {
		pod      string
		wantCode codes.Code
		branch   bool
	}{
		{"shop/db", codes.OK, true},
		{"shop/web", codes.OK, false},
		{"shop/waiting", codes.ResourceExhausted, false},
		{"shop/lost", codes.Unavailable, false},
	} {
		ns, name, _ := strings.Cut(tc.pod, "/")
		r, err := add(i+2, ns, name)
		if status.Code(err) != tc.wantCode {
			t.Fatalf("%s: %v, want %v", tc.pod, err, tc.wantCode)
		}
		if err != nil {
			continue
		}
		if got := r.GetBranch(); tc.branch {
			want := &ipamv1.BranchENI{EniId: branch.ENIID, Mac: branch.MAC, Ip: branch.IPv4, VlanId: 3, SubnetCidr: "10.0.0.0/24",
				SubnetGateway: "10.0.0.1", TrunkEniId: trunk, TrunkMac: trunkView.MAC, TrunkDeviceNumber: 2,
				AssociationId: branch.AssociationID, VpcCidrs: []string{"10.0.0.0/16"}}
			if got.String() != want.String() || r.GetAllocation() != nil {
				t.Errorf("%s: %v (allocation %v), want %v", tc.pod, got, r.GetAllocation(), want)
			}
		} else if got != nil || r.GetAllocation().GetIp() == "" {
			t.Errorf("%s: branch %v, allocation %v; want a pool address", tc.pod, got, r.GetAllocation())
		}
	}
	if n := len(d.Introspect().Allocations); n != 1 {
		t.Errorf("%d pool addresses assigned, want 1 (the pod without a branch)", n)
	}
}
