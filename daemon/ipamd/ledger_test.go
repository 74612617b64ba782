package ipamd

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/store"
)

var (
	t0    = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	grace = 2 * time.Minute
	ipA   = netip.MustParseAddr("10.0.1.10")
	ipB   = netip.MustParseAddr("10.0.1.11")
	pfx   = netip.MustParsePrefix("10.0.2.16/28")
)

// testLedger has one secondary ENI, eni-1, that EC2 showed with ipA, ipB
// and pfx at t0.
func testLedger(t *testing.T) *ledger {
	l := newLedger(grace, map[string]int64{}, t.Logf)
	e := cloud.ENI{ID: "eni-1", DeviceNumber: 1, IPs: []netip.Addr{ipA, ipB}, Prefixes: []netip.Prefix{pfx}}
	l.addENI(l.newENI(e, t0), t0)
	return l
}

// free lists what the pool may hand out now, as package pool picks it.
func free(l *ledger) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, e := range l.poolENIs(false) {
		for _, a := range e.IPs {
			if !a.Assigned && a.ReleasedAt.IsZero() {
				out[a.IP] = true
			}
		}
		for _, p := range e.Prefixes {
			taken := map[netip.Addr]bool{}
			for _, a := range p.Addresses {
				taken[a.IP] = true
			}
			for ip := p.Prefix.Addr(); p.Prefix.Contains(ip); ip = ip.Next() {
				if !taken[ip] {
					out[ip] = true
				}
			}
		}
	}
	return out
}

func describe(ips []netip.Addr, pfx ...netip.Prefix) cloud.ENI {
	return cloud.ENI{ID: "eni-1", DeviceNumber: 1, IPs: ips, Prefixes: pfx}
}

// An address's life, step by step; after each step, whether ipA may go to
// a new pod and whether the ENI may be freed.
func TestLedgerAddressLife(t *testing.T) {
	k := store.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	tests := []struct {
		name     string
		step     func(l *ledger)
		pickable bool // ipA may go to a new pod
		eniBusy  bool // an address of eni-1 is in use
	}{
		{"learned from EC2", func(l *ledger) {}, true, false},
		{"reserved by an ADD being recorded", func(l *ledger) { l.reserve(ipA) }, false, true},
		{"held by a pod", func(l *ledger) {
			l.reserve(ipA)
			l.unreserve(k, store.Allocation{IP: ipA, ENIID: "eni-1"}, true)
		}, false, true},
		{"failed record frees it", func(l *ledger) {
			l.reserve(ipA)
			l.unreserve(k, store.Allocation{IP: ipA}, false)
		}, true, false},
		{"cooling after its pod left", func(l *ledger) {
			l.assign(k, store.Allocation{IP: ipA})
			l.release(k, t0)
		}, false, false},
		{"being given back", func(l *ledger) { l.markBusy([]netip.Addr{ipA}, nil) }, false, false},
		{"release failed", func(l *ledger) { l.releaseFailed("eni-1", []netip.Addr{ipA}, nil, errors.New("x"), t0) }, false, false},
		{"released: a lagging describe still shows it", func(l *ledger) {
			l.released("eni-1", []netip.Addr{ipA}, nil, t0)
			l.syncENI(l.enis["eni-1"], describe([]netip.Addr{ipA, ipB}, pfx), t0.Add(time.Second))
			l.adoptShown("eni-1", describe([]netip.Addr{ipA, ipB}, pfx), t0.Add(time.Second))
		}, false, false},
		{"released, re-assigned by EC2's own answer", func(l *ledger) {
			l.released("eni-1", []netip.Addr{ipA}, nil, t0)
			l.assigned("eni-1", []netip.Addr{ipA}, nil, t0.Add(time.Second))
		}, true, false},
		{"released, still shown after the grace: EC2's", func(l *ledger) {
			l.released("eni-1", []netip.Addr{ipA}, nil, t0)
			l.syncENI(l.enis["eni-1"], describe([]netip.Addr{ipA, ipB}, pfx), t0.Add(grace))
		}, true, false},
		{"missing from a describe within the grace", func(l *ledger) {
			l.syncENI(l.enis["eni-1"], describe([]netip.Addr{ipB}, pfx), t0.Add(time.Second))
		}, true, false},
		{"missing from a describe past the grace", func(l *ledger) {
			l.syncENI(l.enis["eni-1"], describe([]netip.Addr{ipB}, pfx), t0.Add(grace))
		}, false, false},
		{"missing past the grace, held by a pod", func(l *ledger) {
			l.assign(k, store.Allocation{IP: ipA})
			l.syncENI(l.enis["eni-1"], describe([]netip.Addr{ipB}, pfx), t0.Add(grace))
		}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLedger(t)
			tt.step(l)
			if got := free(l)[ipA]; got != tt.pickable {
				t.Errorf("%s may go to a new pod: %v, want %v", ipA, got, tt.pickable)
			}
			if got := l.podsOn(l.enis["eni-1"]) > 0; got != tt.eniBusy {
				t.Errorf("eni-1 in use: %v, want %v", got, tt.eniBusy)
			}
		})
	}
}

