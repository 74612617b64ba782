package ipamd

import (
	"context"
	"math"

	"github.com/vpcchain/vpcchain/daemon/pool"
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
