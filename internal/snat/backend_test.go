package snat

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func needLegacy(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/iptables-legacy"); err != nil {
		t.Fatal("iptables-legacy missing: the Debian iptables package has it (make deps)")
	}
}

// The backend follows the node's other rules, as kube-proxy's wrapper
// decides: the kubelet's marker chain first, else the backend with more
// rules that are not ours, else the iptables on PATH.
func TestDetectMode(t *testing.T) {
	needLegacy(t)
	cases := []struct {
		name  string
		setup [][]string
		want  string
	}{
		{"nothing anywhere", nil, ""},
		{"kubelet canary in legacy", [][]string{{"iptables-legacy", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY"}}, ModeLegacy},
		{"kubelet hint in nf_tables, more rules in legacy", [][]string{
			{"iptables-nft", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"},
			{"iptables-legacy", "-t", "nat", "-A", "PREROUTING", "-j", "RETURN"},
			{"iptables-legacy", "-t", "nat", "-A", "OUTPUT", "-j", "RETURN"}}, ModeNFT},
		{"more rules in legacy", [][]string{{"iptables-legacy", "-t", "nat", "-A", "PREROUTING", "-j", "RETURN"}}, ModeLegacy},
		{"more rules in nf_tables", [][]string{{"iptables-nft", "-t", "filter", "-A", "INPUT", "-j", "RETURN"}}, ModeNFT},
		{"only our own rules in legacy", [][]string{
			{"iptables-legacy", "-t", "nat", "-N", SNATChain},
			{"iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", commentPrefix + "snat:x", "-j", SNATChain}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inNS(t, func() {
				for _, c := range tc.setup {
					run(t, c...)
				}
				if got := DetectMode(); got != tc.want {
					t.Errorf("DetectMode() = %q, want %q", got, tc.want)
				}
			})
		})
	}
}

// IPTablesFor drives the backend asked for, whatever iptables on PATH is.
func TestIPTablesForDrivesTheBackend(t *testing.T) {
	needLegacy(t)
	inNS(t, func() {
		for _, mode := range []string{ModeNFT, ModeLegacy} {
			ipt, actual, err := IPTablesFor(mode)
			if err != nil || actual != mode {
				t.Fatalf("IPTablesFor(%s): %v, %v", mode, actual, err)
			}
			if err := ipt.NewChain("nat", "VPCCHAIN-"+strings.ToUpper(mode)); err != nil {
				t.Fatal(err)
			}
		}
		if out := run(t, "iptables-nft-save", "-t", "nat"); !strings.Contains(out, ":VPCCHAIN-NFT") || strings.Contains(out, ":VPCCHAIN-LEGACY") {
			t.Errorf("nf_tables:\n%s", out)
		}
		if out := run(t, "iptables-legacy-save", "-t", "nat"); !strings.Contains(out, ":VPCCHAIN-LEGACY") || strings.Contains(out, ":VPCCHAIN-NFT") {
			t.Errorf("legacy:\n%s", out)
		}
		if _, _, err := IPTablesFor("xtables"); err == nil {
			t.Error("mode xtables accepted")
		}
	})
}
