package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
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
		if conf.MTU < 576 || conf.MTU > 9001 { // the AWS VPC CNI's IPv4 MTU range
			t.Fatalf("accepted MTU %d", conf.MTU)
		}
		if !documentedPrefix(conf.VethPrefix) {
			t.Fatalf("accepted veth prefix %q", conf.VethPrefix)
		}
	})
}

// documentedPrefix is the vethPrefix rule, written out independently of
// package veth (which parseConfig calls): 1 to 4 bytes so that prefix + 11
// hash characters fit the kernel's 15-byte interface names; not "eth", "lo"
// or "vlan" (refused as the AWS VPC CNI refuses them); printable ASCII
// without whitespace, '/' and ':' (the kernel's dev_valid_name), '%'
// (name templates) or '*' (Felix's wildcard).
func documentedPrefix(p string) bool {
	if len(p) < 1 || len(p) > 4 || p == "eth" || p == "lo" || p == "vlan" {
		return false
	}
	for _, c := range []byte(p) {
		if c <= ' ' || c > '~' || strings.ContainsRune("/:%*", rune(c)) {
			return false
		}
	}
	return true
}
