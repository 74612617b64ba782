package pool

import (
	"net/netip"
	"time"
)

// PickAddress chooses the address for a new pod under the config's mode and
// cooldown at s.Now. It never returns an assigned or cooling address, and in
// prefix mode only addresses inside delegated /28s (all 16 are usable); in
// secondary-IP mode only /32s.
//
// Preference, in order:
//  1. lowest ENI device number: the primary ENI fills first, so pods
//     concentrate low and high ENIs can drain and be freed;
//  2. prefix mode: a /28 already in use before a wholly free one, so free
//     /28s stay releasable;
//  3. the least recently released address (never-used first), so an address
//     rests as long as possible before reuse;
//  4. the lowest address (determinism).
func PickAddress(c Config, s Snapshot) (ip netip.Addr, eniID string, ok bool) {
	type cand struct {
		ip       netip.Addr
		eni      string
		dev      int
		fresh    bool // in a wholly free /28
		released time.Time
	}
	better := func(a, b cand) bool {
		if a.dev != b.dev {
			return a.dev < b.dev
		}
		if a.fresh != b.fresh {
			return !a.fresh
		}
		if !a.released.Equal(b.released) {
			return a.released.Before(b.released)
		}
		return a.ip.Less(b.ip)
	}
	var best cand
	found := false
	consider := func(x cand) {
		if !found || better(x, best) {
			best, found = x, true
		}
	}
	now, cd := s.Now, c.IPCooldownPeriod
	// An address busy anywhere in the snapshot is never picked, even if a
	// malformed snapshot also lists it as free elsewhere.
	busy := map[netip.Addr]bool{}
	for _, e := range s.ENIs {
		for _, a := range e.IPs {
			if !a.free(now, cd) {
				busy[a.IP] = true
			}
		}
		for _, pf := range e.Prefixes {
			for _, a := range pf.Addresses {
				if !a.free(now, cd) {
					busy[a.IP] = true
				}
			}
		}
	}
	for _, e := range s.ENIs {
		if c.Mode() == ModeSecondaryIP {
			for _, a := range e.IPs {
				if a.IP.IsValid() && !busy[a.IP] {
					consider(cand{ip: a.IP, eni: e.ID, dev: e.DeviceNumber, released: a.ReleasedAt})
				}
			}
			continue
		}
		for _, pf := range e.Prefixes {
			fresh := prefixFree(pf, now, cd)
			released := make(map[netip.Addr]time.Time, len(pf.Addresses))
			for _, a := range pf.Addresses {
				released[a.IP] = a.ReleasedAt
			}
			ip := pf.Prefix.Masked().Addr()
			for range PrefixSize {
				if !busy[ip] {
					consider(cand{ip: ip, eni: e.ID, dev: e.DeviceNumber, fresh: fresh, released: released[ip]})
				}
				ip = ip.Next()
			}
		}
	}
	if !found {
		return netip.Addr{}, "", false
	}
	return best.ip, best.eni, true
}
