package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// ---- snapshot builders: addresses are 10.<dev>.0.<n> and 10.<dev>.<16k>.0/28

const old = time.Hour // an ENI age past MinENIAge

// ipENI builds an ENI (device 0 is the primary) with /32s: first `assigned`,
// then `cooling` (released 5s ago), then `free` (released long ago).
func ipENI(dev int, age time.Duration, assigned, cooling, free int) ENI {
	e := ENI{ID: fmt.Sprintf("eni-%d", dev), Primary: dev == 0, DeviceNumber: dev, CreatedAt: t0.Add(-age)}
	for i := range assigned + cooling + free {
		a := Address{IP: netip.AddrFrom4([4]byte{10, byte(dev), 0, byte(i + 1)})}
		switch {
		case i < assigned:
			a.Assigned = true
		case i < assigned+cooling:
			a.ReleasedAt = t0.Add(-5 * time.Second)
		case i%2 == 0:
			a.ReleasedAt = t0.Add(-time.Hour)
		}
		e.IPs = append(e.IPs, a)
	}
	return e
}

// pfx builds the k-th /28 of device dev with `assigned` then `cooling` addresses used.
func pfx(dev, k, assigned, cooling int) Prefix {
	p := Prefix{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(dev), byte(16 * k), 0}), 28)}
	ip := p.Prefix.Addr()
	for i := range assigned + cooling {
		a := Address{IP: ip}
		if i < assigned {
			a.Assigned = true
		} else {
			a.ReleasedAt = t0.Add(-5 * time.Second)
		}
		p.Addresses = append(p.Addresses, a)
		ip = ip.Next()
	}
	return p
}

func withPrefixes(e ENI, ps ...Prefix) ENI {
	e.Prefixes = append(e.Prefixes, ps...)
	return e
}

func snap(enis ...ENI) Snapshot { return Snapshot{Now: t0, ENIs: enis} }

func ips(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, x := range s {
		out[i] = netip.MustParseAddr(x)
	}
	return out
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, x := range s {
		out[i] = netip.MustParsePrefix(x)
	}
	return out
}

// ---- config modifiers

type mod func(*Config)

func with(c Config, mods ...mod) Config {
	for _, m := range mods {
		m(&c)
	}
	return c
}

func warmIP(n int) mod  { return func(c *Config) { c.WarmIPTarget = n } }
func minIP(n int) mod   { return func(c *Config) { c.MinimumIPTarget = n } }
func warmENI(n int) mod { return func(c *Config) { c.WarmENITarget = n } }
func maxENI(n int) mod  { return func(c *Config) { c.MaxENI = n } }
func maxPods(n int) mod { return func(c *Config) { c.MaxPods = n } }

// pd turns prefix delegation on; max pods becomes 110 as the max-pods
// calculator recommends for PD on small instances.
func pd(warmPrefix int) mod {
	return func(c *Config) { c.EnablePrefixDelegation, c.WarmPrefixTarget, c.MaxPods = true, warmPrefix, 110 }
}

// ---- snapshot modifiers

func lastScaleDown(ago time.Duration) func(*Snapshot) {
	return func(s *Snapshot) { s.LastScaleDown = t0.Add(-ago) }
}

// surplusSeen: the daemon has watched the surplus for `for` and its
// smallest value was floor.
func surplusSeen(floor int, watched time.Duration) func(*Snapshot) {
	return func(s *Snapshot) { s.SurplusFloor, s.SurplusSince = floor, t0.Add(-watched) }
}

func coolOff(scope CoolOffScope, eni string, left time.Duration) func(*Snapshot) {
	return func(s *Snapshot) {
		s.CoolOffs = append(s.CoolOffs, CoolOff{Scope: scope, ENIID: eni, Until: t0.Add(left), Reason: "test"})
	}
}

func waiting(n int) func(*Snapshot) { return func(s *Snapshot) { s.Waiting = n } }

func growingOn(eni string, n int) func(*Snapshot) {
	return func(s *Snapshot) { s.Growing = append(s.Growing, Growth{ENIID: eni, Count: n}) }
}

