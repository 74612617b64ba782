package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vpcctl status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", ipamclient.DefaultSocket, "the daemon's unix socket")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the daemon")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := ipamclient.Dial(ctx, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	reply, err := c.Introspect(ctx)
	if err != nil {
		return err
	}
	// What CNI STATUS answers, and why; a daemon that cannot say leaves it
	// out (the pool summary is what this command is for).
	st, _ := c.Status(ctx)
	return printStatus(stdout, reply, st)
}

// printStatus writes a readable summary of the daemon's pool: a line with
// its readiness when there is something to say about it (st may be nil), a
// header with mode and totals, one line per ENI, one line per allocation.
func printStatus(w io.Writer, r *ipamv1.IntrospectReply, st *ipamv1.StatusReply) error {
	switch {
	case st == nil:
	case !st.GetReady():
		fmt.Fprintf(w, "NOT READY: %s\n", orDash(st.GetReason()))
	case st.GetReason() != "":
		fmt.Fprintf(w, "ready: %s\n", st.GetReason())
	}
	fmt.Fprintf(w, "mode %s  total %d  assigned %d  cooling %d  available %d  max-pods %d\n",
		orDash(r.GetMode()), r.GetTotal(), r.GetAssigned(), r.GetCooling(), r.GetAvailable(), r.GetMaxPods())
	if d := r.GetLastDecision(); d != "" {
		fmt.Fprintf(w, "last decision: %s\n", d)
	}
	if cn := r.GetCustomNetworking(); cn != nil {
		if p := cn.GetProblem(); p != "" {
			fmt.Fprintf(w, "custom networking: no new ENIs: %s\n", p)
		} else {
			fmt.Fprintf(w, "custom networking: ENIConfig %s (%s): new ENIs in %s with %s\n", cn.GetEniconfig(), cn.GetChosenBy(),
				cn.GetSubnet(), strings.Join(cn.GetSecurityGroups(), ","))
		}
	}

	used := map[string]int{}
	for _, a := range r.GetAllocations() {
		used[a.GetEniId()]++
	}
	fmt.Fprintf(w, "\nENIs (%d):\n", len(r.GetEnis()))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tENI\tPRIMARY-IP\tROUTE-TABLE\tSUBNET\tADDRESSES\tUNASSIGNED\tORIGIN")
	for _, e := range r.GetEnis() {
		addrs := eniAddresses(e)
		id := e.GetId()
		if e.GetPrimary() {
			id += " (primary)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%d\t%d\t%s\n", e.GetDeviceNumber(), id, orDash(e.GetPrimaryIp()),
			e.GetRouteTable(), orDash(e.GetSubnetCidr()), addrs, max(addrs-used[e.GetId()], 0), orDash(e.GetOrigin()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if un := r.GetUnmanaged(); len(un) > 0 {
		fmt.Fprintf(w, "\nENIs left alone (%d):\n", len(un))
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CARD\tDEVICE\tENI\tWHY")
		for _, e := range un {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\n", e.GetNetworkCard(), e.GetDeviceNumber(), e.GetId(), e.GetReason())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if pe := r.GetPodEni(); pe != nil {
		if err := printPodENI(w, pe); err != nil {
			return err
		}
	}

	if pr := r.GetPendingReleases(); len(pr) > 0 {
		fmt.Fprintf(w, "\nReleases EC2 has not confirmed (%d ENIs; out of the pool, retried with backoff):\n", len(pr))
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ENI\tADDRESSES\tATTEMPTS\tNEXT-RETRY\tLAST-ERROR")
		for _, p := range pr {
			next := time.Unix(p.GetNextRetryUnix(), 0).UTC().Format(time.RFC3339)
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", p.GetEniId(), strings.Join(p.GetItems(), ","), p.GetAttempts(), next,
				orDash(p.GetLastError()))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if lost := r.GetLostPrefixes(); len(lost) > 0 {
		fmt.Fprintf(w, "\nPrefixes EC2 no longer shows (kept for their pods, no new pod gets an address of them): %s\n",
			strings.Join(lost, ", "))
	}

	fmt.Fprintf(w, "\nAllocations (%d):\n", len(r.GetAllocations()))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tIP\tENI\tASSIGNED")
	for _, a := range r.GetAllocations() {
		pod := a.GetPodNamespace() + "/" + a.GetPodName()
		if a.GetPodName() == "" {
			pod = "container " + shortID(a.GetKey().GetContainerId())
		}
		assigned := "-"
		if a.GetAssignedUnix() > 0 {
			assigned = time.Unix(a.GetAssignedUnix(), 0).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", pod, orDash(a.GetIp()), orDash(a.GetEniId()), assigned)
	}
	return tw.Flush()
}

// eniAddresses counts the pod addresses an ENI holds: its secondary IPs plus
// every address of its prefixes.
func eniAddresses(e *ipamv1.IntrospectENI) int {
	n := len(e.GetIps())
	for _, s := range e.GetPrefixes() {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			n += 1 << (32 - p.Bits())
		}
	}
	return n
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return orDash(id)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printPodENI is security groups for pods (ENABLE_POD_ENI): the trunk ENI
// AWS's VPC resource controller attached and the branch ENIs it gave this
// node's pods, which the daemon never manages.
func printPodENI(w io.Writer, pe *ipamv1.IntrospectPodENI) error {
	fmt.Fprintf(w, "\nSecurity groups for pods (trunk and branch ENIs of the VPC resource controller):\n")
	if p := pe.GetProblem(); p != "" {
		fmt.Fprintf(w, "  %s\n", p)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tENI\tVLAN\tIP\tMAC\tORIGIN")
	if t := pe.GetTrunk(); t != nil {
		fmt.Fprintf(tw, "%d\t%s\t-\t-\t%s\t%s\n", t.GetDeviceNumber(), t.GetId(), orDash(pe.GetTrunkMac()), "trunk")
	} else {
		fmt.Fprintf(tw, "-\t-\t-\t-\t-\t%s\n", "trunk: not attached yet")
	}
	for _, b := range pe.GetBranches() {
		fmt.Fprintf(tw, "-\t%s\t%d\t%s\t%s\tbranch of pod %s/%s\n", b.GetEniId(), b.GetVlanId(), orDash(b.GetIp()), orDash(b.GetMac()),
			b.GetPodNamespace(), b.GetPodName())
	}
	return tw.Flush()
}
