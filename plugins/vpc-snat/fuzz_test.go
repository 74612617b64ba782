package main

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseConfig: any stdin parses or fails with a precise CNI error; the
// pod addresses taken from prevResult are IPv4 only.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"n","type":"vpc-snat","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.9/32"}]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"vpc-snat","nodeConfig":"rel"}`,
		`{"cniVersion":"0.4.0","name":"n","type":"vpc-snat","prevResult":{"cniVersion":"0.4.0","ips":[{"version":"6","address":"fd00::1/128"}]}}`,
		`{`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		conf, err := parseConfig(stdin)
		if err == nil {
			if !filepath.IsAbs(conf.NodeConfig) {
				t.Fatalf("accepted nodeConfig %q", conf.NodeConfig)
			}
			_, addrs, perr := conf.podIPv4s()
			for _, a := range addrs {
				if !a.Is4() {
					t.Fatalf("non-IPv4 pod address %v", a)
				}
			}
			err = perr
		}
		if err != nil {
			var ce *types.Error
			if !errors.As(err, &ce) || ce.Code == 0 || ce.Msg == "" {
				t.Fatalf("error without a CNI code and message: %#v", err)
			}
		}
	})
}
