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
	"github.com/vpcchain/vpcchain/internal/nodeconf"
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
	// AssignIPv6Prefix gives an ENI one IPv6 /80 (IPv6 mode only).
	AssignIPv6Prefix(ctx context.Context, eniID string) (netip.Prefix, error)
	SweepLeakedENIs(ctx context.Context, vpcID string, minAge time.Duration) ([]string, error)
	// SweepNodeENIs deletes the ENIs an earlier run on this node left
	// detached (created before createdBefore, on the client's clock).
	SweepNodeENIs(ctx context.Context, vpcID, instanceID string, createdBefore time.Time) ([]string, error)
	// Throttles counts the attempts EC2 answered with throttling so far.
	Throttles() int64
}

// Host is what the daemon needs of the node's networking (*hostnet.Host in
// the daemon; a test's fake gives explicit no-ops for what it leaves out).
type Host interface {
	SetupNode(primaryMAC net.HardwareAddr, mtu int) error
	// SetupNodeIPv6 prepares the node for IPv6 pods (IPv6 mode only).
	SetupNodeIPv6(primaryMAC net.HardwareAddr) error
	SetupENI(ctx context.Context, e hostnet.ENI, timeout time.Duration) (string, error)
	TeardownENI(e hostnet.ENI) error
	LinkExists(name string) bool
	PrimaryLinkName(mac net.HardwareAddr) (string, error)
	SetupSNAT(c snat.NodeConfig, pods []netip.Addr) error
	// PruneSNATPods removes from the SNAT set the addresses keep rejects.
	PruneSNATPods(keep func(netip.Addr) bool) error
	// RemoveSNATPod removes one address from the SNAT set.
	RemoveSNATPod(ip netip.Addr) error
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
	// started is when New began, on the wall clock (EC2 clients tag ENIs
	// with it, whatever now says): ENIs created before are an earlier
	// run's.
	started time.Time
	// sweepNodeUntil: until then (wall clock) reconciles sweep the node's
	// detached ENIs, after a failed ENI call (enisMayBeLeft). Under mu.
	sweepNodeUntil time.Time
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
	mu sync.Mutex
	// ledger is every address's state (ledger.go), guarded by mu.
	ledger *ledger
	// inflight marks a key whose ADD or DEL is between its memory update
	// and its durable record; another call for the key waits for it.
	inflight map[store.Key]chan struct{}
	// hostErr is why host networking is broken ("" when it works): STATUS
	// reports it.
	hostErr string
	// sysctls are the sysctls found wrong that the daemon cannot set, by
	// scope (sysctl.go): STATUS reports them apart from hostErr, which
	// each SNAT sync sets anew.
	sysctls map[string]sysctlProblem
	// livenessErr is the last orphan-check source failure, logged once.
	livenessErr   string
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
	podENI        PodENI // security groups for pods (podeni.go)

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
	// PodENI, with ENABLE_POD_ENI=true, finds a pod's branch ENI.
	PodENI PodENI
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
		o.StorePath = nodeconf.StateDir(o.Config.StateDir).Store()
	}
	d := &Daemon{cfg: o.Config, cloud: o.Cloud, host: o.Host, now: o.Now, logf: o.Logf, started: time.Now(), observeAdd: o.ObserveAdd, events: o.Events, podENI: o.PodENI,
		live: o.Liveness, inflight: map[store.Key]chan struct{}{},
		counters: map[string]int64{}, foreign: map[string]*foreignENI{}, grow: newGrowth(), kick: make(chan struct{}, 1),
		sysctls: map[string]sysctlProblem{}}
	d.ledger = newLedger(o.Config.ConsistencyGrace, d.counters, d.logf)
	// The store's lock first: a second daemon on the node must fail before
	// it touches sysctls, links, routes or rules the first one manages.
	st, err := store.Open(o.StorePath)
	if err != nil {
		return nil, fmt.Errorf("open allocation store: %w", err)
	}
	d.store = st
	d.seenThrottles = d.cloud.Throttles()
	d.adaptive = newAdaptiveWarm(d.now())
	// Before discovery: a describe that still shows what EC2 took back
	// just before a restart must not bring it back.
	if err := d.loadReleased(); err != nil {
		_ = st.Close()
		return nil, err
	}
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
	if d.cfg.EnablePodENI && !lim.TrunkingCompatible {
		// As the AWS VPC CNI: no slot is kept for a trunk, pods still get
		// pool addresses; a pod a SecurityGroupPolicy selects asks for a
		// resource this node never advertises, and stays pending.
		d.logf("ENABLE_POD_ENI=true but the instance type %s does not support ENI trunking: no trunk ENI, so no pod of this node gets a branch ENI", md.InstanceType)
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
	if err := d.noteSysctls(nodeScope, nodeScope, d.setupNodeHost(), true); err != nil {
		return err
	}
	d.mu.Lock()
	ours := d.managedLocked(enis, d.now())
	d.noteForeignInIMDSLocked(md.ENIs)
	d.mu.Unlock()
	for _, e := range ours {
		// A short wait: every link should be there at a restart; one
		// that is not is adopted by a reconcile, which waits longer.
		err := d.adoptENI(ctx, e, startLinkWait)
		if errors.Is(err, hostnet.ErrLinkNotFound) {
			// EC2's describe may lag a detach made just before the
			// restart: a node without the ENI's link is no reason to
			// crash-loop. A reconcile adopts it once it is there (its
			// pods' allocations wait for it, restore below).
			d.mu.Lock()
			d.ledger.disagree("eni:"+e.ID, "%s (device %d) is attached in EC2's describe, but the node has no link for it: not adopted now (%v)", e.ID, e.DeviceNumber, err)
			d.counters["start_eni_without_link"]++
			d.mu.Unlock()
			continue
		}
		if err != nil {
			return err
		}
	}
	if len(d.ledger.enis) == 0 {
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

// adoptENI sets up host networking for an attached ENI and records it,
// without what EC2 took back from it (a describe may still show that). A
// sysctl of its link that is wrong and cannot be set does not keep it out
// (noteSysctls).
func (d *Daemon) adoptENI(ctx context.Context, e cloud.ENI, linkWait time.Duration) error {
	now := d.now()
	d.mu.Lock()
	st := d.ledger.newENI(e, now)
	d.mu.Unlock()
	if !st.primary {
		_, err := d.host.SetupENI(ctx, st.hostENI(d.cfg.MTU), linkWait)
		if err := d.noteSysctls(e.ID, eniWhat(e.ID, e.DeviceNumber), err, false); err != nil {
			return fmt.Errorf("set up host networking for %s (device %d): %w", e.ID, e.DeviceNumber, err)
		}
	}
	d.mu.Lock()
	d.ledger.addENI(st, now)
	if !st.primary && !e.DeleteOnTermination && e.AttachmentID != "" {
		d.grow.dot[e.ID] = e.AttachmentID // settleDeleteOnTermination
	}
	d.mu.Unlock()
	return nil
}

// linkWait is how long to wait for the link of an ENI attached at t: the
// kernel shows a new ENI's link within seconds of the attach, so one EC2
// attached long ago and still without a link is not coming (a describe
// lagging its detach). EC2's clock, not the daemon's: wall time.
func (d *Daemon) linkWait(t time.Time) time.Duration {
	if t.IsZero() {
		return d.cfg.ENIAttachTimeout
	}
	return max(d.cfg.ENIAttachTimeout-time.Since(t), startLinkWait)
}

// startLinkWait is how long start waits for an attached ENI's link.
const startLinkWait = 2 * time.Second

// loadReleased reads what EC2 took back before a restart; records older
// than the consistency grace are dropped.
func (d *Daemon) loadReleased() error {
	gone, err := d.store.Released()
	if err != nil {
		return fmt.Errorf("read released addresses: %w", err)
	}
	d.mu.Lock()
	for x, t := range gone {
		d.ledger.gone[x] = t
	}
	old := d.ledger.expiredGone(d.now())
	d.ledger.forgetGone(old)
	d.mu.Unlock()
	if err := d.store.ForgetReleased(old...); err != nil {
		d.logf("forget old release records: %v", err)
	}
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
		switch holder := d.ledger.eniOf(r.IP); {
		case holder != nil && holder.id != r.ENIID:
			d.logf("restore: %s holds %s, recorded on %s but on %s in EC2: record corrected", r.Key, r.IP, r.ENIID, holder.id)
			if err := d.store.SetENI(r.Key, holder.id); err != nil {
				return fmt.Errorf("correct the ENI of %s: %w", r.Key, err)
			}
			r.ENIID = holder.id
			d.counters["restore_eni_corrected"]++
		case holder == nil && d.ledger.enis[r.ENIID] != nil:
			d.logf("restore: %s holds %s on %s, which EC2 does not show (yet): kept for the pod, not handed out until EC2 shows it", r.Key, r.IP, r.ENIID)
			d.ledger.unconfirmedOn(d.ledger.enis[r.ENIID], r.IP, d.prefixMode(), now)
			d.counters["restore_unconfirmed"]++
		case holder == nil:
			d.logf("restore: %s holds %s on %s, an ENI EC2 does not show on this node (yet): kept for the pod", r.Key, r.IP, r.ENIID)
			d.counters["restore_unplaced"]++
		}
		d.ledger.assign(r.Key, r.Allocation)
	}
	var forget []netip.Addr
	for ip, t := range cooling {
		if d.ledger.eniOf(ip) == nil {
			forget = append(forget, ip)
			continue
		}
		d.ledger.cooling[ip] = t
	}
	if err := d.store.ForgetCooling(forget...); err != nil {
		d.logf("restore: forget cooldowns of addresses the node no longer has: %v", err)
	}
	d.logf("restored %d allocations and %d cooldowns", len(d.ledger.byKey), len(d.ledger.cooling))
	return nil
}

// prefixMode: the node runs in prefix mode (EC2 showing neither a
// restored address nor its prefix, the mode is the best guess of which it
// came from).
func (d *Daemon) prefixMode() bool {
	return d.pcfg.EnablePrefixDelegation && d.pcfg.PrefixDelegationSupported
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
	if reason := d.customNetworkReasonLocked(); reason != "" {
		s.CoolOffs = append(s.CoolOffs, pool.CoolOff{Scope: pool.CoolOffCreateENI, Until: now.Add(time.Hour),
			Reason: "custom networking: " + reason})
	}
	// Custom networking: the primary ENI carries no pods.
	s.ENIs = d.ledger.poolENIs(d.cfg.CustomNetworking)
	return s
}
