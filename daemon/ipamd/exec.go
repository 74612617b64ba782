package ipamd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/pool"
)

// Cool-offs after EC2 refuses growth (the reference waits 120 s after a
// full subnet; throttling backs off briefly and lets the SDK's retryer and
// our token bucket do the rest).
const (
	subnetFullCoolOff  = 2 * time.Minute
	throttleCoolOff    = 5 * time.Second // doubled per throttled growth in a row, up to maxThrottleCoolOff
	maxThrottleCoolOff = time.Minute
	// warmThrottleCoolOff: the least hold on warm-target growth after EC2
	// throttled a call (noteThrottlingLocked).
	warmThrottleCoolOff = 30 * time.Second
	limitCoolOff        = time.Minute
	errorCoolOff        = 3 * time.Second
	ec2CallTimeout      = time.Minute
)

// Step computes and executes one pool decision. It reports whether it did
// something, so the caller can go on until the pool is at target. Step
// waits for the action; Run's pool loop runs growth actions concurrently
// instead (stepAsync).
func (d *Daemon) Step(ctx context.Context) bool { return d.step(ctx, false) }

// stepAsync is Step for the pool loop: a growth action is started in the
// background and reported as done at once, so the next decision (which
// counts it as coming) can start another: a burst on a fresh node creates
// the ENIs it needs together instead of one after another.
func (d *Daemon) stepAsync(ctx context.Context) bool { return d.step(ctx, true) }

func (d *Daemon) step(ctx context.Context, async bool) bool {
	if d.cfg.IPv6 {
		return false // the /80 is the pool: nothing to grow or shrink
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.forgetOldCooldowns()
	d.retryReleases(ctx)
	d.mu.Lock()
	d.noteThrottlingLocked()
	if async && len(d.grow.growing) >= maxConcurrentGrowth {
		d.mu.Unlock()
		return false // a growth action's end kicks the loop
	}
	snap := d.snapshotLocked()
	pcfg := d.poolConfigLocked()
	surplus := pool.Surplus(pcfg, snap)
	d.surplusFloor = min(d.surplusFloor, surplus)
	snap.SurplusFloor = d.surplusFloor
	dec := pool.Decide(pcfg, snap)
	d.lastDecision = dec
	if !dec.Action.Shrinks() && snap.Now.Sub(d.surplusSince) >= pcfg.ScaleDownInterval {
		// The watched window is over and released nothing: watch the next
		// one from the surplus there is now, so a surplus that dipped once
		// is released after a later interval where it did not.
		d.surplusFloor, d.surplusSince = surplus, snap.Now
	}
	if dec.Action == pool.ActionNone {
		d.mu.Unlock()
		return false
	}
	var eni eniState
	if e := d.enis[dec.ENIID]; e != nil {
		eni = *e
	}
	for _, ip := range dec.IPs {
		d.busy[ip] = true
	}
	for _, p := range dec.Prefixes {
		d.busyPrefixes[p] = true
	}
	if async && dec.Action.Grows() {
		d.startGrowthLocked(ctx, dec, eni)
		d.mu.Unlock()
		return true
	}
	d.mu.Unlock()

	err := d.executeTimed(ctx, dec, eni)
	d.mu.Lock()
	ok := d.finishLocked(dec, err)
	d.mu.Unlock()
	d.settleDeleteOnTermination(ctx)
	return ok
}

func (d *Daemon) executeTimed(ctx context.Context, dec pool.Decision, eni eniState) error {
	cctx, cancel := context.WithTimeout(ctx, ec2CallTimeout)
	defer cancel()
	start := d.now()
	err := d.execute(cctx, dec, eni)
	if err == nil && (dec.Action == pool.ActionAssignIPs || dec.Action == pool.ActionAssignPrefixes) {
		d.mu.Lock()
		d.adaptive.noteLatency(d.now().Sub(start)) // one round trip: what a refill waits for
		d.mu.Unlock()
	}
	return err
}

// finishLocked records the outcome of an executed decision; it reports
// whether it succeeded.
func (d *Daemon) finishLocked(dec pool.Decision, err error) bool {
	for _, ip := range dec.IPs {
		delete(d.busy, ip)
	}
	for _, p := range dec.Prefixes {
		delete(d.busyPrefixes, p)
	}
	d.counters["pool_"+dec.Action.String()]++
	if err != nil {
		d.lastPoolError = err.Error()
		d.counters["pool_errors"]++
		d.logf("pool: %s: %v", dec.Action, err)
		return false
	}
	d.lastPoolError = ""
	if dec.Action.Grows() {
		d.throttled = 0
	}
	if dec.Action.Shrinks() {
		d.lastScaleDown = d.now()
		d.surplusFloor, d.surplusSince = math.MaxInt, d.lastScaleDown
	}
	d.logf("pool: %s %s %d %s done: %s", dec.Action, dec.ENIID, max(dec.Count, len(dec.IPs)+len(dec.Prefixes)), dec.Unit, dec.Reason)
	return true
}

// forgetOldCooldowns drops release times well past the cooldown so the
// store does not grow without bound: one store transaction, outside the
// lock.
func (d *Daemon) forgetOldCooldowns() {
	d.mu.Lock()
	cut := d.now().Add(-d.cfg.IPCooldownPeriod - 5*time.Minute)
	old := map[netip.Addr]time.Time{}
	for ip, t := range d.released {
		if t.Before(cut) {
			old[ip] = t
		}
	}
	d.mu.Unlock()
	if len(old) == 0 {
		return
	}
	if err := d.store.ForgetCooling(slices.Collect(maps.Keys(old))...); err != nil {
		d.logf("forget old cooldowns: %v", err)
		return
	}
	d.mu.Lock()
	for ip, t := range old {
		if d.released[ip].Equal(t) { // not released again meanwhile
			delete(d.released, ip)
		}
	}
	d.mu.Unlock()
}

// releaseRetryInterval spaces the retries of failed releases.
const releaseRetryInterval = time.Second

// retryReleases gives back to EC2 the free addresses and prefixes whose
// release failed. EC2 may have made the change behind an error or a lost
// response, so they stay out of the pool until a release succeeds; the
// release is idempotent (an address no longer assigned is a success).
func (d *Daemon) retryReleases(ctx context.Context) {
	d.mu.Lock()
	now := d.now()
	if len(d.releasing)+len(d.releasingPrefixes) == 0 || now.Sub(d.lastReleaseRetry) < releaseRetryInterval {
		d.mu.Unlock()
		return
	}
	d.lastReleaseRetry = now
	ips, pfx := map[string][]netip.Addr{}, map[string][]netip.Prefix{}
	for ip, eni := range d.releasing {
		ips[eni] = append(ips[eni], ip)
	}
	for p, eni := range d.releasingPrefixes {
		pfx[eni] = append(pfx[eni], p)
	}
	d.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, ec2CallTimeout)
	defer cancel()
	for eni, list := range ips {
		if retried(d, cctx, eni, list, d.cloud.UnassignIPs) {
			d.forgetReleased(eni, list, nil)
		}
	}
	for eni, list := range pfx {
		if retried(d, cctx, eni, list, d.cloud.UnassignPrefixes) {
			d.forgetReleased(eni, nil, list)
		}
	}
}

