package main

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcchain/vpcchain/internal/snat"
)

// TestCheckPodIPs: ADD puts only VPC addresses that are not the node's own
// into the SNAT set; anything else in prevResult is refused with code 7.
func TestCheckPodIPs(t *testing.T) {
	nc := snat.NodeConfig{PrimaryIP: netip.MustParseAddr("10.0.0.10"),
		VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("100.64.0.0/16")}}
	for _, tc := range []struct {
		ips  []string
		want string // "" accepted
	}{
		{[]string{"10.0.3.4"}, ""},
		{[]string{"100.64.1.1"}, ""}, // a secondary VPC CIDR (custom networking)
		{nil, ""},
		{[]string{"8.8.8.8"}, "8.8.8.8"},
		{[]string{"10.0.3.4", "192.168.0.1"}, "192.168.0.1"},
		{[]string{"10.0.0.10"}, "primary"},
		{[]string{"0.0.0.0"}, "0.0.0.0"},
	} {
		var ips []netip.Addr
		for _, s := range tc.ips {
			ips = append(ips, netip.MustParseAddr(s))
		}
		err := checkPodIPs(ips, nc)
		var ce *types.Error
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v refused: %v", tc.ips, err)
		case tc.want != "" && (!errors.As(err, &ce) || ce.Code != types.ErrInvalidNetworkConfig || !strings.Contains(ce.Msg, tc.want)):
			t.Errorf("%v: %v, want code 7 naming %q", tc.ips, err, tc.want)
		}
	}
}
