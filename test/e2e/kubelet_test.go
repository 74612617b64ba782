//go:build kubelet

package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestKubeletNode runs a real Kubernetes node on a simulated EC2 node: Debian's
// containerd and runc and a real kubelet (v1.33.13, from `make node-tools`)
// registered with a real kube-apiserver, all inside the node's network
// namespace, with our daemon and installer run the way the DaemonSet runs them.
// Pods created through the API server get their network from our conflist the
// way they do on a cluster: kubelet -> CRI -> containerd -> the chain.
//
// Nothing on the host is changed: containerd and the kubelet run in private
// mount namespaces whose writes outside the test's directories (/var/lib,
// /var/log, /run/containerd) land in the test's directories; the kubelet runs
// with protectKernelDefaults and sees the values it wants through read-only
// bind mounts over the sysctl files in its mount namespace (so it neither
// refuses to start nor writes a host sysctl); the cgroups runc creates, the pod
// network namespaces and every process are removed at the end, on failure and
// on interrupt.
//
// Two nodes (a runs etcd and the API server; node b's kubelet reaches it
// through a proxy the test runs between the namespaces). It checks: node
// NotReady until the installer writes our conflist (only once
// the daemon is healthy), then Ready; pods created through the API server
// (nodeName set) reach Running with a status.podIP the simulator assigned to
// one of that node's ENIs; pods on both nodes reach each other over TCP; a
// hostPort works through the chained portmap; restarting vpcchaind,
// containerd or the kubelet does not disturb running pods; deleting the pods
// (grace period 0) returns every address to the warm pool and leaves no veth,
// rule, DNAT chain or sandbox netns.
//
// VPCCHAIN_E2E_KUBELET_PODS sets the number of web pods (default 20, split
// over the two nodes; the hostPort pod comes on top).
func TestKubeletNode(t *testing.T) {
	requireRoot(t)
	tierStart := time.Now()
	bin := binDir(t)
	kb := findKubeletBins(t, bin)
	for _, name := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
		if _, err := exec.LookPath(name); err != nil {
			t.Fatalf("%s not found: run `make deps` (Debian containerd): %v", name, err)
		}
	}
	podCount := 20
	if v := os.Getenv("VPCCHAIN_E2E_KUBELET_PODS"); v != "" {
		var err error
		if podCount, err = strconv.Atoi(v); err != nil || podCount < 2 || podCount > 40 {
			t.Fatalf("VPCCHAIN_E2E_KUBELET_PODS=%q: want 2..40", v)
		}
	}

	c := newCluster(t, "m5.large", []string{"a", "b"})
	a, b := c.nodes["a"], c.nodes["b"]
	k := startControlPlane(t, a, kb.etcd, kb.apiserver, kb.kubectl)
	k.retry(t, 30*time.Second, "", "-n", "default", "create", "serviceaccount", "default")
	proxyAPIServer(t, b, a)

	kns := map[string]*kubeNode{}
	for _, n := range []*node{a, b} {
		kns[n.name] = newKubeNode(t, n, kb, bin)
	}
	ka, kbn := kns["a"], kns["b"]
	b.restart() // with the CRI socket in its environment

	// Node a's daemon is down while the node comes up: the installer's
	// sidecar waits for it, the conflist does not exist, and the node is
	// NotReady. Node b comes up with its daemon running.
	a.stop()
	for _, kn := range []*kubeNode{ka, kbn} {
		kn.startInstaller()
		kn.startContainerd()
		kn.startKubelet(k)
	}
	// Pods first, kubelets last on the way out: the graceful part of the
	// teardown runs while they are still up.
	t.Cleanup(func() { deleteAllPods(k, ka, kbn) })

	var msg string
	waitFor(t, 60*time.Second, "node a's registration", ka.alive, func() error {
		s, m, err := nodeReady(k, "a")
		if err == nil && s == "" {
			err = errors.New("no Ready condition yet")
		}
		msg = m
		return err
	})
	notReadySince := time.Now()
	for time.Since(notReadySince) < 4*time.Second {
		s, m, err := nodeReady(k, "a")
		if err != nil {
			t.Fatal(err)
		}
		if s != "False" || !strings.Contains(m, "network") {
			t.Fatalf("node a Ready=%s (%q) before our conflist exists; want False, network not ready", s, m)
		}
		msg = m
		if ents, _ := os.ReadDir(ka.cniConf); len(ents) != 0 {
			t.Fatalf("%s has %v while the daemon is down", ka.cniConf, ents)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("node a NotReady while its daemon is down: %q", msg)

	a.start()
	a.waitReady()
	daemonUp := time.Now()
	waitFor(t, 30*time.Second, "node a's conflist", ka.alive, func() error {
		_, err := os.Stat(ka.conflist())
		return err
	})
	confAt := time.Since(daemonUp)
	for _, kn := range []*kubeNode{ka, kbn} {
		waitFor(t, 60*time.Second, "node "+kn.n.name+" Ready", kn.alive, func() error {
			s, m, err := nodeReady(k, kn.n.name)
			if err == nil && s != "True" {
				err = fmt.Errorf("Ready=%s: %s", s, m)
			}
			return err
		})
	}
	t.Logf("node a: conflist written %v after its daemon became healthy; Ready %v after it", confAt.Round(time.Millisecond), time.Since(daemonUp).Round(time.Millisecond))

	// Pods through the API server, alternating nodes; one more pod on node a
	// publishes a hostPort.
	const hostPort = 18080
	var names []string
	nodeOf := map[string]*kubeNode{}
	var manifest strings.Builder
	for i := range podCount {
		kn := []*kubeNode{ka, kbn}[i%2]
		name := fmt.Sprintf("web-%s-%02d", kn.n.name, i/2)
		names = append(names, name)
		nodeOf[name] = kn
		manifest.WriteString(podManifest(name, kn.n.name, ""))
	}
	names = append(names, "web-a-hostport")
	nodeOf["web-a-hostport"] = ka
	manifest.WriteString(podManifest("web-a-hostport", "a", fmt.Sprintf("\n    ports: [{containerPort: 8080, hostPort: %d, protocol: TCP}]", hostPort)))
	start := time.Now()
	k.apply(t, manifest.String())
	if _, err := k.kubectl("", "wait", "--for=condition=Ready", "--timeout=180s", "pod", "-l", "app=web"); err != nil {
		out, _ := k.kubectl("", "get", "pods", "-o", "wide")
		ev, _ := k.kubectl("", "get", "events", "--sort-by=.lastTimestamp")
		t.Fatalf("%v\n%s\n%s", err, out, tail(ev, 30))
	}
	t.Logf("%d pods Running %v after create", len(names), time.Since(start).Round(time.Millisecond))

	pods := podInfo(t, k, names)
	seen := map[netip.Addr]string{}
	for _, name := range names {
		p, kn := pods[name], nodeOf[name]
		if p.node != kn.n.name {
			t.Errorf("pod %s runs on %q, want %s", name, p.node, kn.n.name)
		}
		idx, ok := eniOfAddr(t, c.sim, kn.n.vn.InstanceID)(p.ip)
		if !ok {
			t.Errorf("pod %s: status.podIP %s is on none of node %s's ENIs", name, p.ip, kn.n.name)
		}
		if other, dup := seen[p.ip]; dup {
			t.Errorf("pods %s and %s share %s", name, other, p.ip)
		}
		seen[p.ip] = name
		t.Logf("pod %s on %s: %s (ENI device %d), host veth %s", name, kn.n.name, p.ip, idx, calicoVethName("default", name))
	}
	for _, kn := range []*kubeNode{ka, kbn} {
		kn.expectAllocations(names, pods)
	}

	// Pod to pod over TCP (each pod to the next: across the nodes, through
	// the VPC router), and a hostPort of node a from a pod on node b.
	checkPodToPod(t, kns, names, pods)
	aIP := primaryIP(t, c, a)
	checkHostPort := func() {
		t.Helper()
		from := names[1] // on node b
		netns, err := kns["b"].netnsOf(pods[from].container)
		if err != nil {
			t.Fatal(err)
		}
		defer netns.Close()
		var body string
		deadline := time.Now().Add(10 * time.Second)
		for {
			body, err = httpFrom(netns, netip.AddrPortFrom(aIP, hostPort))
			if (err == nil && body == "web-a-hostport") || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil || body != "web-a-hostport" {
			t.Fatalf("pod %s -> node a's hostPort %s:%d: %q, %v", from, aIP, hostPort, body, err)
		}
	}
	checkHostPort()
	t.Logf("hostPort %s:%d reaches web-a-hostport (%s) from %s on node b", aIP, hostPort, pods["web-a-hostport"].ip, names[1])

	// Restarting our daemon, containerd or the kubelet (on node a) does not
	// disturb running pods.
	undisturbed := func(what string) {
		t.Helper()
		for _, kn := range []*kubeNode{ka, kbn} {
			if err := kn.alive(); err != nil {
				t.Fatal(err)
			}
			kn.n.waitReady()
		}
		if _, err := k.kubectl("", "wait", "--for=condition=Ready", "--timeout=60s", "pod", "-l", "app=web"); err != nil {
			t.Fatalf("after %s: %v", what, err)
		}
		after := podInfo(t, k, names)
		for _, name := range names {
			if after[name] != pods[name] {
				t.Errorf("after %s: pod %s changed: %+v, was %+v", what, name, after[name], pods[name])
			}
		}
		for _, kn := range []*kubeNode{ka, kbn} {
			kn.expectAllocations(names, after)
		}
		checkPodToPod(t, kns, names, after)
		checkHostPort()
		t.Logf("%s: %d pods undisturbed (same sandboxes, addresses, no restarts; TCP between them; hostPort)", what, len(names))
	}
	a.restart()
	undisturbed("restarting vpcchaind on node a")
	tasks, err := ka.runningTasks()
	if err != nil {
		t.Fatal(err)
	}
	ka.containerd.stop()
	ka.containerd.start()
	// A restarted containerd reconnects to every pod's shim before it
	// lists the pod's tasks again: wait for all of them, so that a task
	// missing after this is a pod containerd lost, not one still loading.
	waitFor(t, 60*time.Second, "containerd after restart (all tasks back)", ka.containerd.running, func() error {
		now, err := ka.runningTasks()
		if err != nil {
			return err
		}
		for id := range tasks {
			if !now[id] {
				return fmt.Errorf("task %s is not RUNNING (%d of %d back)", id, len(now), len(tasks))
			}
		}
		return nil
	})
	undisturbed("restarting containerd on node a")
	ka.kubelet.stop()
	ka.kubelet.start()
	time.Sleep(3 * time.Second) // a kubelet that would recreate sandboxes does so in its first syncs
	undisturbed("restarting the kubelet on node a")

	// Deleting the pods (grace period 0) returns every address to the warm
	// pool and leaves no veth, rule, DNAT chain or sandbox namespace.
	start = time.Now()
	if _, err := k.kubectl("", "delete", "pods", "-l", "app=web", "--grace-period=0", "--force", "--wait=false"); err != nil {
		t.Fatal(err)
	}
	for _, kn := range []*kubeNode{ka, kbn} {
		waitFor(t, 60*time.Second, "node "+kn.n.name+"'s addresses released", kn.alive, func() error {
			if r := kn.n.introspect(); len(r.Allocations) != 0 {
				return fmt.Errorf("daemon still holds %d allocations", len(r.Allocations))
			}
			if out, err := kn.ctr("task", "ls", "-q"); err != nil || strings.TrimSpace(out) != "" {
				return fmt.Errorf("containerd tasks: %q %v", out, err)
			}
			return nil
		})
	}
	t.Logf("all %d addresses released %v after delete", len(names), time.Since(start).Round(time.Millisecond))
	for _, name := range names {
		kn := nodeOf[name]
		if _, ok := eniOfAddr(t, c.sim, kn.n.vn.InstanceID)(pods[name].ip); !ok {
			t.Errorf("address %s of deleted pod %s left node %s's ENIs (want it back in the warm pool)", pods[name].ip, name, kn.n.name)
		}
	}
	for _, kn := range []*kubeNode{ka, kbn} {
		held := 0
		for _, name := range names {
			if nodeOf[name] == kn {
				held++
			}
		}
		if r := kn.n.introspect(); int(r.Available+r.Cooling) < held {
			t.Errorf("node %s's pool after delete: available %d + cooling %d < %d released", kn.n.name, r.Available, r.Cooling, held)
		}
		assertNodeClean(t, kn.n)
		if out, err := iptablesIn(kn.n, "-t", "nat", "-S"); err != nil {
			t.Fatal(err)
		} else if strings.Contains(out, "CNI-DN-") {
			t.Errorf("node %s: portmap's per-pod DNAT chain left behind:\n%s", kn.n.name, out)
		}
		if left := kn.newSandboxNetns(); len(left) > 0 {
			t.Errorf("sandbox network namespaces left behind: %v", left)
		}
	}
	t.Logf("tier duration (after build): %v", time.Since(tierStart).Round(100*time.Millisecond))
}
