package main

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcchain/vpcchain/internal/naming"
)

// FuzzParseConfig: any stdin either parses into a configuration that obeys
// the documented limits or fails with a CNI error carrying a precise code;
// it never panics.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"vpcchain","type":"vpc-bridge","ipam":{"type":"vpc-ipam"}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"vpc-bridge","vethPrefix":"cali","mtu":1500,"ipam":{"type":"host-local"}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"vpc-bridge","vethPrefix":"eth","mtu":100000}`,
		`{"cniVersion":"1.1.0","name":"n","type":"vpc-bridge","mtu":"x"}`,
		`{"cniVersion":"1.1.0","name":"n","type":"vpc-bridge","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.9/32"}]}}`,
		`{`, `null`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		conf, err := parseConfig(stdin)
		if err != nil {
			var ce *types.Error
			if !errors.As(err, &ce) || ce.Code == 0 || ce.Msg == "" {
				t.Fatalf("error without a CNI code and message: %#v", err)
			}
			return
		}
		if conf.MTU < MinMTU || conf.MTU > MaxMTU {
			t.Fatalf("accepted MTU %d", conf.MTU)
		}
		if err := naming.ValidatePrefix(conf.VethPrefix); err != nil {
			t.Fatalf("accepted veth prefix %q: %v", conf.VethPrefix, err)
		}
	})
}
