package ipamd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/store"
	"github.com/vpcchain/vpcchain/internal/snat"
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
		// Declarative and cheap: also repairs rules someone else flushed.
		if err := d.SyncSNAT(); err != nil {
			d.logf("reconcile SNAT: %v", err)
		}
		d.releaseOrphans()
	}
}

// Reconcile brings the daemon's view of the node's ENIs in line with EC2.
// IMDS is read first because it is free; EC2 (the truth) is asked only when
// IMDS disagrees with what the daemon holds, which keeps describe calls off
// the account's API budget on a quiet node.
func (d *Daemon) Reconcile(ctx context.Context) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
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
	defer d.mu.Unlock()
	truth := map[string]cloud.ENI{}
	for _, e := range enis {
		if e.Tags["node.k8s.amazonaws.com/no_manage"] == "true" {
			d.unmanagedDevs[e.DeviceNumber] = true
			continue
		}
		truth[e.ID] = e
	}
	// ENIs gone from the instance: their allocations cannot work any more.
	for id, st := range d.enis {
		if _, ok := truth[id]; ok {
			continue
		}
		d.logf("reconcile: %s (device %d) is no longer attached: dropping it", id, st.dev)
		d.counters["reconcile_enis_removed"]++
		if err := d.host.TeardownENI(st.hostENI(d.cfg.MTU)); err != nil {
			d.logf("reconcile: tear down host networking of %s: %v", id, err)
		}
		delete(d.enis, id)
		d.dropOrphanedLocked()
	}
	var adopt []cloud.ENI
	for id, e := range truth {
		st := d.enis[id]
		if st == nil {
			adopt = append(adopt, e)
			continue
		}
		d.syncAddressesLocked(st, e)
	}
	// Setting up host networking waits for links: do it unlocked.
	d.mu.Unlock()
	var errs []error
	for _, e := range adopt {
		d.logf("reconcile: adopting %s (device %d) attached outside the daemon", e.ID, e.DeviceNumber)
		if err := d.adoptENI(ctx, e); err != nil {
			errs = append(errs, err)
			continue
		}
		d.mu.Lock()
		d.counters["reconcile_enis_adopted"]++
		d.mu.Unlock()
	}
	d.mu.Lock()
	return errors.Join(errs...)
}

// matches reports whether IMDS's view equals the daemon's (ignoring ENIs
// the daemon leaves alone).
func (d *Daemon) matches(md []cloud.ENI) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, e := range md {
		if d.unmanagedDevs[e.DeviceNumber] {
			continue
		}
		st := d.enis[e.ID]
		if st == nil || len(st.ips) != len(e.IPs) || len(st.prefixes) != len(e.Prefixes) {
			return false
		}
		for _, ip := range e.IPs {
			if !st.ips[ip] {
				return false
			}
		}
		for _, p := range e.Prefixes {
			if !st.prefixes[p] {
				return false
			}
		}
		n++
	}
	return n == len(d.enis)
}

// syncAddressesLocked adopts addresses EC2 has and the daemon does not, and
// forgets those EC2 no longer has (dropping any pod allocation on them:
// the address is gone from the VPC, keeping it would hand out a dead IP).
func (d *Daemon) syncAddressesLocked(st *eniState, e cloud.ENI) {
	for _, ip := range e.IPs {
		if !st.ips[ip] {
			st.ips[ip] = true
			d.counters["reconcile_ips_adopted"]++
		}
	}
	for _, p := range e.Prefixes {
		if !st.prefixes[p] {
			st.prefixes[p] = true
			d.counters["reconcile_prefixes_adopted"]++
		}
	}
	for ip := range st.ips {
		if !slices.Contains(e.IPs, ip) && !d.busy[ip] {
			delete(st.ips, ip)
			d.counters["reconcile_ips_removed"]++
		}
	}
	for p := range st.prefixes {
		if !slices.Contains(e.Prefixes, p) && !d.busyPrefixes[p] {
			delete(st.prefixes, p)
			d.counters["reconcile_prefixes_removed"]++
		}
	}
	d.dropOrphanedLocked()
}