// A /28's life when EC2 stops showing it.
func TestLedgerPrefixMissing(t *testing.T) {
	k := store.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	inPfx := pfx.Addr().Next()
	tests := []struct {
		name      string
		pod       bool
		after     time.Duration
		kept      bool // still on the ENI
		lost      bool
		freeInPfx bool // a new pod may get one of its addresses
	}{
		{"within the grace: EC2 lags", false, time.Second, true, false, true},
		{"within the grace, pods on it", true, time.Second, true, false, true},
		{"past the grace, no pod: forgotten", false, grace, false, false, false},
		{"past the grace, pods on it: lost", true, grace, true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLedger(t)
			if tt.pod {
				l.assign(k, store.Allocation{IP: inPfx})
			}
			lost := l.syncENI(l.enis["eni-1"], describe([]netip.Addr{ipA, ipB}), t0.Add(tt.after))
			if got := l.enis["eni-1"].prefixes[pfx]; got != tt.kept {
				t.Errorf("kept %v, want %v", got, tt.kept)
			}
			if lost != tt.lost || l.lost[pfx] != tt.lost {
				t.Errorf("lost %v/%v, want %v", lost, l.lost[pfx], tt.lost)
			}
			if got := free(l)[pfx.Addr()]; got != tt.freeInPfx {
				t.Errorf("free address of %s: %v, want %v", pfx, got, tt.freeInPfx)
			}
			// EC2 shows it again: usable again.
			l.syncENI(l.enis["eni-1"], describe([]netip.Addr{ipA, ipB}, pfx), t0.Add(tt.after+time.Second))
			if !free(l)[pfx.Addr()] || l.lost[pfx] {
				t.Errorf("%s shown again is not usable again", pfx)
			}
		})
	}
}

// What EC2 took back is remembered for the consistency grace, whatever a
// describe shows meanwhile (one that does not show it may predate it), and
// forgotten after.
func TestLedgerGoneForTheGrace(t *testing.T) {
	l := testLedger(t)
	l.released("eni-1", []netip.Addr{ipA}, []netip.Prefix{pfx}, t0)
	// A describe older than the assign shows neither; one in between both.
	l.syncENI(l.enis["eni-1"], describe([]netip.Addr{ipB}), t0.Add(time.Second))
	l.syncENI(l.enis["eni-1"], describe([]netip.Addr{ipA, ipB}, pfx), t0.Add(2*time.Second))
	if free(l)[ipA] || free(l)[pfx.Addr()] || len(l.expiredGone(t0.Add(grace-time.Second))) != 0 {
		t.Errorf("within the grace: %s free %v, %s free %v", ipA, free(l)[ipA], pfx, free(l)[pfx.Addr()])
	}
	old := l.expiredGone(t0.Add(grace))
	if len(old) != 2 {
		t.Fatalf("past the grace: expired %v, want %s and %s", old, ipA, pfx)
	}
	l.forgetGone(old)
	l.syncENI(l.enis["eni-1"], describe([]netip.Addr{ipA, ipB}, pfx), t0.Add(grace+time.Second))
	if !free(l)[ipA] || !free(l)[pfx.Addr()] {
		t.Error("past the grace, what EC2 still shows is EC2's again")
	}
}

// Failed releases are retried per ENI after 1 s, 2 s, 4 s ... at most
// releaseRetryMax; a success clears the schedule.
func TestLedgerReleaseBackoff(t *testing.T) {
	l := testLedger(t)
	at := t0
	var waits []time.Duration
	for i := 0; i < 12; i++ {
		l.releaseFailed("eni-1", []netip.Addr{ipA}, nil, errors.New("UnauthorizedOperation"), at)
		next := l.retries["eni-1"].next
		if ips, _ := l.dueReleases(next.Add(-time.Millisecond)); len(ips) != 0 {
			t.Fatalf("retry %d due before its time", i)
		}
		if ips, _ := l.dueReleases(next); len(ips["eni-1"]) != 1 {
			t.Fatalf("retry %d not due at its time", i)
		}
		waits = append(waits, next.Sub(at))
		at = next
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300}
	for i, w := range want {
		if waits[i] != w*time.Second {
			t.Errorf("wait %d: %s, want %s (all: %v)", i, waits[i], w*time.Second, waits)
			break
		}
	}
	l.released("eni-1", []netip.Addr{ipA}, nil, at)
	if len(l.retries) != 0 || len(l.releasing) != 0 {
		t.Errorf("after the release: retries %v releasing %v", l.retries, l.releasing)
	}
}
