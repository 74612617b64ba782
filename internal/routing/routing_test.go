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