func creating(n int) func(*Snapshot) { return growingOn("", n) }

func at(s Snapshot, mods ...func(*Snapshot)) Snapshot {
	for _, m := range mods {
		m(&s)
	}
	return s
}

// want is the expected decision; zero fields are not checked except Action.
type want struct {
	action   Action
	eni      string
	count    int
	unit     Unit
	ips      []netip.Addr
	prefixes []netip.Prefix
	reason   string // substring
	stats    *Stats // Total, Assigned, Cooling, Available checked
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		snap Snapshot
		want want
	}{
		// --- demand and growth in flight (a burst on a fresh node): an
		// m5.large has 3 ENIs of 10 IPv4 addresses, 9 of them for pods.
		{"burst: primary filling, 27 pods waiting: create an ENI at once", m5large(),
			at(snap(ipENI(0, old, 0, 0, 0)), waiting(27), growingOn("eni-0", 9)),
			want{action: ActionCreateENI, count: 9, unit: UnitIP, reason: "27 waiting pods"}},
		{"burst: one ENI being created too: create the last one", m5large(),
			at(snap(ipENI(0, old, 0, 0, 0)), waiting(27), growingOn("eni-0", 9), creating(9)),
			want{action: ActionCreateENI, count: 9, unit: UnitIP}},
		{"burst: every ENI the type allows on its way: nothing more", m5large(),
			at(snap(ipENI(0, old, 0, 0, 0)), waiting(28), growingOn("eni-0", 9), creating(9), creating(9)),
			want{action: ActionNone, reason: "ENI limit 3 is reached with the 2 being created"}},
		{"burst: the growth in flight serves every waiting pod: the warm ENI waits until none waits", m5large(),
			at(snap(ipENI(0, old, 0, 0, 0)), waiting(18), growingOn("eni-0", 9), creating(9)),
			want{action: ActionNone, reason: "the growth in flight serves the 18 waiting pods; the warm targets follow once none waits"}},
		{"burst: the waiting pods need one address more: another ENI, filled", m5large(),
			at(snap(ipENI(0, old, 0, 0, 0)), waiting(19), growingOn("eni-0", 9), creating(9)),
			want{action: ActionCreateENI, count: 9, unit: UnitIP}},
		{"burst served: now the warm ENI", m5large(),
			snap(ipENI(0, old, 9, 0, 0), ipENI(1, old, 9, 0, 0)),
			want{action: ActionCreateENI, count: 9, unit: UnitIP}},
		{"an ENI with an assign in flight gets no second one", with(m5large(), warmIP(5)),
			at(snap(ipENI(0, old, 2, 0, 0), ipENI(1, old, 0, 0, 0)), growingOn("eni-0", 3), waiting(4)),
			want{action: ActionAssignIPs, eni: "eni-1", count: 9}}, // pods wait: filled
		{"growth in flight covers the targets: nothing", m5large(),
			at(snap(ipENI(0, old, 0, 0, 0)), growingOn("eni-0", 9)),
			want{action: ActionNone, reason: "9 addresses on their way"}},
		{"never shrink while growing", with(m5large(), warmIP(1)),
			at(snap(ipENI(0, old, 1, 0, 8), ipENI(1, old, 0, 0, 9)), creating(9)),
			want{action: ActionNone, reason: "on their way"}},
		{"prefix mode: a /28 in flight on the primary, more needed: wait for it, no new ENI", with(m5large(), pd(1)),
			at(snap(ipENI(0, old, 0, 0, 0)), waiting(30), growingOn("eni-0", 1)),
			want{action: ActionNone, reason: "waiting for the assign in flight on eni-0"}},
		{"WARM_IP_TARGET with pods waiting: the new ENI comes full", with(m5large(), warmIP(5)),
			at(snap(ipENI(0, old, 9, 0, 0)), waiting(2)),
			want{action: ActionCreateENI, count: 9, unit: UnitIP}},
		{"WARM_IP_TARGET with pods waiting: an assign fills the ENI", with(m5large(), warmIP(2)),
			at(snap(ipENI(0, old, 3, 0, 0)), waiting(1)),
			want{action: ActionAssignIPs, eni: "eni-0", count: 6}},
		{"WARM_IP_TARGET, nobody waiting: exactly the target", with(m5large(), warmIP(2)),
			snap(ipENI(0, old, 3, 0, 0)),
			want{action: ActionAssignIPs, eni: "eni-0", count: 2}},
		{"EC2 throttling: warm-target growth waits", m5large(),
			at(snap(ipENI(0, old, 9, 0, 0)), coolOff(CoolOffWarm, "", time.Minute)),
			want{action: ActionNone, reason: "warm targets alone waits"}},
		{"EC2 throttling: growth for waiting pods goes on", m5large(),
			at(snap(ipENI(0, old, 9, 0, 0)), coolOff(CoolOffWarm, "", time.Minute), waiting(1)),
			want{action: ActionCreateENI, count: 9, unit: UnitIP}},
		{"an assign in flight whose ENI has too little room left: create an ENI meanwhile", with(m5large(), warmIP(1)),
			at(snap(ipENI(0, old, 0, 0, 0)), growingOn("eni-0", 1), waiting(27)),
			want{action: ActionCreateENI, count: 9, unit: UnitIP}},
		{"waiting pods beyond max pods: grow to the cap only", with(m5large(), maxPods(12)),
			at(snap(ipENI(0, old, 9, 0, 0)), waiting(20)),
			want{action: ActionCreateENI, count: 3, unit: UnitIP}},
		{"prefix mode: 30 waiting pods on a fresh node need two /28s", with(m5large(), pd(1)),
			at(snap(ipENI(0, old, 0, 0, 0)), waiting(30)),
			want{action: ActionAssignPrefixes, eni: "eni-0", count: 3, unit: UnitPrefix}},

		// --- WARM_ENI_TARGET (defaults)
		{"fresh m5.large defaults: fill primary ENI with 9 in one call", m5large(), snap(ipENI(0, old, 0, 0, 0)),
			want{action: ActionAssignIPs, eni: "eni-0", count: 9, unit: UnitIP}},
		{"m5.large 9 assigned: create ENI with 9 IPs", m5large(), snap(ipENI(0, old, 9, 0, 0)),
			want{action: ActionCreateENI, count: 9, unit: UnitIP}},
		{"m5.large 9 assigned + warm ENI of 9: steady", m5large(), snap(ipENI(0, old, 9, 0, 0), ipENI(1, old, 0, 0, 9)),
			want{action: ActionNone, reason: "within targets"}},
		{"warm ENI mode fills all free slots of a partial ENI", m5large(), snap(ipENI(0, old, 4, 0, 0)),
			want{action: ActionAssignIPs, eni: "eni-0", count: 5}},
		{"warm ENI mode fills the lowest device with free slots", m5large(),
			snap(ipENI(0, old, 9, 0, 0), ipENI(2, old, 3, 0, 0), ipENI(1, old, 5, 0, 0)),
			want{action: ActionAssignIPs, eni: "eni-1", count: 4}},
		{"WARM_ENI_TARGET=0 keeps one address: grows only when none available", with(m5large(), warmENI(0)),
			snap(ipENI(0, old, 9, 0, 0)), want{action: ActionCreateENI, count: 9}},
		{"WARM_ENI_TARGET=0 with one available: steady", with(m5large(), warmENI(0)),
			snap(ipENI(0, old, 8, 0, 1)), want{action: ActionNone}},

		// --- WARM_IP_TARGET / MINIMUM_IP_TARGET
		{"warm IP: ask for exactly the shortfall", with(m5large(), warmIP(3)), snap(ipENI(0, old, 4, 0, 1)),
			want{action: ActionAssignIPs, eni: "eni-0", count: 2}},
		{"warm IP: shortfall capped by the ENI's free slots", with(m5large(), warmIP(5)), snap(ipENI(0, old, 7, 0, 1)),
			want{action: ActionAssignIPs, eni: "eni-0", count: 1}},
		{"warm IP: new ENI created with the shortfall", with(m5large(), warmIP(5)), snap(ipENI(0, old, 7, 0, 2)),
			want{action: ActionCreateENI, count: 3}},
		{"minimum IP target on a fresh node", with(m5large(), minIP(5)), snap(ipENI(0, old, 0, 0, 0)),
			want{action: ActionAssignIPs, eni: "eni-0", count: 5}},
		{"WARM_IP=2/MIN=5: minimum dominates", with(m5large(), warmIP(2), minIP(5)), snap(ipENI(0, old, 0, 0, 0)),
			want{action: ActionAssignIPs, count: 5}},
		{"MIN=5 WARM_IP=0 all used: still grows by one (the reference CNI stalls)", with(m5large(), minIP(5)), snap(ipENI(0, old, 5, 0, 0)),
			want{action: ActionAssignIPs, count: 1}},

		// --- cooldown is not available (the reference CNI counts it as available)
		{"3 free all cooling + WARM_IP_TARGET=3: grows (reference would not)", with(m5large(), warmIP(3)), snap(ipENI(0, old, 0, 3, 0)),
			want{action: ActionAssignIPs, eni: "eni-0", count: 3, stats: &Stats{Total: 3, Assigned: 0, Cooling: 3, Available: 0}}},
		{"cooling addresses expire: available again", with(m5large(), warmIP(3)), at(snap(ipENI(0, old, 0, 3, 0)), func(s *Snapshot) { s.Now = t0.Add(26 * time.Second) }),
			want{action: ActionNone, stats: &Stats{Total: 3, Cooling: 0, Available: 3}}},
		{"warm ENI mode: all cooling counts as empty", m5large(), snap(ipENI(0, old, 0, 9, 0)),
			want{action: ActionCreateENI, count: 9, stats: &Stats{Total: 9, Cooling: 9, Available: 0}}},
		{"IP_COOLDOWN_PERIOD=0: nothing cools", with(m5large(), warmIP(3), func(c *Config) { c.IPCooldownPeriod = 0 }), snap(ipENI(0, old, 0, 3, 0)),
			want{action: ActionNone, stats: &Stats{Total: 3, Available: 3}}},

		// --- max pods
		{"max pods caps a warm-ENI fill", with(m5large(), maxPods(17)), snap(ipENI(0, old, 9, 0, 0)),
			want{action: ActionCreateENI, count: 8}},
		{"max pods reached: no growth even though below warm target", with(m5large(), maxPods(17)), snap(ipENI(0, old, 9, 0, 0), ipENI(1, old, 7, 0, 1)),
			want{action: ActionNone, reason: "max pods 17 reached"}},
		{"max pods caps a warm-IP shortfall", with(t3medium(), maxPods(12), warmIP(10)), snap(ipENI(0, old, 5, 0, 0), ipENI(1, old, 5, 0, 0)),
			want{action: ActionCreateENI, count: 2}},
		{"max pods: pods on leftover prefix count", with(m5large(), maxPods(17)), snap(withPrefixes(ipENI(0, old, 9, 0, 0), pfx(0, 1, 8, 0))),
			want{action: ActionNone, reason: "max pods 17 reached"}},

		// --- prefix delegation
		{"PD fresh m5.large WARM_PREFIX_TARGET=1: one /28", with(m5large(), pd(1)), snap(ipENI(0, old, 0, 0, 0)),
			want{action: ActionAssignPrefixes, eni: "eni-0", count: 1, unit: UnitPrefix}},
		{"PD 16 assigned: second prefix", with(m5large(), pd(1)), snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 16, 0))),
			want{action: ActionAssignPrefixes, eni: "eni-0", count: 1, stats: &Stats{Total: 16, Assigned: 16, Prefixes: 1}}},
		{"PD 1 assigned: second prefix (target is a whole free /28, as in the reference)", with(m5large(), pd(1)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 1, 0))), want{action: ActionAssignPrefixes, count: 1}},
		{"PD 1 assigned + one free prefix: steady", with(m5large(), pd(1)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 1, 0), pfx(0, 1, 0, 0))), want{action: ActionNone}},
		{"PD WARM_PREFIX_TARGET=3 asks for all missing prefixes in one call", with(m5large(), pd(3)), snap(ipENI(0, old, 0, 0, 0)),
			want{action: ActionAssignPrefixes, count: 3}},
		{"PD WARM_IP_TARGET=5: ceil to one prefix", with(m5large(), pd(1), warmIP(5)), snap(ipENI(0, old, 0, 0, 0)),
			want{action: ActionAssignPrefixes, count: 1}},
		{"PD WARM_IP_TARGET=20: ceil to two prefixes", with(m5large(), pd(0), warmIP(20)), snap(ipENI(0, old, 0, 0, 0)),
			want{action: ActionAssignPrefixes, count: 2}},
		{"PD MINIMUM_IP_TARGET=40: three prefixes", with(m5large(), pd(0), minIP(40)), snap(ipENI(0, old, 0, 0, 0)),
			want{action: ActionAssignPrefixes, count: 3}},
		{"PD WARM_IP_TARGET=5 with 12 used: one more prefix", with(m5large(), pd(1), warmIP(5)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 12, 0))), want{action: ActionAssignPrefixes, count: 1}},
		{"PD cooling addresses not available", with(m5large(), pd(0), warmIP(5)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 8, 8))), want{action: ActionAssignPrefixes, count: 1,
				stats: &Stats{Total: 16, Assigned: 8, Cooling: 8, Available: 0}}},
		{"PD t3.small ENI full of used /28s: new ENI created with its prefixes", with(t3small(), pd(2)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 16, 0), pfx(0, 1, 16, 0), pfx(0, 2, 16, 0))),
			want{action: ActionCreateENI, count: 2, unit: UnitPrefix}},
		{"PD requested but not Nitro: falls back to /32s", with(m5large(), pd(1), func(c *Config) { c.PrefixDelegationSupported = false }),
			snap(ipENI(0, old, 0, 0, 0)), want{action: ActionAssignIPs, count: 9, unit: UnitIP}},
		{"PD max pods 17 on t3.medium: second /28 allowed (a /28 is indivisible)", with(t3medium(), pd(1), maxPods(17)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 16, 0))), want{action: ActionAssignPrefixes, count: 1}},
		{"PD max pods 17 on t3.medium: never a third /28", with(t3medium(), pd(1), maxPods(17)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 16, 0), pfx(0, 1, 1, 0))), want{action: ActionNone, reason: "max pods"}},

		// --- scale-down of IPs / prefixes
		{"warm IP surplus released, exact addresses, highest first", with(m5large(), warmIP(2)), at(snap(ipENI(0, old, 1, 0, 8)), lastScaleDown(40*time.Second)),
			want{action: ActionReleaseIPs, eni: "eni-0", ips: ips("10.0.0.9", "10.0.0.8", "10.0.0.7", "10.0.0.6", "10.0.0.5", "10.0.0.4")}},
		{"scale-down spacing: 10s after the last shrink nothing", with(m5large(), warmIP(2)), at(snap(ipENI(0, old, 1, 0, 8)), lastScaleDown(10*time.Second)),
			want{action: ActionNone, reason: "deferred"}},
		{"surplus watched less than the spacing: kept", with(m5large(), warmIP(2)), at(snap(ipENI(0, old, 1, 0, 8)), surplusSeen(6, 10*time.Second)),
			want{action: ActionNone, reason: "within targets"}},
		{"surplus that dipped to 2 while watched: only 2 released", with(m5large(), warmIP(2)), at(snap(ipENI(0, old, 1, 0, 8)), surplusSeen(2, 40*time.Second)),
			want{action: ActionReleaseIPs, eni: "eni-0", ips: ips("10.0.0.9", "10.0.0.8")}},
		{"churn: surplus reached 0 while watched, nothing released", with(m5large(), warmIP(2)), at(snap(ipENI(0, old, 1, 0, 8)), surplusSeen(0, 40*time.Second)),
			want{action: ActionNone}},
		{"PD: prefix surplus floor applies too", with(m5large(), pd(1)), at(snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 1, 0), pfx(0, 1, 0, 0), pfx(0, 2, 0, 0))), surplusSeen(0, 40*time.Second)),
			want{action: ActionNone}},
		{"scale-down never releases cooling addresses", with(m5large(), warmIP(2)), snap(ipENI(0, old, 1, 3, 5)),
			want{action: ActionReleaseIPs, eni: "eni-0", ips: ips("10.0.0.9", "10.0.0.8", "10.0.0.7")}},
		{"scale-down: surplus only cooling, nothing to release", with(m5large(), warmIP(2)), snap(ipENI(0, old, 1, 6, 2)),
			want{action: ActionNone}},
		{"scale-down respects MINIMUM_IP_TARGET", with(m5large(), warmIP(1), minIP(8)), snap(ipENI(0, old, 0, 0, 9)),
			want{action: ActionReleaseIPs, ips: ips("10.0.0.9")}},
		{"warm ENI mode never releases single IPs", m5large(), snap(ipENI(0, old, 0, 0, 9), ipENI(1, 30*time.Second, 0, 0, 9)),
			want{action: ActionNone}},
		{"PD: wholly free prefixes above WARM_PREFIX_TARGET released", with(m5large(), pd(1)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 0, 0), pfx(0, 1, 0, 0), pfx(0, 2, 0, 0))),
			want{action: ActionReleasePrefixes, eni: "eni-0", prefixes: prefixes("10.0.32.0/28", "10.0.16.0/28"), unit: UnitPrefix}},
		{"PD: prefixes with assigned or cooling addresses kept", with(m5large(), pd(1)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 1, 0), pfx(0, 1, 0, 0), pfx(0, 2, 0, 1))),
			want{action: ActionNone}},
		{"PD warm IP: release prefixes beyond ceil(target)", with(m5large(), pd(0), warmIP(5)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 3, 0), pfx(0, 1, 0, 0), pfx(0, 2, 0, 0))),
			want{action: ActionReleasePrefixes, prefixes: prefixes("10.0.32.0/28", "10.0.16.0/28")}},

		// --- ENI free
		{"idle old ENI freed before releasing IPs", with(m5large(), warmIP(2)), snap(ipENI(0, old, 1, 0, 8), ipENI(1, old, 0, 0, 9)),
			want{action: ActionDeleteENI, eni: "eni-1"}},
		{"young ENI not freed (its IPs are released instead)", with(m5large(), warmIP(2)), snap(ipENI(0, old, 1, 0, 8), ipENI(1, 30*time.Second, 0, 0, 9)),
			want{action: ActionReleaseIPs, eni: "eni-1", count: 0}},
		{"warm ENI mode: two spare ENIs, young one kept, old one freed", m5large(),
			snap(ipENI(0, old, 0, 0, 9), ipENI(1, old, 0, 0, 9), ipENI(2, 30*time.Second, 0, 0, 9)),
			want{action: ActionDeleteENI, eni: "eni-1"}},
		{"warm ENI mode: highest device freed first", m5large(),
			snap(ipENI(0, old, 0, 0, 9), ipENI(1, old, 0, 0, 9), ipENI(2, old, 0, 0, 9)),
			want{action: ActionDeleteENI, eni: "eni-2"}},
		{"ENI with a cooling address not freed", m5large(),
			snap(ipENI(0, old, 0, 0, 9), ipENI(1, 30*time.Second, 0, 0, 9), ipENI(2, old, 0, 1, 8)),
			want{action: ActionNone}},
		{"ENI with an assigned address not freed", m5large(),
			snap(ipENI(0, old, 0, 0, 9), ipENI(1, 30*time.Second, 0, 0, 9), ipENI(2, old, 1, 0, 8)),
			want{action: ActionNone}},
		{"warm ENI mode: spare below (WARM_ENI_TARGET+1)*9 keeps the ENI", m5large(), snap(ipENI(0, old, 5, 0, 4), ipENI(1, old, 0, 0, 9)),
			want{action: ActionNone}},
		{"primary ENI never freed", with(m5large(), warmIP(1)), snap(ipENI(0, old, 0, 0, 0), ipENI(1, old, 3, 0, 1)),
			want{action: ActionNone}},
		{"ENI needed for WARM_IP_TARGET kept", with(m5large(), warmIP(5)), snap(ipENI(0, old, 7, 0, 2), ipENI(1, old, 0, 0, 9)),
			want{action: ActionReleaseIPs, eni: "eni-1", ips: ips("10.1.0.9", "10.1.0.8", "10.1.0.7", "10.1.0.6", "10.1.0.5", "10.1.0.4")}},
		{"ENI needed for MINIMUM_IP_TARGET kept", with(m5large(), warmIP(1), minIP(15)), snap(ipENI(0, old, 0, 0, 9), ipENI(1, old, 0, 0, 9)),
			want{action: ActionReleaseIPs, eni: "eni-1", ips: ips("10.1.0.9", "10.1.0.8", "10.1.0.7")}},
		{"PD: idle ENI with a free prefix freed when the rest meets the target", with(m5large(), pd(1)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 0), pfx(0, 0, 0, 0)), withPrefixes(ipENI(1, old, 0, 0, 0), pfx(1, 0, 0, 0))),
			want{action: ActionDeleteENI, eni: "eni-1"}},
		{"ENI free also waits for scale-down spacing", m5large(),
			at(snap(ipENI(0, old, 0, 0, 9), ipENI(1, old, 0, 0, 9), ipENI(2, old, 0, 0, 9)), lastScaleDown(5*time.Second)),
			want{action: ActionNone, reason: "DeleteENI on eni-2 deferred"}},

		// --- MAX_ENI and ENI limits
		{"MAX_ENI=1: no second ENI", with(m5large(), maxENI(1)), snap(ipENI(0, old, 9, 0, 0)),
			want{action: ActionNone, reason: "ENI limit 1"}},
		{"MAX_ENI=2: second ENI allowed", with(m5large(), maxENI(2)), snap(ipENI(0, old, 9, 0, 0)),
			want{action: ActionCreateENI, count: 9}},
		{"MAX_ENI=2: no third ENI", with(m5large(), maxENI(2)), snap(ipENI(0, old, 9, 0, 0), ipENI(1, old, 9, 0, 0)),
			want{action: ActionNone, reason: "ENI limit 2"}},
		{"MAX_ENI above the instance limit is ignored", with(m5large(), maxENI(8)), snap(ipENI(0, old, 9, 0, 0), ipENI(1, old, 9, 0, 0)),
			want{action: ActionCreateENI, count: 9}},
		{"all ENIs full and instance limit reached", with(m5large(), maxPods(40)), snap(ipENI(0, old, 9, 0, 0), ipENI(1, old, 9, 0, 0), ipENI(2, old, 9, 0, 0)),
			want{action: ActionNone, reason: "ENI limit 3"}},

		// --- mode toggle leftovers
		{"PD on: unused /32 leftovers released, assigned and cooling kept", with(m5large(), pd(1)),
			snap(withPrefixes(ipENI(0, old, 1, 1, 2), pfx(0, 0, 0, 0))),
			want{action: ActionReleaseIPs, eni: "eni-0", unit: UnitIP, ips: ips("10.0.0.4", "10.0.0.3"),
				stats: &Stats{Total: 16, Available: 16}}},
		{"PD on: /32 leftovers never used for new pods (pool low)", with(m5large(), pd(1)), snap(ipENI(0, old, 1, 0, 3)),
			want{action: ActionAssignPrefixes, count: 1, stats: &Stats{Total: 0, Available: 0}}},
		{"PD on, ENI full of /32s, no room: leftovers released to make room", with(m5large(), pd(1), maxENI(1)), snap(ipENI(0, old, 0, 0, 9)),
			want{action: ActionReleaseIPs, eni: "eni-0", reason: "ENI limit 1"}},
		{"PD off: wholly free /28 leftovers released, used ones kept", with(m5large(), warmIP(2)),
			snap(withPrefixes(ipENI(0, old, 0, 0, 5), pfx(0, 0, 1, 0), pfx(0, 1, 0, 0), pfx(0, 2, 0, 2))),
			want{action: ActionReleasePrefixes, eni: "eni-0", unit: UnitPrefix, prefixes: prefixes("10.0.16.0/28")}},

		// --- cool-offs
		{"subnet full cool-off blocks growth", m5large(), at(snap(ipENI(0, old, 0, 0, 0)), coolOff(CoolOffGrowth, "", time.Minute)),
			want{action: ActionNone, reason: "growth cooling off"}},
		{"expired cool-off no longer blocks", m5large(), at(snap(ipENI(0, old, 0, 0, 0)), coolOff(CoolOffGrowth, "", -time.Second)),
			want{action: ActionAssignIPs, count: 9}},
		{"per-ENI cool-off skips that ENI", with(m5large(), warmIP(3)), at(snap(ipENI(0, old, 5, 0, 0), ipENI(1, old, 5, 0, 0)), coolOff(CoolOffENI, "eni-0", time.Minute)),
			want{action: ActionAssignIPs, eni: "eni-1", count: 3}},
		{"create-ENI cool-off still allows filling ENIs", with(m5large(), warmIP(3)), at(snap(ipENI(0, old, 5, 0, 0)), coolOff(CoolOffCreateENI, "", time.Minute)),
			want{action: ActionAssignIPs, eni: "eni-0", count: 3}},
		{"create-ENI cool-off blocks a new ENI", m5large(), at(snap(ipENI(0, old, 9, 0, 0)), coolOff(CoolOffCreateENI, "", time.Minute)),
			want{action: ActionNone, reason: "ENI creation is cooling off"}},

		// --- config
		{"invalid config refused", with(m5large(), warmIP(-1)), snap(ipENI(0, old, 0, 0, 0)),
			want{action: ActionNone, reason: "WARM_IP_TARGET=-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.cfg, tt.snap)
			checkDecision(t, got, tt.want)
		})
	}
}

