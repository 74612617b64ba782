package ipamclient

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	cases := []struct {
		name                string
		network, id, ifname string
		field               KeyField // "" valid
	}{
		{"containerd", "vpcchain", "5f1b0e4c7d9a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4", "eth0", ""},
		{"dots and dashes", "k8s-pod-network", "abc.def_1-2", "net1", ""},
		{"empty network", "", "abc", "eth0", FieldNetwork},
		{"network with a space", "vpc chain", "abc", "eth0", FieldNetwork},
		{"network too long", strings.Repeat("n", MaxNetworkLen+1), "abc", "eth0", FieldNetwork},
		{"empty container ID", "vpcchain", "", "eth0", FieldContainerID},
		{"container ID with NUL", "vpcchain", "ab\x00c", "eth0", FieldContainerID},
		{"container ID path", "vpcchain", "../etc", "eth0", FieldContainerID},
		{"container ID beyond bbolt's key size", "vpcchain", strings.Repeat("a", 40000), "eth0", FieldContainerID},
		{"empty ifname", "vpcchain", "abc", "", FieldIfName},
		{"ifname with NUL", "vpcchain", "abc", "eth\x000", FieldIfName},
		{"ifname not UTF-8", "vpcchain", "abc", "eth\xff", FieldIfName},
		{"ifname too long", "vpcchain", "abc", "eth0123456789abc", FieldIfName},
		{"ifname with a colon", "vpcchain", "abc", "eth0:1", FieldIfName},
		{"ifname dot-dot", "vpcchain", "abc", "..", FieldIfName},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateKey(tc.network, tc.id, tc.ifname)
			var ke *KeyError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.field != "" && (!errors.As(err, &ke) || ke.Field != tc.field):
				t.Fatalf("error %v, want one for %s", err, tc.field)
			case tc.field != "" && (!strings.Contains(err.Error(), string(tc.field)) || len(err.Error()) > 300):
				t.Fatalf("message %q does not name %s briefly", err, tc.field)
			}
		})
	}
}

func TestValidatePodInfo(t *testing.T) {
	for _, tc := range []struct {
		ns, name, netns string
		want            string // "" valid
	}{
		{"default", "web", "/var/run/netns/cni-1234", ""},
		{"", "", "", ""},
		{"default", "web", "/proc/1234/ns/net", ""},
		{"default", "web", "var/run/netns/x", "CNI_NETNS"},
		{"default", "web", "/" + strings.Repeat("x", MaxNetnsLen), "CNI_NETNS"},
		{"default", "web", "/run/netns/a\x00b", "CNI_NETNS"},
		{"de\nfault", "web", "", "K8S_POD_NAMESPACE"},
		{"default", "\xff", "", "K8S_POD_NAME"},
		{"default", strings.Repeat("p", MaxPodName+1), "", "K8S_POD_NAME"},
	} {
		err := ValidatePodInfo(tc.ns, tc.name, tc.netns)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("ValidatePodInfo(%q, %q, %q) = %v, want %q", tc.ns, tc.name, tc.netns, err, tc.want)
		}
	}
}
