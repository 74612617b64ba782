package pool

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"
)

// Action is what the daemon should do next.
type Action int

const (
	ActionNone            Action = iota
	ActionAssignIPs              // AssignPrivateIpAddresses(ENIID, Count)
	ActionAssignPrefixes         // AssignPrivateIpAddresses(ENIID, Ipv4PrefixCount=Count)
	ActionCreateENI              // create+attach an ENI with Count IPs or prefixes (see Unit)
	ActionReleaseIPs             // UnassignPrivateIpAddresses(ENIID, IPs)
	ActionReleasePrefixes        // UnassignPrivateIpAddresses(ENIID, Ipv4Prefixes=Prefixes)
	ActionDeleteENI              // detach+delete ENIID
)

var actionNames = [...]string{"None", "AssignIPs", "AssignPrefixes", "CreateENI", "ReleaseIPs", "ReleasePrefixes", "DeleteENI"}

func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Grows reports whether the action adds addresses (subject to cool-offs).
func (a Action) Grows() bool {
	return a == ActionAssignIPs || a == ActionAssignPrefixes || a == ActionCreateENI
}

// Shrinks reports whether the action gives addresses back. After executing
// one, the daemon sets Snapshot.LastScaleDown so the spacing applies.
func (a Action) Shrinks() bool {
	return a == ActionReleaseIPs || a == ActionReleasePrefixes || a == ActionDeleteENI
}

// Unit is the kind of address an action counts.
type Unit int

const (
	UnitIP     Unit = iota // /32 secondary IPs
	UnitPrefix             // /28 prefixes
)

func (u Unit) String() string {
	if u == UnitPrefix {
		return "prefixes"
	}
	return "IPs"
}

// Decision is one step for the daemon, with the reason and the stats it was
// computed from.
type Decision struct {
	Action   Action
	ENIID    string         // target ENI (not set for CreateENI)
	Count    int            // Assign*/CreateENI: how many Units
	Unit     Unit           // kind of Count, IPs or Prefixes
	IPs      []netip.Addr   // ReleaseIPs: exactly these
	Prefixes []netip.Prefix // ReleasePrefixes: exactly these
	Reason   string
	Stats    Stats
}

// Decide returns the single next action for the pool, or ActionNone.
//
// Order: grow when the pool is below target (fill an existing ENI, lowest
// device number first, else create an ENI); otherwise shrink, at most one
// action per ScaleDownInterval: first release leftovers of the inactive mode,
// then free one surplus ENI, then release surplus IPs/prefixes. When the pool
// is low but cannot grow, only leftover release (which frees slots) proceeds.
func Decide(c Config, s Snapshot) Decision {
	if err := c.Validate(); err != nil {
		return Decision{Reason: "invalid config: " + err.Error()}
	}
	p := planner{c: c, s: s, mode: c.Mode(), cd: c.IPCooldownPeriod, slots: c.SlotsPerENI()}
	st := withDemand(c, statsOf(c, s.ENIs, s.Now), s)
	p.st = st

	short, why := shortfall(c, st)
	head := headroom(c, st)
	low := short > 0 && head > 0
	var blocked string
	switch {
	case !low:
	case st.Waiting > 0 && podShortfall(st) == 0:
		// Pods first: while pods wait, no call starts that they do not
		// need (a call they need still brings the warm targets' share, see
		// fill); the calls for the warm targets alone follow once none
		// waits, so that they neither delay the pods' calls nor, when EC2
		// throttles the account, go before them.
		blocked = fmt.Sprintf("%s: the growth in flight serves the %d waiting pods; the warm targets follow once none waits", why, st.Waiting)
	default:
		d, reason, ok := p.grow(short, head, why)
		if ok {
			return d
		}
		blocked = reason
	}

	// Never give back while growing: what is in flight is not in the
	// snapshot yet, so a surplus seen now may be gone when it lands.
	var shrinks []func() (Decision, bool)
	if len(s.Growing) == 0 {
		shrinks = append(shrinks, p.releaseLeftovers)
		if !low {
			shrinks = append(shrinks, p.deleteENI, p.releaseSurplus)
		}
	}
	for _, f := range shrinks {
		d, ok := f()
		if !ok {
			continue
		}
		if wait := p.spacingLeft(); wait > 0 {
			r := fmt.Sprintf("%s on %s deferred: last scale-down %s ago, spacing %s", d.Action, d.ENIID,
				s.Now.Sub(s.LastScaleDown), c.ScaleDownInterval)
			if blocked != "" {
				r = blocked + "; " + r
			}
			return p.none(r)
		}
		if blocked != "" {
			d.Reason = blocked + "; " + d.Reason
		}
		return d
	}
	switch {
	case low:
		return p.none(blocked)
	case short > 0:
		return p.none(fmt.Sprintf("%s, but node max pods %d reached", why, c.MaxPods))
	case len(s.Growing) > 0:
		return p.none(fmt.Sprintf("%d addresses on their way", st.Growing))
	}
	return p.none("pool within targets")
}

