package e2e

import (
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vpcchain/vpcchain/sim/vpcsim/dataplane"
)

// TestCalicoPolicyIPv6 is TestCalicoPolicy on an IPv6 node: the same
// unmodified Felix, with FELIX_IPV6SUPPORT=true, enforces a Kubernetes
// NetworkPolicy on IPv6 pods added through the IPv6-mode chain (vpc-bridge,
// vpc-egress-v4, vpc-snat, policy-hook).
func TestCalicoPolicyIPv6(t *testing.T) {
	requireRoot(t)
	c := newIPv6Cluster(t, "m5.large", []string{"a"})
	n := c.nodes["a"]
	k, statusDir := startCalicoTier(t, n, true)

	chain := n.ipv6Chain(map[string]any{"type": "policy-hook", "vethPrefix": "eni", "kubeconfig": k.kubeconfig,
		"waitForPolicy": map[string]any{"timeout": "20s", "strict": true, "endpointStatusDir": statusDir}})
	upstream := upstreamCNI(n, upstreamToolsDir(t))
	addPod := func(name string) *pod {
		t.Helper()
		k.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default, labels: {app: %s}}
spec:
  nodeName: %s
  automountServiceAccountToken: false
  containers: [{name: pause, image: registry.k8s.io/pause:3.10}]
`, name, name, n.name))
		p := n.newPod("default", name)
		p.cni = upstream
		if err := p.addRetrying(chain, time.Minute); err != nil {
			t.Fatalf("ADD %s: %v\nplugin log:\n%s", name, err, tailFile(filepath.Join(c.dir, n.name+"-plugins.log"), 30))
		}
		t.Cleanup(func() {
			if err := p.del(chain); err != nil {
				t.Errorf("DEL %s: %v", name, err)
			}
		})
		if !p.ip.Is6() {
			t.Fatalf("pod %s got %v, want an IPv6 address", name, p.ip)
		}
		// Strict waiting: Felix's status for the endpoint exists when ADD
		// returns, naming the pod's IPv6 address.
		checkStatusFile(t, filepath.Join(statusDir, "k8s "+url.PathEscape("default/"+name)+" eth0"), calicoVethName("default", name), p.ip)
		ann, err := k.kubectl("", "-n", "default", "get", "pod", name, "-o", `jsonpath={.metadata.annotations.cni\.projectcalico\.org/podIPs}`)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(strings.Split(ann, ","), p.ip.String()+"/128") {
			t.Errorf("pod %s: annotation cni.projectcalico.org/podIPs = %q, want %s/128", name, ann, p.ip)
		}
		return p
	}
	pa, pb := addPod("pol6-a"), addPod("pol6-b")
	const port = 8080
	echoServer(t, pa.doIn, netip.AddrPortFrom(pa.ip, port), "pol6-a")
	echoServer(t, pb.doIn, netip.AddrPortFrom(pb.ip, port), "pol6-b")
	toA, toB := netip.AddrPortFrom(pa.ip, port), netip.AddrPortFrom(pb.ip, port)
	if err := waitDial(pa.doIn, toB, true, 10*time.Second); err != nil {
		t.Fatalf("pol6-a -> pol6-b without policy: %v", err)
	}
	start := time.Now()
	k.apply(t, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress-b6, namespace: default}
spec:
  podSelector: {matchLabels: {app: pol6-b}}
  policyTypes: [Ingress]
`)
	if err := waitDial(pa.doIn, toB, false, 20*time.Second); err != nil {
		t.Fatalf("pol6-a -> pol6-b after deny-ingress-b6: %v", err)
	}
	t.Logf("deny-ingress-b6 enforced on IPv6 %v after apply", time.Since(start).Round(time.Millisecond))
	// Nor by pol6-b's IPv4 egress address: Felix sees nothing of that path
	// (its host end is not an eni interface), so it must not carry pod to
	// pod traffic at all; it still carries pol6-a's IPv4 egress.
	egB := netip.AddrPortFrom(egressAddr(t, pb), port)
	echoServer(t, pb.doIn, egB, "pol6-b-egress")
	expectDropped(t, pa.doIn, egB, "pol6-a to pol6-b's egress address")
	internet4 := netip.MustParseAddrPort(dataplane.OutsideAddr + ":8084")
	echoServer(t, c.sim.Fabric.DoInOutside, internet4, "internet4")
	flowCase{"pod to an IPv4-only internet host", pa.doIn, primaryIP(t, c, n), internet4, "internet4"}.
		expect(t, "IPv4 egress leaves as the node")
	if _, err := dialOnce(pb.doIn, toA, 3*time.Second); err != nil {
		t.Errorf("pol6-b -> pol6-a must still flow (the policy denies only ingress to pol6-b): %v", err)
	}
	// Felix put the policy on pol6-b's IPv6 to-workload chain.
	out, err := ip6tablesIn(n, "-t", "filter", "-S", "cali-tw-"+calicoVethName("default", "pol6-b"))
	if err != nil || !strings.Contains(out, "cali-pi-") {
		t.Errorf("ip6tables chain cali-tw-%s: %v\n%s\nwant a jump to the policy's chain", calicoVethName("default", "pol6-b"), err, out)
	}
	if _, err := k.kubectl("", "-n", "default", "delete", "networkpolicy", "deny-ingress-b6"); err != nil {
		t.Fatal(err)
	}
	if err := waitDial(pa.doIn, toB, true, 20*time.Second); err != nil {
		t.Fatalf("pol6-a -> pol6-b after deleting deny-ingress-b6: %v", err)
	}
}
