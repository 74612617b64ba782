package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfig(t *testing.T) {
	prev := `"prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.9/32"}, {"address": "fd00::9/128"}]}`
	cases := []struct {
		name  string
		stdin string
		code  uint   // 0: valid
		want  string // in the message, or the node config path
		ips   int
	}{
		{"defaults", `{"cniVersion": "1.1.0", "name": "n", "type": "vpc-snat", ` + prev + `}`, 0, "/var/run/vpcchain/snat.json", 1},
		{"node config path", `{"cniVersion": "1.1.0", "name": "n", "type": "vpc-snat", "nodeConfig": "/x/snat.json", ` + prev + `}`, 0, "/x/snat.json", 1},
		{"malformed", `{"cniVersion": "1.1.0", `, types.ErrDecodingFailure, "cannot decode", 0},
		{"wrong type", `{"cniVersion": "1.1.0", "name": "n", "type": "vpc-snat", "nodeConfig": 7}`, types.ErrDecodingFailure, "nodeConfig", 0},
		{"relative path", `{"cniVersion": "1.1.0", "name": "n", "type": "vpc-snat", "nodeConfig": "snat.json"}`, types.ErrInvalidNetworkConfig, "absolute", 0},
		{"no prevResult", `{"cniVersion": "1.1.0", "name": "n", "type": "vpc-snat"}`, types.ErrInvalidNetworkConfig, "chained after", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := parseConfig([]byte(tc.stdin))
			if err == nil {
				_, ips, perr := conf.podIPv4s()
				err = perr
				if err == nil {
					if tc.code != 0 {
						t.Fatalf("accepted, want code %d", tc.code)
					}
					if conf.NodeConfig != tc.want || len(ips) != tc.ips {
						t.Fatalf("nodeConfig %q ips %v", conf.NodeConfig, ips)
					}
					return
				}
			}
			var ce *types.Error
			if !errors.As(err, &ce) || ce.Code != tc.code || !strings.Contains(ce.Msg, tc.want) {
				t.Fatalf("error %v, want code %d naming %q", err, tc.code, tc.want)
			}
		})
	}
}
