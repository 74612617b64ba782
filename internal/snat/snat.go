// Package snat owns vpcchain's node-level NAT and connmark state, shared by
// the daemon (which reconciles the node-level rules) and the vpc-snat plugin
// (which adds and removes one pod address per ADD/DEL).
//
// Per-packet cost does not grow with pods: every rule matches ipsets, and a
// pod is one entry in a hash set.
//
//	nat POSTROUTING  -j VPCCHAIN-SNAT
//	nat VPCCHAIN-SNAT  src in vpcchain-pods, dst not in vpcchain-nosnat, dst not local
//	                   -> SNAT to the node's primary IP [--random-fully|--random]
//	nat PREROUTING   -i <veth prefix>+ -j VPCCHAIN-CONNMARK   (appended: after kube-proxy's DNAT)
//	nat VPCCHAIN-CONNMARK  dst in vpcchain-nosnat -> RETURN; else connmark |= mark
//	nat PREROUTING   connmark -> packet mark (first packet of a flow)
//	mangle PREROUTING  -i <primary> dst local (NodePort) -> connmark |= mark
//	mangle PREROUTING  -i <veth prefix>+ -> packet mark from connmark (replies, later packets)
//	ip rule 1024     fwmark mark/mark lookup main   (daemon, package hostnet/netlinkutil)
//
// Pod-initiated flows to outside the VPC and NodePort flows are so routed by
// the main table, out of the primary ENI, whatever ENI the pod's address is
// on: the only ENI whose address (the node's primary IP) EC2 lets them use.
// The connmark for pod flows is set in nat PREROUTING after kube-proxy's
// jump, so a Service DNAT'd to a VPC address is never marked (the reference's
// bug with secondary-ENI pods and Services).
//
// Every rule we put in a built-in chain carries a comment "vpcchain:<kind>:
// <config hash>"; reconciliation adds the current ones and deletes any other
// "vpcchain:" rule, so a changed config or mode leaves exactly its own rules
// and never touches anybody else's.
package snat

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/nodeconf"
)

// Names of what we own on a node.
const (
	PodSet        = "vpcchain-pods"
	NoSNATSet     = "vpcchain-nosnat"
	SNATChain     = "VPCCHAIN-SNAT"
	ConnmarkChain = "VPCCHAIN-CONNMARK"
	commentPrefix = "vpcchain:"
	// DefaultMark is the reference's connmark bit; kube-proxy uses
	// 0x4000/0x8000 and Calico 0xffff0000, so it collides with neither.
	DefaultMark uint32 = 0x80
	// DefaultNodeConfig is where the daemon writes NodeConfig.
	DefaultNodeConfig = nodeconf.DefaultSNATConfig
)

// NodeConfig is what the rules are built from. The daemon writes it (and
// rewrites it when the VPC's CIDRs change); the plugin reads it.
type NodeConfig struct {
	ExternalSNAT     bool           `json:"externalSNAT"`
	PrimaryIP        netip.Addr     `json:"primaryIP"`
	PrimaryInterface string         `json:"primaryInterface"`
	VPCCIDRs         []netip.Prefix `json:"vpcCIDRs"`
	ExcludeCIDRs     []netip.Prefix `json:"excludeCIDRs,omitempty"`
	Randomize        string         `json:"randomize"` // prng | hashrandom | none
	Mark             uint32         `json:"mark"`
	VethPrefix       string         `json:"vethPrefix"`
	// IPTablesMode is VPCCHAIN_IPTABLES_MODE: auto, nft or legacy.
	IPTablesMode string `json:"iptablesMode,omitempty"`
}

