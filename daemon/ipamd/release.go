package ipamd

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
)

// forgetOldCooldowns drops release times well past the cooldown, and
// release records past the consistency grace, so the store does not grow
// without bound: store transactions outside the lock.
func (d *Daemon) forgetOldCooldowns() {
	d.mu.Lock()
	now := d.now()
	old := d.ledger.cooledBefore(now.Add(-d.cfg.IPCooldownPeriod - 5*time.Minute))
	gone := d.ledger.expiredGone(now)
	d.mu.Unlock()
	if len(gone) > 0 {
		if err := d.store.ForgetReleased(gone...); err != nil {
			d.logf("forget old release records: %v", err)
		} else {
			d.mu.Lock()
			d.ledger.forgetGone(gone)
			d.mu.Unlock()
		}
	}
	if len(old) == 0 {
		return
	}
	if err := d.store.ForgetCooling(slices.Collect(maps.Keys(old))...); err != nil {
		d.logf("forget old cooldowns: %v", err)
		return
	}
	d.mu.Lock()
	d.ledger.forgetCooling(old)
	d.mu.Unlock()
}

// retryReleases gives back to EC2 the free addresses and prefixes whose
// release failed, each ENI's when its backoff is over. EC2 may have made
// the change behind an error or a lost response, so they stay out of the
// pool until a release succeeds; the release is idempotent (an address no
// longer assigned is a success).
func (d *Daemon) retryReleases(ctx context.Context) {
	d.mu.Lock()
	ips, pfx := d.ledger.dueReleases(d.now())
	d.mu.Unlock()
	if len(ips)+len(pfx) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, ec2CallTimeout)
	defer cancel()
	for eni, list := range ips {
		if err := retried(d, cctx, eni, list, d.cloud.UnassignIPs); err != nil {
			d.releaseFailed(eni, list, nil, err)
		} else {
			d.forgetReleased(eni, list, nil)
		}
	}
	for eni, list := range pfx {
		if err := retried(d, cctx, eni, list, d.cloud.UnassignPrefixes); err != nil {
			d.releaseFailed(eni, nil, list, err)
		} else {
			d.forgetReleased(eni, nil, list)
		}
	}
}

// retried runs one retried release; an ENI that no longer exists has
// nothing left to give back.
func retried[T any](d *Daemon, ctx context.Context, eni string, list []T, release func(context.Context, string, []T) error) error {
	d.mu.Lock()
	d.counters["release_retries"]++
	d.mu.Unlock()
	if err := release(ctx, eni, list); err != nil && !cloud.IsNotFound(err) {
		return err
	}
	return nil
}

// releaseFailed keeps addresses or prefixes whose release failed out of the
// pool: EC2 may have unassigned them (a lost response, a timeout after the
// change), and an ADD must never get an address the ENI no longer has.
// retryReleases gives them back later, backing off per ENI.
func (d *Daemon) releaseFailed(eniID string, ips []netip.Addr, pfx []netip.Prefix, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ledger.releaseFailed(eniID, ips, pfx, err, d.now())
	d.counters["release_failed"] += int64(len(ips) + len(pfx))
	r := d.ledger.retries[eniID]
	d.logf("release of %v %v from %s failed (attempt %d, next in %s): %v", ips, pfx, eniID, r.attempts,
		r.next.Sub(d.now()).Round(time.Second), err)
}

// forgetReleased records that EC2 took addresses and prefixes back: durably
// first (one store transaction, outside the lock; they stay out of the pool
// meanwhile), so that neither a lagging describe nor a restart brings them
// back, then in the ledger.
func (d *Daemon) forgetReleased(eniID string, ips []netip.Addr, pfx []netip.Prefix) {
	now := d.now()
	var items []string
	var cooling []netip.Addr
	for _, ip := range ips {
		items = append(items, ip.String())
		cooling = append(cooling, ip)
	}
	for _, p := range pfx {
		items = append(items, p.String())
		for ip := p.Addr(); p.Contains(ip); ip = ip.Next() {
			cooling = append(cooling, ip)
		}
	}
	if err := d.store.RecordReleased(now, items, cooling); err != nil {
		// The release is done in EC2 either way; only a restart inside
		// EC2's lag could bring them back.
		d.logf("record released %v: %v", items, err)
	}
	d.mu.Lock()
	d.ledger.released(eniID, ips, pfx, now)
	d.mu.Unlock()
}
