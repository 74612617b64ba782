package ipamd

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
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

// Step computes and executes one pool decision. It reports whether it did
// something, so the caller can go on until the pool is at target. Step
// waits for the action; Run's pool loop runs growth actions concurrently
// instead (stepAsync).
func (d *Daemon) Step(ctx context.Context) bool { return d.step(ctx, false) }

// stepAsync is Step for the pool loop: a growth action is started in the
// background and reported as done at once, so the next decision (which
// counts it as coming) can start another: a burst on a fresh node creates
// the ENIs it needs together instead of one after another.
func (d *Daemon) stepAsync(ctx context.Context) bool { return d.step(ctx, true) }

func (d *Daemon) step(ctx context.Context, async bool) bool {
	if d.cfg.IPv6 {
		return false // the /80 is the pool: nothing to grow or shrink
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.forgetOldCooldowns()
	d.retryReleases(ctx)
	d.mu.Lock()
	d.noteThrottlingLocked()
	if async && len(d.grow.growing) >= maxConcurrentGrowth {
		d.mu.Unlock()
		return false // a growth action's end kicks the loop
	}
	snap := d.snapshotLocked()
	pcfg := d.poolConfigLocked()
	surplus := pool.Surplus(pcfg, snap)
	d.surplusFloor = min(d.surplusFloor, surplus)
	snap.SurplusFloor = d.surplusFloor
	dec := pool.Decide(pcfg, snap)
	d.lastDecision = dec
	if !dec.Action.Shrinks() && snap.Now.Sub(d.surplusSince) >= pcfg.ScaleDownInterval {
		// The watched window is over and released nothing: watch the next
		// one from the surplus there is now, so a surplus that dipped once
		// is released after a later interval where it did not.
		d.surplusFloor, d.surplusSince = surplus, snap.Now
	}
	if dec.Action == pool.ActionNone {
		d.mu.Unlock()
		return false
	}
	var eni eniState
	if e := d.ledger.enis[dec.ENIID]; e != nil {
		eni = *e
	}
	d.ledger.markBusy(dec.IPs, dec.Prefixes)
	if async && dec.Action.Grows() {
		d.startGrowthLocked(ctx, dec, eni)
		d.mu.Unlock()
		return true
	}
	d.mu.Unlock()

	err := d.executeTimed(ctx, dec, eni)
	d.mu.Lock()
	ok := d.finishLocked(dec, err)
	d.mu.Unlock()
	d.settleDeleteOnTermination(ctx)
	return ok
}

func (d *Daemon) executeTimed(ctx context.Context, dec pool.Decision, eni eniState) error {
	cctx, cancel := context.WithTimeout(ctx, ec2CallTimeout)
	defer cancel()
	start := d.now()
	err := d.execute(cctx, dec, eni)
	if err == nil && (dec.Action == pool.ActionAssignIPs || dec.Action == pool.ActionAssignPrefixes) {
		d.mu.Lock()
		d.adaptive.noteLatency(d.now().Sub(start)) // one round trip: what a refill waits for
		d.mu.Unlock()
	}
	return err
}

// finishLocked records the outcome of an executed decision; it reports
// whether it succeeded.
func (d *Daemon) finishLocked(dec pool.Decision, err error) bool {
	d.ledger.unmarkBusy(dec.IPs, dec.Prefixes)
	d.counters["pool_"+dec.Action.String()]++
	if err != nil {
		d.lastPoolError = err.Error()
		d.counters["pool_errors"]++
		d.logf("pool: %s: %v", dec.Action, err)
		return false
	}
	d.lastPoolError = ""
	if dec.Action.Grows() {
		d.throttled = 0
	}
	if dec.Action.Shrinks() {
		d.lastScaleDown = d.now()
		d.surplusFloor, d.surplusSince = math.MaxInt, d.lastScaleDown
	}
	d.logf("pool: %s %s %d %s done: %s", dec.Action, dec.ENIID, max(dec.Count, len(dec.IPs)+len(dec.Prefixes)), dec.Unit, dec.Reason)
	return true
}

func (d *Daemon) execute(ctx context.Context, dec pool.Decision, eni eniState) error {
	switch dec.Action {
	case pool.ActionAssignIPs:
		ips, err := d.cloud.AssignIPs(ctx, eni.id, dec.Count)
		if err != nil {
			return d.growFailed(ctx, err, eni.id)
		}
		d.mu.Lock()
		d.ledger.assigned(eni.id, ips, nil, d.now())
		d.mu.Unlock()
	case pool.ActionAssignPrefixes:
		pfx, err := d.cloud.AssignPrefixes(ctx, eni.id, dec.Count)
		if err != nil {
			return d.growFailed(ctx, err, eni.id)
		}
		d.mu.Lock()
		d.ledger.assigned(eni.id, nil, pfx, d.now())
		d.mu.Unlock()
	case pool.ActionCreateENI:
		return d.createENI(ctx, dec)
	case pool.ActionReleaseIPs:
		if err := d.cloud.UnassignIPs(ctx, eni.id, dec.IPs); err != nil {
			d.releaseFailed(eni.id, dec.IPs, nil, err)
			return err
		}
		d.forgetReleased(eni.id, dec.IPs, nil)
	case pool.ActionReleasePrefixes:
		if err := d.cloud.UnassignPrefixes(ctx, eni.id, dec.Prefixes); err != nil {
			d.releaseFailed(eni.id, nil, dec.Prefixes, err)
			return err
		}
		d.forgetReleased(eni.id, nil, dec.Prefixes)
	case pool.ActionDeleteENI:
		return d.deleteENI(ctx, eni)
	}
	return nil
}

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

// subnetClusterTagPrefix marks a subnet as reserved for the named clusters
// (the AWS VPC CNI's tag: cni.networking.k8s.aws/cluster/<name>).
const subnetClusterTagPrefix = "cni.networking.k8s.aws/cluster/"

// clusterMayUse reports whether a discovered subnet is open to this
// cluster: a subnet without cluster tags is open to every cluster; one with
// them only to the clusters they name, so never to a daemon without
// CLUSTER_NAME.
func clusterMayUse(tags map[string]string, cluster string) bool {
	reserved := false
	for k := range tags {
		if name, ok := strings.CutPrefix(k, subnetClusterTagPrefix); ok {
			if cluster != "" && name == cluster {
				return true
			}
			reserved = true
		}
	}
	return !reserved
}