// Validate reports what is missing or wrong.
func (c NodeConfig) Validate() error {
	if c.ExternalSNAT {
		return nil
	}
	var errs []error
	if !c.PrimaryIP.Is4() {
		errs = append(errs, fmt.Errorf("primaryIP %v is not an IPv4 address", c.PrimaryIP))
	}
	if c.PrimaryInterface == "" {
		errs = append(errs, errors.New("primaryInterface is empty"))
	}
	if len(c.VPCCIDRs) == 0 {
		errs = append(errs, errors.New("vpcCIDRs is empty"))
	}
	if c.Mark == 0 {
		errs = append(errs, errors.New("mark is 0"))
	}
	if c.VethPrefix == "" {
		errs = append(errs, errors.New("vethPrefix is empty"))
	}
	switch c.Randomize {
	case "prng", "hashrandom", "none":
	default:
		errs = append(errs, fmt.Errorf("randomize %q: allowed prng, hashrandom, none", c.Randomize))
	}
	return errors.Join(errs...)
}

// WriteNodeConfig replaces path atomically (tmp + fsync + rename).
func WriteNodeConfig(path string, c NodeConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".snat-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ReadNodeConfig reads what WriteNodeConfig wrote.
func ReadNodeConfig(path string) (NodeConfig, error) {
	var c NodeConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// hash covers what the built-in rules are made of (not the CIDRs, which
// live in an ipset and change without touching any rule).
func (c NodeConfig) hash() string {
	b, _ := json.Marshal([]any{c.PrimaryIP, c.PrimaryInterface, c.Randomize, c.Mark, c.VethPrefix})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:4])
}

// rule is one rule in a table/chain with its comment kind.
type rule struct {
	table, chain, kind string
	spec               []string
}

func (c NodeConfig) comment(kind string) []string {
	return []string{"-m", "comment", "--comment", commentPrefix + kind + ":" + c.hash()}
}

func (c NodeConfig) markMask() string { return fmt.Sprintf("0x%x/0x%x", c.Mark, c.Mark) }

// builtinRules are our rules in the built-in chains.
func (c NodeConfig) builtinRules() []rule {
	veths := c.VethPrefix + "+"
	return []rule{
		{"nat", "POSTROUTING", "snat", append(c.comment("snat"), "-j", SNATChain)},
		{"nat", "PREROUTING", "pod-flows", append([]string{"-i", veths}, append(c.comment("pod-flows"), "-j", ConnmarkChain)...)},
		{"nat", "PREROUTING", "restore-first", append(c.comment("restore-first"),
			"-j", "CONNMARK", "--restore-mark", "--mask", fmt.Sprintf("0x%x", c.Mark))},
		{"mangle", "PREROUTING", "nodeport", append([]string{"-i", c.PrimaryInterface, "-m", "addrtype", "--dst-type", "LOCAL", "--limit-iface-in"},
			append(c.comment("nodeport"), "-j", "CONNMARK", "--set-xmark", c.markMask())...)},
		{"mangle", "PREROUTING", "restore", append([]string{"-i", veths}, append(c.comment("restore"),
			"-j", "CONNMARK", "--restore-mark", "--mask", fmt.Sprintf("0x%x", c.Mark))...)},
	}
}

