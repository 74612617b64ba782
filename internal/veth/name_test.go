package veth

import (
	"strings"
	"testing"
)

// Calico's workload interface rule; every expected name is the prefix plus the
// first 11 characters of `printf %s <namespace>.<pod> | sha1sum`, computed
// with coreutils, not with this package.
func TestHostName(t *testing.T) {
	tests := []struct {
		prefix, ns, pod, want string
	}{
		{"eni", "default", "nginx", "enic440f455693"},
		{"eni", "kube-system", "coredns-5d78c9869d-abcde", "eni4d5f75c480c"},
		{"eni", "a", "b", "eni69f6642c9d7"},
		{"cali", "default", "nginx", "calic440f455693"},
		{"x", "default", "nginx", "xc440f455693"},
	}
	for _, tt := range tests {
		got := HostName(tt.prefix, tt.ns, tt.pod)
		if got != tt.want {
			t.Errorf("HostName(%q, %q, %q) = %q, want %q", tt.prefix, tt.ns, tt.pod, got, tt.want)
		}
		if len(got) > MaxIfNameLen {
			t.Errorf("HostName(%q, %q, %q) = %q is longer than %d bytes", tt.prefix, tt.ns, tt.pod, got, MaxIfNameLen)
		}
	}
}

func TestFallbackHostName(t *testing.T) {
	// Expected values from outside the code: printf %s abc123.eth0 | sha1sum
	// gives 4d89c3aad85..., printf %s abc123.eth1 | sha1sum gives 63bbe57fe6a...
	for _, tt := range []struct{ prefix, id, ifname, want string }{
		{"eni", "abc123", "eth0", "eni4d89c3aad85"},
		{"eni", "abc123", "eth1", "eni63bbe57fe6a"},
		{"cali", "abc123", "eth0", "cali4d89c3aad85"},
	} {
		if got := FallbackHostName(tt.prefix, tt.id, tt.ifname); got != tt.want {
			t.Errorf("FallbackHostName(%q, %q, %q) = %q, want %q", tt.prefix, tt.id, tt.ifname, got, tt.want)
		}
	}
	// It must not collide with the pod rule for the same strings.
	if FallbackHostName("eni", "default", "nginx") != HostName("eni", "default", "nginx") {
		t.Fatalf("both rules hash \"<a>.<b>\"; they are expected to agree for equal inputs")
	}
}

func TestValidatePrefix(t *testing.T) {
	tests := []struct {
		prefix  string
		wantErr string // substring; empty = valid
	}{
		{"eni", ""},
		{"cali", ""},
		{"e", ""},
		{"a-b_", ""},
		{"eni.", ""},
		{"", "1 to 4 characters"},
		{"toolong", `"toolong" is 7 characters: it must be 1 to 4`},
		{"eth", `"eth" is reserved`},
		{"lo", `"lo" is reserved`},
		{"vlan", `"vlan" is reserved`},
		{"a/b", `invalid character '/'`},
		{"a:b", `invalid character ':'`},
		{"a b", `invalid character ' '`},
		{"a\tb", `invalid character '\t'`},
		{"a%d", `invalid character '%'`},
		{"e*", `invalid character '*'`},
		{"é", `invalid character`},
	}
	for _, tt := range tests {
		err := ValidatePrefix(tt.prefix)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidatePrefix(%q) = %v, want nil", tt.prefix, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidatePrefix(%q) = %v, want error containing %q", tt.prefix, err, tt.wantErr)
		}
	}
}

func TestValidateIfName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string
	}{
		{"eth0", ""},
		{"abcdefghijklmno", ""},
		{"abcdefghijklmnop", `"abcdefghijklmnop" is 16 bytes: Linux interface names are at most 15 bytes`},
		{"", "empty"},
		{".", "not allowed"},
		{"..", "not allowed"},
		{"a/b", `contains '/'`},
		{"a:b", `contains ':'`},
		{"a b", `contains ' '`},
	}
	for _, tt := range tests {
		err := ValidateIfName(tt.name)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidateIfName(%q) = %v, want nil", tt.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidateIfName(%q) = %v, want error containing %q", tt.name, err, tt.wantErr)
		}
	}
}

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
