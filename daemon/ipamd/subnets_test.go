package ipamd

import (
	"context"
	"testing"
)

func TestClusterMayUse(t *testing.T) {
	const k = subnetClusterTagPrefix
	tests := []struct {
		name    string
		tags    map[string]string
		cluster string
		want    bool
	}{
		{"no tags, named cluster", nil, "blue", true},
		{"no tags, unnamed cluster", nil, "", true},
		{"other tags only", map[string]string{"kubernetes.io/role/cni": "1", "team": "x"}, "blue", true},
		{"reserved for us", map[string]string{k + "blue": "1"}, "blue", true},
		{"reserved for us and others", map[string]string{k + "red": "1", k + "blue": "1"}, "blue", true},
		{"reserved for another", map[string]string{k + "red": "1"}, "blue", false},
		{"reserved, we have no name", map[string]string{k + "red": "1"}, "", false},
		{"prefix must match whole", map[string]string{k + "bluegreen": "1"}, "blue", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clusterMayUse(tt.tags, tt.cluster); got != tt.want {
				t.Errorf("clusterMayUse(%v, %q) = %v, want %v", tt.tags, tt.cluster, got, tt.want)
			}
		})
	}
}

// Subnet discovery as the AWS VPC CNI documents it: the node's subnet
// unless tagged kubernetes.io/role/cni=0; other subnets of the AZ only when
// tagged kubernetes.io/role/cni (not 0) and not reserved for other clusters;
// most free addresses first.
func TestPickSubnet(t *testing.T) {
	for _, tt := range []struct {
		cluster, want string
	}{{"blue", "ours"}, {"", "open"}} {
		t.Run("CLUSTER_NAME="+tt.cluster, func(t *testing.T) {
			f := newFixture(t, map[string]string{"CLUSTER_NAME": tt.cluster})
			vpc := f.sim.Cloud.Subnets()[0].VPCID
			ids := map[string]string{}
			for _, s := range []struct {
				name, cidr, az string
				tags           map[string]string
			}{
				{"other cluster's", "10.0.16.0/20", "us-west-2a", map[string]string{"kubernetes.io/role/cni": "1", subnetClusterTagPrefix + "red": "1"}},
				{"open", "10.0.8.0/22", "us-west-2a", map[string]string{"kubernetes.io/role/cni": "1"}},
				{"ours", "10.0.32.0/21", "us-west-2a", map[string]string{"kubernetes.io/role/cni": "1", subnetClusterTagPrefix + "blue": "1"}},
				{"untagged", "10.0.64.0/18", "us-west-2a", nil},
				{"opted out", "10.0.128.0/17", "us-west-2a", map[string]string{"kubernetes.io/role/cni": "0"}},
				{"other AZ", "10.0.48.0/20", "us-west-2b", map[string]string{"kubernetes.io/role/cni": "1"}},
			} {
				id, err := f.sim.Cloud.AddSubnet(vpc, s.cidr, s.az, s.tags)
				if err != nil {
					t.Fatal(err)
				}
				ids[id] = s.name
			}
			d := f.start()
			defer d.Close()
			got, err := d.pickSubnet(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if ids[got] != tt.want {
				t.Errorf("picked %s (%q), want the subnet %q", got, ids[got], tt.want)
			}
		})
	}
}
