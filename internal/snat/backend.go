package snat

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Backend modes (VPCCHAIN_IPTABLES_MODE). A node's rules live in one of two
// kernel interfaces, nf_tables or the legacy xtables one, and an image
// carries both iptables flavours. Our rules must go where kube-proxy's are:
// the connmark rule must come after kube-proxy's DNAT in nat PREROUTING,
// an order that does not exist between two backends.
const (
	ModeAuto   = "auto"
	ModeNFT    = "nft"
	ModeLegacy = "legacy"
)

// ValidMode reports whether m is a mode IPTablesFor accepts.
func ValidMode(m string) bool { return m == ModeAuto || m == ModeNFT || m == ModeLegacy }

// IPTablesFor returns the IPv4 iptables handle of mode ("nft" runs
// iptables-nft, "legacy" iptables-legacy, "auto" the one DetectMode picks)
// and the backend it drives ("nft" or "legacy").
func IPTablesFor(mode string) (*iptables.IPTables, string, error) {
	switch mode {
	case ModeAuto, "":
		mode = DetectMode()
	case ModeNFT, ModeLegacy:
	default:
		return nil, "", fmt.Errorf("iptables mode %q: want auto, nft or legacy", mode)
	}
	path := "iptables"
	switch mode {
	case ModeNFT:
		path = "iptables-nft"
	case ModeLegacy:
		path = "iptables-legacy"
	}
	ipt, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Path(path))
	if err != nil {
		return nil, "", err
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return nil, "", fmt.Errorf("%s --version: %w", path, err)
	}
	if strings.Contains(string(out), "nf_tables") {
		return ipt, ModeNFT, nil
	}
	return ipt, ModeLegacy, nil
}

// DetectMode picks the backend the node's other rules are in, as
// kube-proxy's iptables wrapper does: the kubelet's marker chains
// (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY) decide; else the backend with
// more rules that are not ours; else "" (the iptables on PATH: the node's
// own default when nothing has been set up yet).
func DetectMode() string {
	nft, nftHint := inspect("iptables-nft-save")
	legacy, legacyHint := inspect("iptables-legacy-save")
	switch {
	case nftHint && !legacyHint:
		return ModeNFT
	case legacyHint && !nftHint:
		return ModeLegacy
	case legacy > nft:
		return ModeLegacy
	case nft > legacy:
		return ModeNFT
	}
	return ""
}

// inspect counts the rules (not ours) a save command shows and whether the
// kubelet's marker chains are among them; a missing command counts -1.
func inspect(save string) (rules int, hint bool) {
	out, err := exec.Command(save).Output()
	if err != nil {
		return -1, false
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, ":KUBE-IPTABLES-HINT ") || strings.HasPrefix(l, ":KUBE-KUBELET-CANARY ") {
			hint = true
		}
		if strings.HasPrefix(l, "-A ") && !strings.Contains(l, commentPrefix) && !strings.Contains(l, " "+SNATChain) &&
			!strings.Contains(l, " "+ConnmarkChain) {
			rules++
		}
	}
	return rules, hint
}
