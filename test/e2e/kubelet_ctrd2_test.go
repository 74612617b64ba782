//go:build kubelet

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
)

// TestKubeletNodeContainerd2 runs a real node on containerd 2.x (built from
// its module, test/tools/containerd), whose CRI status runs every CNI
// plugin's STATUS each time the kubelet polls the runtime, with our conflist
// at cniVersion 1.1.0. It checks what a full node needs from STATUS and
// what happens to an address whose DEL never reached the daemon:
//
//   - a node filled to its max pods (MAX_PODS, below the kubelet's maxPods)
//     stays Ready for a minute while more pods wait in ContainerCreating
//     with the daemon's reason; the daemon sees the STATUS calls;
//   - a pod deleted while the daemon is down (the plugin's DEL succeeds
//     without it) gets its address released once containerd no longer lists
//     its sandbox (the orphan check over CRI), and a waiting pod starts.
//     containerd 2.2 never calls CNI GC (the daemon sees none): the orphan
//     check is what releases it.
func TestKubeletNodeContainerd2(t *testing.T) {
	requireRoot(t)
	bin := binDir(t)
	kb := findKubeletBins(t, bin)
	ctrd2 := filepath.Join(bin, "tools", "containerd2")
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
		if _, err := os.Stat(filepath.Join(ctrd2, b)); err != nil {
			t.Fatalf("%s missing: run `make node-tools`: %v", filepath.Join(ctrd2, b), err)
		}
	}

	const maxPods, waiting = 6, 3
	c := newCluster(t, "m5.large", []string{"k2"}, fmt.Sprintf("MAX_PODS=%d", maxPods),
		"VPCCHAIN_CNI_VERSION=1.1.0", "VPCCHAIN_ORPHAN_GRACE=10s")
	n := c.nodes["k2"]
	k := startControlPlane(t, n, kb.etcd, kb.apiserver, kb.kubectl)
	k.retry(t, 30*time.Second, "", "-n", "default", "create", "serviceaccount", "default")
	kn := newKubeNode(t, n, kb, bin)
	kn.ctrd2 = ctrd2
	n.restart() // with containerd's CRI socket in its environment
	kn.startInstaller()
	kn.startContainerd()
	kn.startKubelet(k)
	// Pods first, the kubelet and containerd last on the way out.
	t.Cleanup(func() { deleteAllPods(k, kn) })
	if v, err := kn.ctr("version"); err != nil || !strings.Contains(v, "v2.2.9") {
		t.Fatalf("containerd version: %q, %v; want v2.2.9", v, err)
	}
	ready := func() error {
		s, m, err := nodeReady(k, n.name)
		if err == nil && s != "True" {
			err = fmt.Errorf("Ready=%s: %s", s, m)
		}
		return err
	}
	waitFor(t, 90*time.Second, "node Ready", kn.alive, ready)
	var conf struct {
		CNIVersion string `json:"cniVersion"`
	}
	if b, err := os.ReadFile(kn.conflist()); err != nil || json.Unmarshal(b, &conf) != nil || conf.CNIVersion != "1.1.0" {
		t.Fatalf("conflist: %q, %v; want cniVersion 1.1.0", conf.CNIVersion, err)
	}

	var names []string
	var manifest strings.Builder
	for i := 0; i < maxPods+waiting; i++ {
		name := fmt.Sprintf("web-k2-%02d", i)
		names = append(names, name)
		manifest.WriteString(podManifest(name, n.name, ""))
	}
	k.apply(t, manifest.String())
	phases := func() (running, pending []string) {
		out, err := k.kubectl("", "get", "pods", "-l", "app=web", "-o", `jsonpath={range .items[*]}{.metadata.name} {.status.phase}{"\n"}{end}`)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) == 2 && f[1] == "Running" {
				running = append(running, f[0])
			} else if len(f) == 2 {
				pending = append(pending, f[0])
			}
		}
		return running, pending
	}
	waitFor(t, 120*time.Second, fmt.Sprintf("%d pods Running", maxPods), kn.alive, func() error {
		if r, _ := phases(); len(r) != maxPods {
			return fmt.Errorf("%d Running", len(r))
		}
		return nil
	})

	// The full node stays Ready for a minute (the kubelet polls the
	// runtime's status every 5 s; containerd runs our STATUS each time),
	// while the pods beyond max pods wait with our reason.
	scrape := func() map[string]float64 {
		t.Helper()
		resp, err := inNodeHTTP(c.sim, n.name).Get("http://127.0.0.1:61678/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return parseMetrics(t, string(b))
	}
	event := func(e string) float64 { return scrape()[`vpcchain_events_total{event="`+e+`"}`] }
	statusBefore := event("rpc_status")
	fullSince := time.Now()
	for time.Since(fullSince) < 60*time.Second {
		if err := ready(); err != nil {
			t.Fatalf("node at max pods went NotReady after %v: %v", time.Since(fullSince).Round(time.Second), err)
		}
		if r, _ := phases(); len(r) != maxPods {
			t.Fatalf("%d pods Running on a node with MAX_PODS=%d", len(r), maxPods)
		}
		time.Sleep(2 * time.Second)
	}
	statusCalls := event("rpc_status") - statusBefore
	if statusCalls < 5 {
		t.Fatalf("the daemon saw %v STATUS calls in 60 s: containerd 2.x did not run our STATUS", statusCalls)
	}
	_, pending := phases()
	if len(pending) != waiting {
		t.Fatalf("pending pods %v, want %d", pending, waiting)
	}
	for _, p := range pending {
		ev, _ := k.kubectl("", "get", "events", "--field-selector", "involvedObject.name="+p, "-o", "jsonpath={.items[*].message}")
		if !strings.Contains(ev, "max pods reached") {
			t.Errorf("pod %s waits without the daemon's reason; events: %s", p, tail(ev, 5))
		}
	}
	t.Logf("node with %d pods (MAX_PODS=%d) Ready for 60 s; %d pods wait with \"max pods reached\"; the daemon answered %v STATUS calls",
		maxPods, maxPods, waiting, statusCalls)

	// A pod deleted while the daemon is down: containerd's DEL reaches
	// vpc-ipam, which cannot reach the daemon and lets the DEL succeed.
	running, _ := phases()
	victim := running[0]
	ipOut, err := k.kubectl("", "get", "pod", victim, "-o", "jsonpath={.status.podIP}")
	if err != nil {
		t.Fatal(err)
	}
	victimIP, err := netip.ParseAddr(strings.TrimSpace(ipOut))
	if err != nil {
		t.Fatalf("pod %s: podIP %q: %v", victim, ipOut, err)
	}
	n.stop()
	if _, err := k.kubectl("", "delete", "pod", victim, "--grace-period=0", "--force", "--wait=false"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "containerd to remove "+victim+"'s sandbox", kn.alive, func() error {
		if has, err := kn.hasSandboxOf(victim); err != nil || has {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	n.start()
	n.waitReady()
	if held := kn.n.introspect(); !allocated(held.Allocations, victimIP) {
		t.Fatalf("the daemon no longer holds %s right after its restart: the test did not miss the DEL", victimIP)
	}
	waitFor(t, 60*time.Second, "the orphan check to release "+victimIP.String(), kn.alive, func() error {
		if allocated(n.introspect().Allocations, victimIP) {
			return fmt.Errorf("%s still allocated", victimIP)
		}
		return nil
	})
	waitFor(t, 180*time.Second, "a waiting pod to start on the freed slot", kn.alive, func() error {
		if r, _ := phases(); len(r) != maxPods {
			return fmt.Errorf("%d Running", len(r))
		}
		return nil
	})
	if got := event("orphans_released"); got != 1 {
		t.Errorf("orphans released: %v, want 1", got)
	}
	if got := event("rpc_gc"); got != 0 {
		t.Errorf("containerd called CNI GC %v times: the test says it does not", got)
	}
	t.Logf("%s of %s, deleted while the daemon was down, released by the orphan check over CRI; containerd called CNI GC 0 times", victimIP, victim)

	// Deleting the pods leaves nothing.
	if _, err := k.kubectl("", "delete", "pods", "-l", "app=web", "--grace-period=0", "--force", "--wait=false"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "every address released", kn.alive, func() error {
		if r := n.introspect(); len(r.Allocations) != 0 {
			return fmt.Errorf("daemon still holds %d allocations", len(r.Allocations))
		}
		if out, err := kn.ctr("task", "ls", "-q"); err != nil || strings.TrimSpace(out) != "" {
			return fmt.Errorf("containerd tasks: %q %v", out, err)
		}
		return nil
	})
	assertNodeClean(t, n)
	if left := kn.newSandboxNetns(); len(left) > 0 {
		t.Errorf("sandbox network namespaces left behind: %v", left)
	}
}

func allocated(as []*ipamv1.IntrospectAllocation, ip netip.Addr) bool {
	for _, a := range as {
		if a.GetIp() == ip.String() {
			return true
		}
	}
	return false
}

// hasSandboxOf reports whether containerd still has a sandbox (pause)
// container of the pod, by the pod-name label the CRI plugin puts on it.
func (kn *kubeNode) hasSandboxOf(pod string) (bool, error) {
	out, err := kn.ctr("containers", "ls", "-q")
	if err != nil {
		return false, err
	}
	for _, id := range strings.Fields(out) {
		info, err := kn.ctr("containers", "info", id)
		if err != nil {
			continue // removed meanwhile
		}
		var c struct {
			Labels map[string]string `json:"Labels"`
		}
		if json.Unmarshal([]byte(info), &c) == nil && c.Labels["io.kubernetes.pod.name"] == pod {
			return true, nil
		}
	}
	return false, nil
}
