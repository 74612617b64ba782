package nodeconf

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Settings
		errs []string // each must be in one error
	}{
		{"defaults (the AWS VPC CNI's: eni, 9001, IPv4)", nil,
			Settings{VethPrefix: "eni", MTU: 9001, PodMTU: 9001, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", PodSGMode: "strict"}, nil},
		{"POD_MTU below the ENI MTU", map[string]string{"AWS_VPC_ENI_MTU": "9001", "POD_MTU": "1500"},
			Settings{VethPrefix: "eni", MTU: 9001, PodMTU: 1500, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", PodSGMode: "strict"}, nil},
		{"pod MTU follows the ENI MTU", map[string]string{"AWS_VPC_ENI_MTU": "1500"},
			Settings{VethPrefix: "eni", MTU: 1500, PodMTU: 1500, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", PodSGMode: "strict"}, nil},
		{"state dir moves the socket", map[string]string{"VPCCHAIN_STATE_DIR": "/run/x/"},
			Settings{VethPrefix: "eni", MTU: 9001, PodMTU: 9001, StateDir: "/run/x", Socket: "/run/x/ipamd.sock", PodSGMode: "strict"}, nil},
		{"socket of its own", map[string]string{"VPCCHAIN_STATE_DIR": "/run/x", "VPCCHAIN_SOCKET": "/run/s.sock"},
			Settings{VethPrefix: "eni", MTU: 9001, PodMTU: 9001, StateDir: "/run/x", Socket: "/run/s.sock", PodSGMode: "strict"}, nil},
		{"IPv6 pods", map[string]string{"ENABLE_IPv4": "false", "ENABLE_IPv6": "true", "AWS_VPC_K8S_CNI_VETHPREFIX": "cali"},
			Settings{VethPrefix: "cali", MTU: 9001, PodMTU: 9001, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", IPv6: true, PodSGMode: "strict"}, nil},
		{"security groups for pods in standard mode", map[string]string{"POD_SECURITY_GROUP_ENFORCING_MODE": "standard"},
			Settings{VethPrefix: "eni", MTU: 9001, PodMTU: 9001, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", PodSGMode: "standard"}, nil},
		{"every bad value named", map[string]string{"AWS_VPC_ENI_MTU": "70000", "POD_MTU": "x", "VPCCHAIN_STATE_DIR": "run/x",
			"VPCCHAIN_SOCKET": "s.sock", "AWS_VPC_K8S_CNI_VETHPREFIX": "eth", "ENABLE_IPv6": "maybe",
			"POD_SECURITY_GROUP_ENFORCING_MODE": "Strict"}, Settings{},
			[]string{`AWS_VPC_ENI_MTU="70000"`, `POD_MTU="x"`, `VPCCHAIN_STATE_DIR="run/x"`, `VPCCHAIN_SOCKET="s.sock"`,
				`AWS_VPC_K8S_CNI_VETHPREFIX="eth"`, `ENABLE_IPv6="maybe"`, `POD_SECURITY_GROUP_ENFORCING_MODE="Strict" is invalid: want strict (the default) or standard`}},
		{"IPv6 pods at IPv6's minimum MTU", map[string]string{"ENABLE_IPv4": "false", "ENABLE_IPv6": "true", "AWS_VPC_ENI_MTU": "1280"},
			Settings{VethPrefix: "eni", MTU: 1280, PodMTU: 1280, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", IPv6: true, PodSGMode: "strict"}, nil},
		{"IPv6 below 1280 refused", map[string]string{"ENABLE_IPv4": "false", "ENABLE_IPv6": "true", "AWS_VPC_ENI_MTU": "1500", "POD_MTU": "1279"},
			Settings{}, []string{"POD_MTU=1279 with ENABLE_IPv6=true is invalid: IPv6 needs an MTU from 1280"}},
		{"IPv6 pods follow a low ENI MTU, refused", map[string]string{"ENABLE_IPv4": "false", "ENABLE_IPv6": "true", "AWS_VPC_ENI_MTU": "1000"},
			Settings{}, []string{"AWS_VPC_ENI_MTU=1000 with ENABLE_IPv6=true"}},
		{"dual stack refused", map[string]string{"ENABLE_IPv6": "true"}, Settings{}, []string{"dual-stack pods are not supported"}},
		// WireGuard's overhead (RFC-sized headers: IPv4 20 + UDP 8 + WireGuard 32; IPv6 40 + 8 + 32),
		// the numbers Calico's wireguard.cali is sized with.
		{"WireGuard: pods leave room for its 60 bytes", map[string]string{"ENABLE_WIREGUARD": "true"},
			Settings{VethPrefix: "eni", MTU: 9001, PodMTU: 8941, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", PodSGMode: "strict", WireGuard: true}, nil},
		{"WireGuard on 1500-byte ENIs", map[string]string{"ENABLE_WIREGUARD": "true", "AWS_VPC_ENI_MTU": "1500"},
			Settings{VethPrefix: "eni", MTU: 1500, PodMTU: 1440, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", PodSGMode: "strict", WireGuard: true}, nil},
		{"WireGuard with IPv6 pods: 80 bytes", map[string]string{"ENABLE_WIREGUARD": "true", "ENABLE_IPv4": "false", "ENABLE_IPv6": "true"},
			Settings{VethPrefix: "eni", MTU: 9001, PodMTU: 8921, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", IPv6: true, PodSGMode: "strict", WireGuard: true}, nil},
		{"WireGuard with a smaller POD_MTU", map[string]string{"ENABLE_WIREGUARD": "true", "POD_MTU": "1400"},
			Settings{VethPrefix: "eni", MTU: 9001, PodMTU: 1400, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", PodSGMode: "strict", WireGuard: true}, nil},
		{"WireGuard off says so", map[string]string{"ENABLE_WIREGUARD": "false"},
			Settings{VethPrefix: "eni", MTU: 9001, PodMTU: 9001, StateDir: "/var/run/vpcchain", Socket: "/var/run/vpcchain/ipamd.sock", PodSGMode: "strict"}, nil},
		{"WireGuard with a full-size POD_MTU refused", map[string]string{"ENABLE_WIREGUARD": "true", "POD_MTU": "9001"},
			Settings{}, []string{"POD_MTU=9001 with ENABLE_WIREGUARD=true is invalid: WireGuard adds 60 bytes to each packet, so pods may have at most AWS_VPC_ENI_MTU 9001 - 60 = 8941"}},
		{"WireGuard with IPv6 under IPv6's minimum refused", map[string]string{"ENABLE_WIREGUARD": "true", "ENABLE_IPv4": "false", "ENABLE_IPv6": "true", "AWS_VPC_ENI_MTU": "1300"},
			Settings{}, []string{"POD_MTU=1220 with ENABLE_IPv6=true is invalid"}},
		{"WireGuard on the smallest MTU refused", map[string]string{"ENABLE_WIREGUARD": "true", "AWS_VPC_ENI_MTU": "600"},
			Settings{}, []string{"AWS_VPC_ENI_MTU=600 with ENABLE_WIREGUARD=true is invalid: WireGuard's 60 bytes leave pods 540, below 576"}},
		{"ENABLE_WIREGUARD not a boolean", map[string]string{"ENABLE_WIREGUARD": "yes please"}, Settings{}, []string{`ENABLE_WIREGUARD="yes please" is invalid: want true or false`}},
		{"no family refused", map[string]string{"ENABLE_IPv4": "false"}, Settings{}, []string{"pods would get no address"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := Parse(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if len(errs) != len(tt.errs) {
				t.Fatalf("errors %v, want %d naming %v", errs, len(tt.errs), tt.errs)
			}
			for _, want := range tt.errs {
				found := false
				for _, e := range errs {
					found = found || strings.Contains(e.Error(), want)
				}
				if !found {
					t.Errorf("no error names %s: %v", want, errs)
				}
			}
			if len(tt.errs) == 0 && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestStateDirFiles(t *testing.T) {
	d := StateDir("/var/run/vpcchain")
	if d.Socket() != DefaultSocket || d.SNATConfig() != DefaultSNATConfig || d.Store() != "/var/run/vpcchain/ipam.db" {
		t.Errorf("files of %s: %s %s %s", d, d.Socket(), d.SNATConfig(), d.Store())
	}
	if StateDir("/").Store() != "/ipam.db" {
		t.Errorf("files of /: %s", StateDir("/").Store())
	}
}
