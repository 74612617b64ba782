package veth

import (
	"strings"
	"testing"
)

// Calico's workload interface rule; every expected name is the prefix plus the
// first 11 characters of `printf %s <namespace>.<pod> | sha1sum`, computed
// with coreutils, not with this package.
func TestOwnerAlias(t *testing.T) {
	long := strings.Repeat("c", 300)
	tests := []struct {
		name  string
		owner Owner
		want  string
	}{
		{"main table", Owner{"abc", "eth0", 254}, "vpcchain:v1:abc:eth0:254"},
		{"secondary ENI", Owner{"0123456789abcdef", "net1", 3}, "vpcchain:v1:0123456789abcdef:net1:3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.owner.Alias()
			if got != tt.want {
				t.Fatalf("Alias() = %q, want %q", got, tt.want)
			}
			back, ok := ParseAlias(got)
			if !ok || back != tt.owner {
				t.Fatalf("ParseAlias(%q) = %+v, %v; want %+v", got, back, ok, tt.owner)
			}
			if !back.SameAttachment(tt.owner) {
				t.Fatalf("SameAttachment false for round trip")
			}
		})
	}

	t.Run("long container ID is hashed", func(t *testing.T) {
		o := Owner{ContainerID: long, IfName: "eth0", RouteTable: 254}
		a := o.Alias()
		if len(a) > 255 {
			t.Fatalf("alias is %d bytes, kernel limit is 255", len(a))
		}
		back, ok := ParseAlias(a)
		if !ok {
			t.Fatalf("ParseAlias(%q) failed", a)
		}
		if !back.SameAttachment(o) || !o.SameAttachment(back) {
			t.Fatalf("long container ID does not round-trip as the same attachment")
		}
		if back.SameAttachment(Owner{ContainerID: long + "x", IfName: "eth0"}) {
			t.Fatalf("different long IDs compare equal")
		}
	})

	t.Run("different attachments", func(t *testing.T) {
		a := Owner{"abc", "eth0", 254}
		for _, b := range []Owner{{"abd", "eth0", 254}, {"abc", "eth1", 254}} {
			if a.SameAttachment(b) {
				t.Errorf("%v and %v reported as same attachment", a, b)
			}
		}
		if !a.SameAttachment(Owner{"abc", "eth0", 3}) {
			t.Errorf("route table must not matter for SameAttachment")
		}
	})

	t.Run("foreign aliases", func(t *testing.T) {
		for _, s := range []string{"", "calico", "vpcchain:v1:", "vpcchain:v1:abc:eth0", "vpcchain:v1:abc:eth0:x", "vpcchain:v1::eth0:254", "vpcchain:v2:abc:eth0:254", "vpcchain:v1:abc:eth0:-1"} {
			if o, ok := ParseAlias(s); ok {
				t.Errorf("ParseAlias(%q) = %+v, true; want false", s, o)
			}
		}
	})
}