type planner struct {
	c     Config
	s     Snapshot
	st    Stats
	mode  Mode
	cd    time.Duration
	slots int
}

func (p planner) none(reason string) Decision {
	return Decision{Action: ActionNone, Reason: reason + " (" + p.summary() + ")", Stats: p.st}
}

func (p planner) decision(a Action, eni string, reason string) Decision {
	return Decision{Action: a, ENIID: eni, Unit: unitOf(p.mode), Stats: p.st, Reason: reason + " (" + p.summary() + ")"}
}

func (p planner) summary() string {
	st := p.st
	s := fmt.Sprintf("mode=%s total=%d assigned=%d cooling=%d available=%d enis=%d/%d",
		st.Mode, st.Total, st.Assigned, st.Cooling, st.Available, st.ENIs, st.MaxENIs)
	if st.Mode == ModePrefix {
		s += fmt.Sprintf(" prefixes=%d free-prefixes=%d", st.Prefixes, st.FreePrefixes)
	}
	if st.LeftoverTotal > 0 {
		s += fmt.Sprintf(" leftover=%d(assigned %d)", st.LeftoverTotal, st.LeftoverAssigned)
	}
	if st.Waiting > 0 {
		s += fmt.Sprintf(" waiting=%d", st.Waiting)
	}
	if st.Growing > 0 {
		s += fmt.Sprintf(" growing=%d", st.Growing)
	}
	return s
}

