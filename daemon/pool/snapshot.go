package pool

import (
	"net/netip"
	"time"
)

// Snapshot is the node state one decision is computed from.
type Snapshot struct {
	ENIs          []ENI
	LastScaleDown time.Time // last shrink action (release or ENI delete); zero = never
	Now           time.Time
	CoolOffs      []CoolOff
	// SurplusFloor is the smallest Surplus the daemon saw since
	// SurplusSince (the start of the window it watches: its start, its last
	// shrink action, or the end of the previous window). Surplus addresses
	// are released only once watched for a whole ScaleDownInterval, and at
	// most SurplusFloor of them: under steady churn a cooldown that ends
	// leaves a spare address that the next pod takes, and releasing it would
	// cost a release and a refill (two EC2 calls) per interval for nothing.
	// Zero SurplusSince: no history, the current surplus is released.
	SurplusFloor int
	SurplusSince time.Time
	// Waiting is how many pods asked for an address, found none and have
	// not got one since: demand the warm targets cannot see, because an
	// empty pool shows no use. Growth covers it on top of the targets.
	Waiting int
	// Growing are the growth actions in flight: the daemon runs them
	// concurrently, so the addresses they will bring count as coming.
	Growing []Growth
}

// Growth is one growth action in flight.
type Growth struct {
	ENIID string // the ENI being assigned to; "" for an ENI being created
	Count int    // units (IPs, or prefixes in prefix mode) it will add
}

// ENI is one attached network interface.
type ENI struct {
	ID           string
	Primary      bool // the instance's primary ENI: never freed
	CreatedAt    time.Time
	DeviceNumber int
	IPs          []Address // secondary /32s (not the ENI's own primary IP)
	Prefixes     []Prefix  // delegated /28s
}

// Address is one pod address and its state.
type Address struct {
	IP         netip.Addr
	Assigned   bool
	ReleasedAt time.Time // when the last pod let go of it; zero = never used
}

// Prefix is one delegated /28. Addresses lists only the addresses of the
// prefix that are assigned or were released; any other address is free.
type Prefix struct {
	Prefix    netip.Prefix
	Addresses []Address
}

// CoolOffScope says what a CoolOff blocks.
type CoolOffScope int

const (
	// CoolOffGrowth blocks every growth action (subnet full, InsufficientCidrBlocks, throttling).
	CoolOffGrowth CoolOffScope = iota
	// CoolOffCreateENI blocks only creating ENIs (e.g. attachment limit, no free device index).
	CoolOffCreateENI
	// CoolOffENI blocks assigning to one ENI (e.g. PrivateIpAddressLimitExceeded until reconcile).
	CoolOffENI
	// CoolOffWarm blocks growth that no waiting pod needs (the warm
	// targets alone) while EC2 throttles the account: pods first.
	CoolOffWarm
)

// CoolOff blocks some growth until Until.
type CoolOff struct {
	Scope  CoolOffScope
	ENIID  string // for CoolOffENI
	Until  time.Time
	Reason string
}

func (c CoolOff) active(now time.Time) bool { return now.Before(c.Until) }

// cooling: released less than the cooldown period ago.
func (a Address) cooling(now time.Time, cd time.Duration) bool {
	return !a.Assigned && !a.ReleasedAt.IsZero() && now.Before(a.ReleasedAt.Add(cd))
}

func (a Address) free(now time.Time, cd time.Duration) bool {
	return !a.Assigned && !a.cooling(now, cd)
}

// Stats are the pool counters for metrics and introspection. Total, Assigned,
// Cooling and Available count addresses of the active mode only; leftovers of
// the other kind (after a mode toggle) are counted apart.
type Stats struct {
	Mode             Mode
	ENIs             int
	MaxENIs          int
	Total            int
	Assigned         int
	Cooling          int
	Available        int // Total - Assigned - Cooling: what a new pod can get now
	Prefixes         int // prefix mode: /28s held
	FreePrefixes     int // prefix mode: /28s with no assigned and no cooling address
	LeftoverTotal    int // addresses of the inactive kind still held
	LeftoverAssigned int // ... of which pods still use
	MaxPods          int
	Waiting          int // pods that found no address and still wait (Snapshot.Waiting)
	Growing          int // addresses that growth actions in flight will add
	GrowingENIs      int // ENIs being created
}

type counts struct{ total, assigned, cooling int }

func (c *counts) add(o counts) {
	c.total += o.total
	c.assigned += o.assigned
	c.cooling += o.cooling
}

func ipCounts(ips []Address, now time.Time, cd time.Duration) counts {
	var n counts
	for _, a := range ips {
		n.total++
		if a.Assigned {
			n.assigned++
		} else if a.cooling(now, cd) {
			n.cooling++
		}
	}
	return n
}

func prefixCounts(p Prefix, now time.Time, cd time.Duration) counts {
	n := counts{total: PrefixSize}
	for _, a := range p.Addresses {
		if !p.Prefix.Contains(a.IP) {
			continue
		}
		if a.Assigned {
			n.assigned++
		} else if a.cooling(now, cd) {
			n.cooling++
		}
	}
	return n
}

func prefixFree(p Prefix, now time.Time, cd time.Duration) bool {
	n := prefixCounts(p, now, cd)
	return n.assigned == 0 && n.cooling == 0
}

// ComputeStats counts the snapshot under the config's mode.
func ComputeStats(c Config, s Snapshot) Stats {
	return withDemand(c, statsOf(c, s.ENIs, s.Now), s)
}

// withDemand adds the snapshot's waiting pods and growth in flight.
func withDemand(c Config, st Stats, s Snapshot) Stats {
	st.Waiting = max(s.Waiting, 0)
	for _, g := range s.Growing {
		n := g.Count
		if c.Mode() == ModePrefix {
			n *= PrefixSize
		}
		st.Growing += n
		if g.ENIID == "" {
			st.GrowingENIs++
		}
	}
	return st
}

func statsOf(c Config, enis []ENI, now time.Time) Stats {
	st := Stats{Mode: c.Mode(), ENIs: len(enis), MaxENIs: c.MaxENIs(), MaxPods: c.MaxPods}
	cd := c.IPCooldownPeriod
	var active, other counts
	for _, e := range enis {
		ips := ipCounts(e.IPs, now, cd)
		var pfx counts
		for _, p := range e.Prefixes {
			n := prefixCounts(p, now, cd)
			pfx.add(n)
			if st.Mode == ModePrefix {
				st.Prefixes++
				if n.assigned == 0 && n.cooling == 0 {
					st.FreePrefixes++
				}
			}
		}
		if st.Mode == ModePrefix {
			active.add(pfx)
			other.add(ips)
		} else {
			active.add(ips)
			other.add(pfx)
		}
	}
	st.Total, st.Assigned, st.Cooling = active.total, active.assigned, active.cooling
	st.Available = st.Total - st.Assigned - st.Cooling
	st.LeftoverTotal, st.LeftoverAssigned = other.total, other.assigned
	return st
}

// usedSlots: each /32 and each /28 takes one IPv4 slot of the ENI.
func (e ENI) usedSlots() int { return len(e.IPs) + len(e.Prefixes) }
