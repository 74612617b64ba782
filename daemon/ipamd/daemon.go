// Package ipamd is the warm-pool daemon's core: it discovers the node,
// keeps the pool of ENI addresses at its targets by executing the pure
// decisions of package pool against EC2, hands addresses to pods (durably,
// through package store) and reconciles with EC2. The gRPC front end is in
// server.go.
package ipamd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/config"
	"github.com/vpcchain/vpcchain/daemon/hostnet"
	"github.com/vpcchain/vpcchain/daemon/liveness"
	"github.com/vpcchain/vpcchain/daemon/pool"
	"github.com/vpcchain/vpcchain/daemon/store"
	"github.com/vpcchain/vpcchain/internal/instancelimits"
	"github.com/vpcchain/vpcchain/internal/maxpods"
	"github.com/vpcchain/vpcchain/internal/snat"
)

// Cloud is what the daemon needs of EC2 and IMDS (*cloud.Client).
type Cloud interface {
	MetadataNode(ctx context.Context) (cloud.Node, error)
	InstanceENIs(ctx context.Context, instanceID string) ([]cloud.ENI, error)
	DescribeENI(ctx context.Context, id string) (cloud.ENI, error)
	InstanceLimits(ctx context.Context, instanceType string) (instancelimits.Limits, error)
	Subnets(ctx context.Context, vpcID, az string) ([]cloud.Subnet, error)
	Subnet(ctx context.Context, id string) (cloud.Subnet, error)
	SecurityGroupVPCs(ctx context.Context, ids []string) (map[string]string, error)
	CreateAndAttachENI(ctx context.Context, in cloud.CreateENIInput) (cloud.ENI, error)
	SetDeleteOnTermination(ctx context.Context, eniID, attachmentID string) error
	AssignIPs(ctx context.Context, eniID string, n int) ([]netip.Addr, error)
	AssignPrefixes(ctx context.Context, eniID string, n int) ([]netip.Prefix, error)
	UnassignIPs(ctx context.Context, eniID string, ips []netip.Addr) error
	UnassignPrefixes(ctx context.Context, eniID string, p []netip.Prefix) error
	FreeENI(ctx context.Context, eniID, attachmentID string) error
	SweepLeakedENIs(ctx context.Context, vpcID string, minAge time.Duration) ([]string, error)
	// Throttles counts the attempts EC2 answered with throttling so far.
	Throttles() int64
}

// Host is what the daemon needs of the node's networking (package hostnet).
type Host interface {
	SetupNode(primaryMAC net.HardwareAddr, mtu int) error
	SetupENI(ctx context.Context, e hostnet.ENI, timeout time.Duration) (string, error)
	TeardownENI(e hostnet.ENI) error
	LinkExists(name string) bool
	PrimaryLinkName(mac net.HardwareAddr) (string, error)
	SetupSNAT(c snat.NodeConfig, pods []netip.Addr) error
}

// SNATPruner is implemented by a Host that can drop addresses from the
// node's SNAT set (RealHost does). It is separate from Host so that other
// Host implementations (test fakes) need not change.
type SNATPruner interface {
	// PruneSNATPods removes from the SNAT set the addresses keep rejects.
	PruneSNATPods(keep func(netip.Addr) bool) error
	// RemoveSNATPod removes one address from the SNAT set.
	RemoveSNATPod(ip netip.Addr) error
}

// RealHost is the Host backed by package hostnet in the current namespace.
type RealHost struct{}

func (RealHost) PruneSNATPods(keep func(netip.Addr) bool) error { return hostnet.PruneSNATPods(keep) }
func (RealHost) RemoveSNATPod(ip netip.Addr) error              { return hostnet.RemoveSNATPod(ip) }

func (RealHost) SetupNode(mac net.HardwareAddr, mtu int) error { return hostnet.SetupNode(mac, mtu) }
func (RealHost) SetupENI(ctx context.Context, e hostnet.ENI, t time.Duration) (string, error) {
	return hostnet.SetupENI(ctx, e, t)
}
func (RealHost) TeardownENI(e hostnet.ENI) error { return hostnet.TeardownENI(e) }
func (RealHost) SetupNodeIPv6(mac net.HardwareAddr) error {
	return hostnet.SetupNodeIPv6(mac)
}
func (RealHost) LinkExists(name string) bool { return hostnet.LinkExists(name) }
func (RealHost) SetupSNAT(c snat.NodeConfig, pods []netip.Addr) error {
	return hostnet.SetupSNAT(c, pods)
}
func (RealHost) PrimaryLinkName(mac net.HardwareAddr) (string, error) {
	l, err := hostnet.LinkByMAC(mac)
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}

