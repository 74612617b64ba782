package dataplane

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

var (
	trunkA = ENI{ID: "eni-0aaaaaaaaaaaaaa02", MAC: mac("02:00:00:00:0a:02"), DeviceIndex: 2, PrimaryIP: netip.MustParseAddr("10.0.0.12"), Subnet: subnetA}
	branch = Branch{ID: "eni-0dddddddddddddd07", MAC: mac("02:00:00:00:0d:07"), VLANID: 7, PrimaryIP: netip.MustParseAddr("10.0.1.70"), Subnet: subnetB}
)

// A branch's router side: a VLAN sub-interface of the trunk's router link
// with the branch's id, its primary IP routed through it, all removed on
// disassociation and with the trunk. On a kernel without 802.1Q VLAN links
// (the kernel tier's guest has them and proves the packets, see
// test/e2e) the association fails naming the missing feature, and nothing
// is left of it.
func TestBranchRouterSide(t *testing.T) {
	t.Parallel()
	f := twoNodeFabric(t)
	must(t, f.AttachENI("a", trunkA))
	bad := branch
	bad.VLANID = 4095
	if err := f.AssociateBranch(trunkA.ID, bad); err == nil {
		t.Fatal("VLAN id 4095 accepted")
	}
	if err := f.AssociateBranch(eniB0.ID+"x", branch); err == nil {
		t.Fatal("a branch of an unknown trunk accepted")
	}

	err := f.AssociateBranch(trunkA.ID, branch)
	if errors.Is(err, ErrNoVLAN) {
		if _, ok := f.RouterLinkName(branch.ID); ok {
			t.Errorf("a failed association left branch %s behind", branch.ID)
		}
		if l, lerr := f.rtr.LinkByName(f.routerLinkName(branch.ID)); lerr == nil {
			t.Errorf("a failed association left router link %s", l.Attrs().Name)
		}
		if f.AssociateBranch(trunkA.ID, branch) == nil {
			t.Error("the second try succeeded")
		}
		t.Skipf("the kernel has no 802.1Q VLAN links: %v", err)
	}
	must(t, err)
	rname, ok := f.RouterLinkName(branch.ID)
	if !ok {
		t.Fatal("no router link name for the branch")
	}
	tname, _ := f.RouterLinkName(trunkA.ID)
	l, err := f.rtr.LinkByName(rname)
	must(t, err)
	tl, err := f.rtr.LinkByName(tname)
	must(t, err)
	if v, ok := l.(*netlink.Vlan); !ok || v.VlanId != 7 || v.Attrs().ParentIndex != tl.Attrs().Index {
		t.Fatalf("router link %s is %#v, want VLAN 7 on %s", rname, l, tname)
	}
	must(t, f.SetENIAddresses(branch.ID, []netip.Addr{netip.MustParseAddr("10.0.1.71")}, nil))
	routes, err := f.rtr.RouteList(l, netlink.FAMILY_V4)
	must(t, err)
	if len(routes) != 2 {
		t.Errorf("routes through %s: %v, want the branch's two addresses", rname, routes)
	}
	dup := branch
	dup.ID, dup.PrimaryIP = "eni-0eeeeeeeeeeeeee07", netip.MustParseAddr("10.0.1.72")
	if err := f.AssociateBranch(trunkA.ID, dup); err == nil {
		t.Error("a second branch with VLAN 7 on the same trunk accepted")
	}
	if err := f.DetachENI(branch.ID); err == nil {
		t.Error("DetachENI of a branch succeeded")
	}
	must(t, f.DisassociateBranch(branch.ID))
	if _, err := f.rtr.LinkByName(rname); err == nil {
		t.Errorf("router link %s left after disassociation", rname)
	}
	must(t, f.AssociateBranch(trunkA.ID, branch))
	must(t, f.DetachENI(trunkA.ID))
	if _, _, ok := f.BranchVLAN(branch.ID); ok {
		t.Error("the branch outlived its trunk's detachment")
	}
}