// retried runs one retried release; an ENI that no longer exists has
// nothing left to give back.
func retried[T any](d *Daemon, ctx context.Context, eni string, list []T, release func(context.Context, string, []T) error) bool {
	if err := release(ctx, eni, list); err != nil && !cloud.IsNotFound(err) {
		d.logf("retry releasing %v from %s: %v", list, eni, err)
		return false
	}
	return true
}

func (d *Daemon) execute(ctx context.Context, dec pool.Decision, eni eniState) error {
	switch dec.Action {
	case pool.ActionAssignIPs:
		ips, err := d.cloud.AssignIPs(ctx, eni.id, dec.Count)
		if err != nil {
			return d.growFailed(ctx, err, eni.id)
		}
		d.mu.Lock()
		if e := d.enis[eni.id]; e != nil {
			for _, ip := range ips {
				e.ips[ip] = true
				d.learned[ip] = d.now()
			}
		}
		d.mu.Unlock()
	case pool.ActionAssignPrefixes:
		pfx, err := d.cloud.AssignPrefixes(ctx, eni.id, dec.Count)
		if err != nil {
			return d.growFailed(ctx, err, eni.id)
		}
		d.mu.Lock()
		if e := d.enis[eni.id]; e != nil {
			for _, p := range pfx {
				e.prefixes[p] = true
				d.learnedPrefix[p] = d.now()
			}
		}
		d.mu.Unlock()
	case pool.ActionCreateENI:
		return d.createENI(ctx, dec)
	case pool.ActionReleaseIPs:
		if err := d.cloud.UnassignIPs(ctx, eni.id, dec.IPs); err != nil {
			d.releaseFailed(eni.id, dec.IPs, nil)
			return err
		}
		d.forgetReleased(eni.id, dec.IPs, nil)
	case pool.ActionReleasePrefixes:
		if err := d.cloud.UnassignPrefixes(ctx, eni.id, dec.Prefixes); err != nil {
			d.releaseFailed(eni.id, nil, dec.Prefixes)
			return err
		}
		d.forgetReleased(eni.id, nil, dec.Prefixes)
	case pool.ActionDeleteENI:
		return d.deleteENI(ctx, eni)
	}
	return nil
}

