package config

import (
	"strings"
	"testing"
)

// FuzzLoad: any value of any knob either loads into a configuration within
// the documented limits or is refused with a message naming the variable.
func FuzzLoad(f *testing.F) {
	for _, kv := range [][2]string{
		{"WARM_IP_TARGET", "5"}, {"WARM_IP_TARGET", "-3"}, {"AWS_VPC_ENI_MTU", "100000"}, {"MAX_ENI", "x"},
		{"IP_COOLDOWN_PERIOD", "30"}, {"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "10.0.0.0/8,bad"},
		{"AWS_VPC_K8S_CNI_CONNMARK", "0x80"}, {"AWS_VPC_K8S_CNI_VETHPREFIX", "eth"}, {"VPCCHAIN_POOL_INTERVAL", "0s"},
		{"ENABLE_PREFIX_DELEGATION", "true"}, {"AWS_VPC_K8S_CNI_RANDOMIZESNAT", "maybe"},
	} {
		f.Add(kv[0], kv[1])
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		c, err := Load(func(k string) (string, bool) {
			if k == name {
				return value, true
			}
			return "", false
		})
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("refusal %q does not name %s", err, name)
			}
			return
		}
		if c.MTU < 576 || c.MTU > 9001 || c.WarmIPTarget < 0 || c.MinimumIPTarget < 0 || c.ConnMark == 0 || c.PoolInterval <= 0 {
			t.Fatalf("accepted %s=%q into %+v", name, value, c)
		}
	})
}
