package hostnet

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/snat"
)

// connmarkRule is "fwmark <mark>/<mark> lookup main" at priority 1024: a
// connmarked flow (NodePort, pod to outside the VPC) is routed by the main
// table, out of the primary ENI, whatever ENI the pod's address is on.
func connmarkRule(mark uint32) *netlink.Rule {
	r := netlink.NewRule()
	r.Priority = netlinkutil.PrioConnmark
	r.Mark = mark
	m := mark
	r.Mask = &m
	r.Table = MainTable
	r.Family = netlink.FAMILY_V4
	return r
}

// RemoveSNATPod removes one address from the SNAT set (absent is fine).
func RemoveSNATPod(ip netip.Addr) error { return snat.DelPod(ip) }

// PruneSNATPods removes from the SNAT set the addresses keep rejects.
func PruneSNATPods(keep func(netip.Addr) bool) error { return snat.PrunePods(keep) }

func isConnmarkRule(r *netlink.Rule) bool {
	return r.Priority == netlinkutil.PrioConnmark && r.Table == MainTable && r.Mark != 0
}

// SetupSNAT reconciles the node's SNAT/connmark state for c: in SNAT mode the
// rules of package snat plus the 1024 fwmark rule (stale ones of an older
// mark removed) and pods (the daemon's allocations) in the SNAT set, so a
// mode switch or a lost set never leaves a running pod without SNAT; in
// external-SNAT mode none of it.
func SetupSNAT(c snat.NodeConfig, pods []netip.Addr) error {
	ipt, err := snat.IPTables()
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	if err := snat.Reconcile(ipt, c); err != nil {
		return err
	}
	want := connmarkRule(c.Mark)
	if _, err := netlinkutil.DeleteRules(netlink.FAMILY_V4, func(r *netlink.Rule) bool {
		return isConnmarkRule(r) && (c.ExternalSNAT || !netlinkutil.RuleEqual(r, want))
	}); err != nil {
		return err
	}
	if c.ExternalSNAT {
		return nil
	}
	if _, err := netlinkutil.EnsureRule(want); err != nil {
		return err
	}
	for _, ip := range pods {
		if err := snat.AddPod(ip); err != nil {
			return err
		}
	}
	return nil
}
