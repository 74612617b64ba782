package ipamd

// IPv6 mode (ENABLE_IPv6=true), as in an EKS IPv6 cluster: the primary ENI
// gets one /80 prefix the first time the daemon starts on the node, and
// every pod gets a /128 from it. A /80 holds 2^48 addresses, so there is no
// warm pool, no secondary ENI and no EC2 call per pod; an address is picked
// at random, which keeps a released address from coming back for a very
// long time without any cooldown bookkeeping mattering.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/internal/instancelimits"
)

// discoverIPv6 adopts the primary ENI and makes sure it has a /80: one
// AssignIpv6Addresses call on a node's first start, none after.
func (d *Daemon) discoverIPv6(ctx context.Context, md cloud.Node, lim instancelimits.Limits) error {
	if !lim.SupportsPrefixDelegation() {
		return fmt.Errorf("ENABLE_IPv6=true: %s is not Nitro-based, and EC2 assigns IPv6 prefixes to Nitro-based instances only; run IPv6 pods on a Nitro type, or set ENABLE_IPv6=false", md.InstanceType)
	}
	enis, err := d.cloud.InstanceENIs(ctx, md.InstanceID)
	if err != nil {
		return fmt.Errorf("describe this instance's ENIs in EC2: %w", err)
	}
	var prim *cloud.ENI
	for i := range enis {
		if enis[i].Primary {
			prim = &enis[i]
		}
	}
	if prim == nil {
		return fmt.Errorf("EC2 shows no primary ENI (card 0, device 0) on %s", md.InstanceID)
	}
	if err := d.noteSysctls(nodeScope, nodeScope, d.setupNodeHost(), true); err != nil {
		return err
	}
	prefixes := prim.IPv6Prefixes
	if len(prefixes) == 0 {
		p, err := d.cloud.AssignIPv6Prefix(ctx, prim.ID)
		if err != nil {
			return fmt.Errorf("ENABLE_IPv6=true: give the primary ENI %s an IPv6 /80 prefix (its subnet %s needs an IPv6 CIDR block): %w", prim.ID, prim.SubnetID, err)
		}
		d.logf("assigned IPv6 prefix %s to the primary ENI %s", p, prim.ID)
		prefixes = []netip.Prefix{p}
		d.counters["ipv6_prefixes_assigned"]++
	}
	now := d.now()
	st := &eniState{id: prim.ID, mac: parseMAC(prim.MAC), dev: 0, primary: true, primaryIP: prim.PrimaryIP,
		subnetID: prim.SubnetID, subnet: prim.SubnetCIDR, attachmentID: prim.AttachmentID, created: now, learned: now,
		ips: map[netip.Addr]bool{}, prefixes: map[netip.Prefix]bool{}, prefixes6: map[netip.Prefix]bool{}}
	for _, p := range prefixes {
		st.prefixes6[p] = true
		d.ledger.learnedPrefix[p] = now
	}
	for _, m := range md.ENIs {
		if m.Primary {
			st.subnet6 = m.SubnetIPv6CIDR
		}
	}
	if !st.subnet6.IsValid() {
		st.subnet6, _ = prefixes[0].Addr().Prefix(64) // a /80 lies in its subnet's /64
	}
	d.mu.Lock()
	d.ledger.enis[prim.ID] = st
	d.mu.Unlock()
	return nil
}

// pickIPv6Locked picks a random free address of the primary ENI's /80s.
func (d *Daemon) pickIPv6Locked() (netip.Addr, string, bool) {
	for _, e := range d.ledger.enis {
		for p := range e.prefixes6 {
			for range 64 {
				ip := randomIn(p)
				if !d.ledger.pickableIPv6(p, ip) {
					continue
				}
				return ip, e.id, true
			}
		}
	}
	return netip.Addr{}, "", false
}

// randomIn is a random address of p.
func randomIn(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	var r [16]byte
	for i := 0; i < 16; i += 8 {
		v := rand.Uint64()
		for j := range 8 {
			r[i+j] = byte(v >> (8 * j))
		}
	}
	bits := p.Bits()
	for i := range 16 {
		keep := min(max(bits-8*i, 0), 8) // bits of byte i that are the prefix's
		mask := byte(0xff << (8 - keep))
		b[i] = b[i]&mask | r[i]&^mask
	}
	return netip.AddrFrom16(b)
}

// ipv6ReadyLocked is STATUS in IPv6 mode.
func (d *Daemon) ipv6ReadyLocked() (bool, string, int) {
	for _, e := range d.ledger.enis {
		for p := range e.prefixes6 {
			if !d.ledger.lost[p] {
				return true, "", max(d.pcfg.MaxPods-len(d.ledger.byKey), 0)
			}
		}
	}
	return false, "the primary ENI has no IPv6 prefix EC2 shows", 0
}

// reconcileIPv6 reads the primary ENI's prefixes from IMDS (free) and asks
// EC2 only when they differ from the daemon's. A prefix EC2 no longer shows
// is dropped only when no pod holds an address of it and it was learned
// more than VPCCHAIN_EC2_CONSISTENCY_GRACE ago (else EC2 may be lagging,
// and a prefix just assigned must not be replaced by another).
func (d *Daemon) reconcileIPv6(ctx context.Context) error {
	md, err := d.cloud.MetadataNode(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	var st *eniState
	for _, e := range d.ledger.enis {
		if e.primary {
			st = e
		}
	}
	if st == nil {
		d.mu.Unlock()
		return fmt.Errorf("no primary ENI adopted")
	}
	same := true
	for _, m := range md.ENIs {
		if m.ID == st.id {
			same = len(m.IPv6Prefixes) == len(st.prefixes6)
			for _, p := range m.IPv6Prefixes {
				same = same && st.prefixes6[p]
			}
		}
	}
	d.mu.Unlock()
	if same {
		return nil
	}
	e, err := d.cloud.DescribeENI(ctx, st.id)
	if err != nil {
		return fmt.Errorf("describe the primary ENI: %w", err)
	}
	d.mu.Lock()
	now := d.now()
	shown := map[netip.Prefix]bool{}
	for _, p := range e.IPv6Prefixes {
		shown[p] = true
		st.prefixes6[p] = true
		d.ledger.prefixShown(p, st.id)
	}
	usable := false
	for p := range st.prefixes6 {
		if !shown[p] && d.ledger.prefixMissing(p, st.id, now) {
			d.logf("reconcile: IPv6 prefix %s is no longer on %s: dropping it", p, st.id)
			delete(st.prefixes6, p)
			continue
		}
		usable = usable || !d.ledger.lost[p]
	}
	d.mu.Unlock()
	if usable {
		return nil
	}
	// Someone took the prefix away (its pods, if any, keep their
	// addresses): new pods need a new one, now.
	p, err := d.cloud.AssignIPv6Prefix(ctx, st.id)
	if err != nil {
		return fmt.Errorf("the primary ENI lost its IPv6 prefix; assign another: %w", err)
	}
	d.logf("reconcile: assigned IPv6 prefix %s to %s, which had none left", p, st.id)
	d.mu.Lock()
	st.prefixes6[p] = true
	d.ledger.learnedPrefix[p] = d.now()
	d.counters["ipv6_prefixes_assigned"]++
	d.mu.Unlock()
	return nil
}
