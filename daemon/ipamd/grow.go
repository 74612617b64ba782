package ipamd

import (
	"context"
	"sync"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/pool"
	"github.com/vpcchain/vpcchain/daemon/store"
)

// maxConcurrentGrowth bounds the growth actions the pool loop runs at once:
// enough to create every ENI an instance type allows together (most types
// have 2-4 to create), few enough to stay inside EC2's per-account rate.
const maxConcurrentGrowth = 4

// waitingTTL is how long a pod that found no address counts as waiting
// without asking again. The runtime retries a failed sandbox within
// seconds; a pod deleted meanwhile stops counting after this.
const waitingTTL = time.Minute

// growth is the pool loop's concurrent growth: actions in flight and the
// pods waiting for an address.
type growth struct {
	// growing: growth actions in flight, by a sequence number (guarded by
	// Daemon.mu). Decisions count what they will bring.
	growing map[int]pool.Growth
	seq     int
	// devReserved: device indexes of ENIs being created (Daemon.mu).
	devReserved map[int]bool
	// waiting: keys whose last ADD found no address, and when (Daemon.mu).
	waiting map[store.Key]time.Time
	// dot: ENIs created whose DeleteOnTermination is not set yet, with
	// their attachment (Daemon.mu); dotBusy: being set now.
	dot     map[string]string
	dotBusy map[string]bool
	// wg counts the goroutines of actions in flight; Run waits for them.
	wg sync.WaitGroup
	// mu is held for reading by every action in flight and for writing by
	// Reconcile, so reconciliation never sees an ENI half-created.
	mu sync.RWMutex
}

func newGrowth() growth {
	return growth{growing: map[int]pool.Growth{}, devReserved: map[int]bool{}, waiting: map[store.Key]time.Time{},
		dot: map[string]string{}, dotBusy: map[string]bool{}}
}

// startGrowthLocked runs dec in the background; d.mu and d.opMu are held.
func (d *Daemon) startGrowthLocked(ctx context.Context, dec pool.Decision, eni eniState) {
	d.grow.seq++
	id := d.grow.seq
	d.grow.growing[id] = pool.Growth{ENIID: dec.ENIID, Count: dec.Count}
	d.grow.mu.RLock() // opMu is held: Reconcile is not waiting for the write lock
	d.grow.wg.Add(1)
	go func() {
		defer d.grow.wg.Done()
		defer d.grow.mu.RUnlock()
		err := d.executeTimed(ctx, dec, eni)
		d.mu.Lock()
		delete(d.grow.growing, id)
		d.finishLocked(dec, err)
		d.kickLocked()
		d.mu.Unlock()
		d.settleDeleteOnTermination(ctx)
	}()
}

// settleDeleteOnTermination sets DeleteOnTermination on the ENIs created
// since, once their addresses are in use: one EC2 round trip less before a
// new ENI serves pods. While EC2 throttles, it waits like warm-target
// growth: no pod waits for it. An ENI whose call fails is retried at the next
// reconcile; until then a terminated node would leave it detached, tagged
// as ours, for the leak sweep.
func (d *Daemon) settleDeleteOnTermination(ctx context.Context) {
	d.mu.Lock()
	if d.warmOnHoldLocked() {
		d.mu.Unlock()
		return // no pod waits for it: after the throttling, at a reconcile
	}
	todo := map[string]string{}
	for id, att := range d.grow.dot {
		if !d.grow.dotBusy[id] {
			todo[id] = att
			d.grow.dotBusy[id] = true
		}
	}
	d.mu.Unlock()
	for id, att := range todo {
		cctx, cancel := context.WithTimeout(ctx, ec2CallTimeout)
		err := d.cloud.SetDeleteOnTermination(cctx, id, att)
		cancel()
		d.mu.Lock()
		delete(d.grow.dotBusy, id)
		switch {
		case err == nil || cloud.IsNotFound(err):
			delete(d.grow.dot, id)
		default:
			d.counters["delete_on_termination_failed"]++
			d.logf("%v (retried at the next reconcile; until then the leak sweep covers it)", err)
		}
		d.mu.Unlock()
	}
}

// growingLocked lists the growth actions in flight for a snapshot.
func (d *Daemon) growingLocked() []pool.Growth {
	var out []pool.Growth
	for _, g := range d.grow.growing {
		out = append(out, g)
	}
	return out
}

// noteWaitingLocked records that key's ADD found no address. The first pod
// that waits on a fresh node (one that started with only its primary ENI)
// puts the calls no pod waits for (the warm targets alone,
// DeleteOnTermination) on hold as a throttled call does: a node that pods
// wait for as it comes up is most likely one of many (a scale-out), whose
// calls for pods should go to EC2 before anyone's warm-up.
func (d *Daemon) noteWaitingLocked(key store.Key) {
	d.grow.waiting[key] = d.now()
	if d.fresh {
		d.fresh = false
		d.holdWarmLocked("pods waited as the node came up (a scale-out, likely): pods first")
	}
}

// doneWaitingLocked: key got an address or was deleted.
func (d *Daemon) doneWaitingLocked(key store.Key) { delete(d.grow.waiting, key) }

// waitingLocked counts the pods still waiting, forgetting those that have
// not asked again for waitingTTL.
func (d *Daemon) waitingLocked(now time.Time) int {
	for k, t := range d.grow.waiting {
		if now.Sub(t) > waitingTTL {
			delete(d.grow.waiting, k)
		}
	}
	return len(d.grow.waiting)
}
