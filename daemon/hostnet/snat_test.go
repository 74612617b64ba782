package hostnet

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vpcchain/vpcchain/internal/snat"
)

// Our rules go where the node's other rules are, and follow them: when
// kube-proxy (here: the kubelet's canary chain) turns up in the other
// backend after the daemon set up SNAT, the next reconcile moves ours there
// and leaves none behind; the pods' SNAT set (shared by both) stays.
func TestSetupSNATFollowsTheNodesBackend(t *testing.T) {
	n := newNS(t)
	c := snat.NodeConfig{PrimaryIP: netip.MustParseAddr("10.0.0.4"), PrimaryInterface: "lo",
		VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}, Randomize: "prng", Mark: snat.DefaultMark,
		VethPrefix: "eni", IPTablesMode: snat.ModeAuto}
	save := func(cmd string) string {
		out, err := exec.Command(cmd, "-t", "nat").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		return string(out)
	}
	pod := netip.MustParseAddr("10.0.0.9")
	in(t, n, func() error {
		backendMu.Lock()
		backend = "" // this process's first SetupSNAT in this namespace
		backendMu.Unlock()
		if out, err := exec.Command("iptables-nft", "-t", "nat", "-A", "PREROUTING", "-j", "RETURN").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if err := SetupSNAT(c, []netip.Addr{pod}); err != nil {
			return err
		}
		if nft, legacy := save("iptables-nft-save"), save("iptables-legacy-save"); !strings.Contains(nft, ":VPCCHAIN-SNAT") || strings.Contains(legacy, "VPCCHAIN") {
			t.Fatalf("with the node's rules in nf_tables, ours: nf_tables\n%s\nlegacy\n%s", nft, legacy)
		}
		// kube-proxy and the kubelet come up in legacy mode.
		for _, args := range [][]string{{"-t", "mangle", "-N", "KUBE-KUBELET-CANARY"}, {"-t", "nat", "-A", "PREROUTING", "-j", "RETURN"}} {
			if out, err := exec.Command("iptables-legacy", args...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		if err := SetupSNAT(c, []netip.Addr{pod}); err != nil {
			return err
		}
		if nft, legacy := save("iptables-nft-save"), save("iptables-legacy-save"); strings.Contains(nft, "VPCCHAIN") || !strings.Contains(legacy, ":VPCCHAIN-SNAT") {
			t.Fatalf("after the move, ours: nf_tables\n%s\nlegacy\n%s", nft, legacy)
		}
		if has, err := snat.HasPod(pod); err != nil || !has {
			t.Fatalf("pod %s left the SNAT set in the move: %v", pod, err)
		}
		return nil
	})
}

// SetupNodeSysctls leaves the node so that a daemon whose /proc/sys is
// read-only needs to write nothing: forwarding, loose filtering on the
// primary ENI, on the ENIs that exist already (after a reboot: those the
// daemon attached before, which came up strict), and for every link
// created afterwards (the secondary ENIs the daemon attaches later).
func TestSetupNodeSysctls(t *testing.T) {
	primary, old, later := mustMAC("02:00:00:00:00:01"), mustMAC("02:00:00:00:00:03"), mustMAC("02:00:00:00:00:02")
	n := newNS(t)
	in(t, n, func() error {
		if err := addENILink("ens5", primary); err != nil {
			return err
		}
		if err := addENILink("ens7", old); err != nil {
			return err
		}
		for k, v := range map[string]string{"net/ipv4/ip_forward": "0", "net/ipv4/conf/ens5/rp_filter": "1",
			"net/ipv4/conf/ens7/rp_filter": "1", "net/ipv4/conf/default/rp_filter": "1"} {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				return err
			}
		}
		// later has no link yet: skipped, as an ENI whose link is not up.
		names, err := SetupNodeSysctls(primary, []net.HardwareAddr{primary, old, later}, false)
		if err != nil {
			return err
		}
		if want := []string{"ens5", "ens7"}; !slices.Equal(names, want) {
			t.Errorf("prepared links %q, want %q", names, want)
		}
		if err := addENILink("ens6", later); err != nil {
			return err
		}
		for k, want := range map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/ens5/rp_filter": "2",
			"net/ipv4/conf/default/rp_filter": "2", "net/ipv4/conf/ens6/rp_filter": "2",
			"net/ipv4/conf/ens7/rp_filter": "2", "net/ipv6/conf/all/forwarding": "0"} {
			if got, err := readSysctl(k); err != nil || got != want {
				t.Errorf("%s = %q (%v), want %s", k, got, err, want)
			}
		}
		return nil
	})
}

// In IPv6 mode the node also forwards IPv6, and the primary ENI keeps
// taking the VPC router's advertisements (accept_ra=2: forwarding would
// otherwise turn them off, and with them the node's default route).
func TestSetupNodeSysctlsIPv6(t *testing.T) {
	primary := mustMAC("02:00:00:00:00:01")
	n := newNS(t)
	in(t, n, func() error {
		if err := addENILink("ens5", primary); err != nil {
			return err
		}
		if _, err := SetupNodeSysctls(primary, nil, true); err != nil {
			return err
		}
		for k, want := range map[string]string{"net/ipv6/conf/all/forwarding": "1", "net/ipv6/conf/ens5/accept_ra": "2",
			"net/ipv4/ip_forward": "1"} {
			if got, err := readSysctl(k); err != nil || got != want {
				t.Errorf("%s = %q (%v), want %s", k, got, err, want)
			}
		}
		return nil
	})
}
