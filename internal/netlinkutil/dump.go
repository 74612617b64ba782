package netlinkutil

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// Netlink dumps can be interrupted by a concurrent change (NLM_F_DUMP_INTR);
// netlink then returns partial results with ErrDumpInterrupted. These
// wrappers retry a few times, like containernetworking/plugins' netlinksafe
// (not used directly to keep this module's dependency set small).

const dumpRetries = 10

func retryDump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for i := 0; i < dumpRetries; i++ {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// LinkByName is netlink.LinkByName, retried on interrupted dumps.
func LinkByName(name string) (netlink.Link, error) {
	return retryDump(func() (netlink.Link, error) { return netlink.LinkByName(name) })
}

// LinkList is netlink.LinkList, retried on interrupted dumps.
func LinkList() ([]netlink.Link, error) {
	return retryDump(netlink.LinkList)
}

// AddrList is netlink.AddrList, retried on interrupted dumps.
func AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) })
}

// RuleList is netlink.RuleList, retried on interrupted dumps.
func RuleList(family int) ([]netlink.Rule, error) {
	return retryDump(func() ([]netlink.Rule, error) { return netlink.RuleList(family) })
}

// RouteListFiltered is netlink.RouteListFiltered, retried on interrupted dumps.
func RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return retryDump(func() ([]netlink.Route, error) { return netlink.RouteListFiltered(family, filter, mask) })
}

// NeighList is netlink.NeighList, retried on interrupted dumps.
func NeighList(linkIndex, family int) ([]netlink.Neigh, error) {
	return retryDump(func() ([]netlink.Neigh, error) { return netlink.NeighList(linkIndex, family) })
}
