package ipamd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/liveness"
	"github.com/vpcchain/vpcchain/daemon/store"
)

func (d *Daemon) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, ec2CallTimeout)
		if err := d.Reconcile(cctx); err != nil {
			d.logf("reconcile: %v", err)
		}
		cancel()
		d.settleDeleteOnTermination(ctx)
		d.recheckENIConfig(ctx)
		// Declarative and cheap: also repairs rules someone else flushed.
		if err := d.SyncSNAT(); err != nil {
			d.logf("reconcile SNAT: %v", err)
		}
		d.recheckSysctls(ctx)
		d.releaseOrphans(ctx)
	}
}

// Reconcile brings the daemon's view of the node's ENIs in line with EC2.
// IMDS is read first because it is free; EC2 (the truth) is asked only when
// IMDS disagrees with what the daemon holds, which keeps describe calls off
// the account's API budget on a quiet node.
//
// EC2's describes are eventually consistent, so an answer that omits an
// address or ENI the daemon holds is not taken as a removal when a pod
// holds the address, or when the daemon learned of it less than
// VPCCHAIN_EC2_CONSISTENCY_GRACE ago: the disagreement is logged and
// counted, and the next describe decides.
func (d *Daemon) Reconcile(ctx context.Context) error {
	if d.cfg.IPv6 {
		// No pool loop runs in IPv6 mode: cooldowns are forgotten here.
		d.forgetOldCooldowns()
		return d.reconcileIPv6(ctx)
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.grow.mu.Lock() // wait for growth in flight: no ENI half-created
	defer d.grow.mu.Unlock()
	d.sweepAfterFailedENIOp(ctx)
	md, err := d.cloud.MetadataNode(ctx)
	if err == nil {
		d.noteVPCCIDRs(md.VPCCIDRs)
		if d.matches(md.ENIs) {
			return nil
		}
	}
	enis, err := d.cloud.InstanceENIs(ctx, d.node.InstanceID)
	if err != nil {
		return fmt.Errorf("describe this instance's ENIs: %w", err)
	}
	d.mu.Lock()
	now := d.now()
	truth := map[string]cloud.ENI{}
	for _, e := range d.managedLocked(enis, now) {
		truth[e.ID] = e
	}
	d.noteForeignInIMDSLocked(md.ENIs)
	// ENIs gone from the instance: their allocations cannot work any more,
	// unless EC2 is lagging. An ENI a pod holds an address of stays.
	var gone []*eniState
	var forget []netip.Addr
	for id, st := range d.ledger.enis {
		if _, ok := truth[id]; ok {
			delete(d.ledger.disagreements, "eni:"+id)
			continue
		}
		if pods := d.ledger.podsOn(st); pods > 0 || now.Sub(st.learned) < d.cfg.ConsistencyGrace {
			d.ledger.disagree("eni:"+id, "%s (device %d) is missing from EC2's describe; kept: %d pods hold addresses on it, learned %s ago",
				id, st.dev, pods, now.Sub(st.learned).Round(time.Second))
			continue
		}
		d.logf("reconcile: %s (device %d) is no longer attached: dropping it", id, st.dev)
		d.counters["reconcile_enis_removed"]++
		forget = append(forget, d.ledger.removeENI(st, false, now)...)
		gone = append(gone, st)
	}
	var adopt []cloud.ENI
	lost := false
	for id, e := range truth {
		st := d.ledger.enis[id]
		if st == nil {
			adopt = append(adopt, e)
			continue
		}
		lost = d.ledger.syncENI(st, e, now) || lost
	}
	forget = append(forget, d.ledger.forgetStrayCooling()...)
	if lost {
		d.kickLocked() // a lost prefix's free addresses left the pool: replace them now
	}
	// Host networking and the store's fsync: outside the lock.
	d.mu.Unlock()
	if err := d.store.ForgetCooling(forget...); err != nil {
		d.logf("reconcile: forget cooldowns: %v", err)
	}
	for _, st := range gone {
		if err := d.host.TeardownENI(st.hostENI(d.cfg.MTU)); err != nil {
			d.logf("reconcile: tear down host networking of %s: %v", st.id, err)
		}
	}
	var errs []error
	for _, e := range adopt {
		d.logf("reconcile: adopting %s (device %d) attached outside the daemon", e.ID, e.DeviceNumber)
		if err := d.adoptENI(ctx, e, d.linkWait(e.AttachTime)); err != nil {
			errs = append(errs, err)
			continue
		}
		d.mu.Lock()
		d.counters["reconcile_enis_adopted"]++
		d.mu.Unlock()
	}
	return errors.Join(errs...)
}

// matches reports whether IMDS's view equals the daemon's (ignoring ENIs
// the daemon leaves alone).
func (d *Daemon) matches(md []cloud.ENI) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	n := 0
	inIMDS := map[string]bool{}
	for _, e := range md {
		if f := d.foreign[e.ID]; f != nil {
			f.inIMDS, inIMDS[e.ID] = true, true
			continue
		}
		st := d.ledger.enis[e.ID]
		if d.ledger.isGone(e.ID, now) && st == nil {
			continue // freed: IMDS lags
		}
		if st == nil {
			return false
		}
		if !sameAsIMDS(d.ledger, e.ID, e.IPs, st.ips, now) || !sameAsIMDS(d.ledger, e.ID, e.Prefixes, st.prefixes, now) {
			return false
		}
		n++
	}
	// A foreign ENI gone from IMDS: EC2 says what went. One IMDS never
	// showed (it leaves out ENIs without IPv4 addresses, such as EFA-only
	// ones) does not count, or it would cost a describe per reconcile.
	for id, f := range d.foreign {
		if f.inIMDS && !inIMDS[id] {
			return false
		}
	}
	// A lost prefix is watched by a describe.
	return n == len(d.ledger.enis) && len(d.ledger.unconfirmed) == 0 && len(d.ledger.unconfirmedPrefixes) == 0 &&
		len(d.ledger.lost) == 0
}

