package ipamd

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vpcchain/vpcchain/daemon/config"
	"github.com/vpcchain/vpcchain/daemon/pool"
	"github.com/vpcchain/vpcchain/daemon/store"
)

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

// describeLocked gives the pod's address with the ENI that holds it, as the
// daemon last saw EC2: the route table must be the one of the ENI the
// address is on, or the VPC's source/destination check drops the pod's
// packets. An address on no ENI the daemon knows has no answer.
func (d *Daemon) describeLocked(a store.Allocation) (Allocation, error) {
	e := d.ledger.eniOf(a.IP)
	if e == nil {
		return Allocation{}, &ErrNoAddress{Reason: fmt.Sprintf(
			"this pod's address %s is on none of the node's ENIs the daemon sees (EC2 may not show a recent change yet); try again", a.IP)}
	}
	if a.IP.Is6() {
		// The VPC router is the node's gateway (a link-local it
		// advertises); pods use vpc-bridge's, so none is given here.
		return Allocation{IP: a.IP, ENIID: e.id, VPCCIDRs: d.node.VPCIPv6CIDRs, DeviceNumber: e.dev, RouteTable: e.table(),
			Subnet: e.subnet6}, nil
	}
	return Allocation{IP: a.IP, ENIID: e.id, VPCCIDRs: d.node.VPCCIDRs, DeviceNumber: e.dev, RouteTable: e.table(),
		Subnet: e.subnet, SubnetGateway: e.subnet.Addr().Next()}, nil
}

// pickLocked picks a free address for a new pod: from the warm pool, or in
// IPv6 mode from the primary ENI's /80.
func (d *Daemon) pickLocked() (netip.Addr, string, bool) {
	if d.cfg.IPv6 {
		return d.pickIPv6Locked()
	}
	return pool.PickAddress(d.pcfg, d.snapshotLocked())
}

// waitInflightLocked waits (unlocking meanwhile) until no ADD or DEL of key
// is half-way; it returns with d.mu held.
func (d *Daemon) waitInflightLocked(key store.Key) {
	for {
		ch := d.inflight[key]
		if ch == nil {
			return
		}
		d.mu.Unlock()
		<-ch
		d.mu.Lock()
	}
}

// Add gives key an address: the same one again for a known key, else a free
// (not cooling) address from the warm pool, recorded durably before the
// reply. The lock covers only memory: the address is reserved while its
// record is written, so concurrent ADDs of other pods do not wait for the
// fsync.
func (d *Daemon) Add(key store.Key, podNS, podName, netns string) (_ Allocation, err error) {
	start := time.Now() // wall time, not d.now: a latency, not a pool timestamp
	defer func() {
		if err == nil {
			d.observeAdd(time.Since(start))
		}
	}()
	d.mu.Lock()
	d.waitInflightLocked(key)
	if a, ok := d.ledger.byKey[key]; ok {
		defer d.mu.Unlock()
		return d.describeLocked(a)
	}
	if _, again := d.grow.waiting[key]; !again && d.cfg.WarmPoolMode == config.WarmPoolAdaptive {
		d.adaptive.noteArrival(d.now())
	}
	ip, eniID, ok := d.pickLocked()
	if !ok {
		d.counters["add_no_address"]++
		d.noteWaitingLocked(key)
		d.kickLocked()
		var reason string
		if d.cfg.IPv6 {
			_, reason, _ = d.ipv6ReadyLocked()
		} else {
			reason = d.noAddressReasonLocked(d.snapshotLocked())
		}
		d.mu.Unlock()
		return Allocation{}, &ErrNoAddress{Reason: reason}
	}
	a := store.Allocation{IP: ip, ENIID: eniID, PodNamespace: podNS, PodName: podName, Netns: netns, AssignedAt: d.now()}
	done := make(chan struct{})
	d.inflight[key] = done
	d.ledger.reserve(ip)
	d.mu.Unlock()

	err = d.store.Assign(key, a)

	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.inflight, key)
	d.ledger.unreserve(key, a, err == nil)
	close(done)
	if err != nil {
		return Allocation{}, fmt.Errorf("record allocation of %s to %s: %w", ip, key, err)
	}
	d.doneWaitingLocked(key)
	d.counters["add"]++
	if !d.cfg.IPv6 {
		// The surplus is lowest right after an ADD; the pool step the kick
		// triggers may already see a cooldown's end that hides the dip.
		d.surplusFloor = min(d.surplusFloor, pool.Surplus(d.poolConfigLocked(), d.snapshotLocked()))
		d.kickLocked()
	}
	return d.describeLocked(a)
}

// Del releases key's address into cooldown. found is false if key held
// nothing (DEL is idempotent). The address stays held in memory until its
// release is durable and it has left the node's SNAT set, so no ADD can
// hand it out (and have its SNAT entry removed) in between.
func (d *Daemon) Del(key store.Key) (Allocation, bool, error) {
	d.mu.Lock()
	d.waitInflightLocked(key)
	d.doneWaitingLocked(key)
	a, ok := d.ledger.byKey[key]
	if !ok {
		d.mu.Unlock()
		return Allocation{}, false, nil
	}
	out, derr := d.describeLocked(a)
	if derr != nil {
		out = Allocation{IP: a.IP, ENIID: a.ENIID}
	}
	now := d.now()
	done := make(chan struct{})
	d.inflight[key] = done
	d.mu.Unlock()

	_, _, err := d.store.Release(key, now)
	if err == nil {
		// vpc-snat's DEL removed it already, unless the release comes from
		// GC or the orphan check, or the reconcile loop put it back since.
		d.removeSNAT(a.IP)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.inflight, key)
	close(done)
	if err != nil {
		return Allocation{}, false, fmt.Errorf("record release of %s: %w", key, err)
	}
	d.ledger.release(key, now)
	d.counters["del"]++
	d.kickLocked()
	return out, true, nil
}

// Get returns key's allocation.
func (d *Daemon) Get(key store.Key) (Allocation, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.ledger.byKey[key]
	if !ok {
		return Allocation{}, false
	}
	out, err := d.describeLocked(a)
	if err != nil {
		return Allocation{IP: a.IP, ENIID: a.ENIID}, true
	}
	return out, true
}

// GC releases every allocation of network whose key is not in valid.
func (d *Daemon) GC(network string, valid map[store.Key]bool) ([]store.Key, error) {
	d.mu.Lock()
	var stale []store.Key
	for k := range d.ledger.byKey {
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
