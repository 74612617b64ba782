package ipamd

// The ledger's half that follows EC2: what an assign answer, a describe or
// IMDS teaches, what EC2 took back, and the release steps (ledger.go has
// the state and the queries).

import (
	"net/netip"
	"sort"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
)

// ---------------------------------------------------------------- learning

// isGone: EC2 accepted to take x back (an address, prefix or ENI ID) less
// than grace ago, so a describe or IMDS showing it is lagging. Only the
// grace ends it: a describe that does not show x may lag even more (its
// state may predate x), so it cannot say EC2 caught up.
func (l *ledger) isGone(x string, now time.Time) bool {
	t, ok := l.gone[x]
	return ok && now.Sub(t) < l.grace
}

// newENI is the state of an ENI EC2 shows attached (at start, created by
// the daemon, or attached outside it), without what EC2 took back.
func (l *ledger) newENI(e cloud.ENI, now time.Time) *eniState {
	st := &eniState{id: e.ID, mac: parseMAC(e.MAC), dev: e.DeviceNumber, primary: e.DeviceNumber == 0 || e.Primary,
		primaryIP: e.PrimaryIP, subnetID: e.SubnetID, subnet: e.SubnetCIDR, attachmentID: e.AttachmentID,
		created: now, learned: now, ips: map[netip.Addr]bool{}, prefixes: map[netip.Prefix]bool{}}
	st.adopted = !st.primary && e.Tags[cloud.TagCreateToken] == "" && fromAWSVPCCNI(e)
	if t, err := time.Parse(time.RFC3339, e.Tags["node.k8s.amazonaws.com/createdAt"]); err == nil {
		st.created = t
	}
	for _, a := range e.IPs {
		if !l.isGone(a.String(), now) {
			st.ips[a] = true
		}
	}
	for _, p := range e.Prefixes {
		if !l.isGone(p.String(), now) {
			st.prefixes[p] = true
		}
	}
	return st
}

// addENI records an adopted ENI and when its addresses were learned.
func (l *ledger) addENI(st *eniState, now time.Time) {
	l.enis[st.id] = st
	for a := range st.ips {
		l.learned[a] = now
	}
	for p := range st.prefixes {
		l.learnedPrefix[p] = now
	}
}

// assigned records what EC2 answered to an assign: its own word, so what
// it names is the ENI's even if the daemon gave it back a moment ago.
func (l *ledger) assigned(eniID string, ips []netip.Addr, pfx []netip.Prefix, now time.Time) {
	e := l.enis[eniID]
	if e == nil {
		return
	}
	for _, ip := range ips {
		e.ips[ip] = true
		l.learned[ip] = now
		delete(l.gone, ip.String())
	}
	for _, p := range pfx {
		e.prefixes[p] = true
		l.learnedPrefix[p] = now
		delete(l.gone, p.String())
	}
}

// adoptShown adds what a describe of one ENI shows and the daemon does not
// know (a lost assign answer), but not what EC2 took back.
func (l *ledger) adoptShown(eniID string, e cloud.ENI, now time.Time) {
	st := l.enis[eniID]
	if st == nil {
		return
	}
	for _, ip := range e.IPs {
		if !st.ips[ip] && !l.isGone(ip.String(), now) {
			st.ips[ip] = true
			l.learned[ip] = now
			l.counters["adopted_ips"]++
		}
	}
	for _, p := range e.Prefixes {
		if !st.prefixes[p] && !l.isGone(p.String(), now) {
			st.prefixes[p] = true
			l.learnedPrefix[p] = now
			l.counters["adopted_prefixes"]++
		}
	}
}

// disagree logs and counts one disagreement with EC2 (once per subject
// while it lasts: the reconcile loop sees it every minute).
func (l *ledger) disagree(subject, format string, args ...any) {
	if l.disagreements[subject] {
		return
	}
	l.disagreements[subject] = true
	l.counters["reconcile_ec2_disagreements"]++
	l.logf("reconcile: EC2 disagrees: "+format, args...)
}

