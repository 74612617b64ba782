package routing

import "testing"

func TestENITable(t *testing.T) {
	tests := []struct{ dev, want int }{
		{0, 254}, {1, 1001}, {2, 1002}, {15, 1015}, {99, 1099},
	}
	for _, tc := range tests {
		if got := ENITable(tc.dev); got != tc.want {
			t.Errorf("ENITable(%d) = %d, want %d", tc.dev, got, tc.want)
		}
	}
	// Secondary ENIs (the reference allows device indexes below 100) never
	// land in Felix's ranges (default 1-250, EKS 65-99) or the reserved
	// tables 253-255.
	for dev := 1; dev < 100; dev++ {
		if tb := ENITable(dev); tb <= 255 {
			t.Errorf("ENITable(%d) = %d: inside Felix's or the kernel's table range", dev, tb)
		}
	}
}

func TestBranchTable(t *testing.T) {
	for _, tc := range []struct{ vlan, want int }{{1, 101}, {7, 107}, {120, 220}} {
		if got := BranchTable(tc.vlan); got != tc.want {
			t.Errorf("BranchTable(%d) = %d, want %d", tc.vlan, got, tc.want)
		}
	}
	// The VLAN ids AWS's resource controller gives (1 to a type's branch
	// limit, at most 120) never land on an ENI's table or a reserved one.
	for vlan := 1; vlan <= 120; vlan++ {
		tb := BranchTable(vlan)
		if tb == MainTable || tb == DefaultTable || tb == LocalTable || tb > tableBase {
			t.Errorf("BranchTable(%d) = %d: a reserved table or an ENI's", vlan, tb)
		}
	}
}
