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
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/config"
	"github.com/vpcchain/vpcchain/daemon/hostnet"
	"github.com/vpcchain/vpcchain/daemon/pool"
	"github.com/vpcchain/vpcchain/daemon/store"
	"github.com/vpcchain/vpcchain/internal/instancelimits"
	"github.com/vpcchain/vpcchain/internal/snat"
)

// Cloud is what the daemon needs of EC2 and IMDS (*cloud.Client).
type Cloud interface {
	MetadataNode(ctx context.Context) (cloud.Node, error)
	InstanceENIs(ctx context.Context, instanceID string) ([]cloud.ENI, error)
	DescribeENI(ctx context.Context, id string) (cloud.ENI, error)
	InstanceLimits(ctx context.Context, instanceType string) (instancelimits.Limits, error)
	Subnets(ctx context.Context, vpcID, az string) ([]cloud.Subnet, error)
	CreateAndAttachENI(ctx context.Context, in cloud.CreateENIInput) (cloud.ENI, error)
	AssignIPs(ctx context.Context, eniID string, n int) ([]netip.Addr, error)
	AssignPrefixes(ctx context.Context, eniID string, n int) ([]netip.Prefix, error)
	UnassignIPs(ctx context.Context, eniID string, ips []netip.Addr) error
	UnassignPrefixes(ctx context.Context, eniID string, p []netip.Prefix) error
	FreeENI(ctx context.Context, eniID, attachmentID string) error
	SweepLeakedENIs(ctx context.Context, vpcID string, minAge time.Duration) ([]string, error)
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
}

// RealHost is the Host backed by package hostnet in the current namespace.
type RealHost struct{}

func (RealHost) PruneSNATPods(keep func(netip.Addr) bool) error { return hostnet.PruneSNATPods(keep) }

func (RealHost) SetupNode(mac net.HardwareAddr, mtu int) error { return hostnet.SetupNode(mac, mtu) }
func (RealHost) SetupENI(ctx context.Context, e hostnet.ENI, t time.Duration) (string, error) {
	return hostnet.SetupENI(ctx, e, t)
}
func (RealHost) TeardownENI(e hostnet.ENI) error { return hostnet.TeardownENI(e) }
func (RealHost) LinkExists(name string) bool     { return hostnet.LinkExists(name) }
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
	ips          map[netip.Addr]bool
	prefixes     map[netip.Prefix]bool
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

	// opMu serialises the loops that call EC2 and change ENIs (pool steps,
	// reconciliation) so neither acts on an ENI the other is half-way through.
	opMu sync.Mutex

	mu            sync.Mutex
	enis          map[string]*eniState
	byKey         map[store.Key]store.Allocation
	byIP          map[netip.Addr]store.Key
	released      map[netip.Addr]time.Time // cooling (and past-cooling until forgotten)
	busy          map[netip.Addr]bool      // being given back to EC2: never picked
	busyPrefixes  map[netip.Prefix]bool
	coolOffs      []pool.CoolOff
	lastScaleDown time.Time
	// The smallest pool.Surplus seen since surplusSince (start, last
	// shrink, or the end of the last watched window): only what stayed
	// surplus for a whole scale-down interval is released.
	surplusFloor  int
	surplusSince  time.Time
	lastDecision  pool.Decision
	lastPoolError string
	ready         bool
	counters      map[string]int64
	primaryLink   string
	unmanagedDevs map[int]bool // devices of ENIs tagged no_manage

	kick chan struct{}
}

// Options wire a Daemon.
type Options struct {
	Config config.Config
	Cloud  Cloud
	Host   Host
	// StorePath defaults to <StateDir>/ipam.db.
	StorePath string
	Now       func() time.Time
	Logf      func(string, ...any)
	// ObserveAdd, if set, is told how long each successful Add took (lock
	// wait and the durable write included). It feeds the allocation latency
	// metric; it must not block.
	ObserveAdd func(took time.Duration)
}

// ErrNoAddress is returned by Add when the pool has nothing to give now.
type ErrNoAddress struct{ Reason string }

func (e *ErrNoAddress) Error() string { return "no free address on this node: " + e.Reason }