// syncENI brings one ENI's addresses in line with EC2's describe of it:
// what EC2 shows and the daemon does not know is adopted (unless EC2 took
// it back less than grace ago: the describe lags); a free address EC2 no
// longer shows is forgotten once learned more than grace ago. An address a
// pod holds is never forgotten (EC2 may lag; if someone did remove it, the
// pod's DEL releases it), but a prefix EC2 no longer shows gets no new pod
// once learned more than grace ago. It reports whether a prefix was lost
// (the pool needs a replacement).
func (l *ledger) syncENI(st *eniState, e cloud.ENI, now time.Time) (lostPrefix bool) {
	shownIP := map[netip.Addr]bool{}
	for _, ip := range e.IPs {
		shownIP[ip] = true
		if l.isGone(ip.String(), now) {
			l.disagree("gone:"+ip.String(), "%s on %s was released and EC2 accepted; a describe still shows it: ignored", ip, st.id)
			continue
		}
		delete(l.unconfirmed, ip)
		delete(l.disagreements, "ip:"+ip.String())
		if !st.ips[ip] {
			st.ips[ip] = true
			l.learned[ip] = now
			l.counters["reconcile_ips_adopted"]++
		}
	}
	shownP := map[netip.Prefix]bool{}
	for _, p := range e.Prefixes {
		shownP[p] = true
		if l.isGone(p.String(), now) {
			l.disagree("gone:"+p.String(), "%s on %s was released and EC2 accepted; a describe still shows it: ignored", p, st.id)
			continue
		}
		l.prefixShown(p, st.id)
		if !st.prefixes[p] {
			st.prefixes[p] = true
			l.learnedPrefix[p] = now
			l.counters["reconcile_prefixes_adopted"]++
		}
	}
	for ip := range st.ips {
		if shownIP[ip] || l.busy[ip] || l.releasing[ip] != "" {
			continue
		}
		if l.held(ip) || now.Sub(l.learned[ip]) < l.grace {
			l.disagree("ip:"+ip.String(), "%s on %s is missing from EC2's describe; kept (held by a pod: %v, learned %s ago)",
				ip, st.id, l.held(ip), now.Sub(l.learned[ip]).Round(time.Second))
			continue
		}
		delete(st.ips, ip)
		delete(l.learned, ip)
		delete(l.unconfirmed, ip)
		l.counters["reconcile_ips_removed"]++
	}
	for p := range st.prefixes {
		if shownP[p] || l.busyPrefixes[p] || l.releasingPrefixes[p] != "" {
			continue
		}
		if l.prefixMissing(p, st.id, now) {
			delete(st.prefixes, p)
			l.counters["reconcile_prefixes_removed"]++
		} else if l.lost[p] {
			lostPrefix = true
		}
	}
	return lostPrefix
}

// prefixShown: a describe shows p on eniID: confirmed, no disagreement,
// and no longer lost.
func (l *ledger) prefixShown(p netip.Prefix, eniID string) {
	delete(l.unconfirmedPrefixes, p)
	delete(l.disagreements, "prefix:"+p.String())
	if l.lost[p] {
		delete(l.lost, p)
		l.logf("reconcile: EC2 shows %s on %s again: new pods may use it", p, eniID)
	}
}

// prefixMissing handles a prefix of ENI eniID that EC2's describe does not
// show: within grace of learning it, EC2 is lagging; past it, a prefix no
// pod uses is forgotten (it reports true: drop it from the ENI), and one
// pods still use is lost: kept for them, no new pod gets an address of it.
func (l *ledger) prefixMissing(p netip.Prefix, eniID string, now time.Time) bool {
	pods, age := l.podsIn(p), now.Sub(l.learnedPrefix[p])
	switch {
	case age < l.grace:
		l.disagree("prefix:"+p.String(), "%s on %s is missing from EC2's describe; kept (held by pods: %v, learned %s ago)",
			p, eniID, pods > 0, age.Round(time.Second))
		return false
	case pods > 0:
		if !l.lost[p] {
			l.lost[p] = true
			l.counters["prefixes_lost"]++
			l.logf("reconcile: EC2 no longer shows %s on %s: its %d pods keep their addresses, no new pod gets one of it", p, eniID, pods)
		}
		return false
	}
	delete(l.learnedPrefix, p)
	delete(l.unconfirmedPrefixes, p)
	delete(l.lost, p)
	delete(l.disagreements, "prefix:"+p.String())
	return true
}