// chainRules are the contents of our own chains.
func (c NodeConfig) chainRules(randomFully bool) map[string][][]string {
	snat := []string{"-m", "set", "--match-set", PodSet, "src", "-m", "set", "!", "--match-set", NoSNATSet, "dst",
		"-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "SNAT", "--to-source", c.PrimaryIP.String()}
	switch {
	case c.Randomize == "prng" && randomFully:
		snat = append(snat, "--random-fully")
	case c.Randomize == "prng" || c.Randomize == "hashrandom":
		snat = append(snat, "--random")
	}
	return map[string][][]string{
		SNATChain: {snat},
		ConnmarkChain: {
			{"-m", "set", "--match-set", NoSNATSet, "dst", "-j", "RETURN"},
			{"-j", "CONNMARK", "--set-xmark", c.markMask()},
		},
	}
}

// IPTables returns the IPv4 iptables handle (nf_tables or legacy, whichever
// the node's iptables binary is).
func IPTables() (*iptables.IPTables, error) {
	return iptables.NewWithProtocol(iptables.ProtocolIPv4)
}

// Reconcile makes the node's state exactly what c asks for: the SNAT and
// connmark rules in SNAT mode, nothing of ours in external-SNAT mode. It is
// idempotent and leaves rules that are not ours alone.
func Reconcile(ipt *iptables.IPTables, c NodeConfig) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("SNAT node config: %w", err)
	}
	if c.ExternalSNAT {
		return Remove(ipt)
	}
	if err := ensureSet(PodSet, "hash:ip"); err != nil {
		return err
	}
	if err := ensureSet(NoSNATSet, "hash:net"); err != nil {
		return err
	}
	if err := netlinkutil.SyncNetSet(nil, NoSNATSet, append(slices.Clone(c.VPCCIDRs), c.ExcludeCIDRs...)); err != nil {
		return err
	}
	// Own chains first, so the jumps never point at a missing chain.
	for chain, want := range c.chainRules(ipt.HasRandomFully()) {
		if err := syncChain(ipt, "nat", chain, want); err != nil {
			return err
		}
	}
	want := map[string]bool{}
	for _, r := range c.builtinRules() {
		if err := ipt.AppendUnique(r.table, r.chain, r.spec...); err != nil {
			return fmt.Errorf("iptables -t %s -A %s %s: %w", r.table, r.chain, strings.Join(r.spec, " "), err)
		}
		want[commentPrefix+r.kind+":"+c.hash()] = true
	}
	return deleteOurs(ipt, func(comment string) bool { return !want[comment] })
}

// Remove deletes everything of ours: the rules in built-in chains, our
// chains and the ipsets.
func Remove(ipt *iptables.IPTables) error {
	if err := RemoveRules(ipt); err != nil {
		return err
	}
	for _, set := range []string{PodSet, NoSNATSet} {
		if err := netlink.IpsetDestroy(set); err != nil && !isNotExist(err) {
			return fmt.Errorf("destroy ipset %s: %w", set, err)
		}
	}
	return nil
}

// RemoveRules deletes our rules and chains from one backend and leaves the
// ipsets (kernel objects shared by both backends): the move of our rules to
// the other backend.
func RemoveRules(ipt *iptables.IPTables) error {
	if err := deleteOurs(ipt, func(string) bool { return true }); err != nil {
		return err
	}
	for _, chain := range []string{SNATChain, ConnmarkChain} {
		ok, err := ipt.ChainExists("nat", chain)
		if err != nil {
			return err
		}
		if ok {
			if err := ipt.ClearAndDeleteChain("nat", chain); err != nil {
				return fmt.Errorf("delete chain %s: %w", chain, err)
			}
		}
	}
	return nil
}

// deleteOurs deletes rules of built-in nat/mangle chains whose vpcchain
// comment stale() calls stale.
func deleteOurs(ipt *iptables.IPTables, stale func(comment string) bool) error {
	for _, tc := range [][2]string{{"nat", "POSTROUTING"}, {"nat", "PREROUTING"}, {"mangle", "PREROUTING"}} {
		lines, err := ipt.List(tc[0], tc[1])
		if err != nil {
			return fmt.Errorf("list %s %s: %w", tc[0], tc[1], err)
		}
		var ids []int
		id := 0
		for _, l := range lines {
			if !strings.HasPrefix(l, "-A ") {
				continue
			}
			id++
			if c := ourComment(l); c != "" && stale(c) {
				ids = append(ids, id)
			}
		}
		// Highest first, so the numbers of the rest stay valid.
		for i := len(ids) - 1; i >= 0; i-- {
			if err := ipt.DeleteById(tc[0], tc[1], ids[i]); err != nil {
				return fmt.Errorf("delete stale rule %d of %s %s: %w", ids[i], tc[0], tc[1], err)
			}
		}
	}
	return nil
}

