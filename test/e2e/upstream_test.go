package e2e

import (
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
)

// upstreamToolsDir is where `make tools` put the upstream plugins
// (containernetworking/plugins) and cnitool: $VPCCHAIN_BIN/tools.
func upstreamToolsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("VPCCHAIN_BIN")
	if dir == "" {
		dir, _ = filepath.Abs("../../bin")
	}
	dir = filepath.Join(dir, "tools")
	for _, b := range []string{"portmap", "bandwidth", "tuning"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("upstream plugin %s missing in %s: run `make tools` (or `make test`)", b, dir)
		}
	}
	return dir
}

// upstreamCNI is a runtime's libcni that finds our plugins and the upstream
// ones; plugin stderr goes to the node's plugin log.
func upstreamCNI(n *node, toolsDir string) *libcni.CNIConfig {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: n.pluginLog()}, PluginDecoder: version.PluginDecoder{}}
	return libcni.NewCNIConfigWithCacheDir([]string{n.c.bin, toolsDir}, filepath.Join(n.state, "cni-cache-upstream"), exec)
}

// upstreamHash is containernetworking/plugins' utils.MustFormatHashWithPrefix:
// how portmap names its per-container chains and bandwidth its ifb device.
func upstreamHash(length int, prefix, toHash string) string {
	sum := sha512.Sum512([]byte(toHash))
	return fmt.Sprintf("%s%x", prefix, sum)[:length]
}

const (
	upHostPort     = 30081
	upPodPort      = 8080
	upIngressRate  = 8_000_000 // bit/s
	upIngressBurst = 800_000   // bit
	upEgressRate   = 16_000_000
	upEgressBurst  = 1_600_000
	upSomaxconn    = "512"
)

// upstreamCaps are the capability args kubelet passes for a pod with a
// hostPort and bandwidth annotations.
var upstreamCaps = map[string]any{
	"portMappings": []map[string]any{
		{"hostPort": upHostPort, "containerPort": upPodPort, "protocol": "tcp"},
	},
	"bandwidth": map[string]any{
		"ingressRate": upIngressRate, "ingressBurst": upIngressBurst,
		"egressRate": upEgressRate, "egressBurst": upEgressBurst,
	},
}

// natRules is `iptables -t nat -S` in the node's namespace.
func natRules(t *testing.T, n *node) string {
	t.Helper()
	var out []byte
	if err := n.do(func() error {
		var err error
		out, err = exec.Command("iptables", "-t", "nat", "-S").Output()
		return err
	}); err != nil {
		t.Fatalf("iptables -t nat -S in node %s: %v", n.name, err)
	}
	return string(out)
}

