package main

// The per-attachment nat rules. Each invocation reads or writes them with
// as few iptables runs as it can (each is a process start, and on the
// nft backend a ruleset round trip): ADD writes the chain and the
// POSTROUTING jump in one iptables-restore; DEL reads the nat table once
// and removes what names the chain in one more.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
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

// setupMasquerade makes what the pod sends from addr leave with the node's
// IPv4 address, except to its own range and to multicast. Declaring the
// chain in a --noflush restore empties it if an earlier attempt left it.
func setupMasquerade(att attachment, addr *net.IPNet) error {
	b, err := natTable()
	if err != nil {
		return err
	}
	chain, c := att.chain(), att.comment()
	rangeNet := &net.IPNet{IP: addr.IP.Mask(addr.Mask), Mask: addr.Mask}
	var r strings.Builder
	fmt.Fprintf(&r, "*nat\n:%s - [0:0]\n", chain)
	fmt.Fprintf(&r, "-A %s -d %s -m comment --comment %s -j RETURN\n", chain, rangeNet, c)
	fmt.Fprintf(&r, "-A %s -d 224.0.0.0/4 -m comment --comment %s -j RETURN\n", chain, c)
	fmt.Fprintf(&r, "-A %s -m comment --comment %s -j MASQUERADE\n", chain, c)
	fmt.Fprintf(&r, "-A POSTROUTING -s %s/32 -m comment --comment %s -j %s\nCOMMIT\n", addr.IP, c, chain)
	if _, err := b.run("restore", r.String(), "--noflush", "--wait"); err != nil {
		return fmt.Errorf("vpc-egress-v4: nat rules for %s: %w", addr.IP, err)
	}
	return nil
}

// dropMasquerade removes a nat chain of ours and every POSTROUTING rule
// jumping to it (whatever address it names: DEL may not know it).
func dropMasquerade(chain string) error {
	b, err := natTable()
	if err != nil {
		return err
	}
	saved, err := b.run("save", "", "-t", "nat")
	if err != nil {
		return fmt.Errorf("vpc-egress-v4: read the nat table: %w", err)
	}
	var r strings.Builder
	exists := false
	for _, l := range strings.Split(saved, "\n") {
		switch {
		case strings.HasPrefix(l, ":"+chain+" "):
			exists = true
		case strings.HasPrefix(l, "-A POSTROUTING ") && strings.HasSuffix(l, " -j "+chain):
			r.WriteString("-D" + strings.TrimPrefix(l, "-A") + "\n")
		}
	}
	if exists {
		fmt.Fprintf(&r, "-F %s\n-X %s\n", chain, chain)
	}
	if r.Len() == 0 {
		return nil
	}
	if _, err := b.run("restore", "*nat\n"+r.String()+"COMMIT\n", "--noflush", "--wait"); err != nil {
		return fmt.Errorf("vpc-egress-v4: delete nat chain %s: %w", chain, err)
	}
	return nil
}

// chains lists the nat chains of this plugin (chainName).
func chains() ([]string, error) {
	b, err := natTable()
	if err != nil {
		return nil, err
	}
	saved, err := b.run("save", "", "-t", "nat")
	if err != nil {
		return nil, fmt.Errorf("vpc-egress-v4: read the nat table: %w", err)
	}
	var out []string
	for _, l := range strings.Split(saved, "\n") {
		decl, ok := strings.CutPrefix(l, ":") // ":<chain> <policy> [<packets>:<bytes>]"
		if name, _, _ := strings.Cut(decl, " "); ok && chainName.MatchString(name) {
			out = append(out, name)
		}
	}
	return out, nil
}