// releaseFailed keeps addresses or prefixes whose release failed out of the
// pool: EC2 may have unassigned them (a lost response, a timeout after the
// change), and an ADD must never get an address the ENI no longer has.
// retryReleases gives them back later.
func (d *Daemon) releaseFailed(eniID string, ips []netip.Addr, pfx []netip.Prefix) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ip := range ips {
		d.releasing[ip] = eniID
	}
	for _, p := range pfx {
		d.releasingPrefixes[p] = eniID
	}
	d.counters["release_failed"] += int64(len(ips) + len(pfx))
}

// released_ forgets addresses and prefixes EC2 took back: off the ENI, out
// of the retry set, their cooldown records gone (one store transaction,
// outside the lock).
func (d *Daemon) forgetReleased(eniID string, ips []netip.Addr, pfx []netip.Prefix) {
	var forget []netip.Addr
	d.mu.Lock()
	e := d.enis[eniID]
	for _, ip := range ips {
		if e != nil {
			delete(e.ips, ip)
		}
		delete(d.releasing, ip)
		delete(d.released, ip)
		delete(d.learned, ip)
		delete(d.unconfirmed, ip)
		forget = append(forget, ip)
	}
	for _, p := range pfx {
		if e != nil {
			delete(e.prefixes, p)
		}
		delete(d.releasingPrefixes, p)
		delete(d.learnedPrefix, p)
		delete(d.unconfirmedPrefixes, p)
		for ip := p.Addr(); p.Contains(ip); ip = ip.Next() {
			delete(d.released, ip)
			forget = append(forget, ip)
		}
	}
	d.mu.Unlock()
	if err := d.store.ForgetCooling(forget...); err != nil {
		d.logf("forget cooldowns of released addresses: %v", err)
	}
}

// growFailed classifies a failed growth call: cool-offs for full subnets,
// limits and throttling; and for anything else a re-read of the ENI from
// EC2, because a lost response may hide addresses EC2 did assign.
func (d *Daemon) growFailed(ctx context.Context, err error, eniID string) error {
	now := d.now()
	var c pool.CoolOff
	switch {
	case cloud.IsSubnetFull(err):
		d.forgetSubnets() // rank the subnets by what is free now
		c = pool.CoolOff{Scope: pool.CoolOffGrowth, Until: now.Add(subnetFullCoolOff), Reason: "subnet full: " + cloud.ErrorCode(err)}
	case cloud.IsThrottle(err):
		c = pool.CoolOff{Scope: pool.CoolOffGrowth, Until: now.Add(d.throttleBackoff()),
			Reason: "EC2 throttled the request (RequestLimitExceeded)"}
	case cloud.ErrorCode(err) == "AttachmentLimitExceeded":
		c = pool.CoolOff{Scope: pool.CoolOffCreateENI, Until: now.Add(limitCoolOff), Reason: "ENI attachment limit reached"}
	case cloud.IsLimitExceeded(err):
		c = pool.CoolOff{Scope: pool.CoolOffENI, ENIID: eniID, Until: now.Add(limitCoolOff), Reason: "ENI address limit reached"}
	default:
		c = pool.CoolOff{Scope: pool.CoolOffGrowth, Until: now.Add(errorCoolOff), Reason: "EC2 error: " + errText(err)}
	}
	if eniID != "" && !cloud.IsSubnetFull(err) && !cloud.IsThrottle(err) {
		d.resyncENI(ctx, eniID)
	}
	d.mu.Lock()
	d.coolOffs = append(pruneCoolOffs(d.coolOffs, now), c)
	d.mu.Unlock()
	return err
}

// noteThrottlingLocked puts growth for the warm targets alone on hold when
// EC2 throttled any call since the last look, retried ones included: the
// account is over its budget (a fleet scaling out), and the calls that
// pods wait for should get it first. The hold is spread over
// warmThrottleCoolOff to 3 times that, so the fleet's warm-up calls come
// back spread out; every further throttle starts a new one.
func (d *Daemon) noteThrottlingLocked() {
	n := d.cloud.Throttles()
	if n == d.seenThrottles {
		return
	}
	d.seenThrottles = n
	d.holdWarmLocked("EC2 is throttling the account's calls: pods first")
}

