package instancelimits

import "testing"

func TestLookup(t *testing.T) {
	if err := Err(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		typ        string
		enis, ipv4 int
		pd         bool
	}{
		{"m5.large", 3, 10, true},
		{"t2.micro", 2, 2, false},
		{"t3.medium", 3, 6, true},
		{"c5.18xlarge", 15, 50, true},
		{"c5.metal", 15, 50, true}, // bare metal, hypervisor unknown
		{"c6in.32xlarge", 8, 50, true},
	}
	for _, tt := range tests {
		l, ok := Lookup(tt.typ)
		if !ok {
			t.Fatalf("%s: not found", tt.typ)
		}
		if l.MaxENIs != tt.enis || l.IPv4PerENI != tt.ipv4 || l.SupportsPrefixDelegation() != tt.pd {
			t.Errorf("%s: got %+v, want enis=%d ipv4=%d pd=%v", tt.typ, l, tt.enis, tt.ipv4, tt.pd)
		}
	}
	if _, ok := Lookup("m5.huge"); ok {
		t.Error("m5.huge should be unknown")
	}
	if n := len(Types()); n < 1000 {
		t.Errorf("only %d types", n)
	}
}

func TestSimilar(t *testing.T) {
	got := Similar("m5.larg", 3)
	if len(got) != 3 || got[0] != "m5.large" {
		t.Errorf("Similar(m5.larg) = %v, want m5.large first", got)
	}
}

// EC2's User Guide lists the network cards of multi-card types: p4d.24xlarge
// has 4 cards of 15 network interfaces (60), c6in.32xlarge 2 of 8 (16),
// trn1.32xlarge 8 of 5 (40); the default card is card 0.
func TestNetworkCards(t *testing.T) {
	tests := []struct {
		typ                   string
		defaultCardENIs       int
		cards, total, defCard int
	}{
		{"p4d.24xlarge", 15, 4, 60, 0},
		{"c6in.32xlarge", 8, 2, 16, 0},
		{"trn1.32xlarge", 5, 8, 40, 0},
		{"m5.large", 3, 1, 3, 0},
	}
	for _, tt := range tests {
		l, ok := Lookup(tt.typ)
		if !ok {
			t.Fatalf("%s: not found", tt.typ)
		}
		if l.MaxENIs != tt.defaultCardENIs || len(l.NetworkCards) != tt.cards || l.TotalENIs() != tt.total || l.DefaultNetworkCard != tt.defCard {
			t.Errorf("%s: MaxENIs %d, %d cards, TotalENIs %d, default card %d; want %d, %d, %d, %d", tt.typ,
				l.MaxENIs, len(l.NetworkCards), l.TotalENIs(), l.DefaultNetworkCard, tt.defaultCardENIs, tt.cards, tt.total, tt.defCard)
		}
	}
}

// The table's is_trunking_compatible and branch_interface columns, read by
// hand: m5.large "true 9", c5.large "true 9", m5.24xlarge "true 107",
// c6in.32xlarge "true 106", t3.medium "false 0" (EKS: no t family type
// takes security groups for pods), m4.large "false 0" (Xen), and
// c7i.32xlarge with both cells empty (a type the trunking table lacks).
func TestTrunking(t *testing.T) {
	tests := []struct {
		typ        string
		compatible bool
		branches   int
	}{
		{"m5.large", true, 9},
		{"c5.large", true, 9},
		{"m5.24xlarge", true, 107},
		{"c6in.32xlarge", true, 106},
		{"t3.medium", false, 0},
		{"m4.large", false, 0},
		{"c7i.32xlarge", false, 0},
	}
	for _, tt := range tests {
		l, ok := Lookup(tt.typ)
		if !ok {
			t.Fatalf("%s: not found", tt.typ)
		}
		if l.TrunkingCompatible != tt.compatible || l.BranchInterfaces != tt.branches {
			t.Errorf("%s: trunking %v with %d branches, want %v with %d", tt.typ, l.TrunkingCompatible, l.BranchInterfaces, tt.compatible, tt.branches)
		}
	}
}
