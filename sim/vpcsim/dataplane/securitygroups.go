package dataplane

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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
	if err := f.renderFilter4Locked(); err != nil {
		return err
	}
	return f.renderFilter6Locked()
}

// memberSet names the ipset of a group's member addresses of one family.
func memberSet(group string, v6 bool) string {
	if v6 {
		return "M6-" + group
	}
	return "M-" + group
}

// syncMembersLocked makes each source group's ipsets hold exactly the
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
		want4, want6 := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
		for id, gs := range f.sgENIs {
			e, ok := f.enis[id]
			if !ok || !contains(gs, g) {
				continue
			}
			want4[netip.PrefixFrom(e.PrimaryIP, 32)] = true
			for a := range e.secondary {
				want4[netip.PrefixFrom(a, 32)] = true
			}
			for p := range e.prefixes {
				want4[p] = true
			}
			for a := range e.ipv6 {
				want6[netip.PrefixFrom(a, 128)] = true
			}
			for p := range e.prefixes6 {
				want6[p] = true
			}
		}
		if err := f.syncSetLocked(memberSet(g, false), unix.AF_INET, want4); err != nil {
			return err
		}
		if err := f.syncSetLocked(memberSet(g, true), unix.AF_INET6, want6); err != nil {
			return err
		}
	}
	return nil
}

func (f *Fabric) syncSetLocked(name string, family uint8, want map[netip.Prefix]bool) error {
	if err := f.rtr.IpsetCreate(name, "hash:net", netlink.IpsetCreateOptions{Replace: true, Family: family}); err != nil {
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

// renderFilter4Locked writes the router's whole IPv4 filter table in one
// iptables-restore (atomic: no packet sees half the rules).
func (f *Fabric) renderFilter4Locked() error {
	if f.sgPerms == nil {
		return nil
	}
	rules, err := f.sgRulesLocked(false)
	if err != nil {
		return err
	}
	table := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + rules + "COMMIT\n"
	if err := iptablesRestore(f.rtrName, "iptables-restore", table); err != nil {
		return fmt.Errorf("dataplane: security group rules in the router: %w", err)
	}
	return nil
}

// renderFilter6Locked writes the router's whole IPv6 filter table: the
// egress-only internet gateway (from outside only replies pass), then the
// security groups if any are set.
func (f *Fabric) renderFilter6Locked() error {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:VPCSIM-EIGW - [0:0]\n")
	fmt.Fprintf(&b, "-A FORWARD -i %s -j VPCSIM-EIGW\n", RouterOutsideLink)
	b.WriteString("-A VPCSIM-EIGW -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n-A VPCSIM-EIGW -j DROP\n")
	if f.sgPerms != nil {
		rules, err := f.sgRulesLocked(true)
		if err != nil {
			return err
		}
		b.WriteString(rules)
	}
	b.WriteString("COMMIT\n")
	if err := iptablesRestore(f.rtrName, "ip6tables-restore", b.String()); err != nil {
		return fmt.Errorf("dataplane: IPv6 filter rules in the router: %w", err)
	}
	return nil
}

// sgRulesLocked renders the security-group chains of one family (chain
// declarations and rules, for a filter table).
func (f *Fabric) sgRulesLocked(v6 bool) (string, error) {
	var b strings.Builder
	b.WriteString(":VPCSIM-SG - [0:0]\n")
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
			match, ok, err := protoMatch(p, v6)
			if err != nil {
				return "", fmt.Errorf("dataplane: group %s: %w", g, err)
			}
			if !ok {
				continue
			}
			for _, c := range p.CIDRs {
				if c.Addr().Is6() == v6 {
					fmt.Fprintf(&b, "-A G-%s %s-s %s -j ACCEPT\n", g, match, c)
				}
			}
			for _, src := range p.Groups {
				fmt.Fprintf(&b, "-A G-%s %s-m set --match-set %s src -j ACCEPT\n", g, match, memberSet(src, v6))
			}
		}
	}
	return b.String(), nil
}

// protoMatch is a permission's protocol match for one family; ok is false
// when the protocol does not exist in that family (EC2's "icmp" is ICMP for
// IPv4, "icmpv6" is ICMPv6).
func protoMatch(p Permission, v6 bool) (match string, ok bool, err error) {
	switch p.Protocol {
	case "-1", "all":
		return "", true, nil
	case "icmp", "1":
		return "-p icmp ", !v6, nil
	case "icmpv6", "58":
		return "-p ipv6-icmp ", v6, nil
	case "tcp", "udp":
		if p.FromPort < 0 || p.ToPort > 65535 || p.FromPort > p.ToPort {
			return "", false, fmt.Errorf("port range %d-%d", p.FromPort, p.ToPort)
		}
		return fmt.Sprintf("-p %s -m %s --dport %d:%d ", p.Protocol, p.Protocol, p.FromPort, p.ToPort), true, nil
	}
	return "", false, fmt.Errorf("protocol %q", p.Protocol)
}

// iptablesRestore feeds rules to tool (iptables-restore or
// ip6tables-restore) inside the namespace; only the tables named in rules
// are replaced.
func iptablesRestore(nsName, tool, rules string) error {
	cmd := exec.Command("ip", "netns", "exec", nsName, tool, "-w")
	cmd.Stdin = strings.NewReader(rules)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", tool, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
