package ipamd

// The address ledger: every address's and prefix's life on the node, in
// one place. The Daemon holds its lock and makes the calls to EC2, the host
// and the store; the ledger only says what is true now and what may happen
// next, so its rules are readable (and tested) without EC2.
//
// An address's life:
//
//	learned (EC2 assigned it, or a describe showed it)
//	  -> reserved (an ADD is recording it) -> held (a pod has it)
//	  -> cooling (its pod is gone; not picked for IP_COOLDOWN_PERIOD)
//	  -> free again, or
//	  -> busy (being given back to EC2)
//	       -> releasing (EC2 refused or lost the answer: retried with backoff)
//	       -> gone (EC2 accepted): never learned back from a describe or
//	          IMDS that still shows it until the consistency grace has
//	          passed (a describe that no longer shows it proves nothing: a
//	          lagging one may predate the address), unless EC2 assigns it
//	          to the daemon again.
//
// Beside that: unconfirmed (a restored pod's address EC2 did not show at
// start: kept for the pod, never given to another until EC2 shows it),
// lost (a prefix EC2 no longer shows while pods hold addresses of it: no new
// pod gets one of its addresses) and pruning (being removed from the SNAT
// set: never picked meanwhile).

import (
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/vpcchain/vpcchain/daemon/hostnet"
	"github.com/vpcchain/vpcchain/daemon/pool"
	"github.com/vpcchain/vpcchain/daemon/store"
)

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
	learned      time.Time // when the daemon first saw it in EC2 (or created it)
	ips          map[netip.Addr]bool
	prefixes     map[netip.Prefix]bool
	// IPv6 mode: the primary ENI's /80s and its subnet's /64.
	prefixes6 map[netip.Prefix]bool
	subnet6   netip.Prefix
	// adopted: created by the AWS VPC CNI (fromAWSVPCCNI), not the daemon.
	adopted bool
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
	for p := range e.prefixes6 {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Release retries back off exponentially per ENI, from releaseRetryBase
// to releaseRetryMax: a release EC2 keeps refusing (a missing permission)
// must not cost a call a second per ENI for ever.
const (
	releaseRetryBase = time.Second
	releaseRetryMax  = 5 * time.Minute
)

// pendingRelease is what is left to give back to EC2 on one ENI after a
// release failed.
type pendingRelease struct {
	attempts int // failed attempts so far
	next     time.Time
	lastErr  string
}

// pendingReleaseView is one ENI's pending releases, for introspection.
type pendingReleaseView struct {
	eni   string
	items []string
	pendingRelease
}

// ledger is the node's address state. It is not safe for concurrent use:
// the Daemon's mu guards it.
type ledger struct {
	grace    time.Duration // VPCCHAIN_EC2_CONSISTENCY_GRACE
	counters map[string]int64
	logf     func(string, ...any)

	enis  map[string]*eniState
	byKey map[store.Key]store.Allocation
	byIP  map[netip.Addr]store.Key
	// reserved: picked by an ADD whose record is being written; held.
	reserved map[netip.Addr]bool
	// pruning: found stale in the SNAT set and being removed; never picked.
	pruning map[netip.Addr]bool
	// cooling: when each address was released by its pod (kept past the
	// cooldown until forgotten).
	cooling map[netip.Addr]time.Time
	// busy: chosen by a pool decision to be given back; never picked.
	busy         map[netip.Addr]bool
	busyPrefixes map[netip.Prefix]bool
	// releasing: EC2 refused or lost the release of these free addresses
	// and prefixes (to ENI ID); EC2 may have made the change, so they are
	// never picked, and the release is retried (it is idempotent).
	releasing         map[netip.Addr]string
	releasingPrefixes map[netip.Prefix]string
	retries           map[string]*pendingRelease // by ENI ID
	// learned: when the daemon learned each address or prefix was
	// assigned. A describe that omits one learned less than grace ago is
	// EC2 lagging, not a removal.
	learned       map[netip.Addr]time.Time
	learnedPrefix map[netip.Prefix]time.Time
	// unconfirmed: held by a restored allocation, not shown by EC2 at start.
	unconfirmed         map[netip.Addr]bool
	unconfirmedPrefixes map[netip.Prefix]bool
	// gone: what EC2 accepted to take back (addresses, prefixes, ENIs by
	// ID), and when, for the consistency grace; also in the store, so a
	// restart keeps it.
	gone map[string]time.Time
	// lost: prefixes EC2 no longer shows while pods hold addresses of them.
	lost map[netip.Prefix]bool
	// disagreements with EC2 logged while they last (by subject).
	disagreements map[string]bool
}

func newLedger(grace time.Duration, counters map[string]int64, logf func(string, ...any)) *ledger {
	return &ledger{grace: grace, counters: counters, logf: logf,
		enis: map[string]*eniState{}, byKey: map[store.Key]store.Allocation{}, byIP: map[netip.Addr]store.Key{},
		reserved: map[netip.Addr]bool{}, pruning: map[netip.Addr]bool{}, cooling: map[netip.Addr]time.Time{},
		busy: map[netip.Addr]bool{}, busyPrefixes: map[netip.Prefix]bool{},
		releasing: map[netip.Addr]string{}, releasingPrefixes: map[netip.Prefix]string{}, retries: map[string]*pendingRelease{},
		learned: map[netip.Addr]time.Time{}, learnedPrefix: map[netip.Prefix]time.Time{},
		unconfirmed: map[netip.Addr]bool{}, unconfirmedPrefixes: map[netip.Prefix]bool{},
		gone: map[string]time.Time{}, lost: map[netip.Prefix]bool{}, disagreements: map[string]bool{}}
}

// ----------------------------------------------------------------- queries

// held: a pod holds ip, an ADD is recording it, or it is being removed
// from the SNAT set.
func (l *ledger) held(ip netip.Addr) bool {
	_, assigned := l.byIP[ip]
	return assigned || l.reserved[ip] || l.pruning[ip]
}

func (l *ledger) eniOf(ip netip.Addr) *eniState {
	for _, e := range l.enis {
		if e.holds(ip) {
			return e
		}
	}
	return nil
}

// podsOn counts the addresses of an ENI that pods hold or ADDs are
// recording: an ENI with any of them must not be freed.
func (l *ledger) podsOn(e *eniState) int { return l.inUseWhere(e.holds) }

// podsIn counts the addresses of p that pods hold or ADDs are recording.
func (l *ledger) podsIn(p netip.Prefix) int { return l.inUseWhere(p.Contains) }

func (l *ledger) inUseWhere(in func(netip.Addr) bool) int {
	n := 0
	for ip := range l.byIP {
		if in(ip) {
			n++
		}
	}
	for ip := range l.reserved {
		if _, recorded := l.byIP[ip]; !recorded && in(ip) {
			n++
		}
	}
	return n
}

// pickableIPv6 says whether a new pod may get ip of the /80 p.
func (l *ledger) pickableIPv6(p netip.Prefix, ip netip.Addr) bool {
	return ip != p.Addr() && !l.lost[p] && !l.held(ip) && l.cooling[ip].IsZero()
}

// poolENIs is the pool's view of the ENIs (package pool decides on it).
// What EC2 may not have is left out or blocked so nothing picks it: being
// given back, a failed release, restored but not shown by EC2, or a prefix
// EC2 no longer shows.
func (l *ledger) poolENIs(skipPrimary bool) []pool.ENI {
	addr := func(ip netip.Addr) pool.Address {
		return pool.Address{IP: ip, Assigned: l.held(ip), ReleasedAt: l.cooling[ip]}
	}
	var out []pool.ENI
	for _, e := range l.enis {
		if e.primary && skipPrimary {
			continue
		}
		pe := pool.ENI{ID: e.id, Primary: e.primary, CreatedAt: e.created, DeviceNumber: e.dev}
		for ip := range e.ips {
			if l.busy[ip] || l.releasing[ip] != "" || l.unconfirmed[ip] && !l.held(ip) {
				continue
			}
			pe.IPs = append(pe.IPs, addr(ip))
		}
		sort.Slice(pe.IPs, func(i, j int) bool { return pe.IPs[i].IP.Less(pe.IPs[j].IP) })
		for p := range e.prefixes {
			if l.busyPrefixes[p] || l.releasingPrefixes[p] != "" {
				continue
			}
			blocked := l.unconfirmedPrefixes[p] || l.lost[p]
			pp := pool.Prefix{Prefix: p}
			for ip := p.Addr(); p.Contains(ip); ip = ip.Next() {
				switch {
				case blocked && !l.held(ip):
					// Not EC2's (yet, or any more): blocked, like a held address.
					pp.Addresses = append(pp.Addresses, pool.Address{IP: ip, Assigned: true})
				case l.held(ip) || !l.cooling[ip].IsZero():
					pp.Addresses = append(pp.Addresses, addr(ip))
				}
			}
			pe.Prefixes = append(pe.Prefixes, pp)
		}
		sort.Slice(pe.Prefixes, func(i, j int) bool { return pe.Prefixes[i].Prefix.Addr().Less(pe.Prefixes[j].Prefix.Addr()) })
		out = append(out, pe)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DeviceNumber < out[j].DeviceNumber })
	return out
}

