package ipamd

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vpcchain/vpcchain/daemon/pool"
)

func (d *Daemon) noAddressReasonLocked(snap pool.Snapshot) string {
	st := pool.ComputeStats(d.pcfg, snap)
	paused := pausing(snap.CoolOffs)
	switch {
	case st.MaxPods > 0 && st.Assigned+st.LeftoverAssigned >= st.MaxPods:
		return fmt.Sprintf("max pods reached (%d pods assigned, the node allows %d)", st.Assigned, st.MaxPods)
	case paused != nil:
		return fmt.Sprintf("%d assigned, %d cooling; growth paused: %s", st.Assigned, st.Cooling, paused.Reason)
	case d.lastPoolError != "":
		return fmt.Sprintf("%d assigned, %d cooling; last EC2 error: %s", st.Assigned, st.Cooling, d.lastPoolError)
	}
	// A fresh decision (pure, cheap): does the pool have a way to grow?
	dec := pool.Decide(d.poolConfigLocked(), snap)
	if dec.Action != pool.ActionNone {
		return fmt.Sprintf("%d assigned, %d cooling, pool is growing (%s in progress)", st.Assigned, st.Cooling, dec.Action)
	}
	if st.Cooling > 0 {
		return fmt.Sprintf("%d assigned, %d cooling down (IP_COOLDOWN_PERIOD %s), the first is free again in %s; the pool cannot grow: %s",
			st.Assigned, st.Cooling, d.cfg.IPCooldownPeriod, d.nextCooledLocked().Round(100*time.Millisecond), dec.Reason)
	}
	return fmt.Sprintf("%d assigned, none free, and the pool cannot grow: %s", st.Assigned, dec.Reason)
}

// pausing is the first cool-off that holds growth for a waiting pod: a
// hold on the warm targets alone does not.
func pausing(cos []pool.CoolOff) *pool.CoolOff {
	for i := range cos {
		if cos[i].Scope != pool.CoolOffWarm {
			return &cos[i]
		}
	}
	return nil
}

// nextCooledLocked is how long until the first cooling address is free.
func (d *Daemon) nextCooledLocked() time.Duration {
	first := d.ledger.firstCooling()
	return max(first.Add(d.cfg.IPCooldownPeriod).Sub(d.now()), 0)
}

// Stats returns the pool counters now.
func (d *Daemon) Stats() pool.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return pool.ComputeStats(d.pcfg, d.snapshotLocked())
}

// NodeAddress is the node's own address, as IMDS showed it at start: the
// primary ENI's primary IPv4 address; in IPv6 mode the primary ENI's first
// IPv6 address (an EKS IPv6 node's address), or the IPv4 one if it has none.
func (d *Daemon) NodeAddress() netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.IPv6 {
		for _, e := range d.node.ENIs {
			if e.Primary && len(e.IPv6s) > 0 {
				return e.IPv6s[0]
			}
		}
	}
	return d.node.PrimaryIP
}

// Ready reports whether the daemon can serve an ADD at all, and why not,
// with the addresses available now. An empty pool is not "not ready": a
// node at max pods, or one whose pool refills during a burst, must stay in
// service (a runtime that sees CNI STATUS fail reports the node's network
// NotReady, and Kubernetes then taints it and evicts its pods); ADD says
// "try again later" with the reason instead. The reason is also filled in
// for a ready daemon whose pool is empty, or with a sysctl problem that
// leaves pods working (sysctlProblem).
func (d *Daemon) Ready() (bool, string, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ready {
		return false, "starting", 0
	}
	if d.hostErr != "" {
		return false, "host networking: " + d.hostErr, 0
	}
	if r := d.sysctlReasonLocked(true); r != "" {
		return false, "host networking: " + r, 0
	}
	// A sysctl problem that leaves pods working is said, not acted on.
	warn := d.sysctlReasonLocked(false)
	if d.cfg.IPv6 {
		ok, reason, avail := d.ipv6ReadyLocked()
		return ok, withWarning(reason, warn), avail
	}
	snap := d.snapshotLocked()
	st := pool.ComputeStats(d.pcfg, snap)
	if reason := d.customNetworkReasonLocked(); reason != "" && len(snap.ENIs) == 0 {
		// Custom networking without a usable ENIConfig on a node with no
		// ENI of its own yet: no pod can get an address here, so the node
		// must not look ready for pods (nothing runs on it to evict).
		return false, "custom networking: " + reason, 0
	}
	if st.Available == 0 {
		return true, withWarning(d.noAddressReasonLocked(snap), warn), 0
	}
	return true, withWarning("", warn), st.Available
}

// withWarning appends a host networking warning to reason.
func withWarning(reason, warn string) string {
	switch {
	case warn == "":
		return reason
	case reason == "":
		return "host networking: " + warn
	}
	return reason + "; host networking: " + warn
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

// noteRPC counts a call a runtime makes through the plugins for the node as
// a whole (STATUS, GC): the events show whether the runtime makes them.
func (d *Daemon) noteRPC(name string) {
	d.mu.Lock()
	d.counters["rpc_"+name]++
	d.mu.Unlock()
}
