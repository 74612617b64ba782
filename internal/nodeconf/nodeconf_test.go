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
