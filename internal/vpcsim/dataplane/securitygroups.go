package dataplane

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
)

// Permission is one ingress permission of a security group: traffic of a
// protocol (and port range) from CIDRs or from the ENIs of source groups.
type Permission struct {
	Protocol         string // "tcp", "udp", "icmp" or "-1" (all)
	FromPort, ToPort int    // tcp and udp only
	CIDRs            []netip.Prefix
	Groups           []string
}

// SetSecurityGroups makes the router enforce security groups as EC2 does:
// a packet to an ENI passes only if one of the ENI's groups has an ingress
// permission for it; replies of allowed flows pass (stateful); what an ENI
// sends is not filtered (egress allows everything). groups are the
// permissions of every group, eniGroups the groups of every attached ENI.
// A source group matches every address of its member ENIs (primary,
// secondary, and inside delegated prefixes), kept current as addresses
// change. Until the first call nothing is filtered.
func (f *Fabric) SetSecurityGroups(groups map[string][]Permission, eniGroups map[string][]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	f.sgPerms, f.sgENIs = groups, eniGroups
	if err := f.syncMembersLocked(); err != nil {
		return err
	}
	return f.renderSGLocked()
}

func memberSet(group string) string { return "M-" + group }

// syncMembersLocked makes each source group's ipset hold exactly the
// addresses of its member ENIs.
func (f *Fabric) syncMembersLocked() error {
	if f.sgPerms == nil {
		return nil
	}
	sources := map[string]bool{}
	for _, perms := range f.sgPerms {
		for _, p := range perms {
			for _, g := range p.Groups {
				sources[g] = true
			}
		}
	}
	for g := range sources {
		want := map[netip.Prefix]bool{}
		for id, gs := range f.sgENIs {
			e, ok := f.enis[id]
			if !ok || !contains(gs, g) {
				continue
			}
			want[netip.PrefixFrom(e.PrimaryIP, 32)] = true
			for a := range e.secondary {
				want[netip.PrefixFrom(a, 32)] = true
			}
			for p := range e.prefixes {
				want[p] = true
			}
		}
		if err := f.syncSetLocked(memberSet(g), want); err != nil {
			return err
		}
	}
	return nil
}

func (f *Fabric) syncSetLocked(name string, want map[netip.Prefix]bool) error {
	if err := f.rtr.IpsetCreate(name, "hash:net", netlink.IpsetCreateOptions{Replace: true}); err != nil {
		return fmt.Errorf("dataplane: ipset create %s: %w", name, err)
	}
	nets := make([]netip.Prefix, 0, len(want))
	for p := range want {
		nets = append(nets, p)
	}
	if err := netlinkutil.SyncNetSet(f.rtr, name, nets); err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// renderSGLocked writes the router's whole filter table in one
// iptables-restore (atomic: no packet sees half the rules).
func (f *Fabric) renderSGLocked() error {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:VPCSIM-SG - [0:0]\n")
	var ids []string
	for id := range f.sgENIs {
		if _, ok := f.enis[id]; ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	var groups []string
	for g := range f.sgPerms {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, id := range ids {
		fmt.Fprintf(&b, ":E-%s - [0:0]\n", id)
	}
	for _, g := range groups {
		fmt.Fprintf(&b, ":G-%s - [0:0]\n", g)
	}
	b.WriteString("-A FORWARD -j VPCSIM-SG\n-A VPCSIM-SG -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n")
	for _, id := range ids {
		fmt.Fprintf(&b, "-A VPCSIM-SG -o %s -j E-%s\n", f.enis[id].rlink, id)
	}
	for _, id := range ids {
		for _, g := range f.sgENIs[id] {
			if _, ok := f.sgPerms[g]; ok {
				fmt.Fprintf(&b, "-A E-%s -j G-%s\n", id, g)
			}
		}
		fmt.Fprintf(&b, "-A E-%s -j DROP\n", id)
	}
	for _, g := range groups {
		for _, p := range f.sgPerms[g] {
			match, err := protoMatch(p)
			if err != nil {
				return fmt.Errorf("dataplane: group %s: %w", g, err)
			}
			for _, c := range p.CIDRs {
				fmt.Fprintf(&b, "-A G-%s %s-s %s -j ACCEPT\n", g, match, c)
			}
			for _, src := range p.Groups {
				fmt.Fprintf(&b, "-A G-%s %s-m set --match-set %s src -j ACCEPT\n", g, match, memberSet(src))
			}
		}
	}
	b.WriteString("COMMIT\n")
	cmd := exec.Command("ip", "netns", "exec", f.rtrName, "iptables-restore", "-w")
	cmd.Stdin = strings.NewReader(b.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("dataplane: security group rules in the router: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func protoMatch(p Permission) (string, error) {
	switch p.Protocol {
	case "-1", "all":
		return "", nil
	case "icmp":
		return "-p icmp ", nil
	case "tcp", "udp":
		if p.FromPort < 0 || p.ToPort > 65535 || p.FromPort > p.ToPort {
			return "", fmt.Errorf("port range %d-%d", p.FromPort, p.ToPort)
		}
		return fmt.Sprintf("-p %s -m %s --dport %d:%d ", p.Protocol, p.Protocol, p.FromPort, p.ToPort), nil
	}
	return "", fmt.Errorf("protocol %q", p.Protocol)
}
