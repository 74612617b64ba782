package netlinkutil

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// SyncNetSet makes the existing hash:net ipset name hold exactly nets:
// what is missing is added before what is extra is deleted, so an entry
// kept in both is never absent. h nil is the calling thread's namespace.
func SyncNetSet(h *netlink.Handle, name string, nets []netip.Prefix) error {
	if h == nil {
		h = &netlink.Handle{}
	}
	res, err := h.IpsetList(name)
	if err != nil {
		return fmt.Errorf("list ipset %s: %w", name, err)
	}
	have := map[netip.Prefix]bool{}
	for _, e := range res.Entries {
		a, _ := netip.AddrFromSlice(e.IP)
		have[netip.PrefixFrom(a.Unmap(), int(e.CIDR))] = true
	}
	want := map[netip.Prefix]bool{}
	for _, p := range nets {
		want[p.Masked()] = true
	}
	for p := range want {
		if !have[p] {
			if err := h.IpsetAdd(name, NetEntry(p)); err != nil {
				return fmt.Errorf("ipset add %s %s: %w", name, p, err)
			}
		}
	}
	for p := range have {
		if !want[p] {
			if err := h.IpsetDel(name, NetEntry(p)); err != nil {
				return fmt.Errorf("ipset del %s %s: %w", name, p, err)
			}
		}
	}
	return nil
}

// NetEntry is the ipset entry of a prefix (either family).
func NetEntry(p netip.Prefix) *netlink.IPSetEntry {
	return &netlink.IPSetEntry{IP: net.IP(p.Addr().AsSlice()), CIDR: uint8(p.Bits()), Replace: true}
}