// holdWarmLocked puts the calls no pod waits for on hold for a random
// warmThrottleCoolOff to 3 times that, so a fleet's come back spread out.
func (d *Daemon) holdWarmLocked(reason string) {
	now := d.now()
	d.coolOffs = append(pruneCoolOffs(d.coolOffs, now), pool.CoolOff{Scope: pool.CoolOffWarm,
		Until: now.Add(warmThrottleCoolOff + rand.N(2*warmThrottleCoolOff)), Reason: reason})
}

// warmOnHoldLocked: growth for the warm targets (and other work no pod
// waits for) is on hold because EC2 throttles.
func (d *Daemon) warmOnHoldLocked() bool {
	for _, c := range d.coolOffs {
		if c.Scope == pool.CoolOffWarm && d.now().Before(c.Until) {
			return true
		}
	}
	return false
}

// throttleBackoff is the growth cool-off after EC2 throttled a growth call
// whose SDK retries were used up: doubled for each such call in a row and
// spread over half to one and a half times that, so the nodes of a
// throttled account do not all come back at once.
func (d *Daemon) throttleBackoff() time.Duration {
	d.mu.Lock()
	n := d.throttled
	d.throttled++
	d.mu.Unlock()
	base := min(throttleCoolOff<<min(n, 8), maxThrottleCoolOff)
	return base/2 + rand.N(base)
}

func errText(err error) string {
	if code := cloud.ErrorCode(err); code != "" {
		return code
	}
	return err.Error()
}

func pruneCoolOffs(cs []pool.CoolOff, now time.Time) []pool.CoolOff {
	var out []pool.CoolOff
	for _, c := range cs {
		if now.Before(c.Until) {
			out = append(out, c)
		}
	}
	return out
}