// New discovers the node, sets up ENI host networking and restores the
// checkpoint (in that order: restore only after rediscovery, so no live
// allocation is dropped for an ENI we have not looked at yet).
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
	d := &Daemon{cfg: o.Config, cloud: o.Cloud, host: o.Host, now: o.Now, logf: o.Logf, observeAdd: o.ObserveAdd,
		enis: map[string]*eniState{}, byKey: map[store.Key]store.Allocation{}, byIP: map[netip.Addr]store.Key{},
		released: map[netip.Addr]time.Time{}, busy: map[netip.Addr]bool{}, busyPrefixes: map[netip.Prefix]bool{},
		counters: map[string]int64{}, unmanagedDevs: map[int]bool{}, kick: make(chan struct{}, 1)}
	if err := d.discover(ctx); err != nil {
		return nil, err
	}
	st, err := store.Open(o.StorePath)
	if err != nil {
		return nil, fmt.Errorf("open allocation store: %w", err)
	}
	d.store = st
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
	lim, err := d.cloud.InstanceLimits(ctx, md.InstanceType)
	if err != nil {
		return fmt.Errorf("instance limits of %s: %w", md.InstanceType, err)
	}
	d.limits = lim
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
	// EC2 is the truth for what is attached; IMDS may lag it.
	enis, err := d.cloud.InstanceENIs(ctx, md.InstanceID)
	if err != nil {
		return fmt.Errorf("describe this instance's ENIs in EC2: %w", err)
	}
	if err := d.host.SetupNode(parseMAC(md.PrimaryMAC), d.cfg.MTU); err != nil {
		return fmt.Errorf("set up node networking: %w", err)
	}
	for _, e := range enis {
		if e.Tags["node.k8s.amazonaws.com/no_manage"] == "true" {
			d.unmanagedDevs[e.DeviceNumber] = true
			continue
		}
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
	enis := l.MaxENIs
	if d.cfg.MaxENI >= 1 && d.cfg.MaxENI < enis {
		enis = d.cfg.MaxENI
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
	st := &eniState{id: e.ID, mac: parseMAC(e.MAC), dev: e.DeviceNumber, primary: e.DeviceNumber == 0 || e.Primary,
		primaryIP: e.PrimaryIP, subnetID: e.SubnetID, subnet: e.SubnetCIDR, attachmentID: e.AttachmentID,
		created: d.now(), ips: map[netip.Addr]bool{}, prefixes: map[netip.Prefix]bool{}}
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
		if _, err := d.host.SetupENI(ctx, st.hostENI(d.cfg.MTU), d.cfg.ENIConfigTimeout); err != nil {
			return fmt.Errorf("set up host networking for %s (device %d): %w", e.ID, e.DeviceNumber, err)
		}
	}
	d.mu.Lock()
	d.enis[e.ID] = st
	d.mu.Unlock()
	return nil
}

