package hostnet

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
	"github.com/vpcchain/vpcchain/internal/snat"
)

// connmarkRule is "fwmark <mark>/<mark> lookup main" at priority 1024: a
// connmarked flow (NodePort, pod to outside the VPC) is routed by the main
// table, out of the primary ENI, whatever ENI the pod's address is on.
func connmarkRule(mark uint32) *netlink.Rule {
	r := netlink.NewRule()
	r.Priority = routing.PrioConnmark
	r.Mark = mark
	m := mark
	r.Mask = &m
	r.Table = routing.MainTable
	r.Family = netlink.FAMILY_V4
	return r
}

// RemoveSNATPod removes one address from the SNAT set (absent is fine).
func RemoveSNATPod(ip netip.Addr) error { return snat.DelPod(ip) }

// PruneSNATPods removes from the SNAT set the addresses keep rejects.
func PruneSNATPods(keep func(netip.Addr) bool) error { return snat.PrunePods(keep) }

func isConnmarkRule(r *netlink.Rule) bool {
	return r.Priority == routing.PrioConnmark && r.Table == routing.MainTable && r.Mark != 0
}

// backendMu guards backend: the iptables backend our rules were last put in.
var (
	backendMu sync.Mutex
	backend   string
)

// iptablesFor returns the handle of the backend mode selects (auto: where
// the node's other rules are, see snat.DetectMode). When that is not the
// backend our rules were put in before (kube-proxy came up after the daemon
// and chose the other one), ours leave the old backend first.
func iptablesFor(mode string) (*iptables.IPTables, error) {
	ipt, actual, err := snat.IPTablesFor(mode)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	backendMu.Lock()
	defer backendMu.Unlock()
	if backend != "" && backend != actual {
		old, _, err := snat.IPTablesFor(backend)
		if err == nil {
			err = snat.RemoveRules(old)
		}
		if err != nil {
			return nil, fmt.Errorf("move our rules from iptables-%s to iptables-%s: %w", backend, actual, err)
		}
	}
	backend = actual
	return ipt, nil
}

// SetupSNAT reconciles the node's SNAT/connmark state for c: in SNAT mode the
// rules of package snat plus the 1024 fwmark rule (stale ones of an older
// mark removed) and pods (the daemon's allocations) in the SNAT set, so a
// mode switch or a lost set never leaves a running pod without SNAT; in
// external-SNAT mode none of it.
func SetupSNAT(c snat.NodeConfig, pods []netip.Addr) error {
	ipt, err := iptablesFor(c.IPTablesMode)
	if err != nil {
		return err
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
