package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// limits returns the default knobs with an instance type's limits.
func limits(maxENIs, ipv4PerENI, maxPods int) Config {
	c := DefaultConfig()
	c.InstanceMaxENIs, c.IPv4PerENI, c.MaxPods = maxENIs, ipv4PerENI, maxPods
	c.PrefixDelegationSupported = true // all the sample types are Nitro
	return c
}

func m5large() Config  { return limits(3, 10, 29) }
func t3small() Config  { return limits(3, 4, 11) }
func t3medium() Config { return limits(3, 6, 17) }
func p3dn() Config     { return limits(15, 50, 737) }

// sim is a tiny stand-in for EC2 + the daemon: it applies decisions to a
// snapshot, checking every EC2-side and safety rule as it goes. The rules
// are written out below from the documented knobs and EC2's limits, not
// taken from the package's own helpers (Config.MaxENIs, SlotsPerENI, Mode,
// the cooling and idle predicates, ComputeStats), which Decide itself uses.
type sim struct {
	t       testing.TB
	cfg     Config
	s       Snapshot
	nextIP  uint32
	nextPfx uint32
	nextENI int
	pods    map[netip.Addr]int
	podSeq  int
	calls   int // EC2 mutations
}

func newSim(t testing.TB, cfg Config) *sim {
	m := &sim{t: t, cfg: cfg, pods: map[netip.Addr]int{}, nextIP: 10 << 24, nextPfx: 10<<24 | 1<<22, nextENI: 1}
	m.s = Snapshot{Now: t0, ENIs: []ENI{{ID: "eni-0", Primary: true, CreatedAt: t0.Add(-time.Hour)}}}
	return m
}

// maxENIs: the instance's ENI limit, lowered by MAX_ENI when that is set
// (>= 1; -1 means no limit) and smaller.
func maxENIs(c Config) int {
	if c.MaxENI >= 1 && c.MaxENI < c.InstanceMaxENIs {
		return c.MaxENI
	}
	return c.InstanceMaxENIs
}

// slotsPerENI: EC2 counts the ENI's own primary address against its IPv4
// limit; each secondary /32 or delegated /28 takes one of the others.
func slotsPerENI(c Config) int { return c.IPv4PerENI - 1 }

// prefixMode: /28s only when asked for and the instance can hold them.
func prefixMode(c Config) bool { return c.EnablePrefixDelegation && c.PrefixDelegationSupported }

// isCooling: released less than IP_COOLDOWN_PERIOD ago and not taken since.
func isCooling(a Address, now time.Time, cd time.Duration) bool {
	return !a.Assigned && !a.ReleasedAt.IsZero() && now.Sub(a.ReleasedAt) < cd
}

// busy: a pod holds it or it is still cooling down.
func busy(a Address, now time.Time, cd time.Duration) bool {
	return a.Assigned || isCooling(a, now, cd)
}

func prefixBusy(p Prefix, now time.Time, cd time.Duration) bool {
	return slices.ContainsFunc(p.Addresses, func(a Address) bool { return busy(a, now, cd) })
}

func eniBusy(e ENI, now time.Time, cd time.Duration) bool {
	return slices.ContainsFunc(e.IPs, func(a Address) bool { return busy(a, now, cd) }) ||
		slices.ContainsFunc(e.Prefixes, func(p Prefix) bool { return prefixBusy(p, now, cd) })
}

// held counts what the sim holds: ENIs, pod addresses of the active kind
// (each /28 is 16), and pods on addresses of the other kind (left over from
// a mode toggle).
func (m *sim) held() (enis, total, prefixes, leftoverPods int) {
	for _, e := range m.s.ENIs {
		pfxPods := 0
		for _, p := range e.Prefixes {
			for _, a := range p.Addresses {
				if a.Assigned {
					pfxPods++
				}
			}
		}
		ipPods := 0
		for _, a := range e.IPs {
			if a.Assigned {
				ipPods++
			}
		}
		if prefixMode(m.cfg) {
			total += 16 * len(e.Prefixes)
			prefixes += len(e.Prefixes)
			leftoverPods += ipPods
		} else {
			total += len(e.IPs)
			leftoverPods += pfxPods
		}
	}
	return len(m.s.ENIs), total, prefixes, leftoverPods
}

func u32addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (m *sim) newIP() Address {
	m.nextIP++
	return Address{IP: u32addr(m.nextIP)}
}

func (m *sim) newPrefix() Prefix {
	p := netip.PrefixFrom(u32addr(m.nextPfx), 28)
	m.nextPfx += PrefixSize
	return Prefix{Prefix: p}
}

func (m *sim) eni(id string) *ENI {
	for i := range m.s.ENIs {
		if m.s.ENIs[i].ID == id {
			return &m.s.ENIs[i]
		}
	}
	m.t.Fatalf("decision names unknown ENI %q", id)
	return nil
}

func (m *sim) fail(d Decision, format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("bad decision %s %s %v %v: %s\nreason: %s", d.Action, d.ENIID, d.IPs, d.Prefixes, fmt.Sprintf(format, args...), d.Reason)
}

