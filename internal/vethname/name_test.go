package vethname

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