// firstCooling is when the earliest cooling address no pod holds was
// released (zero if none).
func (l *ledger) firstCooling() time.Time {
	var first time.Time
	for ip, t := range l.cooling {
		if _, assigned := l.byIP[ip]; !assigned && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	return first
}

// ------------------------------------------------------------ allocations

// reserve marks ip as being recorded for an ADD.
func (l *ledger) reserve(ip netip.Addr) { l.reserved[ip] = true }

// unreserve ends the recording, and when it succeeded gives ip to key.
func (l *ledger) unreserve(key store.Key, a store.Allocation, recorded bool) {
	delete(l.reserved, a.IP)
	if recorded {
		l.assign(key, a)
	}
}

// assign records that key holds a.IP (an ADD, or a restored record).
func (l *ledger) assign(key store.Key, a store.Allocation) {
	l.byKey[key] = a
	l.byIP[a.IP] = key
	delete(l.cooling, a.IP)
}

// release ends key's allocation: its address cools from now.
func (l *ledger) release(key store.Key, now time.Time) {
	a, ok := l.byKey[key]
	if !ok {
		return
	}
	delete(l.byKey, key)
	delete(l.byIP, a.IP)
	l.cooling[a.IP] = now
}

// cooledBefore lists the cooldown records older than cut (for the store).
func (l *ledger) cooledBefore(cut time.Time) map[netip.Addr]time.Time {
	old := map[netip.Addr]time.Time{}
	for ip, t := range l.cooling {
		if t.Before(cut) {
			old[ip] = t
		}
	}
	return old
}

// forgetCooling drops the cooldown records of old that were not renewed.
func (l *ledger) forgetCooling(old map[netip.Addr]time.Time) {
	for ip, t := range old {
		if l.cooling[ip].Equal(t) { // not released again meanwhile
			delete(l.cooling, ip)
		}
	}
}

// unconfirmedOn puts a restored pod's address that EC2 does not show (yet)
// on the ENI it was recorded on, for the pod alone: no other pod gets it
// (or, in prefix mode, any address of its /28) until EC2 shows it.
func (l *ledger) unconfirmedOn(e *eniState, ip netip.Addr, prefixMode bool, now time.Time) {
	if p, err := ip.Prefix(28); prefixMode && err == nil {
		e.prefixes[p] = true
		l.unconfirmedPrefixes[p] = true
		l.learnedPrefix[p] = now
		return
	}
	e.ips[ip] = true
	l.unconfirmed[ip] = true
	l.learned[ip] = now
}

// forgetStrayCooling drops the cooldowns of addresses on no ENI of the
// node any more and returns them for the store.
func (l *ledger) forgetStrayCooling() []netip.Addr {
	var out []netip.Addr
	for ip := range l.cooling {
		if l.eniOf(ip) == nil {
			delete(l.cooling, ip)
			out = append(out, ip)
		}
	}
	return out
}
