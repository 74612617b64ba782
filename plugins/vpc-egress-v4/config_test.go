package main

import (
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

func TestParseConfig(t *testing.T) {
	const head = `{"cniVersion":"1.1.0","name":"vpcchain","type":"vpc-egress-v4"`
	const hostLocal = `"ipam":{"type":"host-local","ranges":[[{"subnet":"169.254.172.0/22"}]]}`
	for _, tc := range []struct {
		name        string
		stdin       string
		code        uint
		mentions    string
		ifName      string
		mtu         int
		wantDataDir string
	}{
		{name: "defaults", stdin: head + `,` + hostLocal + `}`, ifName: "v4if0", mtu: 9001, wantDataDir: DefaultDataDir},
		{name: "own values", stdin: head + `,"ifName":"egress0","mtu":1500,"ipam":{"type":"host-local","dataDir":"/run/x"}}`,
			ifName: "egress0", mtu: 1500, wantDataDir: "/run/x"},
		{name: "another IPAM keeps its section", stdin: head + `,"ipam":{"type":"static"}}`, ifName: "v4if0", mtu: 9001},
		{name: "no ipam", stdin: head + `}`, code: types.ErrInvalidNetworkConfig, mentions: "ipam.type is missing"},
		{name: "mtu too small", stdin: head + `,"mtu":100,` + hostLocal + `}`, code: types.ErrInvalidNetworkConfig, mentions: "mtu 100 is out of range: allowed 576..9001"},
		{name: "ifName too long", stdin: head + `,"ifName":"0123456789abcdef",` + hostLocal + `}`, code: types.ErrInvalidNetworkConfig, mentions: `ifName "0123456789abcdef"`},
		{name: "ifName with a colon", stdin: head + `,"ifName":"v4:0",` + hostLocal + `}`, code: types.ErrInvalidNetworkConfig, mentions: `ifName "v4:0"`},
		{name: "malformed", stdin: head + `,`, code: types.ErrDecodingFailure, mentions: "cannot decode"},
		{name: "mtu of the wrong type", stdin: head + `,"mtu":"9001",` + hostLocal + `}`, code: types.ErrDecodingFailure, mentions: "mtu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := parseConfig([]byte(tc.stdin))
			if tc.code != 0 {
				var ce *types.Error
				if !errors.As(err, &ce) || ce.Code != tc.code || !strings.Contains(ce.Msg, tc.mentions) {
					t.Fatalf("error %v, want code %d naming %q", err, tc.code, tc.mentions)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if conf.IfName != tc.ifName || conf.MTU != tc.mtu {
				t.Errorf("ifName %q mtu %d, want %q %d", conf.IfName, conf.MTU, tc.ifName, tc.mtu)
			}
			var got struct {
				IPAM struct {
					DataDir string `json:"dataDir"`
				} `json:"ipam"`
			}
			if err := json.Unmarshal(conf.raw, &got); err != nil || got.IPAM.DataDir != tc.wantDataDir {
				t.Errorf("delegated ipam.dataDir %q (%v), want %q", got.IPAM.DataDir, err, tc.wantDataDir)
			}
		})
	}
}

// The egress address: exactly one IPv4 address; the gateway is the IPAM's,
// else the range's first address (host-local's choice), never the pod's
// own or outside the range.
func TestEgressAddress(t *testing.T) {
	ipc := func(addr, gw string) *types100.IPConfig {
		ip, n, _ := net.ParseCIDR(addr)
		c := &types100.IPConfig{Address: net.IPNet{IP: ip, Mask: n.Mask}}
		if gw != "" {
			c.Gateway = net.ParseIP(gw)
		}
		return c
	}
	for _, tc := range []struct {
		name     string
		ips      []*types100.IPConfig
		wantAddr string
		wantGW   string
		mentions string
	}{
		{"host-local's answer", []*types100.IPConfig{ipc("169.254.172.7/22", "169.254.172.1")}, "169.254.172.7/22", "169.254.172.1", ""},
		{"no gateway given", []*types100.IPConfig{ipc("169.254.173.9/22", "")}, "169.254.173.9/22", "169.254.172.1", ""},
		{"IPv6 only", []*types100.IPConfig{ipc("2600::7/64", "")}, "", "", "want exactly one IPv4 address"},
		{"both families", []*types100.IPConfig{ipc("169.254.172.7/22", ""), ipc("2600::7/64", "")}, "", "", "want exactly one IPv4 address"},
		{"two IPv4", []*types100.IPConfig{ipc("169.254.172.7/22", ""), ipc("169.254.172.8/22", "")}, "", "", "want exactly one IPv4 address"},
		{"none", nil, "", "", "want exactly one IPv4 address"},
		{"gateway is the pod", []*types100.IPConfig{ipc("169.254.172.1/22", "169.254.172.1")}, "", "", "the gateway must be another address of the range"},
		{"gateway outside the range", []*types100.IPConfig{ipc("169.254.172.7/22", "10.0.0.1")}, "", "", "the gateway must be another address of the range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, gw, err := egressAddress(&types100.Result{CNIVersion: "1.1.0", IPs: tc.ips}, "host-local")
			if tc.mentions != "" {
				var ce *types.Error
				if !errors.As(err, &ce) || ce.Code != types.ErrInvalidNetworkConfig || !strings.Contains(ce.Msg, tc.mentions) {
					t.Fatalf("error %v, want code 7 naming %q", err, tc.mentions)
				}
				return
			}
			if err != nil || addr.String() != tc.wantAddr || gw.String() != tc.wantGW {
				t.Fatalf("%v gw %v (%v), want %s gw %s", addr, gw, err, tc.wantAddr, tc.wantGW)
			}
		})
	}
}

// Host-side names: 15 characters, distinct per attachment, outside Felix's
// interface prefix; the nat chain fits iptables' 28 characters.
func TestNames(t *testing.T) {
	a := attachment{containerID: "ctr-1", ifName: "eth0"}
	b := attachment{containerID: "ctr-1", ifName: "eth1"}
	if n := a.hostVeth(); len(n) != 15 || !strings.HasPrefix(n, "egv4") || n == b.hostVeth() {
		t.Errorf("host veths %q %q", n, b.hostVeth())
	}
	if c := a.chain(); len(c) > 28 || c == b.chain() {
		t.Errorf("chains %q %q", c, b.chain())
	}
}

// FuzzParseConfig: any stdin parses or fails with a precise CNI error.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"n","type":"vpc-egress-v4","ipam":{"type":"host-local"}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"vpc-egress-v4","ifName":"x","mtu":1500,"ipam":{"type":"host-local","dataDir":"/d"},"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"fd00::1/128"}]}}`,
		`{`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		conf, err := parseConfig(stdin)
		if err == nil {
			if conf.IPAM.Type == "" || conf.IfName == "" || len(conf.IfName) > 15 || conf.MTU < MinMTU || conf.MTU > MaxMTU {
				t.Fatalf("accepted %+v", conf)
			}
			return
		}
		var ce *types.Error
		if !errors.As(err, &ce) || ce.Code == 0 || ce.Msg == "" {
			t.Fatalf("error without a CNI code and message: %#v", err)
		}
	})
}