// TestUpstreamPluginsChain chains the upstream meta plugins (tuning,
// portmap, bandwidth; containernetworking/plugins v1.9.1) after ours, as a
// cluster with hostPorts and bandwidth annotations does, and checks each
// does its job on top of vpc-bridge/vpc-snat's result, CHECK passes for the
// whole chain and DEL removes everything.
func TestUpstreamPluginsChain(t *testing.T) {
	toolsDir := upstreamToolsDir(t)
	c := newCluster(t, "m5.large", []string{"u"})
	c.allowFromInternet(upHostPort)
	n := c.nodes["u"]
	cni := upstreamCNI(n, toolsDir)
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(c.dir, n.name+"-plugins.log"))
			t.Logf("plugin log of %s:\n%s", n.name, tail(string(log), 60))
		}
	})

	raw, err := json.Marshal(map[string]any{
		"cniVersion": "1.1.0",
		"name":       "vpcchain",
		"plugins": []any{
			map[string]any{"type": "vpc-bridge", "mtu": 9001, "ipam": map[string]any{"type": "vpc-ipam", "socket": n.socket}},
			map[string]any{"type": "vpc-snat", "nodeConfig": n.state + "/snat.json"},
			map[string]any{"type": "tuning", "sysctl": map[string]string{"net.core.somaxconn": upSomaxconn}},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
			map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		t.Fatal(err)
	}

	p := n.newPod("default", "upstream")
	p.cni, p.caps = cni, upstreamCaps
	if err := p.addRetrying(l, time.Minute); err != nil {
		t.Fatalf("ADD of the chain: %v", err)
	}
	res := p.result
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = p.del(l)
		}
	})
	var hostVeth string
	for _, itf := range res.Interfaces {
		if itf.Sandbox == "" {
			hostVeth = itf.Name
			break
		}
	}
	if !strings.HasPrefix(hostVeth, "eni") {
		t.Fatalf("result's first host interface is %q, want our eni* veth (result interfaces: %v)", hostVeth, res.Interfaces)
	}
	ifb := upstreamHash(15, "bwp", l.Name+p.id)
	dnChain := upstreamHash(28, "CNI-DN-", l.Name+p.id)
	snChain := upstreamHash(28, "CNI-SN-", l.Name+p.id)
	t.Logf("pod %s: host veth %s, ifb %s, portmap chain %s", p.ip, hostVeth, ifb, dnChain)

	inet, ok := c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
	if !ok {
		t.Fatalf("instance %s unknown to EC2", n.vn.InstanceID)
	}
	nodeIP := inet.PrimaryIP

	t.Run("portmap hostPort from outside", func(t *testing.T) {
		echoServer(t, p.doIn, netip.AddrPortFrom(p.ip, upPodPort), p.name)
		nat := natRules(t, n)
		if !strings.Contains(nat, dnChain) || !strings.Contains(nat, fmt.Sprintf("--dport %d", upHostPort)) {
			t.Errorf("portmap's chain %s with hostPort %d is not in the node's nat table:\n%s", dnChain, upHostPort, nat)
		}
		to := netip.AddrPortFrom(nodeIP, upHostPort)
		got, err := dialEcho(c.sim.Fabric.DoInOutside, to)
		if err != nil {
			t.Fatalf("outside -> %s (hostPort): %v\nnat table:\n%s", to, err, natRules(t, n))
		}
		if f := strings.Fields(got); len(f) != 2 || f[0] != p.name {
			t.Fatalf("outside -> %s reached %q, want pod %s", to, got, p.name)
		}
		t.Logf("outside -> %s answered %q", to, got)
	})

	t.Run("bandwidth shaping", func(t *testing.T) {
		err := n.do(func() error {
			veth, err := netlink.LinkByName(hostVeth)
			if err != nil {
				return fmt.Errorf("host veth %s: %w", hostVeth, err)
			}
			qs, err := netlink.QdiscList(veth)
			if err != nil {
				return err
			}
			var tbf *netlink.Tbf
			var ingress bool
			for _, q := range qs {
				switch q := q.(type) {
				case *netlink.Tbf:
					tbf = q
				case *netlink.Ingress:
					ingress = true
				}
			}
			// Traffic to the pod (ingress for the pod) is shaped by a tbf at
			// the root of the host veth.
			if tbf == nil {
				t.Errorf("no tbf qdisc on host veth %s: %v", hostVeth, qs)
			} else if tbf.Rate != upIngressRate/8 {
				t.Errorf("tbf on %s has rate %d B/s, want %d", hostVeth, tbf.Rate, upIngressRate/8)
			}
			// Traffic from the pod is redirected from the veth's ingress
			// qdisc to an ifb device, shaped by a tbf there.
			if !ingress {
				t.Errorf("no ingress qdisc on host veth %s: %v", hostVeth, qs)
			}
			dev, err := netlink.LinkByName(ifb)
			if err != nil {
				return fmt.Errorf("bandwidth's ifb device %s: %w", ifb, err)
			}
			if dev.Type() != "ifb" {
				t.Errorf("%s is a %s, want ifb", ifb, dev.Type())
			}
			fs, err := netlink.FilterList(veth, netlink.MakeHandle(0xffff, 0))
			if err != nil {
				return err
			}
			redirected := false
			for _, f := range fs {
				if u, ok := f.(*netlink.U32); ok {
					for _, a := range u.Actions {
						if m, ok := a.(*netlink.MirredAction); ok && m.Ifindex == dev.Attrs().Index {
							redirected = true
						}
					}
				}
			}
			if !redirected {
				t.Errorf("no filter on %s redirects to %s: %v", hostVeth, ifb, fs)
			}
			qs, err = netlink.QdiscList(dev)
			if err != nil {
				return err
			}
			tbf = nil
			for _, q := range qs {
				if q, ok := q.(*netlink.Tbf); ok {
					tbf = q
				}
			}
			if tbf == nil {
				t.Errorf("no tbf qdisc on ifb %s: %v", ifb, qs)
			} else if tbf.Rate != upEgressRate/8 {
				t.Errorf("tbf on %s has rate %d B/s, want %d", ifb, tbf.Rate, upEgressRate/8)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("tuning sysctl in the pod", func(t *testing.T) {
		var inPod, onNode []byte
		if err := p.doIn(func() error {
			var err error
			inPod, err = os.ReadFile("/proc/sys/net/core/somaxconn")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(inPod)); got != upSomaxconn {
			t.Errorf("net.core.somaxconn in the pod = %s, want %s", got, upSomaxconn)
		}
		if err := n.do(func() error {
			var err error
			onNode, err = os.ReadFile("/proc/sys/net/core/somaxconn")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(onNode)) == upSomaxconn {
			t.Errorf("net.core.somaxconn is %s on the node too: the sysctl must only change the pod's netns", upSomaxconn)
		}
	})

	t.Run("CHECK of the whole chain", func(t *testing.T) {
		if err := p.check(l); err != nil {
			t.Fatalf("CHECK: %v", err)
		}
	})

	t.Run("DEL removes everything", func(t *testing.T) {
		if err := p.del(l); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		deleted = true
		if err := p.del(l); err != nil {
			t.Errorf("second DEL (must be idempotent): %v", err)
		}
		nat := natRules(t, n)
		for _, line := range strings.Split(nat, "\n") {
			if strings.Contains(line, dnChain) || strings.Contains(line, snChain) || strings.Contains(line, fmt.Sprint(upHostPort)) {
				t.Errorf("portmap rule left after DEL: %s", line)
			}
		}
		if err := n.do(func() error {
			for _, name := range []string{ifb, hostVeth} {
				if _, err := netlink.LinkByName(name); err == nil {
					t.Errorf("link %s left after DEL", name)
				} else if !errors.As(err, &netlink.LinkNotFoundError{}) {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if r := n.introspect(); len(r.Allocations) != 0 {
			t.Errorf("node still holds %d allocations after DEL", len(r.Allocations))
		}
		assertNodeClean(t, n)
	})
}
