package ipamd

import (
	"math"
	"time"

	"github.com/vpcchain/vpcchain/daemon/config"
	"github.com/vpcchain/vpcchain/daemon/pool"
)

// The adaptive warm pool (WARM_POOL_MODE=adaptive) keeps as many free
// addresses as pods are likely to ask for while one growth call is under
// way, instead of a number set by hand: during a refill of T (EC2's measured
// latency) pods arriving at rate λ ask for λT on average, and more than
// λT + 2√(λT) rarely (Poisson arrivals). The warm target is that, at least
// 1, and never more than the static targets would keep. Bursts beyond it are
// the waiting pods' business (Snapshot.Waiting), and cooling addresses are
// counted by the pool as always.
const (
	arrivalWindow  = time.Minute      // arrivals are counted over this
	minRateSpan    = 10 * time.Second // a younger daemon divides by this
	latencyAlpha   = 0.3              // weight of the newest growth call
	initialLatency = time.Second      // until a growth call was timed
)

type adaptiveWarm struct {
	start    time.Time
	arrivals []time.Time // first ADD of each pod, oldest first, within arrivalWindow
	latency  time.Duration
	// unknown: a fresh node that has seen no pod yet. Its arrival rate is
	// not zero but unknown (the first pods of a node usually come as a
	// burst), so it keeps what the static targets would until the first
	// pod's ADD.
	unknown bool
}

func newAdaptiveWarm(now time.Time) adaptiveWarm {
	return adaptiveWarm{start: now, latency: initialLatency}
}

// noteArrival records a pod's first ADD.
func (a *adaptiveWarm) noteArrival(now time.Time) {
	a.unknown = false
	a.arrivals = append(a.arrivals, now)
	a.forget(now)
}

func (a *adaptiveWarm) forget(now time.Time) {
	i := 0
	for i < len(a.arrivals) && now.Sub(a.arrivals[i]) > arrivalWindow {
		i++
	}
	a.arrivals = a.arrivals[i:]
}

// noteLatency records how long a growth call took.
func (a *adaptiveWarm) noteLatency(d time.Duration) {
	a.latency = time.Duration(latencyAlpha*float64(d) + (1-latencyAlpha)*float64(a.latency))
}

// rate is the pods' arrival rate per second.
func (a *adaptiveWarm) rate(now time.Time) float64 {
	a.forget(now)
	span := min(now.Sub(a.start), arrivalWindow)
	span = max(span, minRateSpan)
	return float64(len(a.arrivals)) / span.Seconds()
}

// warmTarget is the number of free addresses to keep: λT + 2√(λT), at least
// 1, at most most (most itself while the rate is unknown).
func (a *adaptiveWarm) warmTarget(now time.Time, most int) int {
	if a.unknown {
		return max(most, 1)
	}
	x := a.rate(now) * a.latency.Seconds()
	w := int(math.Ceil(x + 2*math.Sqrt(x)))
	return min(max(w, 1), max(most, 1))
}

// poolConfigLocked is the pool's configuration for the next decision: the
// static one, or in adaptive mode with WARM_IP_TARGET set from the measured
// demand, bounded by what the static targets would keep free (WARM_IP_TARGET
// if set, else WARM_ENI_TARGET's ENIs or WARM_PREFIX_TARGET's /28s).
// MINIMUM_IP_TARGET still applies.
func (d *Daemon) poolConfigLocked() pool.Config {
	c := d.pcfg
	// ENIs the daemon leaves alone hold attachment slots on the default
	// card all the same.
	n := d.foreignOnCard0Locked()
	if d.cfg.CustomNetworking {
		n++ // the primary ENI: attached, but not the pool's
	}
	if d.reservesTrunkSlotLocked() {
		n++ // the trunk ENI's slot, until the controller attaches it
	}
	if n > 0 {
		c.InstanceMaxENIs = max(c.InstanceMaxENIs-n, 1)
		if c.MaxENI >= 1 {
			c.MaxENI = max(c.MaxENI-n, 1)
		}
	}
	if d.cfg.WarmPoolMode != config.WarmPoolAdaptive {
		return c
	}
	most := c.WarmIPTarget
	if most == 0 {
		if c.Mode() == pool.ModePrefix {
			most = max(c.WarmPrefixTarget, 1) * pool.PrefixSize
		} else {
			most = max(c.WarmENITarget, 1) * c.SlotsPerENI()
		}
	}
	c.WarmIPTarget = d.adaptive.warmTarget(d.now(), most)
	return c
}