// apply executes d like the daemon + EC2 would, failing on anything EC2 would
// refuse or the pool must never do.
func (m *sim) apply(d Decision) {
	m.t.Helper()
	now, cd, slots := m.s.Now, m.cfg.IPCooldownPeriod, slotsPerENI(m.cfg)
	grows := d.Action == ActionAssignIPs || d.Action == ActionAssignPrefixes || d.Action == ActionCreateENI
	shrinks := d.Action == ActionReleaseIPs || d.Action == ActionReleasePrefixes || d.Action == ActionDeleteENI
	if grows {
		for _, co := range m.s.CoolOffs {
			if !now.Before(co.Until) {
				continue
			}
			if co.Scope == CoolOffGrowth ||
				co.Scope == CoolOffCreateENI && d.Action == ActionCreateENI ||
				co.Scope == CoolOffENI && co.ENIID == d.ENIID {
				m.fail(d, "growth during cool-off %+v", co)
			}
		}
	}
	if shrinks && !m.s.LastScaleDown.IsZero() && now.Sub(m.s.LastScaleDown) < m.cfg.ScaleDownInterval {
		m.fail(d, "shrink %s after the last one, spacing %s", now.Sub(m.s.LastScaleDown), m.cfg.ScaleDownInterval)
	}
	switch d.Action {
	case ActionNone:
		return
	case ActionAssignIPs, ActionAssignPrefixes:
		e := m.eni(d.ENIID)
		if used := len(e.IPs) + len(e.Prefixes); d.Count < 1 || used+d.Count > slots {
			m.fail(d, "count %d on ENI with %d/%d slots used", d.Count, used, slots)
		}
		for range d.Count {
			if d.Action == ActionAssignIPs {
				e.IPs = append(e.IPs, m.newIP())
			} else {
				e.Prefixes = append(e.Prefixes, m.newPrefix())
			}
		}
	case ActionCreateENI:
		if len(m.s.ENIs) >= maxENIs(m.cfg) {
			m.fail(d, "ENI limit %d", maxENIs(m.cfg))
		}
		if d.Count < 1 || d.Count > slots {
			m.fail(d, "count %d, slots %d", d.Count, slots)
		}
		dev := 0
		for slices.ContainsFunc(m.s.ENIs, func(e ENI) bool { return e.DeviceNumber == dev }) {
			dev++
		}
		e := ENI{ID: fmt.Sprintf("eni-%d", m.nextENI), DeviceNumber: dev, CreatedAt: now}
		m.nextENI++
		for range d.Count {
			if d.Unit == UnitPrefix {
				e.Prefixes = append(e.Prefixes, m.newPrefix())
			} else {
				e.IPs = append(e.IPs, m.newIP())
			}
		}
		m.s.ENIs = append(m.s.ENIs, e)
	case ActionReleaseIPs:
		e := m.eni(d.ENIID)
		if len(d.IPs) == 0 {
			m.fail(d, "empty release")
		}
		for _, ip := range d.IPs {
			i := slices.IndexFunc(e.IPs, func(a Address) bool { return a.IP == ip })
			if i < 0 {
				m.fail(d, "%s not on ENI", ip)
			}
			if a := e.IPs[i]; busy(a, now, cd) || m.pods[ip] != 0 {
				m.fail(d, "releases %s which is assigned or cooling", ip)
			}
			e.IPs = slices.Delete(e.IPs, i, i+1)
		}
	case ActionReleasePrefixes:
		e := m.eni(d.ENIID)
		if len(d.Prefixes) == 0 {
			m.fail(d, "empty release")
		}
		for _, p := range d.Prefixes {
			i := slices.IndexFunc(e.Prefixes, func(x Prefix) bool { return x.Prefix == p })
			if i < 0 {
				m.fail(d, "%s not on ENI", p)
			}
			if prefixBusy(e.Prefixes[i], now, cd) {
				m.fail(d, "releases %s which has assigned or cooling addresses", p)
			}
			for ip := range m.pods {
				if p.Contains(ip) {
					m.fail(d, "releases %s holding pod address %s", p, ip)
				}
			}
			e.Prefixes = slices.Delete(e.Prefixes, i, i+1)
		}
	case ActionDeleteENI:
		e := m.eni(d.ENIID)
		if e.Primary {
			m.fail(d, "deletes the primary ENI")
		}
		if now.Sub(e.CreatedAt) < m.cfg.MinENIAge {
			m.fail(d, "deletes an ENI aged %s", now.Sub(e.CreatedAt))
		}
		if eniBusy(*e, now, cd) {
			m.fail(d, "deletes an ENI with assigned or cooling addresses")
		}
		m.s.ENIs = slices.DeleteFunc(m.s.ENIs, func(x ENI) bool { return x.ID == d.ENIID })
	}
	if shrinks {
		m.s.LastScaleDown = now
	}
	m.calls++
	if grows {
		m.checkMaxPods(d)
	}
	m.checkState()
}

