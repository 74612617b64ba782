package ipamd

import (
	"math"
	"testing"
	"time"
)

// poissonCDF is P(N <= k) for N ~ Poisson(mean), from the probability mass
// function (independent of the estimator's closed form).
func poissonCDF(mean float64, k int) float64 {
	p, sum := math.Exp(-mean), 0.0
	for i := 0; i <= k; i++ {
		if i > 0 {
			p *= mean / float64(i)
		}
		sum += p
	}
	return sum
}

// The adaptive warm target covers the pods that arrive during one refill
// (EC2's latency) with high probability, for arrivals at a steady rate, and
// stays within its bounds.
func TestAdaptiveWarmTarget(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		every   time.Duration // one pod per
		latency time.Duration
		most    int
	}{
		{5 * time.Second, 100 * time.Millisecond, 9},
		{time.Second, 100 * time.Millisecond, 9},
		{200 * time.Millisecond, 300 * time.Millisecond, 9},
		{100 * time.Millisecond, time.Second, 14},
		{20 * time.Millisecond, time.Second, 14}, // 50/s: capped
	} {
		a := newAdaptiveWarm(t0)
		now := t0
		for now.Sub(t0) < 2*arrivalWindow {
			a.noteArrival(now)
			now = now.Add(tt.every)
		}
		for range 20 { // the average settles on the measured latency
			a.noteLatency(tt.latency)
		}
		got := a.warmTarget(now, tt.most)
		mean := tt.latency.Seconds() / tt.every.Seconds()
		switch {
		case got < 1 || got > tt.most:
			t.Errorf("one pod per %s, latency %s: warm target %d, outside [1, %d]", tt.every, tt.latency, got, tt.most)
		case got < tt.most && poissonCDF(mean, got) < 0.975:
			t.Errorf("one pod per %s, latency %s: warm target %d covers a refill's arrivals (mean %.2f) with probability %.3f only",
				tt.every, tt.latency, got, mean, poissonCDF(mean, got))
		case got > 1 && poissonCDF(mean, got-2) >= 0.999:
			t.Errorf("one pod per %s, latency %s: warm target %d is more than a refill needs (mean %.2f)", tt.every, tt.latency, got, mean)
		}
	}
	// Arrivals that stopped are forgotten: the target falls back to 1.
	a := newAdaptiveWarm(t0)
	for i := range 100 {
		a.noteArrival(t0.Add(time.Duration(i) * 100 * time.Millisecond))
	}
	a.noteLatency(time.Second)
	if got := a.warmTarget(t0.Add(10*time.Second+2*arrivalWindow), 9); got != 1 {
		t.Errorf("a minute after the last arrival: warm target %d, want 1", got)
	}
}

// A fresh node that has seen no pod does not know its arrival rate: it
// keeps what the static targets would (its first pods usually come as a
// burst), and adapts from the first pod's ADD on.
func TestAdaptiveUnknownRateKeepsTheStaticTarget(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := newAdaptiveWarm(now)
	a.unknown = true
	if got := a.warmTarget(now.Add(time.Hour), 9); got != 9 {
		t.Errorf("no pod seen yet: warm target %d, want the static 9", got)
	}
	a.noteArrival(now.Add(time.Hour))
	// One arrival in the last minute, T = 1 s: λT = 1/60, and
	// ceil(1/60 + 2*sqrt(1/60)) = ceil(0.27) = 1.
	if got := a.warmTarget(now.Add(time.Hour), 9); got != 1 {
		t.Errorf("after the first pod: warm target %d, want 1", got)
	}
}
