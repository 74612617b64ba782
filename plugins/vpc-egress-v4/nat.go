package main

// The per-attachment iptables rules: a chain named att.chain() in the nat
// table (masquerade) and one of the same name in the filter table
// (isolation), so both live and die together. Each invocation reads or
// writes them with as few iptables runs as it can (each is a process
// start, and on the nft backend a ruleset round trip): ADD writes both
// chains and their jumps in one iptables-restore; DEL reads the tables
// once and removes what names the chain in one more.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"

	"github.com/vpcchain/vpcchain/internal/snat"
)

// defaultPath is where iptables is looked for when the runtime passed no
// PATH (the CNI spec does not promise one).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// natBackend is the iptables backend the node's rules live in (the one the
// daemon's SNAT rules use too), found once per invocation.
type natBackend struct {
	ipt  *iptables.IPTables
	mode string // "nft" or "legacy"
}

var (
	natOnce sync.Once
	natB    *natBackend
	natErr  error
)

func natTable() (*natBackend, error) {
	natOnce.Do(func() {
		if os.Getenv("PATH") == "" {
			_ = os.Setenv("PATH", defaultPath)
		}
		ipt, mode, err := snat.IPTablesFor(snat.ModeAuto)
		if err != nil {
			natErr = fmt.Errorf("vpc-egress-v4: iptables: %w", err)
			return
		}
		natB = &natBackend{ipt: ipt, mode: mode}
	})
	return natB, natErr
}

// run runs iptables-<mode>-<tool> (save or restore) on the nat table.
func (b *natBackend) run(tool, stdin string, args ...string) (string, error) {
	cmd := exec.Command("iptables-"+b.mode+"-"+tool, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("iptables-%s-%s: %w: %s", b.mode, tool, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// setupRules writes the attachment's chains and their jumps. Declaring a
// chain in a --noflush restore empties it if an earlier attempt left it.
//
// nat: what the pod sends from addr leaves with the node's IPv4 address,
// except to its own range and to multicast.
//
// filter: the egress path carries only what the pod opens to outside the
// range. NetworkPolicy applies on the pod's main interface, not on this
// veth, so a neighbour's egress address must not be reachable this way:
// from the pod, nothing to the range (the other pods' egress addresses,
// the gateway) is forwarded; to the pod, only replies and related ICMP
// are. The jumps go first in FORWARD, where no other rule's ACCEPT can
// come before them.
func setupRules(att attachment, addr *net.IPNet) error {
	b, err := natTable()
	if err != nil {
		return err
	}
	chain, c, veth := att.chain(), att.comment(), att.hostVeth()
	rangeNet := &net.IPNet{IP: addr.IP.Mask(addr.Mask), Mask: addr.Mask}
	var r strings.Builder
	fmt.Fprintf(&r, "*nat\n:%s - [0:0]\n", chain)
	fmt.Fprintf(&r, "-A %s -d %s -m comment --comment %s -j RETURN\n", chain, rangeNet, c)
	fmt.Fprintf(&r, "-A %s -d 224.0.0.0/4 -m comment --comment %s -j RETURN\n", chain, c)
	fmt.Fprintf(&r, "-A %s -m comment --comment %s -j MASQUERADE\n", chain, c)
	fmt.Fprintf(&r, "-A POSTROUTING -s %s/32 -m comment --comment %s -j %s\nCOMMIT\n", addr.IP, c, chain)
	fmt.Fprintf(&r, "*filter\n:%s - [0:0]\n", chain)
	fmt.Fprintf(&r, "-A %s -i %s -d %s -m comment --comment %s -j DROP\n", chain, veth, rangeNet, c)
	fmt.Fprintf(&r, "-A %s -o %s -m conntrack ! --ctstate RELATED,ESTABLISHED -m comment --comment %s -j DROP\n", chain, veth, c)
	fmt.Fprintf(&r, "-I FORWARD 1 -i %s -m comment --comment %s -j %s\n", veth, c, chain)
	fmt.Fprintf(&r, "-I FORWARD 1 -o %s -m comment --comment %s -j %s\nCOMMIT\n", veth, c, chain)
	if _, err := b.run("restore", r.String(), "--noflush", "--wait"); err != nil {
		return fmt.Errorf("vpc-egress-v4: nat and filter rules for %s: %w", addr.IP, err)
	}
	return nil
}

// ruleTables are the tables that hold a chain of each attachment.
var ruleTables = []string{"nat", "filter"}

// dropRules removes the chains named chain and every rule jumping to them
// (whatever address or interface it names: DEL may not know them).
func dropRules(chain string) error {
	b, err := natTable()
	if err != nil {
		return err
	}
	saved, err := b.save()
	if err != nil {
		return err
	}
	var r strings.Builder
	for _, table := range ruleTables {
		var t strings.Builder
		exists := false
		for _, l := range saved[table] {
			switch {
			case strings.HasPrefix(l, ":"+chain+" "):
				exists = true
			case strings.HasPrefix(l, "-A ") && strings.HasSuffix(l, " -j "+chain):
				t.WriteString("-D" + strings.TrimPrefix(l, "-A") + "\n")
			}
		}
		if exists {
			fmt.Fprintf(&t, "-F %s\n-X %s\n", chain, chain)
		}
		if t.Len() > 0 {
			fmt.Fprintf(&r, "*%s\n%sCOMMIT\n", table, t.String())
		}
	}
	if r.Len() == 0 {
		return nil
	}
	if _, err := b.run("restore", r.String(), "--noflush", "--wait"); err != nil {
		return fmt.Errorf("vpc-egress-v4: delete chain %s: %w", chain, err)
	}
	return nil
}

// save reads the rules of ruleTables in one run, as lines by table.
func (b *natBackend) save() (map[string][]string, error) {
	out, err := b.run("save", "")
	if err != nil {
		return nil, fmt.Errorf("vpc-egress-v4: read the iptables rules: %w", err)
	}
	tables := map[string][]string{}
	table := ""
	for _, l := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(l, "*"); ok {
			table = name
			continue
		}
		if slices.Contains(ruleTables, table) {
			tables[table] = append(tables[table], l)
		}
	}
	return tables, nil
}

// chains lists the chains of this plugin (chainName) in either table.
func chains() ([]string, error) {
	b, err := natTable()
	if err != nil {
		return nil, err
	}
	saved, err := b.save()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, table := range ruleTables {
		for _, l := range saved[table] {
			decl, ok := strings.CutPrefix(l, ":") // ":<chain> <policy> [<packets>:<bytes>]"
			if name, _, _ := strings.Cut(decl, " "); ok && chainName.MatchString(name) && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	return out, nil
}
