package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfig(t *testing.T) {
	const base = `"cniVersion":"1.1.0","name":"vpcchain","type":"vpc-bridge"`
	tests := []struct {
		name       string
		json       string
		wantPrefix string
		wantMTU    int
		wantCode   uint
		wantMsg    []string
	}{
		{name: "defaults", json: `{` + base + `,"ipam":{"type":"vpc-ipam"}}`, wantPrefix: "eni", wantMTU: 9001},
		{name: "empty prefix means default", json: `{` + base + `,"vethPrefix":"","ipam":{"type":"vpc-ipam"}}`, wantPrefix: "eni", wantMTU: 9001},
		{name: "explicit values", json: `{` + base + `,"vethPrefix":"cali","mtu":1500,"ipam":{"type":"host-local"}}`, wantPrefix: "cali", wantMTU: 1500},
		{name: "mtu lower bound", json: `{` + base + `,"mtu":576,"ipam":{"type":"host-local"}}`, wantPrefix: "eni", wantMTU: 576},
		{name: "mtu upper bound", json: `{` + base + `,"mtu":9001,"ipam":{"type":"host-local"}}`, wantPrefix: "eni", wantMTU: 9001},
		{name: "unknown fields are ignored", json: `{` + base + `,"future":true,"ipam":{"type":"host-local","ranges":[]}}`, wantPrefix: "eni", wantMTU: 9001},

		{name: "security groups for pods, standard mode", json: `{` + base + `,"podSGEnforcingMode":"standard","ipam":{"type":"vpc-ipam"}}`, wantPrefix: "eni", wantMTU: 9001},
		{name: "security groups for pods, unknown mode", json: `{` + base + `,"podSGEnforcingMode":"loose","ipam":{"type":"vpc-ipam"}}`, wantCode: types.ErrInvalidNetworkConfig,
			wantMsg: []string{`podSGEnforcingMode "loose" is invalid: want strict (the default) or standard`}},
		{name: "malformed JSON", json: `{` + base + `,`, wantCode: types.ErrDecodingFailure, wantMsg: []string{"cannot decode network configuration"}},
		{name: "mtu of wrong type", json: `{` + base + `,"mtu":"9001","ipam":{"type":"host-local"}}`, wantCode: types.ErrDecodingFailure, wantMsg: []string{"mtu", "string"}},
		{name: "prefix of wrong type", json: `{` + base + `,"vethPrefix":3,"ipam":{"type":"host-local"}}`, wantCode: types.ErrDecodingFailure, wantMsg: []string{"vethPrefix"}},
		{name: "reserved prefix vlan", json: `{` + base + `,"vethPrefix":"vlan","ipam":{"type":"host-local"}}`, wantCode: types.ErrInvalidNetworkConfig,
			wantMsg: []string{`vethPrefix: veth prefix "vlan" is reserved`, `"eth", "lo", "vlan"`}},
		{name: "reserved prefix eth", json: `{` + base + `,"vethPrefix":"eth","ipam":{"type":"host-local"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`"eth" is reserved`}},
		{name: "reserved prefix lo", json: `{` + base + `,"vethPrefix":"lo","ipam":{"type":"host-local"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`"lo" is reserved`}},
		{name: "prefix too long", json: `{` + base + `,"vethPrefix":"toolong","ipam":{"type":"host-local"}}`, wantCode: types.ErrInvalidNetworkConfig,
			wantMsg: []string{`vethPrefix: veth prefix "toolong" is 7 characters: it must be 1 to 4 characters`}},
		{name: "prefix bad character", json: `{` + base + `,"vethPrefix":"e/n","ipam":{"type":"host-local"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`vethPrefix`, `'/'`}},
		{name: "mtu too large", json: `{` + base + `,"mtu":70000,"ipam":{"type":"host-local"}}`, wantCode: types.ErrInvalidNetworkConfig,
			wantMsg: []string{"mtu 70000 is out of range: allowed 576..9001 (default 9001)"}},
		{name: "mtu too small", json: `{` + base + `,"mtu":575,"ipam":{"type":"host-local"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"mtu 575 is out of range"}},
		{name: "mtu negative", json: `{` + base + `,"mtu":-1,"ipam":{"type":"host-local"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"mtu -1 is out of range"}},
		{name: "ipam missing", json: `{` + base + `}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"ipam.type is required"}},
		{name: "ipam type is a path", json: `{` + base + `,"ipam":{"type":"/opt/cni/bin/host-local"}}`, wantCode: types.ErrInvalidNetworkConfig,
			wantMsg: []string{`ipam.type "/opt/cni/bin/host-local" is not a plugin name`}},
		{name: "all errors at once", json: `{` + base + `,"vethPrefix":"vlan","mtu":70000}`, wantCode: types.ErrInvalidNetworkConfig,
			wantMsg: []string{"vethPrefix", "mtu 70000", "ipam.type"}},
		{name: "bad prevResult", json: `{` + base + `,"ipam":{"type":"host-local"},"prevResult":{"ips":"nope"}}`, wantCode: types.ErrDecodingFailure, wantMsg: []string{"prevResult"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := parseConfig([]byte(tt.json))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("parseConfig: %v", err)
				}
				if conf.VethPrefix != tt.wantPrefix || conf.MTU != tt.wantMTU {
					t.Fatalf("got prefix %q mtu %d, want %q %d", conf.VethPrefix, conf.MTU, tt.wantPrefix, tt.wantMTU)
				}
				return
			}
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("parseConfig error = %v (%T), want *types.Error", err, err)
			}
			if e.Code != tt.wantCode {
				t.Errorf("code = %d, want %d (%s)", e.Code, tt.wantCode, e.Msg)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(e.Msg, m) {
					t.Errorf("message %q does not contain %q", e.Msg, m)
				}
			}
		})
	}
}

