package vpcipam

import (
	"strings"
	"testing"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
)

func TestResultFromBranch(t *testing.T) {
	good := func() *ipamv1.BranchENI {
		return &ipamv1.BranchENI{EniId: "eni-0b1", Mac: "02:00:00:00:00:b1", Ip: "10.0.1.77", VlanId: 7,
			SubnetCidr: "10.0.1.0/24", SubnetGateway: "10.0.1.1", TrunkEniId: "eni-0t1", TrunkMac: "02:00:00:00:00:01", TrunkDeviceNumber: 1}
	}
	tests := []struct {
		name    string
		edit    func(*ipamv1.BranchENI)
		wantErr string
	}{
		{name: "ok"},
		{name: "IPv6 address", edit: func(b *ipamv1.BranchENI) { b.Ip = "2600::1" }, wantErr: "not an IPv4 address"},
		{name: "VLAN 0", edit: func(b *ipamv1.BranchENI) { b.VlanId = 0 }, wantErr: "vlanID 0"},
		{name: "VLAN 4095", edit: func(b *ipamv1.BranchENI) { b.VlanId = 4095 }, wantErr: "vlanID 4095"},
		{name: "bad MAC", edit: func(b *ipamv1.BranchENI) { b.Mac = "nope" }, wantErr: `mac "nope"`},
		{name: "no trunk MAC", edit: func(b *ipamv1.BranchENI) { b.TrunkMac = "" }, wantErr: "trunkMAC"},
		{name: "no gateway", edit: func(b *ipamv1.BranchENI) { b.SubnetGateway = "" }, wantErr: "subnetGateway"},
		{name: "not an ENI", edit: func(b *ipamv1.BranchENI) { b.EniId = "i-1" }, wantErr: "eniID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := good()
			if tc.edit != nil {
				tc.edit(b)
			}
			res, ext, err := resultFromBranch(b)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.0.1.77/32" || res.IPs[0].Gateway.String() != "169.254.1.1" {
				t.Errorf("IPs = %v, want 10.0.1.77/32 gw 169.254.1.1", res.IPs)
			}
			br := ext.Branch
			if br == nil || br.VLANID != 7 || br.MAC != b.Mac || br.TrunkMAC != b.TrunkMac || br.SubnetGateway != "10.0.1.1" || br.ENIID != "eni-0b1" {
				t.Errorf("branch = %+v", br)
			}
			if ext.Table() != 254 {
				t.Errorf("table = %d: a branch pod has no ENI table of the node", ext.Table())
			}
		})
	}
}