// eniState is one ENI the daemon manages.
type eniState struct {
	id           string
	mac          net.HardwareAddr
	dev          int
	primary      bool
	primaryIP    netip.Addr
	subnetID     string
	subnet       netip.Prefix
	attachmentID string
	created      time.Time
	learned      time.Time // when the daemon first saw it in EC2 (or created it)
	ips          map[netip.Addr]bool
	prefixes     map[netip.Prefix]bool
	// IPv6 mode: the primary ENI's /80s and its subnet's /64.
	prefixes6 map[netip.Prefix]bool
	subnet6   netip.Prefix
}

func (e *eniState) table() int { return hostnet.RouteTable(e.dev) }

func (e *eniState) hostENI(mtu int) hostnet.ENI {
	return hostnet.ENI{MAC: e.mac, PrimaryIP: e.primaryIP, Subnet: e.subnet, DeviceNumber: e.dev, MTU: mtu}
}

func (e *eniState) holds(ip netip.Addr) bool {
	if e.ips[ip] {
		return true
	}
	for p := range e.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	for p := range e.prefixes6 {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Daemon is the warm-pool daemon.
type Daemon struct {
	cfg   config.Config
	pcfg  pool.Config
	cloud Cloud
	host  Host
	store *store.Store
	now   func() time.Time
	logf  func(string, ...any)
	// observeAdd is Options.ObserveAdd (never nil).
	observeAdd func(time.Duration)

	node   cloud.Node
	limits instancelimits.Limits

	// live says which pod sandboxes exist (nil: no source, no orphan check).
	live liveness.Source

	// opMu serialises the loops that call EC2 and change ENIs (pool steps,
	// reconciliation) so neither acts on an ENI the other is half-way through.
	opMu sync.Mutex

	// mu guards the memory below. It is never held across a store write
	// (an fsync), a netlink or ipset call, or an EC2 call: ADD and DEL of
	// different pods only queue for the memory updates.
	mu           sync.Mutex
	enis         map[string]*eniState
	byKey        map[store.Key]store.Allocation
	byIP         map[netip.Addr]store.Key
	released     map[netip.Addr]time.Time // cooling (and past-cooling until forgotten)
	busy         map[netip.Addr]bool      // being given back to EC2: never picked
	busyPrefixes map[netip.Prefix]bool
	// inflight marks a key whose ADD or DEL is between its memory update
	// and its durable record; another call for the key waits for it.
	inflight map[store.Key]chan struct{}
	// reserved: picked by an ADD whose record is being written; held.
	reserved map[netip.Addr]bool
	// pruning: found stale in the SNAT set and being removed; never picked
	// meanwhile, so the removal cannot hit a new pod's entry.
	pruning map[netip.Addr]bool
	// releasing: EC2 refused or lost the release of these free addresses
	// (and prefixes); EC2 may have made the change, so they are never
	// picked, and the release is retried (it is idempotent).
	releasing         map[netip.Addr]string // -> ENI ID
	releasingPrefixes map[netip.Prefix]string
	lastReleaseRetry  time.Time
	// learned: when the daemon learned each address or prefix was
	// assigned (EC2's answer to an assign, or a describe showing it). A
	// describe that omits an address learned less than ConsistencyGrace
	// ago is EC2 lagging, not a removal.
	learned       map[netip.Addr]time.Time
	learnedPrefix map[netip.Prefix]time.Time
	// unconfirmed: addresses and prefixes a restored allocation holds that
	// EC2's describe did not show at start; kept for the pod, never given
	// to another until a describe shows them again.
	unconfirmed         map[netip.Addr]bool
	unconfirmedPrefixes map[netip.Prefix]bool
	// hostErr is why host networking is broken ("" when it works): STATUS
	// reports it.
	hostErr string
	// livenessErr is the last orphan-check source failure, logged once.
	livenessErr string
	// disagreements are the EC2 disagreements logged while they last.
	disagreements map[string]bool
	coolOffs      []pool.CoolOff
	lastScaleDown time.Time
	// The smallest pool.Surplus seen since surplusSince (start, last
	// shrink, or the end of the last watched window): only what stayed
	// surplus for a whole scale-down interval is released.
	surplusFloor  int
	surplusSince  time.Time
	lastDecision  pool.Decision
	lastPoolError string
	throttled     int   // growth calls throttled in a row (throttleBackoff)
	seenThrottles int64 // Cloud.Throttles() when last looked at
	fresh         bool  // started with only the primary ENI, no pod has waited yet (noteWaitingLocked)
	ready         bool
	counters      map[string]int64
	primaryLink   string
	foreign       map[string]*foreignENI // attached ENIs the daemon leaves alone (ownership.go)
	custom        customNet              // custom networking (customnet.go)
	events        Events

	grow        growth
	subnetCache subnetCache
	adaptive    adaptiveWarm // WARM_POOL_MODE=adaptive

	kick chan struct{}
}

// Options wire a Daemon.
type Options struct {
	Config config.Config
	Cloud  Cloud
	Host   Host
	// Liveness lists the node's pod sandboxes for the orphan check; nil
	// turns the check off (nothing is released without a DEL or GC).
	Liveness liveness.Source
	// StorePath defaults to <StateDir>/ipam.db.
	StorePath string
	Now       func() time.Time
	Logf      func(string, ...any)
	// Events, if set, records Kubernetes Events on the node.
	Events Events
	// ObserveAdd, if set, is told how long each successful Add took (lock
	// wait and the durable write included). It feeds the allocation latency
	// metric; it must not block.
	ObserveAdd func(took time.Duration)
}

// ErrNoAddress is returned by Add when the pool has nothing to give now.
type ErrNoAddress struct{ Reason string }

func (e *ErrNoAddress) Error() string { return "no free address on this node: " + e.Reason }

// New takes the store (and with it the node: a second daemon stops here,
// before it changes anything), discovers the node, sets up ENI host
// networking and restores the checkpoint (after rediscovery, so restored
// allocations are matched against what EC2 has).
func New(ctx context.Context, o Options) (*Daemon, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.ObserveAdd == nil {
		o.ObserveAdd = func(time.Duration) {}
	}
	if o.StorePath == "" {
		o.StorePath = o.Config.StateDir + "/ipam.db"
	}
	d := &Daemon{cfg: o.Config, cloud: o.Cloud, host: o.Host, now: o.Now, logf: o.Logf, observeAdd: o.ObserveAdd, events: o.Events,
		live: o.Liveness, enis: map[string]*eniState{}, byKey: map[store.Key]store.Allocation{},
		byIP: map[netip.Addr]store.Key{}, released: map[netip.Addr]time.Time{}, busy: map[netip.Addr]bool{},
		busyPrefixes: map[netip.Prefix]bool{}, inflight: map[store.Key]chan struct{}{}, reserved: map[netip.Addr]bool{},
		pruning: map[netip.Addr]bool{}, releasing: map[netip.Addr]string{}, releasingPrefixes: map[netip.Prefix]string{},
		learned: map[netip.Addr]time.Time{}, learnedPrefix: map[netip.Prefix]time.Time{},
		unconfirmed: map[netip.Addr]bool{}, unconfirmedPrefixes: map[netip.Prefix]bool{}, disagreements: map[string]bool{},
		counters: map[string]int64{}, foreign: map[string]*foreignENI{}, grow: newGrowth(), kick: make(chan struct{}, 1)}
	// The store's lock first: a second daemon on the node must fail before
	// it touches sysctls, links, routes or rules the first one manages.
	st, err := store.Open(o.StorePath)
	if err != nil {
		return nil, fmt.Errorf("open allocation store: %w", err)
	}
	d.store = st
	d.seenThrottles = d.cloud.Throttles()
	d.adaptive = newAdaptiveWarm(d.now())
	if err := d.discover(ctx); err != nil {
		_ = st.Close()
		return nil, err
	}
	if err := d.restore(); err != nil {
		_ = st.Close()
		return nil, err
	}
	// After restore: the restored pods go back into the SNAT set.
	if err := d.SyncSNAT(); err != nil {
		_ = st.Close()
		return nil, err
	}
	// A (re)started daemon watches its surplus for a whole scale-down
	// interval before it releases any: a restart is no reason to call EC2.
	d.surplusFloor, d.surplusSince = math.MaxInt, d.now()
	d.ready = true
	return d, nil
}

// Close releases the store.
func (d *Daemon) Close() error {
	if d.store != nil {
		return d.store.Close()
	}
	return nil
}

func (d *Daemon) discover(ctx context.Context) error {
	md, err := d.cloud.MetadataNode(ctx)
	if err != nil {
		return fmt.Errorf("discover node from IMDS: %w", err)
	}
	d.node = md
	d.fresh = len(md.ENIs) <= 1
	d.adaptive.unknown = d.fresh
	if d.cfg.SubnetDiscovery && !d.cfg.CustomNetworking && d.fresh {
		// A fresh node: its first ENIs will need subnet discovery; ask
		// now, alongside the start's other calls, not when pods wait.
		go d.prefetchSubnets(ctx)
	}
	lim, err := d.cloud.InstanceLimits(ctx, md.InstanceType)
	if err != nil {
		return fmt.Errorf("instance limits of %s: %w", md.InstanceType, err)
	}
	d.limits = lim
	if d.cfg.CustomNetworking && (lim.MaxENIs < 2 || d.cfg.MaxENI == 1) {
		return fmt.Errorf("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true puts pods on secondary ENIs only, and this node may attach none (%s: %d ENIs, MAX_ENI=%d)",
			md.InstanceType, lim.MaxENIs, d.cfg.MaxENI)
	}
	d.pcfg = pool.Config{
		WarmENITarget: d.cfg.WarmENITarget, WarmIPTarget: d.cfg.WarmIPTarget, MinimumIPTarget: d.cfg.MinimumIPTarget,
		WarmPrefixTarget: d.cfg.WarmPrefixTarget, EnablePrefixDelegation: d.cfg.EnablePrefixDelegation,
		PrefixDelegationSupported: lim.SupportsPrefixDelegation(), MaxENI: d.cfg.MaxENI,
		IPCooldownPeriod: d.cfg.IPCooldownPeriod, InstanceMaxENIs: lim.MaxENIs, IPv4PerENI: lim.IPv4PerENI,
		MaxPods: d.maxPods(lim), MinENIAge: d.cfg.MinENIAge, ScaleDownInterval: d.cfg.ScaleDownInterval,
	}
	if d.cfg.EnablePrefixDelegation && !lim.SupportsPrefixDelegation() {
		d.logf("ENABLE_PREFIX_DELEGATION=true but %s is not Nitro-based: using secondary IPs", md.InstanceType)
	}
	if err := d.pcfg.Validate(); err != nil {
		return fmt.Errorf("pool configuration: %w", err)
	}
	if d.cfg.IPv6 {
		return d.discoverIPv6(ctx, md, lim)
	}
	// EC2 is the truth for what is attached; IMDS may lag it.
	enis, err := d.cloud.InstanceENIs(ctx, md.InstanceID)
	if err != nil {
		return fmt.Errorf("describe this instance's ENIs in EC2: %w", err)
	}
	if err := d.host.SetupNode(parseMAC(md.PrimaryMAC), d.cfg.MTU); err != nil {
		return fmt.Errorf("set up node networking: %w", err)
	}
	d.mu.Lock()
	ours := d.sortOwnedLocked(enis)
	d.noteForeignInIMDSLocked(md.ENIs)
	d.mu.Unlock()
	for _, e := range ours {
		if err := d.adoptENI(ctx, e); err != nil {
			return err
		}
	}
	if len(d.enis) == 0 {
		return errors.New("EC2 reports no ENI attached to this instance")
	}
	return nil
}

// maxPods is MAX_PODS, else the instance type's formula (capped at 110 in
// prefix mode, as the max-pods calculator does for kubelet's default).
func (d *Daemon) maxPods(l instancelimits.Limits) int {
	if d.cfg.MaxPods > 0 {
		return d.cfg.MaxPods
	}
	if d.cfg.IPv6 {
		// As EKS sizes IPv6 nodes (and vpcctl max-pods --ipv6 says).
		if r, err := maxpods.ComputeLimits(l, maxpods.Options{IPv6: true}); err == nil {
			return r.MaxPods
		}
	}
	enis := l.MaxENIs
	if d.cfg.MaxENI >= 1 && d.cfg.MaxENI < enis {
		enis = d.cfg.MaxENI
	}
	if d.cfg.CustomNetworking {
		enis-- // the primary ENI carries no pods
	}
	n := enis*(l.IPv4PerENI-1) + 2
	if d.cfg.EnablePrefixDelegation && l.SupportsPrefixDelegation() {
		n = min(enis*(l.IPv4PerENI-1)*pool.PrefixSize+2, 110)
	}
	return n
}

func parseMAC(s string) net.HardwareAddr {
	m, _ := net.ParseMAC(s)
	return m
}

// adoptENI sets up host networking for an attached ENI and records it.
func (d *Daemon) adoptENI(ctx context.Context, e cloud.ENI) error {
	now := d.now()
	st := &eniState{id: e.ID, mac: parseMAC(e.MAC), dev: e.DeviceNumber, primary: e.DeviceNumber == 0 || e.Primary,
		primaryIP: e.PrimaryIP, subnetID: e.SubnetID, subnet: e.SubnetCIDR, attachmentID: e.AttachmentID,
		created: now, learned: now, ips: map[netip.Addr]bool{}, prefixes: map[netip.Prefix]bool{}}
	if t, err := time.Parse(time.RFC3339, e.Tags["node.k8s.amazonaws.com/createdAt"]); err == nil {
		st.created = t
	}
	for _, a := range e.IPs {
		st.ips[a] = true
	}
	for _, p := range e.Prefixes {
		st.prefixes[p] = true
	}
	if !st.primary {
		if _, err := d.host.SetupENI(ctx, st.hostENI(d.cfg.MTU), d.cfg.ENIAttachTimeout); err != nil {
			return fmt.Errorf("set up host networking for %s (device %d): %w", e.ID, e.DeviceNumber, err)
		}
	}
	d.mu.Lock()
	d.enis[e.ID] = st
	if !st.primary && !e.DeleteOnTermination && e.AttachmentID != "" {
		d.grow.dot[e.ID] = e.AttachmentID // settleDeleteOnTermination
	}
	for _, a := range e.IPs {
		d.learned[a] = now
	}
	for _, p := range e.Prefixes {
		d.learnedPrefix[p] = now
	}
	d.mu.Unlock()
	return nil
}

// restore loads the checkpoint after rediscovery. EC2's describe may lag
// (an address assigned just before a restart can be missing from it), so
// no allocation is dropped here:
//   - on the ENI EC2 has the address on: kept (the recorded ENI is
//     corrected if it differs, so the pod's route table is the right one);
//   - not in EC2's answer, but recorded on one of the node's ENIs: kept on
//     that ENI, unconfirmed (never given to another pod until EC2 shows it);
//   - on no ENI EC2 shows for the node: kept, without an ENI; ADD of the
//     key is refused (try again) until the ENI shows, and the address goes
//     with the pod's DEL, GC or the orphan check.
//
// Cooldowns survive the restart.
func (d *Daemon) restore() error {
	recs, err := d.store.List()
	if err != nil {
		return fmt.Errorf("read allocation store: %w", err)
	}
	cooling, err := d.store.Cooling()
	if err != nil {
		return fmt.Errorf("read cooldowns: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	for _, r := range recs {
		switch holder := d.eniOfLocked(r.IP); {
		case holder != nil && holder.id != r.ENIID:
			d.logf("restore: %s holds %s, recorded on %s but on %s in EC2: record corrected", r.Key, r.IP, r.ENIID, holder.id)
			if err := d.store.SetENI(r.Key, holder.id); err != nil {
				return fmt.Errorf("correct the ENI of %s: %w", r.Key, err)
			}
			r.ENIID = holder.id
			d.counters["restore_eni_corrected"]++
		case holder == nil && d.enis[r.ENIID] != nil:
			e := d.enis[r.ENIID]
			d.logf("restore: %s holds %s on %s, which EC2 does not show (yet): kept for the pod, not handed out until EC2 shows it", r.Key, r.IP, r.ENIID)
			if p, ok := d.prefixOfLocked(r.IP); ok {
				e.prefixes[p] = true
				d.unconfirmedPrefixes[p] = true
				d.learnedPrefix[p] = now
			} else {
				e.ips[r.IP] = true
				d.unconfirmed[r.IP] = true
				d.learned[r.IP] = now
			}
			d.counters["restore_unconfirmed"]++
		case holder == nil:
			d.logf("restore: %s holds %s on %s, an ENI EC2 does not show on this node (yet): kept for the pod", r.Key, r.IP, r.ENIID)
			d.counters["restore_unplaced"]++
		}
		d.byKey[r.Key] = r.Allocation
		d.byIP[r.IP] = r.Key
	}
	var forget []netip.Addr
	for ip, t := range cooling {
		if d.eniOfLocked(ip) == nil {
			forget = append(forget, ip)
			continue
		}
		d.released[ip] = t
	}
	if err := d.store.ForgetCooling(forget...); err != nil {
		d.logf("restore: forget cooldowns of addresses the node no longer has: %v", err)
	}
	d.logf("restored %d allocations and %d cooldowns", len(d.byKey), len(d.released))
	return nil
}

// prefixOfLocked is the /28 a restored address came from when the node
// runs in prefix mode (EC2 showing neither, the mode is the best guess).
func (d *Daemon) prefixOfLocked(ip netip.Addr) (netip.Prefix, bool) {
	if !d.pcfg.EnablePrefixDelegation || !d.pcfg.PrefixDelegationSupported {
		return netip.Prefix{}, false
	}
	p, err := ip.Prefix(28)
	return p, err == nil
}

// heldLocked: a pod holds ip, an ADD is recording it, or it is being
// removed from the SNAT set.
func (d *Daemon) heldLocked(ip netip.Addr) bool {
	_, assigned := d.byIP[ip]
	return assigned || d.reserved[ip] || d.pruning[ip]
}

func (d *Daemon) eniOfLocked(ip netip.Addr) *eniState {
	for _, e := range d.enis {
		if e.holds(ip) {
			return e
		}
	}
	return nil
}

// snapshotLocked builds the pool's view. Addresses being given back to EC2
// are left out so nothing picks them.
func (d *Daemon) snapshotLocked() pool.Snapshot {
	now := d.now()
	s := pool.Snapshot{Now: now, LastScaleDown: d.lastScaleDown, SurplusFloor: d.surplusFloor, SurplusSince: d.surplusSince,
		Waiting: d.waitingLocked(now), Growing: d.growingLocked()}
	for _, c := range d.coolOffs {
		if now.Before(c.Until) {
			s.CoolOffs = append(s.CoolOffs, c)
		}
	}
	addr := func(ip netip.Addr) pool.Address {
		return pool.Address{IP: ip, Assigned: d.heldLocked(ip), ReleasedAt: d.released[ip]}
	}
	if reason := d.customNetworkReasonLocked(); reason != "" {
		s.CoolOffs = append(s.CoolOffs, pool.CoolOff{Scope: pool.CoolOffCreateENI, Until: now.Add(time.Hour),
			Reason: "custom networking: " + reason})
	}
	for _, e := range d.enis {
		if e.primary && d.cfg.CustomNetworking {
			continue // custom networking: the primary ENI carries no pods
		}
		pe := pool.ENI{ID: e.id, Primary: e.primary, CreatedAt: e.created, DeviceNumber: e.dev}
		for ip := range e.ips {
			// Out of the pool while EC2 may not have them: being given
			// back, a failed release, or restored but not shown by EC2.
			if d.busy[ip] || d.releasing[ip] != "" || d.unconfirmed[ip] && !d.heldLocked(ip) {
				continue
			}
			pe.IPs = append(pe.IPs, addr(ip))
		}
		sort.Slice(pe.IPs, func(i, j int) bool { return pe.IPs[i].IP.Less(pe.IPs[j].IP) })
		for p := range e.prefixes {
			if d.busyPrefixes[p] || d.releasingPrefixes[p] != "" {
				continue
			}
			pp := pool.Prefix{Prefix: p}
			for ip := p.Addr(); p.Contains(ip); ip = ip.Next() {
				switch {
				case d.unconfirmedPrefixes[p] && !d.heldLocked(ip):
					// Not EC2's (yet): blocked, like a held address.
					pp.Addresses = append(pp.Addresses, pool.Address{IP: ip, Assigned: true})
				case d.heldLocked(ip) || !d.released[ip].IsZero():
					pp.Addresses = append(pp.Addresses, addr(ip))
				}
			}
			pe.Prefixes = append(pe.Prefixes, pp)
		}
		sort.Slice(pe.Prefixes, func(i, j int) bool { return pe.Prefixes[i].Prefix.Addr().Less(pe.Prefixes[j].Prefix.Addr()) })
		s.ENIs = append(s.ENIs, pe)
	}
	sort.Slice(s.ENIs, func(i, j int) bool { return s.ENIs[i].DeviceNumber < s.ENIs[j].DeviceNumber })
	return s
}