func ceilDiv(a, b int) int {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

// shortfall is how many units (IPs, or prefixes in prefix mode) the pool
// lacks to meet its targets and serve the waiting pods, counting what growth
// in flight will bring and ignoring the max-pods cap; 0 = not low.
func shortfall(c Config, st Stats) (int, string) {
	slots := c.SlotsPerENI()
	have := st.Available + st.Growing
	waiting := ""
	if st.Waiting > 0 {
		waiting = fmt.Sprintf(" + %d waiting pods", st.Waiting)
	}
	switch {
	case c.ipTargets():
		// WARM_IP_TARGET=0 with MINIMUM_IP_TARGET would stall once the
		// minimum is used up (as the reference CNI does): keep at least one
		// address free.
		warm := max(c.WarmIPTarget, 1)
		short := max(warm+st.Waiting-have, c.MinimumIPTarget-st.Total-st.Growing, 0)
		if short == 0 {
			return 0, ""
		}
		why := fmt.Sprintf("short %d addresses of WARM_IP_TARGET=%d/MINIMUM_IP_TARGET=%d%s", short, c.WarmIPTarget, c.MinimumIPTarget, waiting)
		if st.Mode == ModePrefix {
			return ceilDiv(short, PrefixSize), why
		}
		return short, why
	case st.Mode == ModePrefix:
		want := c.WarmPrefixTarget*PrefixSize + st.Waiting
		if have >= want && have > 0 {
			return 0, ""
		}
		return max(1, ceilDiv(want-have, PrefixSize)),
			fmt.Sprintf("available %d < WARM_PREFIX_TARGET=%d x %d%s", have, c.WarmPrefixTarget, PrefixSize, waiting)
	default:
		want := c.WarmENITarget*slots + st.Waiting
		if have >= want && have > 0 {
			return 0, ""
		}
		// WARM_ENI_TARGET mode fills a whole ENI per call.
		return max(slots, want-have), fmt.Sprintf("available %d < WARM_ENI_TARGET=%d x %d%s", have, c.WarmENITarget, slots, waiting)
	}
}

// podShortfall is how many addresses the waiting pods alone lack, counting
// what growth in flight will bring.
func podShortfall(st Stats) int {
	return max(st.Waiting-st.Available-st.Growing, 0)
}

// headroom is how many more units the max-pods cap allows. Pods on leftover
// addresses count against max pods. A /28 is indivisible, so in prefix mode
// the last prefix may overshoot max pods by less than 16 addresses.
func headroom(c Config, st Stats) int {
	if c.MaxPods == 0 {
		return math.MaxInt32
	}
	capAddrs := c.MaxPods - st.LeftoverAssigned
	if st.Mode == ModePrefix {
		return ceilDiv(capAddrs, PrefixSize) - st.Prefixes - st.Growing/PrefixSize
	}
	return capAddrs - st.Total - st.Growing
}

func lowOf(c Config, st Stats) bool {
	short, _ := shortfall(c, st)
	return short > 0 && headroom(c, st) > 0
}

func (p planner) coolOff(scope CoolOffScope, eni string) (CoolOff, bool) {
	for _, co := range p.s.CoolOffs {
		if co.Scope == scope && co.active(p.s.Now) && (scope != CoolOffENI || co.ENIID == eni) {
			return co, true
		}
	}
	return CoolOff{}, false
}

func (p planner) byDevice(desc bool) []ENI {
	enis := slices.Clone(p.s.ENIs)
	slices.SortStableFunc(enis, func(a, b ENI) int {
		if desc {
			return b.DeviceNumber - a.DeviceNumber
		}
		return a.DeviceNumber - b.DeviceNumber
	})
	return enis
}

// grow returns the growth action, or why there is none.
func (p planner) grow(short, head int, why string) (Decision, string, bool) {
	if co, ok := p.coolOff(CoolOffGrowth, ""); ok {
		return Decision{}, fmt.Sprintf("%s, but growth cooling off until %s: %s", why, co.Until.Format(time.RFC3339), co.Reason), false
	}
	if co, ok := p.coolOff(CoolOffWarm, ""); ok && p.st.Waiting == 0 {
		return Decision{}, fmt.Sprintf("%s, but growth for the warm targets alone waits until %s: %s", why, co.Until.Format(time.RFC3339), co.Reason), false
	}
	count := min(short, head)
	assign := ActionAssignIPs
	if p.mode == ModePrefix {
		assign = ActionAssignPrefixes
	}
	busyWithRoom, busyRoom := "", 0
	for _, e := range p.byDevice(false) {
		free := p.slots - e.usedSlots() - p.comingTo(e.ID)
		if free <= 0 {
			continue
		}
		if p.growing(e.ID) {
			// One action per ENI at a time; its room is used next.
			busyWithRoom = cmp.Or(busyWithRoom, e.ID)
			busyRoom += free
			continue
		}
		if _, ok := p.coolOff(CoolOffENI, e.ID); ok {
			continue
		}
		n := min(count, free)
		if p.fill() {
			n = min(free, head)
		}
		d := p.decision(assign, e.ID, fmt.Sprintf("%s: assign %d %s to %s", why, n, unitOf(p.mode), e.ID))
		d.Count = n
		return d, "", true
	}
	if busyWithRoom != "" && busyRoom >= count {
		// A new ENI costs more calls than waiting for the action in flight,
		// when the room left after it is enough.
		return Decision{}, fmt.Sprintf("%s: waiting for the assign in flight on %s, which has room for more", why, busyWithRoom), false
	}
	if len(p.s.ENIs)+p.st.GrowingENIs >= p.c.MaxENIs() {
		if p.st.GrowingENIs > 0 {
			return Decision{}, fmt.Sprintf("%s, but the ENI limit %d is reached with the %d being created", why, p.c.MaxENIs(), p.st.GrowingENIs), false
		}
		return Decision{}, fmt.Sprintf("%s, but no ENI has a free slot and the ENI limit %d is reached", why, p.c.MaxENIs()), false
	}
	if co, ok := p.coolOff(CoolOffCreateENI, ""); ok {
		return Decision{}, fmt.Sprintf("%s, but no ENI has a free slot and ENI creation is cooling off until %s: %s",
			why, co.Until.Format(time.RFC3339), co.Reason), false
	}
	n := min(count, p.slots)
	if p.fill() {
		n = min(p.slots, head)
	}
	d := p.decision(ActionCreateENI, "", fmt.Sprintf("%s: create an ENI with %d %s", why, n, unitOf(p.mode)))
	d.Count = n
	return d, "", true
}

// fill: pods are waiting, so in secondary-IP mode every growth call brings
// all the addresses it can (up to max pods): during a burst, calls are what
// the pods wait for, and what turns out surplus is released later. A /28
// already brings 16.
func (p planner) fill() bool { return p.st.Waiting > 0 && p.mode == ModeSecondaryIP }

// comingTo is how many units the actions in flight add to ENI id.
func (p planner) comingTo(id string) int {
	n := 0
	for _, g := range p.s.Growing {
		if g.ENIID == id {
			n += g.Count
		}
	}
	return n
}

// growing: an action on ENI id is in flight (one at a time per ENI).
func (p planner) growing(id string) bool {
	for _, g := range p.s.Growing {
		if g.ENIID == id {
			return true
		}
	}
	return false
}

func unitOf(m Mode) Unit {
	if m == ModePrefix {
		return UnitPrefix
	}
	return UnitIP
}

func (p planner) spacingLeft() time.Duration {
	if p.s.LastScaleDown.IsZero() {
		return 0
	}
	return p.c.ScaleDownInterval - p.s.Now.Sub(p.s.LastScaleDown)
}

func (p planner) freeIPs(e ENI) []netip.Addr {
	var out []netip.Addr
	for _, a := range e.IPs {
		if a.free(p.s.Now, p.cd) {
			out = append(out, a.IP)
		}
	}
	// Release the highest addresses first: deterministic and keeps low ones warm.
	slices.SortFunc(out, func(a, b netip.Addr) int { return b.Compare(a) })
	return out
}

func (p planner) freePrefixes(e ENI) []netip.Prefix {
	var out []netip.Prefix
	for _, pf := range e.Prefixes {
		if prefixFree(pf, p.s.Now, p.cd) {
			out = append(out, pf.Prefix)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return b.Addr().Compare(a.Addr()) })
	return out
}

// releaseLeftovers gives back unused addresses of the inactive kind after a
// mode toggle; pods keep the ones they hold until they go.
func (p planner) releaseLeftovers() (Decision, bool) {
	for _, e := range p.byDevice(true) {
		if p.mode == ModePrefix {
			if ips := p.freeIPs(e); len(ips) > 0 {
				d := p.decision(ActionReleaseIPs, e.ID, fmt.Sprintf("prefix mode: release %d unused /32s from %s", len(ips), e.ID))
				d.Unit, d.IPs = UnitIP, ips
				return d, true
			}
			continue
		}
		if pfs := p.freePrefixes(e); len(pfs) > 0 {
			d := p.decision(ActionReleasePrefixes, e.ID, fmt.Sprintf("secondary-IP mode: release %d unused /28s from %s", len(pfs), e.ID))
			d.Unit, d.Prefixes = UnitPrefix, pfs
			return d, true
		}
	}
	return Decision{}, false
}

func (p planner) eniIdle(e ENI) bool {
	for _, a := range e.IPs {
		if !a.free(p.s.Now, p.cd) {
			return false
		}
	}
	for _, pf := range e.Prefixes {
		if !prefixFree(pf, p.s.Now, p.cd) {
			return false
		}
	}
	return true
}

// deleteENI frees one surplus ENI: not primary, old enough, nothing assigned
// or cooling on it, and the remaining ENIs still meet the targets. The
// highest device number goes first.
func (p planner) deleteENI() (Decision, bool) {
	warmENIMode := !p.c.ipTargets() && p.mode == ModeSecondaryIP
	if warmENIMode && p.st.Available < (p.c.WarmENITarget+1)*p.slots {
		return Decision{}, false
	}
	for _, e := range p.byDevice(true) {
		if e.Primary || p.s.Now.Sub(e.CreatedAt) < p.c.MinENIAge || !p.eniIdle(e) {
			continue
		}
		rest := slices.DeleteFunc(slices.Clone(p.s.ENIs), func(x ENI) bool { return x.ID == e.ID })
		if lowOf(p.c, statsOf(p.c, rest, p.s.Now)) {
			continue
		}
		return p.decision(ActionDeleteENI, e.ID, fmt.Sprintf("%s is idle and the other ENIs meet the targets: delete it", e.ID)), true
	}
	return Decision{}, false
}

// surplus is how many units may go without making the pool low.
func (p planner) surplus() int {
	st, c := p.st, p.c
	switch {
	case c.ipTargets():
		warm := max(c.WarmIPTarget, 1)
		if p.mode == ModePrefix {
			return max(min((st.Available-warm)/PrefixSize, (st.Total-c.MinimumIPTarget)/PrefixSize, st.FreePrefixes), 0)
		}
		return max(min(st.Available-warm, st.Total-c.MinimumIPTarget), 0)
	case p.mode == ModePrefix:
		n := st.FreePrefixes - c.WarmPrefixTarget
		if c.WarmPrefixTarget == 0 {
			n = min(n, ceilDiv(st.Available, PrefixSize)-1) // keep something available
		}
		return max(n, 0)
	default:
		return 0 // WARM_ENI_TARGET mode releases whole ENIs only
	}
}

// Surplus is how many units (IPs, or prefixes in prefix mode) the pool
// could release now without going below its targets.
func Surplus(c Config, s Snapshot) int {
	if c.Validate() != nil {
		return 0
	}
	p := planner{c: c, s: s, mode: c.Mode(), cd: c.IPCooldownPeriod, slots: c.SlotsPerENI()}
	p.st = statsOf(c, s.ENIs, s.Now)
	return p.surplus()
}

// releaseSurplus releases free addresses beyond the targets from one ENI,
// highest device number first so high ENIs drain and can be freed; only
// what stayed surplus for a whole ScaleDownInterval (Snapshot.SurplusFloor).
func (p planner) releaseSurplus() (Decision, bool) {
	n := p.surplus()
	if !p.s.SurplusSince.IsZero() {
		if p.s.Now.Sub(p.s.SurplusSince) < p.c.ScaleDownInterval {
			return Decision{}, false
		}
		n = min(n, p.s.SurplusFloor)
	}
	if n <= 0 {
		return Decision{}, false
	}
	for _, e := range p.byDevice(true) {
		if p.mode == ModePrefix {
			pfs := p.freePrefixes(e)
			if len(pfs) == 0 {
				continue
			}
			pfs = pfs[:min(n, len(pfs))]
			d := p.decision(ActionReleasePrefixes, e.ID, fmt.Sprintf("%d free prefixes above target: release %d from %s", n, len(pfs), e.ID))
			d.Prefixes = pfs
			return d, true
		}
		ips := p.freeIPs(e)
		if len(ips) == 0 {
			continue
		}
		ips = ips[:min(n, len(ips))]
		d := p.decision(ActionReleaseIPs, e.ID, fmt.Sprintf("%d free IPs above target: release %d from %s", n, len(ips), e.ID))
		d.IPs = ips
		return d, true
	}
	return Decision{}, false
}