// ourComment returns the vpcchain comment of a listed rule, or "".
func ourComment(line string) string {
	i := strings.Index(line, `--comment "`+commentPrefix)
	if i < 0 {
		i = strings.Index(line, `--comment `+commentPrefix)
		if i < 0 {
			return ""
		}
		rest := line[i+len(`--comment `):]
		return strings.Fields(rest)[0]
	}
	rest := line[i+len(`--comment "`):]
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return ""
}

// syncChain makes chain hold exactly want (rebuilt when anything differs).
func syncChain(ipt *iptables.IPTables, table, chain string, want [][]string) error {
	ok, err := ipt.ChainExists(table, chain)
	if err != nil {
		return err
	}
	if ok {
		lines, err := ipt.List(table, chain)
		if err != nil {
			return err
		}
		n := 0
		for _, l := range lines {
			if strings.HasPrefix(l, "-A ") {
				n++
			}
		}
		same := n == len(want)
		for _, r := range want {
			if !same {
				break
			}
			if same, err = ipt.Exists(table, chain, r...); err != nil {
				return err
			}
		}
		if same {
			return nil
		}
	}
	if err := ipt.ClearChain(table, chain); err != nil { // creates it if missing
		return fmt.Errorf("clear chain %s: %w", chain, err)
	}
	for _, r := range want {
		if err := ipt.Append(table, chain, r...); err != nil {
			return fmt.Errorf("iptables -t %s -A %s %s: %w", table, chain, strings.Join(r, " "), err)
		}
	}
	return nil
}

func ensureSet(name, typ string) error {
	err := netlink.IpsetCreate(name, typ, netlink.IpsetCreateOptions{Replace: true})
	if err != nil {
		return fmt.Errorf("create ipset %s (%s): %w", name, typ, err)
	}
	return nil
}

func isNotExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, netlink.ErrNotImplemented) ||
		strings.Contains(err.Error(), "no such file") || strings.Contains(err.Error(), "does not exist")
}

// ErrNotSetUp says the daemon has not created the node-level state yet.
var ErrNotSetUp = errors.New("the vpcchain daemon has not set up SNAT on this node yet")

// AddPod puts a pod address into the SNAT set.
func AddPod(ip netip.Addr) error {
	err := netlink.IpsetAdd(PodSet, &netlink.IPSetEntry{IP: net.IP(ip.AsSlice()), Replace: true})
	if err != nil && isNotExist(err) {
		return fmt.Errorf("ipset %s: %w", PodSet, ErrNotSetUp)
	}
	if err != nil {
		return fmt.Errorf("ipset add %s %s: %w", PodSet, ip, err)
	}
	return nil
}

// DelPod removes a pod address; absent is fine.
func DelPod(ip netip.Addr) error {
	err := netlink.IpsetDel(PodSet, &netlink.IPSetEntry{IP: net.IP(ip.AsSlice())})
	if err == nil || isNotExist(err) || strings.Contains(err.Error(), "not added") {
		return nil
	}
	has, terr := HasPod(ip)
	if terr == nil && !has {
		return nil
	}
	return fmt.Errorf("ipset del %s %s: %w", PodSet, ip, err)
}

// PrunePods removes from the SNAT set every address keep rejects: the
// daemon's way to drop addresses it no longer allocates, whatever put them
// there. A missing set (external-SNAT mode, not set up yet) is fine.
func PrunePods(keep func(netip.Addr) bool) error {
	res, err := netlink.IpsetList(PodSet)
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return fmt.Errorf("list ipset %s: %w", PodSet, err)
	}
	var errs []error
	for _, e := range res.Entries {
		ip, ok := netip.AddrFromSlice(e.IP.To4())
		if !ok || keep(ip) {
			continue
		}
		if err := DelPod(ip); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// HasPod reports whether ip is in the SNAT set.
func HasPod(ip netip.Addr) (bool, error) {
	ok, err := netlink.IpsetTest(PodSet, &netlink.IPSetEntry{IP: net.IP(ip.AsSlice())})
	if err != nil && isNotExist(err) {
		return false, fmt.Errorf("ipset %s: %w", PodSet, ErrNotSetUp)
	}
	return ok, err
}
