package snat

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// inNS runs f in a fresh network namespace (iptables and ipsets are per
// namespace: the root namespace is never touched).
func inNS(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: creates a network namespace")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close(); _ = testutils.UnmountNS(n) })
	if err := n.Do(func(ns.NetNS) error { f(); return nil }); err != nil {
		t.Fatal(err)
	}
}

// ours lists the vpcchain rules and chains, sorted.
func ours(t *testing.T) []string {
	t.Helper()
	ipt, err := IPTables()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tc := range [][2]string{{"nat", ""}, {"mangle", ""}} {
		chains, err := ipt.ListChains(tc[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chains {
			lines, err := ipt.List(tc[0], ch)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range lines {
				if strings.Contains(l, "vpcchain") || strings.Contains(l, "VPCCHAIN") {
					out = append(out, tc[0]+" "+l)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func cfg() NodeConfig {
	return NodeConfig{PrimaryIP: netip.MustParseAddr("10.0.0.4"), PrimaryInterface: "eth0",
		VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}, Randomize: "prng", Mark: DefaultMark, VethPrefix: "eni"}
}

// backends runs f with the node's iptables (nf_tables here) and, when the
// machine has it, with iptables-legacy first on PATH.
func backends(t *testing.T, f func(t *testing.T)) {
	t.Run("default", f)
	legacy := "/usr/sbin/iptables-legacy"
	if _, err := os.Stat(legacy); err != nil {
		return
	}
	t.Run("legacy", func(t *testing.T) {
		dir := t.TempDir()
		for _, n := range []string{"", "-save", "-restore"} {
			if err := os.Symlink(legacy+n, filepath.Join(dir, "iptables"+n)); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
		f(t)
	})
}

func TestReconcileIsDeclarative(t *testing.T) { backends(t, testReconcileIsDeclarative) }

func testReconcileIsDeclarative(t *testing.T) {
	inNS(t, func() {
		ipt, err := IPTables()
		if err != nil {
			t.Fatal(err)
		}
		// Somebody else's rule must survive everything.
		if err := ipt.Append("nat", "PREROUTING", "-m", "comment", "--comment", "kube-proxy", "-j", "RETURN"); err != nil {
			t.Fatal(err)
		}
		c := cfg()
		if err := Reconcile(ipt, c); err != nil {
			t.Fatal(err)
		}
		first := ours(t)
		if len(first) != 2+5+3 { // 2 chain headers, 5 built-in rules, 3 chain rules
			t.Fatalf("rules after reconcile:\n%s", strings.Join(first, "\n"))
		}
		if err := Reconcile(ipt, c); err != nil {
			t.Fatal(err)
		}
		if again := ours(t); strings.Join(again, "\n") != strings.Join(first, "\n") {
			t.Fatalf("second reconcile changed the rules:\n%s", strings.Join(again, "\n"))
		}
		// A new mark replaces the old rules; new CIDRs touch only the set.
		c.Mark = 0x100
		c.VPCCIDRs = append(c.VPCCIDRs, netip.MustParsePrefix("100.64.0.0/16"))
		if err := Reconcile(ipt, c); err != nil {
			t.Fatal(err)
		}
		changed := ours(t)
		if len(changed) != len(first) || strings.Contains(strings.Join(changed, "\n"), "0x80") {
			t.Fatalf("after a mark change:\n%s", strings.Join(changed, "\n"))
		}
		// External SNAT: nothing of ours is left, the other rule stays.
		c.ExternalSNAT = true
		if err := Reconcile(ipt, c); err != nil {
			t.Fatal(err)
		}
		if left := ours(t); len(left) != 0 {
			t.Fatalf("external SNAT left:\n%s", strings.Join(left, "\n"))
		}
		if ok, _ := ipt.Exists("nat", "PREROUTING", "-m", "comment", "--comment", "kube-proxy", "-j", "RETURN"); !ok {
			t.Fatal("another component's rule was removed")
		}
		if err := AddPod(netip.MustParseAddr("10.0.0.9")); err == nil {
			t.Fatal("AddPod succeeded without the daemon's set")
		}
		if out, _ := exec.Command("iptables", "-V").Output(); testing.Verbose() {
			t.Logf("backend: %s", out)
		}
	})
}

func TestPods(t *testing.T) {
	inNS(t, func() {
		ipt, _ := IPTables()
		if err := Reconcile(ipt, cfg()); err != nil {
			t.Fatal(err)
		}
		before := ours(t)
		for i := 0; i < 200; i++ {
			if err := AddPod(netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i%250 + 1)})); err != nil {
				t.Fatal(err)
			}
		}
		if after := ours(t); len(after) != len(before) {
			t.Fatalf("200 pods changed the rule count: %d -> %d", len(before), len(after))
		}
		ip := netip.MustParseAddr("10.0.0.1")
		if ok, err := HasPod(ip); err != nil || !ok {
			t.Fatalf("HasPod %v %v", ok, err)
		}
		for i := 0; i < 2; i++ { // idempotent
			if err := DelPod(ip); err != nil {
				t.Fatal(err)
			}
		}
		if ok, _ := HasPod(ip); ok {
			t.Fatal("pod still in the set")
		}
	})
}

func TestPrunePods(t *testing.T) {
	inNS(t, func() {
		// No set yet (external-SNAT mode): nothing to prune, no error.
		if err := PrunePods(func(netip.Addr) bool { return false }); err != nil {
			t.Fatalf("prune without the set: %v", err)
		}
		ipt, _ := IPTables()
		if err := Reconcile(ipt, cfg()); err != nil {
			t.Fatal(err)
		}
		live, gone := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
		for _, ip := range []netip.Addr{live, gone} {
			if err := AddPod(ip); err != nil {
				t.Fatal(err)
			}
		}
		if err := PrunePods(func(ip netip.Addr) bool { return ip == live }); err != nil {
			t.Fatal(err)
		}
		for ip, want := range map[netip.Addr]bool{live: true, gone: false} {
			if has, err := HasPod(ip); err != nil || has != want {
				t.Errorf("after prune, %s in the set: %v (%v), want %v", ip, has, err, want)
			}
		}
	})
}
