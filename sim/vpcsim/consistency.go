package vpcsim

import (
	"sync"
	"time"
)

// EC2's describe calls are eventually consistent: right after a change, a
// DescribeNetworkInterfaces may still answer with the state from before it
// (an address just assigned is missing, one just unassigned is still there,
// a new ENI is not found). describeHistory reproduces that: with a lag set,
// DescribeNetworkInterfaces answers from the newest state that is at least
// the lag old. The state is recorded after every change to an ENI or an
// instance while a lag is set, and once when it is set.
type describeHistory struct {
	mu    sync.Mutex
	cloud *Cloud
	now   func() time.Time
	lag   time.Duration
	snaps []eniSnapshot // oldest first
}

type eniSnapshot struct {
	at   time.Time
	enis []eniDetail
}

func newDescribeHistory(c *Cloud) *describeHistory {
	return &describeHistory{cloud: c, now: time.Now}
}

// setLag sets how old the state DescribeNetworkInterfaces answers with is;
// 0 makes it consistent again.
func (h *describeHistory) setLag(d time.Duration) {
	// The baseline is read before h.mu is taken: recordLocked runs under
	// the cloud's lock and then takes h.mu, so this order never inverts.
	base := h.cloud.eniDetails(nil)
	h.mu.Lock()
	defer h.mu.Unlock()
	if d <= 0 {
		h.lag, h.snaps = 0, nil
		return
	}
	if h.lag == 0 {
		h.snaps = []eniSnapshot{{at: h.now(), enis: base}}
	}
	h.lag = d
}

func (h *describeHistory) currentLag() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lag
}

// recordLocked keeps the state after a change (only while a lag is set)
// and forgets what no answer can show any more. The caller holds the
// cloud's lock; details reads the ENIs under it.
func (h *describeHistory) recordLocked(details func(keep func(*ENI) bool) []eniDetail) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lag == 0 {
		return
	}
	now := h.now()
	h.snaps = append(h.snaps, eniSnapshot{at: now, enis: details(nil)})
	// The newest snapshot at least lag old answers now; older ones never
	// will again.
	cut := now.Add(-h.lag)
	keep := 0
	for i, s := range h.snaps {
		if !s.at.After(cut) {
			keep = i
		}
	}
	h.snaps = h.snaps[keep:]
}

// view returns the ENIs as a describe sees them now, and false when the
// describe is consistent (no lag set).
func (h *describeHistory) view() ([]eniDetail, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lag == 0 {
		return nil, false
	}
	cut := h.now().Add(-h.lag)
	out := h.snaps[0].enis
	for _, s := range h.snaps {
		if s.at.After(cut) {
			break
		}
		out = s.enis
	}
	return out, true
}
