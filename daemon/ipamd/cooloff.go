package ipamd

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/pool"
)

// Cool-offs after EC2 refuses growth (the reference waits 120 s after a
// full subnet; throttling backs off briefly and lets the SDK's retryer and
// our token bucket do the rest).
const (
	subnetFullCoolOff  = 2 * time.Minute
	throttleCoolOff    = 5 * time.Second // doubled per throttled growth in a row, up to maxThrottleCoolOff
	maxThrottleCoolOff = time.Minute
	// warmThrottleCoolOff: the least hold on warm-target growth after EC2
	// throttled a call (noteThrottlingLocked).
	warmThrottleCoolOff = 30 * time.Second
	limitCoolOff        = time.Minute
	errorCoolOff        = 3 * time.Second
	ec2CallTimeout      = time.Minute
)

// growFailed classifies a failed growth call: cool-offs for full subnets,
// limits and throttling; and for anything else a re-read of the ENI from
// EC2, because a lost response may hide addresses EC2 did assign.
func (d *Daemon) growFailed(ctx context.Context, err error, eniID string) error {
	now := d.now()
	var c pool.CoolOff
	switch {
	case cloud.IsSubnetFull(err):
		d.forgetSubnets() // rank the subnets by what is free now
		c = pool.CoolOff{Scope: pool.CoolOffGrowth, Until: now.Add(subnetFullCoolOff), Reason: "subnet full: " + cloud.ErrorCode(err)}
	case cloud.IsThrottle(err):
		c = pool.CoolOff{Scope: pool.CoolOffGrowth, Until: now.Add(d.throttleBackoff()),
			Reason: "EC2 throttled the request (RequestLimitExceeded)"}
	case cloud.ErrorCode(err) == "AttachmentLimitExceeded":
		c = pool.CoolOff{Scope: pool.CoolOffCreateENI, Until: now.Add(limitCoolOff), Reason: "ENI attachment limit reached"}
	case cloud.IsLimitExceeded(err):
		c = pool.CoolOff{Scope: pool.CoolOffENI, ENIID: eniID, Until: now.Add(limitCoolOff), Reason: "ENI address limit reached"}
	default:
		c = pool.CoolOff{Scope: pool.CoolOffGrowth, Until: now.Add(errorCoolOff), Reason: "EC2 error: " + errText(err)}
	}
	if eniID != "" && !cloud.IsSubnetFull(err) && !cloud.IsThrottle(err) {
		d.resyncENI(ctx, eniID)
	}
	d.mu.Lock()
	d.coolOffs = append(pruneCoolOffs(d.coolOffs, now), c)
	d.mu.Unlock()
	return err
}

// noteThrottlingLocked puts growth for the warm targets alone on hold when
// EC2 throttled any call since the last look, retried ones included: the
// account is over its budget (a fleet scaling out), and the calls that
// pods wait for should get it first. The hold is spread over
// warmThrottleCoolOff to 3 times that, so the fleet's warm-up calls come
// back spread out; every further throttle starts a new one.
func (d *Daemon) noteThrottlingLocked() {
	n := d.cloud.Throttles()
	if n == d.seenThrottles {
		return
	}
	d.seenThrottles = n
	d.holdWarmLocked("EC2 is throttling the account's calls: pods first")
}

// holdWarmLocked puts the calls no pod waits for on hold for a random
// warmThrottleCoolOff to 3 times that, so a fleet's come back spread out.
func (d *Daemon) holdWarmLocked(reason string) {
	now := d.now()
	d.coolOffs = append(pruneCoolOffs(d.coolOffs, now), pool.CoolOff{Scope: pool.CoolOffWarm,
		Until: now.Add(warmThrottleCoolOff + rand.N(2*warmThrottleCoolOff)), Reason: reason})
}

// warmOnHoldLocked: growth for the warm targets (and other work no pod
// waits for) is on hold because EC2 throttles.
func (d *Daemon) warmOnHoldLocked() bool {
	for _, c := range d.coolOffs {
		if c.Scope == pool.CoolOffWarm && d.now().Before(c.Until) {
			return true
		}
	}
	return false
}

// throttleBackoff is the growth cool-off after EC2 throttled a growth call
// whose SDK retries were used up: doubled for each such call in a row and
// spread over half to one and a half times that, so the nodes of a
// throttled account do not all come back at once.
func (d *Daemon) throttleBackoff() time.Duration {
	d.mu.Lock()
	n := d.throttled
	d.throttled++
	d.mu.Unlock()
	base := min(throttleCoolOff<<min(n, 8), maxThrottleCoolOff)
	return base/2 + rand.N(base)
}

func errText(err error) string {
	if code := cloud.ErrorCode(err); code != "" {
		return code
	}
	return err.Error()
}

func pruneCoolOffs(cs []pool.CoolOff, now time.Time) []pool.CoolOff {
	var out []pool.CoolOff
	for _, c := range cs {
		if now.Before(c.Until) {
			out = append(out, c)
		}
	}
	return out
}