func TestParseConfigPrevResult(t *testing.T) {
	conf, err := parseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"vpc-bridge","ipam":{"type":"host-local"},
		"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"enic440f455693"}],"ips":[{"address":"10.0.0.5/32"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.PrevResult == nil {
		t.Fatal("prevResult not parsed")
	}
}

func TestLoadK8sArgs(t *testing.T) {
	tests := []struct {
		name, args      string
		wantNS, wantPod string
		wantCode        uint
	}{
		{name: "kubelet", args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1", wantNS: "default", wantPod: "nginx"},
		{name: "unknown keys without IgnoreUnknown", args: "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;SOMETHING=else", wantNS: "a", wantPod: "b"},
		{name: "empty", args: ""},
		{name: "malformed pair", args: "K8S_POD_NAMESPACE", wantCode: types.ErrInvalidEnvironmentVariables},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := loadK8sArgs(tt.args)
			if tt.wantCode != 0 {
				var e *types.Error
				if !errors.As(err, &e) || e.Code != tt.wantCode || !strings.Contains(e.Msg, "CNI_ARGS") {
					t.Fatalf("error = %v, want code %d naming CNI_ARGS", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(a.K8S_POD_NAMESPACE) != tt.wantNS || string(a.K8S_POD_NAME) != tt.wantPod {
				t.Fatalf("got %q/%q", a.K8S_POD_NAMESPACE, a.K8S_POD_NAME)
			}
		})
	}
}

func TestHostVethNameChoice(t *testing.T) {
	k := &K8sArgs{K8S_POD_NAMESPACE: "default", K8S_POD_NAME: "nginx"}
	if got := hostVethName("eni", k, "cid", "eth0"); got != "enic440f455693" { // printf %s default.nginx | sha1sum
		t.Errorf("pod name: got %q", got)
	}
	// The fallback hashes "<container ID>.<ifname>":
	// printf %s cid.eth0 | sha1sum gives 75d6cd8f85af...
	const fallback = "eni75d6cd8f85a"
	for _, k := range []*K8sArgs{nil, {}, {K8S_POD_NAMESPACE: "default"}, {K8S_POD_NAME: "nginx"}} {
		if got := hostVethName("eni", k, "cid", "eth0"); got != fallback {
			t.Errorf("fallback for %+v: got %q want %q", k, got, fallback)
		}
	}
}

func TestPreflight(t *testing.T) {
	tests := []struct {
		env      map[string]string
		wantCode uint
		wantMsg  string
	}{
		{env: map[string]string{"CNI_COMMAND": "ADD", "CNI_IFNAME": "abcdefghijklmnop"}, wantCode: types.ErrInvalidEnvironmentVariables,
			wantMsg: `invalid CNI_IFNAME: interface name "abcdefghijklmnop" is 16 bytes: Linux interface names are at most 15 bytes`},
		{env: map[string]string{"CNI_COMMAND": "DEL", "CNI_IFNAME": "a/b"}, wantCode: types.ErrInvalidEnvironmentVariables, wantMsg: `"a/b"`},
		{env: map[string]string{"CNI_COMMAND": "CHECK", "CNI_IFNAME": "eth0"}},
		{env: map[string]string{"CNI_COMMAND": "ADD", "CNI_IFNAME": ""}}, // skel reports the missing variable
		{env: map[string]string{"CNI_COMMAND": "VERSION", "CNI_IFNAME": "abcdefghijklmnop"}},
		{env: map[string]string{"CNI_COMMAND": "STATUS"}},
	}
	for _, tt := range tests {
		err := preflight(func(k string) string { return tt.env[k] })
		if tt.wantCode == 0 {
			if err != nil {
				t.Errorf("preflight(%v) = %v, want nil", tt.env, err)
			}
			continue
		}
		if err == nil || err.Code != tt.wantCode || !strings.Contains(err.Msg, tt.wantMsg) {
			t.Errorf("preflight(%v) = %v, want code %d containing %q", tt.env, err, tt.wantCode, tt.wantMsg)
		}
	}
}

func TestWithResultVersion(t *testing.T) {
	tests := []struct{ raw, conf, want string }{
		{`{"cniVersion":"1.0.0","ips":[]}`, "0.4.0", `"1.0.0"`},
		{`{"ips":[]}`, "0.4.0", `"0.4.0"`},
		{`{"cniVersion":"","ips":[]}`, "1.1.0", `"1.1.0"`},
	}
	for _, tt := range tests {
		got := string(withResultVersion([]byte(tt.raw), tt.conf))
		if !strings.Contains(got, `"cniVersion":`+tt.want) {
			t.Errorf("withResultVersion(%s, %s) = %s", tt.raw, tt.conf, got)
		}
	}
}
