package pool

import (
	"net/netip"
	"testing"
	"time"
)

func TestPickAddress(t *testing.T) {
	neverUsed := func(e ENI, i int) ENI { e.IPs[i].ReleasedAt = time.Time{}; return e }
	releasedAgo := func(e ENI, i int, ago time.Duration) ENI { e.IPs[i].ReleasedAt = t0.Add(-ago); return e }
	dup := ipENI(1, old, 0, 0, 1)
	dup.IPs[0].IP = netip.MustParseAddr("10.0.0.1") // also assigned on eni-0

	tests := []struct {
		name    string
		cfg     Config
		snap    Snapshot
		wantIP  string // "" = none
		wantENI string
	}{
		{"lowest device number first", m5large(), snap(ipENI(2, old, 0, 0, 3), ipENI(0, old, 9, 0, 0), ipENI(1, old, 5, 0, 2)),
			"10.1.0.6", "eni-1"},
		{"never a cooling address", m5large(), snap(ipENI(0, old, 3, 6, 0), ipENI(1, old, 0, 0, 1)), "10.1.0.1", "eni-1"},
		{"all cooling: nothing", m5large(), snap(ipENI(0, old, 3, 6, 0)), "", ""},
		{"cooling over: usable again", m5large(), at(snap(ipENI(0, old, 3, 6, 0)), func(s *Snapshot) { s.Now = t0.Add(30 * time.Second) }),
			"10.0.0.4", "eni-0"},
		{"never-used before released", m5large(), snap(neverUsed(releasedAgo(ipENI(0, old, 0, 0, 2), 0, time.Minute), 1)), "10.0.0.2", "eni-0"},
		{"least recently released first", m5large(),
			snap(releasedAgo(releasedAgo(ipENI(0, old, 0, 0, 2), 0, time.Minute), 1, time.Hour)), "10.0.0.2", "eni-0"},
		{"secondary-IP mode ignores leftover prefixes", m5large(), snap(withPrefixes(ipENI(0, old, 1, 0, 0), pfx(0, 0, 0, 0))), "", ""},
		{"PD ignores leftover /32s", with(m5large(), pd(1)), snap(withPrefixes(ipENI(0, old, 0, 0, 3), pfx(0, 0, 2, 0))), "10.0.0.2", "eni-0"},
		{"PD: partly used /28 before a wholly free one", with(m5large(), pd(1)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 0, 0), pfx(0, 1, 3, 2))), "10.0.16.5", "eni-0"},
		{"PD: all 16 addresses usable, network address included", with(m5large(), pd(1)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 0, 0))), "10.0.0.0", "eni-0"},
		{"PD: last address of the /28 usable", with(m5large(), pd(1)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 15, 0))), "10.0.0.15", "eni-0"},
		{"PD: full and cooling /28: nothing", with(m5large(), pd(1)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 10, 6))), "", ""},
		{"malformed snapshot: address busy elsewhere never picked", m5large(), snap(ipENI(0, old, 1, 0, 0), dup), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip, eni, ok := PickAddress(tt.cfg, tt.snap)
			if tt.wantIP == "" {
				if ok {
					t.Fatalf("picked %s on %s, want none", ip, eni)
				}
				return
			}
			if !ok || ip != netip.MustParseAddr(tt.wantIP) || eni != tt.wantENI {
				t.Fatalf("picked %s on %s (ok=%v), want %s on %s", ip, eni, ok, tt.wantIP, tt.wantENI)
			}
		})
	}
}