// expiredGone lists what EC2 took back more than grace ago.
func (l *ledger) expiredGone(now time.Time) []string {
	var out []string
	for x, t := range l.gone {
		if now.Sub(t) >= l.grace {
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}

// forgetGone drops records of what EC2 took back.
func (l *ledger) forgetGone(xs []string) {
	for _, x := range xs {
		delete(l.gone, x)
		delete(l.disagreements, "gone:"+x)
	}
}

// --------------------------------------------------------------- releases

// markBusy takes what a pool decision gives back out of the pool.
func (l *ledger) markBusy(ips []netip.Addr, pfx []netip.Prefix) {
	for _, ip := range ips {
		l.busy[ip] = true
	}
	for _, p := range pfx {
		l.busyPrefixes[p] = true
	}
}

func (l *ledger) unmarkBusy(ips []netip.Addr, pfx []netip.Prefix) {
	for _, ip := range ips {
		delete(l.busy, ip)
	}
	for _, p := range pfx {
		delete(l.busyPrefixes, p)
	}
}

// releaseFailed keeps what EC2 may or may not have taken back out of the
// pool (a lost answer, a timeout after the change, a refusal), and
// schedules a retry of the ENI's releases.
func (l *ledger) releaseFailed(eniID string, ips []netip.Addr, pfx []netip.Prefix, err error, now time.Time) {
	for _, ip := range ips {
		l.releasing[ip] = eniID
	}
	for _, p := range pfx {
		l.releasingPrefixes[p] = eniID
	}
	r := l.retries[eniID]
	if r == nil {
		r = &pendingRelease{}
		l.retries[eniID] = r
	}
	r.attempts++
	r.lastErr = err.Error()
	r.next = now.Add(releaseBackoff(r.attempts))
}

// releaseBackoff is the wait after n failed attempts: 1 s, 2 s, 4 s, ...
// up to releaseRetryMax.
func releaseBackoff(n int) time.Duration {
	return min(releaseRetryBase<<min(n-1, 20), releaseRetryMax)
}

// dueReleases lists, by ENI, the failed releases whose retry is due.
func (l *ledger) dueReleases(now time.Time) (map[string][]netip.Addr, map[string][]netip.Prefix) {
	ips, pfx := map[string][]netip.Addr{}, map[string][]netip.Prefix{}
	due := func(eni string) bool { r := l.retries[eni]; return r == nil || !now.Before(r.next) }
	for ip, eni := range l.releasing {
		if due(eni) {
			ips[eni] = append(ips[eni], ip)
		}
	}
	for p, eni := range l.releasingPrefixes {
		if due(eni) {
			pfx[eni] = append(pfx[eni], p)
		}
	}
	for _, list := range ips {
		sort.Slice(list, func(i, j int) bool { return list[i].Less(list[j]) })
	}
	for _, list := range pfx {
		sort.Slice(list, func(i, j int) bool { return list[i].Addr().Less(list[j].Addr()) })
	}
	return ips, pfx
}

// pendingReleases says what is left to give back, by ENI, for
// introspection.
func (l *ledger) pendingReleases() []pendingReleaseView {
	by := map[string][]string{}
	for ip, eni := range l.releasing {
		by[eni] = append(by[eni], ip.String())
	}
	for p, eni := range l.releasingPrefixes {
		by[eni] = append(by[eni], p.String())
	}
	var out []pendingReleaseView
	for eni, items := range by {
		sort.Strings(items)
		v := pendingReleaseView{eni: eni, items: items}
		if r := l.retries[eni]; r != nil {
			v.pendingRelease = *r
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].eni < out[j].eni })
	return out
}

// released records that EC2 took ips and pfx back from eniID: off the ENI,
// out of the retry set, its cooldowns dropped, remembered as gone from now
// (the store's records are the caller's: forgetReleased).
func (l *ledger) released(eniID string, ips []netip.Addr, pfx []netip.Prefix, now time.Time) {
	e := l.enis[eniID]
	for _, ip := range ips {
		if e != nil {
			delete(e.ips, ip)
		}
		delete(l.releasing, ip)
		delete(l.cooling, ip)
		delete(l.learned, ip)
		delete(l.unconfirmed, ip)
		l.gone[ip.String()] = now
	}
	for _, p := range pfx {
		if e != nil {
			delete(e.prefixes, p)
		}
		delete(l.releasingPrefixes, p)
		delete(l.learnedPrefix, p)
		delete(l.unconfirmedPrefixes, p)
		delete(l.lost, p)
		l.gone[p.String()] = now
		for ip := p.Addr(); p.Contains(ip); ip = ip.Next() {
			delete(l.cooling, ip)
		}
	}
	l.settleRetries()
}

// settleRetries drops the retry schedule of ENIs with nothing left to
// give back.
func (l *ledger) settleRetries() {
	left := map[string]bool{}
	for _, eni := range l.releasing {
		left[eni] = true
	}
	for _, eni := range l.releasingPrefixes {
		left[eni] = true
	}
	for eni := range l.retries {
		if !left[eni] {
			delete(l.retries, eni)
		}
	}
}

// removeENI forgets an ENI EC2 freed (gone from now) or no longer shows;
// it returns the cooldown records of its addresses, for the store.
func (l *ledger) removeENI(e *eniState, freed bool, now time.Time) []netip.Addr {
	delete(l.enis, e.id)
	if freed {
		l.gone[e.id] = now
	}
	var forget []netip.Addr
	for ip := range l.cooling {
		if e.holds(ip) {
			delete(l.cooling, ip)
			forget = append(forget, ip)
		}
	}
	for ip, eni := range l.releasing {
		if eni == e.id {
			delete(l.releasing, ip)
		}
	}
	for p, eni := range l.releasingPrefixes {
		if eni == e.id {
			delete(l.releasingPrefixes, p)
		}
	}
	l.settleRetries()
	return forget
}
