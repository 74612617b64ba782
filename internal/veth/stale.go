package veth

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
)

// Leftover is what already holds the names an ADD is about to create: a
// pair left by an earlier, interrupted ADD of the same attachment, or
// someone else's interface. The plugin decides which, by the host end's
// alias.
type Leftover struct {
	// Host is the host link with the host end's name; nil if there is none.
	Host netlink.Link
	// PodIf says the pod netns has an interface with the pod end's name.
	PodIf bool
	// Paired says that interface is a veth whose peer is Host.
	Paired bool
}

// FindLeftover looks for podIf in podNS and hostIf in the host netns.
func FindLeftover(podNS ns.NetNS, podIf, hostIf string) (Leftover, error) {
	var left Leftover
	peerIdx := -1
	err := podNS.Do(func(ns.NetNS) error {
		l, err := netlinkutil.LinkByName(podIf)
		if err != nil {
			if netlinkutil.IsNotFound(err) {
				return nil
			}
			return err
		}
		left.PodIf = true
		if v, ok := l.(*netlink.Veth); ok {
			if idx, err := netlink.VethPeerIndex(v); err == nil {
				peerIdx = idx
			}
		}
		return nil
	})
	if err != nil {
		return Leftover{}, fmt.Errorf("inspect pod netns: %w", err)
	}
	link, err := netlinkutil.LinkByName(hostIf)
	switch {
	case err != nil && !netlinkutil.IsNotFound(err):
		return Leftover{}, fmt.Errorf("look up host veth %s: %w", hostIf, err)
	case err == nil:
		left.Host = link
		left.Paired = left.PodIf && peerIdx == link.Attrs().Index
	}
	return left, nil
}

// HasLink reports whether the pod netns has an interface named name.
func HasLink(podNS ns.NetNS, name string) bool {
	exists := false
	_ = podNS.Do(func(ns.NetNS) error {
		_, err := netlinkutil.LinkByName(name)
		exists = err == nil
		return nil
	})
	return exists
}

// DeleteLink deletes link (a veth end: with it its peer); one that is
// already gone is not an error.
func DeleteLink(link netlink.Link) error {
	if err := netlink.LinkDel(link); err != nil && !netlinkutil.IsNotFound(err) {
		return err
	}
	return nil
}

// PodLink looks up the pod end ifName; run it in the pod netns. An
// interface that is not there is nil, not an error.
func PodLink(ifName string) (netlink.Link, error) {
	l, err := netlinkutil.LinkByName(ifName)
	if err != nil {
		if netlinkutil.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up pod interface %s: %w", ifName, err)
	}
	return l, nil
}

// DeletePodLink deletes ifName in podNS, if it is there. pkg/ip's
// DelLinkByName would fail when the link goes between its look-up and the
// delete, as a veth's pod end does when its host end is deleted.
func DeletePodLink(podNS ns.NetNS, ifName string) error {
	return podNS.Do(func(ns.NetNS) error {
		l, err := PodLink(ifName)
		if l == nil {
			return err
		}
		if err := DeleteLink(l); err != nil {
			return fmt.Errorf("delete pod interface %s: %w", ifName, err)
		}
		return nil
	})
}