// resyncENI adopts the addresses EC2 has on an ENI that the daemon does not
// know of (a lost AssignPrivateIpAddresses response).
func (d *Daemon) resyncENI(ctx context.Context, eniID string) {
	e, err := d.cloud.DescribeENI(ctx, eniID)
	if err != nil {
		d.logf("re-read %s after a failed call: %v", eniID, err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.enis[eniID]
	if st == nil {
		return
	}
	for _, ip := range e.IPs {
		if !st.ips[ip] {
			st.ips[ip] = true
			d.learned[ip] = d.now()
			d.counters["adopted_ips"]++
		}
	}
	for _, p := range e.Prefixes {
		if !st.prefixes[p] {
			st.prefixes[p] = true
			d.learnedPrefix[p] = d.now()
			d.counters["adopted_prefixes"]++
		}
	}
}

func (d *Daemon) createENI(ctx context.Context, dec pool.Decision) error {
	subnet, groups, err := d.eniPlacement(ctx)
	if err != nil {
		return d.growFailed(ctx, err, "")
	}
	dev, ok := d.reserveDevice()
	if !ok {
		return d.growFailed(ctx, fmt.Errorf("no free device index below %d", d.limits.MaxENIs), "")
	}
	// Adopted or given back by the time this returns.
	defer d.unreserveDevice(dev)
	in := cloud.CreateENIInput{SubnetID: subnet, Groups: groups, InstanceID: d.node.InstanceID,
		DeviceIndex: dev, Description: "vpcchain-" + d.node.InstanceID}
	if dec.Unit == pool.UnitPrefix {
		in.PrefixCount = dec.Count
	} else {
		in.IPCount = dec.Count
	}
	e, err := d.cloud.CreateAndAttachENI(ctx, in)
	if err != nil {
		return d.growFailed(ctx, err, "")
	}
	if err := d.adoptENI(ctx, e); err != nil {
		// An ENI we cannot wire is worse than none: give it back.
		if ferr := d.cloud.FreeENI(ctx, e.ID, e.AttachmentID); ferr != nil {
			err = errors.Join(err, fmt.Errorf("free %s: %w", e.ID, ferr))
		}
		return d.growFailed(ctx, err, "")
	}
	return nil
}

// eniPlacement is the subnet and security groups of the next ENI: the
// ENIConfig's with custom networking, else pickSubnet's and the node's.
func (d *Daemon) eniPlacement(ctx context.Context) (string, []string, error) {
	if d.cfg.CustomNetworking {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.custom.subnetID == "" {
			return "", nil, fmt.Errorf("custom networking: %s", d.customNetworkReasonLocked())
		}
		return d.custom.subnetID, d.custom.groups, nil
	}
	subnet, err := d.pickSubnet(ctx)
	return subnet, d.node.SecurityGroups, err
}

// pickSubnet chooses where a new ENI goes: with subnet discovery, among the
// VPC's subnets in the node's AZ tagged kubernetes.io/role/cni (the node's
// own subnet unless tagged 0) and not reserved for other clusters
// (clusterMayUse), most free addresses first.
func (d *Daemon) pickSubnet(ctx context.Context) (string, error) {
	if !d.cfg.SubnetDiscovery {
		return d.node.SubnetID, nil
	}
	subs, err := d.subnets(ctx)
	if err != nil {
		d.logf("subnet discovery failed, using the node's subnet: %v", err)
		return d.node.SubnetID, nil
	}
	var eligible []cloud.Subnet
	for _, s := range subs {
		tag, tagged := s.Tags["kubernetes.io/role/cni"]
		if s.ID == d.node.SubnetID && tag != "0" || s.ID != d.node.SubnetID && tagged && tag != "0" && clusterMayUse(s.Tags, d.cfg.ClusterName) {
			eligible = append(eligible, s)
		}
	}
	sort.SliceStable(eligible, func(i, j int) bool { return eligible[i].Available > eligible[j].Available })
	if len(eligible) == 0 {
		return d.node.SubnetID, nil
	}
	return eligible[0].ID, nil
}

// reserveDevice picks the lowest device index no ENI uses and no ENI being
// created has taken (creations run concurrently).
func (d *Daemon) reserveDevice() (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	used := map[int]bool{}
	for dev := range d.grow.devReserved {
		used[dev] = true
	}
	for _, e := range d.enis {
		used[e.dev] = true
	}
	for _, f := range d.foreign {
		if f.card == 0 {
			used[f.dev] = true
		}
	}
	for dev := 1; dev < d.limits.MaxENIs; dev++ {
		if !used[dev] {
			d.grow.devReserved[dev] = true
			return dev, true
		}
	}
	return 0, false
}

func (d *Daemon) unreserveDevice(dev int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.grow.devReserved, dev)
}

func (d *Daemon) deleteENI(ctx context.Context, eni eniState) error {
	d.mu.Lock()
	// The decision was computed without the lock held across EC2 calls;
	// re-check that no pod took an address meanwhile.
	for ip := range d.byIP {
		if eni.holds(ip) {
			d.mu.Unlock()
			return fmt.Errorf("ENI %s got a pod meanwhile: not freed", eni.id)
		}
	}
	delete(d.enis, eni.id)
	d.mu.Unlock()
	if err := d.host.TeardownENI(eni.hostENI(d.cfg.MTU)); err != nil {
		d.logf("tear down host networking of %s: %v", eni.id, err)
	}
	if err := d.cloud.FreeENI(ctx, eni.id, eni.attachmentID); err != nil {
		// Still attached: put it back so the reconciler and pool see it.
		d.mu.Lock()
		d.enis[eni.id] = &eni
		d.mu.Unlock()
		if _, serr := d.host.SetupENI(ctx, eni.hostENI(d.cfg.MTU), d.cfg.ENIAttachTimeout); serr != nil {
			d.logf("restore host networking of %s: %v", eni.id, serr)
		}
		return err
	}
	var forget []netip.Addr
	d.mu.Lock()
	for ip := range d.released {
		if eni.holds(ip) {
			delete(d.released, ip)
			forget = append(forget, ip)
		}
	}
	d.mu.Unlock()
	if err := d.store.ForgetCooling(forget...); err != nil {
		d.logf("forget cooldowns of %s's addresses: %v", eni.id, err)
	}
	return nil
}

// subnetClusterTagPrefix marks a subnet as reserved for the named clusters
// (the AWS VPC CNI's tag: cni.networking.k8s.aws/cluster/<name>).
const subnetClusterTagPrefix = "cni.networking.k8s.aws/cluster/"

// clusterMayUse reports whether a discovered subnet is open to this
// cluster: a subnet without cluster tags is open to every cluster; one with
// them only to the clusters they name, so never to a daemon without
// CLUSTER_NAME.
func clusterMayUse(tags map[string]string, cluster string) bool {
	reserved := false
	for k := range tags {
		if name, ok := strings.CutPrefix(k, subnetClusterTagPrefix); ok {
			if cluster != "" && name == cluster {
				return true
			}
			reserved = true
		}
	}
	return !reserved
}