// restore loads the checkpoint after rediscovery: allocations whose address
// is on one of this node's ENIs (per EC2) are kept, others are dropped.
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
	for _, r := range recs {
		if d.eniOfLocked(r.IP) == nil {
			d.logf("restore: %s held %s, which is on no ENI of this node any more: dropped", r.Key, r.IP)
			if _, _, err := d.store.Drop(r.Key); err != nil {
				return fmt.Errorf("drop stale allocation: %w", err)
			}
			d.counters["restore_dropped"]++
			continue
		}
		d.byKey[r.Key] = r.Allocation
		d.byIP[r.IP] = r.Key
	}
	for ip, t := range cooling {
		if d.eniOfLocked(ip) == nil {
			_ = d.store.ForgetCooling(ip)
			continue
		}
		d.released[ip] = t
	}
	d.logf("restored %d allocations and %d cooldowns", len(d.byKey), len(d.released))
	return nil
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
	s := pool.Snapshot{Now: now, LastScaleDown: d.lastScaleDown, SurplusFloor: d.surplusFloor, SurplusSince: d.surplusSince}
	for _, c := range d.coolOffs {
		if now.Before(c.Until) {
			s.CoolOffs = append(s.CoolOffs, c)
		}
	}
	addr := func(ip netip.Addr) pool.Address {
		_, assigned := d.byIP[ip]
		return pool.Address{IP: ip, Assigned: assigned, ReleasedAt: d.released[ip]}
	}
	for _, e := range d.enis {
		pe := pool.ENI{ID: e.id, Primary: e.primary, CreatedAt: e.created, DeviceNumber: e.dev}
		for ip := range e.ips {
			if !d.busy[ip] {
				pe.IPs = append(pe.IPs, addr(ip))
			}
		}
		sort.Slice(pe.IPs, func(i, j int) bool { return pe.IPs[i].IP.Less(pe.IPs[j].IP) })
		for p := range e.prefixes {
			if d.busyPrefixes[p] {
				continue
			}
			pp := pool.Prefix{Prefix: p}
			for ip := p.Addr(); p.Contains(ip); ip = ip.Next() {
				_, assigned := d.byIP[ip]
				if assigned || !d.released[ip].IsZero() {
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

// Allocation describes an address handed to a pod.
type Allocation struct {
	IP            netip.Addr
	ENIID         string
	DeviceNumber  int
	RouteTable    int
	Subnet        netip.Prefix
	SubnetGateway netip.Addr
	VPCCIDRs      []netip.Prefix
}

func (d *Daemon) describeLocked(a store.Allocation) Allocation {
	out := Allocation{IP: a.IP, ENIID: a.ENIID, VPCCIDRs: d.node.VPCCIDRs}
	if e := d.enis[a.ENIID]; e != nil {
		out.DeviceNumber, out.RouteTable, out.Subnet = e.dev, e.table(), e.subnet
		out.SubnetGateway = e.subnet.Addr().Next()
	}
	return out
}

// Add gives key an address: the same one again for a known key, else a free
// (not cooling) address from the warm pool, recorded durably first.
func (d *Daemon) Add(key store.Key, podNS, podName, netns string) (_ Allocation, err error) {
	start := time.Now() // wall time, not d.now: a latency, not a pool timestamp
	defer func() {
		if err == nil {
			d.observeAdd(time.Since(start))
		}
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.byKey[key]; ok {
		return d.describeLocked(a), nil
	}
	snap := d.snapshotLocked()
	ip, eniID, ok := pool.PickAddress(d.pcfg, snap)
	if !ok {
		d.counters["add_no_address"]++
		d.kickLocked()
		return Allocation{}, &ErrNoAddress{Reason: d.noAddressReasonLocked(snap)}
	}
	a := store.Allocation{IP: ip, ENIID: eniID, PodNamespace: podNS, PodName: podName, Netns: netns, AssignedAt: d.now()}
	if err := d.store.Assign(key, a); err != nil {
		return Allocation{}, fmt.Errorf("record allocation of %s to %s: %w", ip, key, err)
	}
	d.byKey[key] = a
	d.byIP[ip] = key
	delete(d.released, ip)
	d.counters["add"]++
	// The surplus is lowest right after an ADD; the pool step the kick
	// triggers may already see a cooldown's end that hides the dip.
	d.surplusFloor = min(d.surplusFloor, pool.Surplus(d.pcfg, d.snapshotLocked()))
	d.kickLocked()
	return d.describeLocked(a), nil
}

func (d *Daemon) noAddressReasonLocked(snap pool.Snapshot) string {
	st := pool.ComputeStats(d.pcfg, snap)
	switch {
	case st.MaxPods > 0 && st.Assigned+st.LeftoverAssigned >= st.MaxPods:
		return fmt.Sprintf("max pods reached (%d pods assigned, the node allows %d)", st.Assigned, st.MaxPods)
	case len(snap.CoolOffs) > 0:
		return fmt.Sprintf("%d assigned, %d cooling; growth paused: %s", st.Assigned, st.Cooling, snap.CoolOffs[0].Reason)
	case d.lastPoolError != "":
		return fmt.Sprintf("%d assigned, %d cooling; last EC2 error: %s", st.Assigned, st.Cooling, d.lastPoolError)
	}
	// A fresh decision (pure, cheap): does the pool have a way to grow?
	dec := pool.Decide(d.pcfg, snap)
	if dec.Action != pool.ActionNone {
		return fmt.Sprintf("%d assigned, %d cooling, pool is growing (%s in progress)", st.Assigned, st.Cooling, dec.Action)
	}
	if st.Cooling > 0 {
		return fmt.Sprintf("%d assigned, %d cooling down (IP_COOLDOWN_PERIOD %s), the first is free again in %s; the pool cannot grow: %s",
			st.Assigned, st.Cooling, d.cfg.IPCooldownPeriod, d.nextCooledLocked().Round(100*time.Millisecond), dec.Reason)
	}
	return fmt.Sprintf("%d assigned, none free, and the pool cannot grow: %s", st.Assigned, dec.Reason)
}

// nextCooledLocked is how long until the first cooling address is free.
func (d *Daemon) nextCooledLocked() time.Duration {
	var first time.Time
	for ip, t := range d.released {
		if _, assigned := d.byIP[ip]; !assigned && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	return max(first.Add(d.cfg.IPCooldownPeriod).Sub(d.now()), 0)
}

// Del releases key's address into cooldown. found is false if key held
// nothing (DEL is idempotent).
func (d *Daemon) Del(key store.Key) (Allocation, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.byKey[key]
	if !ok {
		return Allocation{}, false, nil
	}
	now := d.now()
	if _, _, err := d.store.Release(key, now); err != nil {
		return Allocation{}, false, fmt.Errorf("record release of %s: %w", key, err)
	}
	delete(d.byKey, key)
	delete(d.byIP, a.IP)
	d.released[a.IP] = now
	d.counters["del"]++
	// vpc-snat's DEL already took the address out of the SNAT set, unless
	// the release comes from GC or the orphan check, or the reconcile loop
	// put it back in between (it re-adds every allocation).
	d.pruneSNATLocked()
	d.kickLocked()
	return d.describeLocked(a), true, nil
}

// pruneSNATLocked removes every address the daemon does not allocate from
// the node's SNAT set. Under d.mu no Add can hand out an address meanwhile,
// so no live pod's entry is ever removed.
func (d *Daemon) pruneSNATLocked() {
	p, ok := d.host.(SNATPruner)
	if !ok || d.cfg.ExternalSNAT {
		return
	}
	if err := p.PruneSNATPods(func(ip netip.Addr) bool { _, held := d.byIP[ip]; return held }); err != nil {
		d.logf("remove released addresses from the SNAT set: %v", err)
	}
}

// Get returns key's allocation.
func (d *Daemon) Get(key store.Key) (Allocation, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.byKey[key]
	if !ok {
		return Allocation{}, false
	}
	return d.describeLocked(a), true
}

// GC releases every allocation of network whose key is not in valid.
func (d *Daemon) GC(network string, valid map[store.Key]bool) ([]store.Key, error) {
	d.mu.Lock()
	var stale []store.Key
	for k := range d.byKey {
		if k.Network == network && !valid[k] {
			stale = append(stale, k)
		}
	}
	d.mu.Unlock()
	var out []store.Key
	for _, k := range stale {
		if _, ok, err := d.Del(k); err != nil {
			return out, err
		} else if ok {
			out = append(out, k)
		}
	}
	return out, nil
}

// Stats returns the pool counters now.
func (d *Daemon) Stats() pool.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return pool.ComputeStats(d.pcfg, d.snapshotLocked())
}

// Ready reports whether the daemon serves, and why not.
func (d *Daemon) Ready() (bool, string, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ready {
		return false, "starting", 0
	}
	snap := d.snapshotLocked()
	st := pool.ComputeStats(d.pcfg, snap)
	if st.Available == 0 {
		return true, d.noAddressReasonLocked(snap), 0
	}
	return true, "", st.Available
}

func (d *Daemon) kickLocked() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Run drives the pool, reconciliation and the leaked-ENI sweep until ctx
// ends.
func (d *Daemon) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.poolLoop(ctx) }()
	go func() { defer wg.Done(); d.reconcileLoop(ctx) }()
	if !d.cfg.DisableLeakedENICleanup {
		wg.Add(1)
		go func() { defer wg.Done(); d.sweepLoop(ctx) }()
	}
	wg.Wait()
}

func (d *Daemon) poolLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.PoolInterval)
	defer t.Stop()
	for {
		// Act until the pool is at target (or blocked), then wait.
		for ctx.Err() == nil && d.Step(ctx) {
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.kick:
		}
	}
}

func (d *Daemon) sweepLoop(ctx context.Context) {
	// Spread first sweeps so a fleet restart does not sweep at once.
	delay := time.Duration(rand.Int64N(int64(time.Minute)))
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
		if len(deleted) > 0 {
			d.logf("leaked ENI sweep deleted %v", deleted)
			d.mu.Lock()
			d.counters["leaked_enis_deleted"] += int64(len(deleted))
			d.mu.Unlock()
		}
	}
}

// Counters returns the daemon's event counters.
func (d *Daemon) Counters() map[string]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int64{}
	for k, v := range d.counters {
		out[k] = v
	}
	return out
}