// dropOrphanedLocked removes allocations and cooldowns whose address is on
// no ENI of the node any more.
func (d *Daemon) dropOrphanedLocked() {
	for ip, k := range d.byIP {
		if d.eniOfLocked(ip) != nil {
			continue
		}
		if _, _, err := d.store.Drop(k); err != nil {
			d.logf("reconcile: drop allocation %s (%s): %v", k, ip, err)
			continue
		}
		d.logf("reconcile: %s lost its address %s: removed from its ENI outside the daemon", k, ip)
		delete(d.byIP, ip)
		delete(d.byKey, k)
		d.counters["reconcile_allocations_dropped"]++
	}
	for ip := range d.released {
		if d.eniOfLocked(ip) == nil {
			delete(d.released, ip)
			_ = d.store.ForgetCooling(ip)
		}
	}
}

// releaseOrphans releases allocations whose sandbox network namespace has
// disappeared for longer than the grace period: the pod is gone, but its DEL
// never reached the daemon (e.g. the daemon was down and the plugin's DEL
// succeeded without it).
func (d *Daemon) releaseOrphans() {
	d.mu.Lock()
	cut := d.now().Add(-d.cfg.OrphanGrace)
	var gone []store.Key
	for k, a := range d.byKey {
		if a.Netns == "" || a.AssignedAt.After(cut) {
			continue
		}
		if _, err := os.Stat(a.Netns); errors.Is(err, fs.ErrNotExist) {
			gone = append(gone, k)
		}
	}
	d.mu.Unlock()
	for _, k := range gone {
		if a, ok, err := d.Del(k); err != nil {
			d.logf("release orphan %s: %v", k, err)
		} else if ok {
			d.logf("released %s of %s: its network namespace is gone", a.IP, k)
			d.mu.Lock()
			d.counters["orphans_released"]++
			d.mu.Unlock()
		}
	}
}

// ReleaseOrphans runs the orphan check now (tests, operators).
func (d *Daemon) ReleaseOrphans() { d.releaseOrphans() }

// SNATConfigPath is where the vpc-snat plugin reads the node's SNAT config.
func (d *Daemon) SNATConfigPath() string { return d.cfg.StateDir + "/snat.json" }

// SyncSNAT reconciles the node's SNAT and connmark state with the current
// mode, primary IP and VPC CIDRs, then publishes them to the vpc-snat
// plugin. Rules first, file second: a plugin that sees the file finds the
// ipset it adds pods to.
func (d *Daemon) SyncSNAT() error {
	d.mu.Lock()
	if d.primaryLink == "" {
		d.mu.Unlock()
		name, err := d.host.PrimaryLinkName(parseMAC(d.node.PrimaryMAC))
		if err != nil {
			return fmt.Errorf("primary ENI link: %w", err)
		}
		d.mu.Lock()
		d.primaryLink = name
	}
	nc := snat.NodeConfig{ExternalSNAT: d.cfg.ExternalSNAT, PrimaryIP: d.node.PrimaryIP, PrimaryInterface: d.primaryLink,
		VPCCIDRs: slices.Clone(d.node.VPCCIDRs), ExcludeCIDRs: d.cfg.ExcludeSNATCIDRs, Randomize: d.cfg.RandomizeSNAT,
		Mark: d.cfg.ConnMark, VethPrefix: d.cfg.VethPrefix}
	pods := make([]netip.Addr, 0, len(d.byIP))
	for ip := range d.byIP {
		pods = append(pods, ip)
	}
	d.mu.Unlock()
	if err := d.host.SetupSNAT(nc, pods); err != nil {
		return fmt.Errorf("set up SNAT: %w", err)
	}
	// pods was read before SetupSNAT: an address released since must not
	// stay in the set.
	d.mu.Lock()
	d.pruneSNATLocked()
	d.mu.Unlock()
	if err := snat.WriteNodeConfig(d.SNATConfigPath(), nc); err != nil {
		return fmt.Errorf("write %s: %w", d.SNATConfigPath(), err)
	}
	return nil
}

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
