package ipamd

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

func (d *Daemon) kickLocked() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Run drives the pool, reconciliation and the leaked-ENI sweep until ctx
// ends; first, in the background, it deletes the ENIs an earlier run on
// this node left detached.
func (d *Daemon) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.sweepNode(ctx) }()
	go func() { defer wg.Done(); d.reconcileLoop(ctx) }()
	if !d.cfg.IPv6 { // IPv6 mode's /80 is the pool: nothing to grow or shrink
		wg.Add(1)
		go func() { defer wg.Done(); d.poolLoop(ctx) }()
	}
	if !d.cfg.DisableLeakedENICleanup {
		wg.Add(1)
		go func() { defer wg.Done(); d.sweepLoop(ctx) }()
	}
	wg.Wait()
	d.grow.wg.Wait() // growth actions in flight end with ctx
}

func (d *Daemon) poolLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.PoolInterval)
	defer t.Stop()
	for {
		// Act until the pool is at target (or blocked), then wait.
		for ctx.Err() == nil && d.stepAsync(ctx) {
		}
		d.settleDeleteOnTermination(ctx) // what a throttling hold deferred
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.kick:
		}
	}
}

// sweepNode deletes the ENIs an earlier run of the daemon on this node
// left detached: killed between creating an ENI and attaching it, or
// between detaching and deleting one. Nothing else makes such ENIs (tagged
// with this instance and the create token, created before this run), so
// they need not wait for the cluster's leaked-ENI sweep and its minimum
// age; this is the run's own recovery, done even when that sweep is off.
// It is tried a few times; what is left is the sweep's.
func (d *Daemon) sweepNode(ctx context.Context) {
	for attempt := 0; attempt < 3; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		deleted, err := d.cloud.SweepNodeENIs(cctx, d.node.VPCID, d.node.InstanceID, d.started)
		cancel()
		d.noteDeletedENIs(deleted, "which an earlier run on this node left detached")
		if err == nil {
			return
		}
		d.logf("deleting the ENIs an earlier run on this node left detached: %v", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(5<<attempt) * time.Second):
		}
	}
}

// enisMayBeLeft notes that an ENI call of this run failed in a way that may
// have left an ENI detached (a create EC2 made but never answered, an ENI
// that could not be wired and then not be freed): until EC2's describes
// have caught up, each reconcile sweeps the node's detached ENIs.
func (d *Daemon) enisMayBeLeft() {
	d.mu.Lock()
	d.sweepNodeUntil = time.Now().Add(d.cfg.ConsistencyGrace)
	d.mu.Unlock()
}

// sweepAfterFailedENIOp deletes the node's detached ENIs while a failed
// ENI call may have left one. The caller holds grow.mu for writing, so no
// create is between its create and attach, nor starts during the sweep:
// every detached ENI of this node is left over (one being freed is deleted
// either way), including one made this second (the creation tags are in
// whole seconds of the wall clock).
func (d *Daemon) sweepAfterFailedENIOp(ctx context.Context) {
	d.mu.Lock()
	due := time.Now().Before(d.sweepNodeUntil)
	d.mu.Unlock()
	if !due {
		return
	}
	deleted, err := d.cloud.SweepNodeENIs(ctx, d.node.VPCID, d.node.InstanceID, time.Now().Add(time.Second))
	d.noteDeletedENIs(deleted, "left detached by a failed ENI call of this run")
	if err != nil {
		d.logf("deleting ENIs a failed ENI call left detached: %v", err)
	}
}

func (d *Daemon) sweepLoop(ctx context.Context) {
	// Spread first sweeps (within one interval, at most a minute) so a
	// fleet restart does not sweep at once.
	delay := time.Duration(rand.Int64N(int64(min(time.Minute, d.cfg.LeakSweepInterval))))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = d.cfg.LeakSweepInterval
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		deleted, err := d.cloud.SweepLeakedENIs(cctx, d.node.VPCID, d.cfg.LeakedENIMinAge)
		cancel()
		if err != nil {
			d.logf("leaked ENI sweep: %v", err)
		}
		d.noteDeletedENIs(deleted, "by the leaked ENI sweep")
	}
}

// noteDeletedENIs logs and counts the leftover ENIs a sweep deleted.
func (d *Daemon) noteDeletedENIs(deleted []string, why string) {
	if len(deleted) == 0 {
		return
	}
	d.logf("deleted %v, %s", deleted, why)
	d.mu.Lock()
	d.counters["leaked_enis_deleted"] += int64(len(deleted))
	d.mu.Unlock()
}