// sameAsIMDS reports whether IMDS's list of an ENI's addresses (or
// prefixes) equals the daemon's set; what EC2 took back and IMDS still
// lists does not count.
func sameAsIMDS[T interface {
	comparable
	String() string
}](l *ledger, eniID string, listed []T, have map[T]bool, now time.Time) bool {
	n := 0
	for _, x := range listed {
		if l.isGone(x.String(), now) {
			l.disagree("gone:"+x.String(), "%s on %s was released and EC2 accepted; IMDS still lists it: ignored", x, eniID)
			continue
		}
		if !have[x] {
			return false
		}
		n++
	}
	return n == len(have)
}

// releaseOrphans releases allocations whose pod sandbox the container
// runtime no longer has, once they are older than the grace period: the
// pod is gone, but its DEL never reached the daemon (the daemon was down
// and the plugin's DEL succeeded without it). Only the runtime's word
// counts: a sandbox it lists keeps its address whatever its network
// namespace path looks like from here. When the runtime cannot be asked,
// or does not list the daemon's own pod, nothing is released (counted, and
// logged once per failure).
func (d *Daemon) releaseOrphans(ctx context.Context) {
	if d.live == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	boxes, err := d.live.Sandboxes(cctx)
	cancel()
	if err == nil {
		// A runtime that does not list the daemon's own pod is not the
		// kubelet's (a wrong socket): what it lacks proves nothing.
		err = liveness.CheckOwnPod(boxes, liveness.Pod{Namespace: d.cfg.PodNamespace, Name: d.cfg.PodName})
	}
	d.mu.Lock()
	if err != nil {
		d.counters["orphan_check_skipped"]++
		if msg := err.Error(); msg != d.livenessErr {
			d.livenessErr = msg
			d.logf("orphan check skipped, nothing released: %s: %v", d.live, err)
		}
		d.mu.Unlock()
		return
	}
	if d.livenessErr != "" {
		d.logf("orphan check: %s answers again", d.live)
		d.livenessErr = ""
	}
	d.counters["orphan_checks"]++
	cut := d.now().Add(-d.cfg.OrphanGrace)
	gone := map[store.Key]string{} // -> the netns path recorded at ADD
	for k, a := range d.ledger.byKey {
		if _, live := boxes[k.ContainerID]; live || a.AssignedAt.After(cut) {
			continue
		}
		gone[k] = a.Netns
	}
	d.mu.Unlock()
	for k, netns := range gone {
		if a, ok, err := d.Del(k); err != nil {
			d.logf("release orphan %s: %v", k, err)
		} else if ok {
			d.logf("released %s of %s: %s has no such pod sandbox%s", a.IP, k, d.live, netnsEvidence(netns))
			d.mu.Lock()
			d.counters["orphans_released"]++
			d.mu.Unlock()
		}
	}
}

// netnsEvidence says what the sandbox's network namespace path shows, for
// the log: it never decides (a runtime may pass /proc/<pid>/ns/net, or keep
// namespaces where the daemon cannot see them).
func netnsEvidence(path string) string {
	if path == "" {
		return ""
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Sprintf(" (its network namespace path %s still exists here)", path)
	}
	return fmt.Sprintf(" (its network namespace path %s is gone here too)", path)
}

// ReleaseOrphans runs the orphan check now (tests, operators).
func (d *Daemon) ReleaseOrphans(ctx context.Context) { d.releaseOrphans(ctx) }

// noteVPCCIDRs records the VPC's CIDRs as IMDS shows them; it reports a
// change (a CIDR associated with the VPC after start).
func (d *Daemon) noteVPCCIDRs(cidrs []netip.Prefix) bool {
	if len(cidrs) == 0 {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if slices.Equal(cidrs, d.node.VPCCIDRs) {
		return false
	}
	d.logf("VPC CIDRs changed: %v -> %v", d.node.VPCCIDRs, cidrs)
	d.node.VPCCIDRs = slices.Clone(cidrs)
	d.counters["vpc_cidr_changes"]++
	return true
}
