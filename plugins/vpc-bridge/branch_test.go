package main

import (
	"net"
	"strconv"
	"strings"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/cniext"
	"github.com/vpcchain/vpcchain/internal/netlinkutil"
)

// The AWS VPC CNI's wiring of a branch on VLAN 7 (table 7+100): strict
// mode routes the pod in the branch table and picks it by incoming
// interface; standard mode leaves the pod's route to the main table and
// has no iif rules (its rules 512/1536 are ensurePodRules', as any pod's).
func TestBranchWiring(t *testing.T) {
	b := &cniext.Branch{ENIID: "eni-0b1", MAC: "02:00:00:00:00:b1", VLANID: 7, SubnetGateway: "10.0.1.1", TrunkMAC: "02:00:00:00:00:01"}
	for _, tc := range []struct {
		mode    string
		routes  []string
		rules   []string
		sysctls []string
	}{
		{mode: "strict", routes: []string{
			"10.0.1.1/32 dev vlan scope link table 107",
			"0.0.0.0/0 via 10.0.1.1 dev vlan scope universe table 107",
			"10.0.1.77/32 dev host scope link table 107",
		}, rules: []string{"10: from all iif enic440f455693 lookup 107", "10: from all iif vlan.eth.7 lookup 107"},
			sysctls: []string{"net/ipv4/conf/vlan.eth.7/rp_filter=0", "net/ipv4/conf/vlan.eth.7/accept_local=1", "net/ipv4/conf/enic440f455693/rp_filter=0"}},
		{mode: "standard", routes: []string{
			"10.0.1.1/32 dev vlan scope link table 107",
			"0.0.0.0/0 via 10.0.1.1 dev vlan scope universe table 107",
		}, sysctls: []string{"net/ipv4/conf/vlan.eth.7/rp_filter=2"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			w, err := newBranchWiring(b, net.ParseIP("10.0.1.77"), "enic440f455693", tc.mode == "standard")
			if err != nil {
				t.Fatal(err)
			}
			if w.vlanName != "vlan.eth.7" || w.table != 107 || w.mac.String() != b.MAC || w.trunkMAC.String() != b.TrunkMAC {
				t.Errorf("wiring = %+v", w)
			}
			const vlan, host = 20, 30
			var got []string
			for _, r := range w.routes(vlan, host) {
				s := r.Dst.String()
				if r.Gw != nil {
					s += " via " + r.Gw.String()
				}
				got = append(got, s+" dev "+map[int]string{vlan: "vlan", host: "host"}[r.LinkIndex]+" scope "+r.Scope.String()+" table "+itoa(r.Table))
			}
			if strings.Join(got, "\n") != strings.Join(tc.routes, "\n") {
				t.Errorf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.routes, "\n"))
			}
			got = nil
			for _, r := range w.rules() {
				got = append(got, netlinkutil.RuleString(r))
			}
			if strings.Join(got, "\n") != strings.Join(tc.rules, "\n") {
				t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.rules, "\n"))
			}
			got = nil
			for _, sc := range w.sysctls() {
				got = append(got, sc.key+"="+sc.value)
			}
			if strings.Join(got, "\n") != strings.Join(tc.sysctls, "\n") {
				t.Errorf("sysctls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.sysctls, "\n"))
			}
			for _, r := range w.rules() {
				if !netlinkutil.IsIifRule(r.IifName)(r) || r.Family != netlink.FAMILY_V4 {
					t.Errorf("IsIifRule(%s) does not match %q", r.IifName, netlinkutil.RuleString(r))
				}
			}
		})
	}
}

func TestNewBranchWiringRefuses(t *testing.T) {
	good := cniext.Branch{ENIID: "eni-0b1", MAC: "02:00:00:00:00:b1", VLANID: 7, SubnetGateway: "10.0.1.1", TrunkMAC: "02:00:00:00:00:01"}
	tests := []struct {
		name    string
		edit    func(*cniext.Branch)
		ip      string
		wantErr string
	}{
		{name: "IPv6 pod", ip: "2600::1", wantErr: "only IPv4"},
		{name: "VLAN out of range", ip: "10.0.1.77", edit: func(b *cniext.Branch) { b.VLANID = 5000 }, wantErr: "vlanID 5000"},
		{name: "IPv6 gateway", ip: "10.0.1.77", edit: func(b *cniext.Branch) { b.SubnetGateway = "fe80::1" }, wantErr: "subnetGateway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := good
			if tc.edit != nil {
				tc.edit(&b)
			}
			if _, err := newBranchWiring(&b, net.ParseIP(tc.ip), "eni0", false); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// A branch-ENI pod through the built plugin: with the trunk's link missing,
// and with a trunk whose VLAN link this kernel may not be able to make
// (no 8021q), ADD fails and leaves nothing; where it can, ADD, CHECK and
// DEL work and DEL leaves nothing. Either way DEL may be repeated.
func TestBranchAddLeavesNothingOnFailure(t *testing.T) {
	h := newHost(t)
	trunkMAC := "02:00:00:00:0e:01"
	h.do(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = "eth1"
		la.HardwareAddr, _ = net.ParseMAC(trunkMAC)
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth1peer"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth1")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	h.baseline = h.snapshot()
	branch := func(mac string) map[string]any {
		return map[string]any{"eniID": "eni-0b1", "branch": map[string]any{"eniID": "eni-0b1", "mac": "02:00:00:00:0b:01", "vlanID": 7,
			"subnetGateway": "10.1.9.1", "trunkENIID": "eni-0t1", "trunkMAC": mac}}
	}

	t.Run("no trunk link", func(t *testing.T) {
		list := conflist(t, nil, h.fakeIPAM([]string{"10.1.9.77/24"}, branch("02:00:00:00:0e:99"), nil))
		p := h.newPod("default", "branch-notrunk")
		_, err := h.add(list, p)
		if err == nil || !strings.Contains(err.Error(), "no link with the trunk ENI's MAC 02:00:00:00:0e:99") {
			t.Fatalf("ADD: %v, want the missing trunk named", err)
		}
		h.assertClean("failed branch ADD")
		for i := 0; i < 2; i++ {
			if err := h.del(list, p); err != nil {
				t.Fatalf("DEL %d after failed ADD: %v", i+1, err)
			}
		}
		h.assertClean("DEL after failed branch ADD")
	})

	t.Run("trunk link", func(t *testing.T) {
		list := conflist(t, nil, h.fakeIPAM([]string{"10.1.9.78/24"}, branch(trunkMAC), nil))
		p := h.newPod("default", "branch-trunk")
		res, err := h.add(list, p)
		if err != nil {
			if !strings.Contains(err.Error(), "create VLAN link vlan.eth.7") {
				t.Fatalf("ADD: %v, want success or the VLAN link's creation failing", err)
			}
			t.Logf("this kernel cannot make VLAN links: %v", err)
			h.assertClean("failed branch ADD")
		} else {
			r, err := types100.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(r.Interfaces); n != 3 || r.Interfaces[2].Name != "vlan.eth.7" || r.Interfaces[2].Mac != "02:00:00:00:0b:01" {
				t.Errorf("result interfaces %v, want the host veth, the pod's eth0 and vlan.eth.7 with the branch's MAC", r.Interfaces)
			}
			if err := h.check(list, p); err != nil {
				t.Errorf("CHECK: %v", err)
			}
		}
		for i := 0; i < 2; i++ {
			if err := h.del(list, p); err != nil {
				t.Fatalf("DEL %d: %v", i+1, err)
			}
		}
		h.assertClean("branch DEL")
	})
}