func checkDecision(t *testing.T, got Decision, w want) {
	t.Helper()
	if got.Action != w.action {
		t.Fatalf("action = %s, want %s\nreason: %s", got.Action, w.action, got.Reason)
	}
	if w.eni != "" && got.ENIID != w.eni {
		t.Errorf("eni = %q, want %q", got.ENIID, w.eni)
	}
	if w.count != 0 && got.Count != w.count {
		t.Errorf("count = %d, want %d (reason: %s)", got.Count, w.count, got.Reason)
	}
	wantUnit := w.unit
	switch w.action {
	case ActionAssignPrefixes, ActionReleasePrefixes:
		wantUnit = UnitPrefix
	case ActionAssignIPs, ActionReleaseIPs:
		wantUnit = UnitIP
	}
	if w.action != ActionNone && w.action != ActionDeleteENI && got.Unit != wantUnit {
		t.Errorf("unit = %s, want %s", got.Unit, wantUnit)
	}
	if w.ips != nil && !slices.Equal(got.IPs, w.ips) {
		t.Errorf("ips = %v, want %v", got.IPs, w.ips)
	}
	if w.prefixes != nil && !slices.Equal(got.Prefixes, w.prefixes) {
		t.Errorf("prefixes = %v, want %v", got.Prefixes, w.prefixes)
	}
	if !strings.Contains(got.Reason, w.reason) {
		t.Errorf("reason %q does not mention %q", got.Reason, w.reason)
	}
	if s := w.stats; s != nil {
		g := got.Stats
		if g.Total != s.Total || g.Assigned != s.Assigned || g.Cooling != s.Cooling || g.Available != s.Available {
			t.Errorf("stats total/assigned/cooling/available = %d/%d/%d/%d, want %d/%d/%d/%d",
				g.Total, g.Assigned, g.Cooling, g.Available, s.Total, s.Assigned, s.Cooling, s.Available)
		}
	}
	if got.Reason == "" {
		t.Error("empty reason")
	}
}
