package ipamd

// The node's SNAT set and rules follow the daemon's allocations: SyncSNAT
// puts every pod in (start, reconcile), DEL takes one out, and the prune
// removes what no pod holds.

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vpcchain/vpcchain/internal/nodeconf"
	"github.com/vpcchain/vpcchain/internal/snat"
)

// removeSNAT takes one released address out of the node's SNAT set.
func (d *Daemon) removeSNAT(ip netip.Addr) {
	if d.cfg.ExternalSNAT || !ip.Is4() {
		return // the SNAT set holds IPv4 pods only
	}
	if err := d.host.RemoveSNATPod(ip); err != nil {
		d.logf("remove released %s from the SNAT set: %v", ip, err)
	}
}

// pruneSNAT removes every address the daemon does not allocate from the
// node's SNAT set, without holding the lock across the ipset calls: an
// address found stale is marked pruning (never picked) before it is
// removed, so no ADD hands it out while its entry goes.
func (d *Daemon) pruneSNAT() {
	if d.cfg.ExternalSNAT {
		return
	}
	var marked []netip.Addr
	err := d.host.PruneSNATPods(func(ip netip.Addr) bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.ledger.held(ip) {
			return true
		}
		d.ledger.pruning[ip] = true
		marked = append(marked, ip)
		return false
	})
	d.mu.Lock()
	for _, ip := range marked {
		delete(d.ledger.pruning, ip)
	}
	d.mu.Unlock()
	if err != nil {
		d.logf("remove released addresses from the SNAT set: %v", err)
	}
}

// SNATConfigPath is where the vpc-snat plugin reads the node's SNAT config.
func (d *Daemon) SNATConfigPath() string { return nodeconf.StateDir(d.cfg.StateDir).SNATConfig() }

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
		Mark: d.cfg.ConnMark, VethPrefix: d.cfg.VethPrefix, IPTablesMode: d.cfg.IPTablesMode}
	pods := make([]netip.Addr, 0, len(d.ledger.byIP))
	for ip := range d.ledger.byIP {
		if ip.Is4() { // IPv6 pods are not SNATed: VPC IPv6 is routable
			pods = append(pods, ip)
		}
	}
	d.mu.Unlock()
	if err := d.host.SetupSNAT(nc, pods); err != nil {
		d.setHostErr(err)
		return fmt.Errorf("set up SNAT: %w", err)
	}
	// pods was read before SetupSNAT: an address released since must not
	// stay in the set.
	d.pruneSNAT()
	if err := snat.WriteNodeConfig(d.SNATConfigPath(), nc); err != nil {
		d.setHostErr(err)
		return fmt.Errorf("write %s: %w", d.SNATConfigPath(), err)
	}
	d.setHostErr(nil)
	return nil
}

// setHostErr records whether the node's SNAT rules and the plugins' node
// config could be put in place: without them a new pod has no way out of
// the VPC, and STATUS says so.
func (d *Daemon) setHostErr(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	d.hostErr = msg
}