// checkMaxPods: growth never takes the pool past max pods (prefix mode: by
// less than one /28).
func (m *sim) checkMaxPods(d Decision) {
	m.t.Helper()
	if m.cfg.MaxPods == 0 {
		return
	}
	_, total, prefixes, leftoverPods := m.held()
	capAddrs := m.cfg.MaxPods - leftoverPods
	if prefixMode(m.cfg) {
		if prefixes > (capAddrs+15)/16 { // the last /28 may be part used
			m.fail(d, "%d prefixes for max pods %d", prefixes, m.cfg.MaxPods)
		}
	} else if total > capAddrs {
		m.fail(d, "total %d > max pods %d (leftover pods %d)", total, m.cfg.MaxPods, leftoverPods)
	}
}

// checkState: no address held twice, pods match the snapshot, EC2 limits hold.
func (m *sim) checkState() {
	m.t.Helper()
	seen := map[netip.Addr]bool{}
	assigned := 0
	if len(m.s.ENIs) > maxENIs(m.cfg) {
		m.t.Fatalf("%d ENIs > limit %d", len(m.s.ENIs), maxENIs(m.cfg))
	}
	for _, e := range m.s.ENIs {
		if used := len(e.IPs) + len(e.Prefixes); used > slotsPerENI(m.cfg) {
			m.t.Fatalf("%s uses %d slots > %d", e.ID, used, slotsPerENI(m.cfg))
		}
		for _, a := range e.IPs {
			if seen[a.IP] {
				m.t.Fatalf("%s held twice", a.IP)
			}
			seen[a.IP] = true
			if a.Assigned {
				assigned++
				if m.pods[a.IP] == 0 {
					m.t.Fatalf("%s assigned without a pod", a.IP)
				}
			}
		}
		for _, p := range e.Prefixes {
			for _, a := range p.Addresses {
				if a.Assigned {
					assigned++
					if m.pods[a.IP] == 0 {
						m.t.Fatalf("%s assigned without a pod", a.IP)
					}
				}
			}
		}
	}
	if assigned != len(m.pods) {
		m.t.Fatalf("%d assigned addresses for %d pods", assigned, len(m.pods))
	}
}

// settle runs the decision loop to a fixpoint, step apart, and fails if it
// does not converge (flapping).
func (m *sim) settle(step time.Duration) {
	m.t.Helper()
	for range 500 {
		d := Decide(m.cfg, m.s)
		if d.Action == ActionNone {
			return
		}
		m.apply(d)
		m.s.Now = m.s.Now.Add(step)
	}
	m.t.Fatalf("no fixpoint after 500 decisions: %s", Decide(m.cfg, m.s).Reason)
}

// addPod gives a new pod an address the way the daemon does.
func (m *sim) addPod() (netip.Addr, bool) {
	m.t.Helper()
	if m.cfg.MaxPods > 0 && len(m.pods) >= m.cfg.MaxPods {
		return netip.Addr{}, false // kubelet would not schedule it
	}
	ip, eniID, ok := PickAddress(m.cfg, m.s)
	if !ok {
		return netip.Addr{}, false
	}
	if m.pods[ip] != 0 {
		m.t.Fatalf("PickAddress returned %s, already used by pod %d", ip, m.pods[ip])
	}
	e := m.eni(eniID)
	now, cd := m.s.Now, m.cfg.IPCooldownPeriod
	marked := false
	if !prefixMode(m.cfg) {
		for i := range e.IPs {
			if e.IPs[i].IP == ip {
				if isCooling(e.IPs[i], now, cd) {
					m.t.Fatalf("PickAddress returned cooling %s", ip)
				}
				e.IPs[i].Assigned, marked = true, true
			}
		}
	} else {
		for i := range e.Prefixes {
			p := &e.Prefixes[i]
			if !p.Prefix.Contains(ip) {
				continue
			}
			j := slices.IndexFunc(p.Addresses, func(a Address) bool { return a.IP == ip })
			if j < 0 {
				p.Addresses = append(p.Addresses, Address{IP: ip, Assigned: true})
			} else {
				if isCooling(p.Addresses[j], now, cd) {
					m.t.Fatalf("PickAddress returned cooling %s", ip)
				}
				p.Addresses[j].Assigned = true
			}
			marked = true
		}
	}
	if !marked {
		m.t.Fatalf("PickAddress returned %s, not an address of the active kind (prefix mode %v) of %s", ip, prefixMode(m.cfg), eniID)
	}
	m.podSeq++
	m.pods[ip] = m.podSeq
	m.checkState()
	return ip, true
}

func (m *sim) delPod(ip netip.Addr) {
	m.t.Helper()
	for i := range m.s.ENIs {
		e := &m.s.ENIs[i]
		for j := range e.IPs {
			if e.IPs[j].IP == ip {
				e.IPs[j].Assigned, e.IPs[j].ReleasedAt = false, m.s.Now
			}
		}
		for j := range e.Prefixes {
			for k := range e.Prefixes[j].Addresses {
				if a := &e.Prefixes[j].Addresses[k]; a.IP == ip {
					a.Assigned, a.ReleasedAt = false, m.s.Now
				}
			}
		}
	}
	delete(m.pods, ip)
	m.checkState()
}
